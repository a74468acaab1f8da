//! The `sealtrail` command: keys, demo archives, verification.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sealtrail::archive::DEFAULT_STORE;
use sealtrail::keys;
use sealtrail::verify::{verify, VerifyOptions};
use sealtrail::Archive;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes one line to standard output: [`out_line`].
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::out_line(format_args!($($t)*))
    };
}

mod bench_load;
mod demo;
mod metrics;
mod pipeline;
mod read;
mod receivers;
mod recover;
mod serve;
mod window;

/// Tamper-evident audit trails for AI agents.
#[derive(Debug, Parser)]
#[command(name = "sealtrail", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public key (OUT.pub).
    Keygen(KeygenArgs),
    /// Write a demo agent archive (several sessions of LLM calls, tool calls,
    /// policy checks and human approvals), sealed and signed.
    Demo(demo::DemoArgs),
    /// List the sessions in an archive: records, time range, kinds. Reading proves nothing: use `verify` for that.
    Sessions(read::SessionsArgs),
    /// Print one session's records in chain order (seq, time, kind, name, key fields).
    /// Reading proves nothing: use `verify` for that.
    Show(read::ShowArgs),
    /// Measure the collector: start it, send it GenAI spans over OTLP/gRPC
    /// and OTLP/HTTP, report spans/s acknowledged, CPU per span, peak memory.
    BenchLoad(bench_load::BenchLoadArgs),
    /// Run the OTLP collector (gRPC and HTTP): spans and log records from
    /// agents in any language, archived like the tracing layer's.
    Serve(Box<serve::ServeArgs>),
    /// Prove an archive complete and unaltered, or name what is wrong.
    /// Exit status: 0 intact, 1 findings, 2 usage or I/O error.
    Verify(VerifyArgs),
    /// Archive the records left in the spool of a writer that stopped on a
    /// writer-id conflict under a new writer id: chained, sealed, closed.
    Recover(recover::RecoverArgs),
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the secret key; the public key goes to OUT.pub.
    #[arg(long, env = "SEALTRAIL_KEY_OUT", default_value = "audit.key")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Archive URL: a path, file:///abs/path, or s3://bucket/prefix.
    #[arg(long, env = "SEALTRAIL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Trusted public key file(s) (SPKI PEM); repeat (or separate with commas)
    /// for rotated keys.
    #[arg(
        long = "public-key",
        env = "SEALTRAIL_PUBLIC_KEY",
        required = true,
        value_delimiter = ','
    )]
    public_keys: Vec<PathBuf>,
    /// A writer id that must be in the archive (repeat, or separate with
    /// commas): one with no seal is reported as writer_missing. Each writer's
    /// chain proves itself only, so a writer deleted whole is found only so.
    #[arg(
        long = "expect-writer",
        env = "SEALTRAIL_EXPECT_WRITERS",
        value_delimiter = ','
    )]
    expect_writers: Vec<String>,
    /// Print the report as JSON.
    #[arg(long, env = "SEALTRAIL_JSON")]
    json: bool,
    /// Report only findings about this session (seal and object findings always
    /// show); the summary says so. Deliberately not read from the environment:
    /// a verification is never narrowed unseen.
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    session: Option<String>,
    /// Verify as of this time (RFC 3339, e.g. 2026-11-23T12:00:00Z; default now).
    /// A writer that did not close and has not sealed for a heartbeat before it is reported.
    #[arg(long, env = "SEALTRAIL_AS_OF", value_parser = parse_time)]
    as_of: Option<u64>,
    /// Lateness tolerated beyond a writer's heartbeat interval.
    #[arg(long, env = "SEALTRAIL_HEARTBEAT_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_grace: Duration,
    /// S3 only: check every object's Object Lock against this retention (e.g. 7y, 90d):
    /// each object locked for less than its write time plus this is a finding.
    #[arg(long, env = "SEALTRAIL_CHECK_RETENTION", value_parser = humantime::parse_duration)]
    check_retention: Option<Duration>,
    /// The lock mode --check-retention requires.
    #[arg(long, env = "SEALTRAIL_LOCK_MODE", default_value = "compliance", value_parser = ["compliance", "governance"])]
    lock_mode: String,
    /// Also parse every record against the record schema (slower).
    #[arg(long, env = "SEALTRAIL_STRICT")]
    strict: bool,
    /// Threads checking batches, 0 to 1024 (0: one per core).
    #[arg(long, env = "SEALTRAIL_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    threads: u16,
}

/// An RFC 3339 time with its offset (`Z` or `±hh:mm`): a time without one
/// would be read in some zone the auditor did not choose.
fn parse_time(s: &str) -> Result<u64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        format!("{e}: use RFC 3339 with an offset, e.g. 2026-11-23T12:00:00Z or 2026-11-23T13:00:00+01:00")
    })?;
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| "the time is before 1970 or after 2554".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        // The collector builds its own runtime (and its logs).
        Command::Serve(a) => return serve::run(*a),
        Command::BenchLoad(a) => return bench_load::run(&a),
        // The sealer builds its own runtime.
        Command::Recover(a) => {
            return recover::run(&a).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                ExitCode::from(2)
            })
        }
        other => Cli { command: other },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Keygen(a) => keygen(&a),
        Command::Demo(a) => rt.block_on(demo::run(&a)),
        Command::Verify(a) => rt.block_on(run_verify(&a)),
        Command::Sessions(a) => rt.block_on(read::run_sessions(&a)),
        Command::Show(a) => rt.block_on(read::run_show(&a)),
        Command::Serve(_) | Command::BenchLoad(_) | Command::Recover(_) => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes one line to standard output. A reader that went away (`sealtrail
/// verify | head -1`) ends the output quietly, and the exit status stays the
/// command's; any other write error (a full disk under `> report.json`) is
/// an error.
fn out_line(args: std::fmt::Arguments<'_>) -> sealtrail::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{args}") {
        Err(source) if source.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(sealtrail::Error::Io {
                path: "standard output".into(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Opens the archive at `store`, with Object Lock `retention` in `lock_mode`
/// (`compliance` or `governance`) on every object it writes (S3 only).
fn open_archive(
    store: &str,
    retention: Option<Duration>,
    lock_mode: &str,
) -> sealtrail::Result<Archive> {
    if retention.is_some() && !store.starts_with("s3://") {
        return Err(sealtrail::Error::InvalidSetting {
            setting: "--retention",
            reason: format!("it applies to an s3:// store (Object Lock), not to {store}"),
        });
    }
    let archive = Archive::open(store)?;
    let Some(period) = retention else {
        return Ok(archive);
    };
    let mode = if lock_mode == "governance" {
        sealtrail::archive::LockMode::Governance
    } else {
        sealtrail::archive::LockMode::Compliance
    };
    archive.with_retention(sealtrail::archive::Retention { mode, period })
}

fn keygen(a: &KeygenArgs) -> sealtrail::Result<ExitCode> {
    let key = keys::generate()?;
    let public = keys::write_key_pair(&a.out, &key)?;
    outln!(
        "wrote {} (secret, keep it safe) and {} (public, give it to auditors); key id {}",
        a.out.display(),
        public.display(),
        keys::key_id(&key.verifying_key())
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn run_verify(a: &VerifyArgs) -> sealtrail::Result<ExitCode> {
    let trusted = a
        .public_keys
        .iter()
        .map(|p| keys::read_verifying_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let archive = Archive::open_existing(&a.store)?;
    let mut opts = VerifyOptions::default()
        .with_expected_writers(a.expect_writers.iter().cloned())
        .with_heartbeat_grace(a.heartbeat_grace)
        .with_threads(a.threads.into())
        .with_strict_records(a.strict);
    if let Some(t) = a.as_of {
        opts = opts.with_as_of(t);
    }
    if let Some(s) = &a.session {
        opts = opts.with_session(sealtrail::map::named_session(s));
    }
    if let Some(period) = a.check_retention {
        let mode = if a.lock_mode == "governance" {
            sealtrail::archive::LockMode::Governance
        } else {
            sealtrail::archive::LockMode::Compliance
        };
        opts = opts.with_retention_policy(sealtrail::archive::Retention { mode, period });
    }
    let bar = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bar:40} {pos}/{len} batches {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    if let Some(b) = bar.clone() {
        opts = opts.with_progress(move |done, total| {
            b.set_length(total);
            b.set_position(done);
        });
    }
    let report = verify(&archive, &trusted, &opts).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        // What each writer's seals say (which writers there are, and until
        // when an open one's newest seals could be missing unseen), then
        // what is wrong, then the summary.
        for w in &report.writer_states {
            outln!("{w}")?;
        }
        for f in &report.findings {
            outln!("{f}")?;
        }
        outln!("{}", report.summary())?;
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
