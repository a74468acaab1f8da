//! `sealtrail recover`: archive a stopped writer's spool under a new writer id.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sealtrail::keys;
use sealtrail::pipeline::SealerConfig;

#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// The spool directory of the writer that stopped (a collector's
    /// --spool-dir, or an audit layer's spool).
    #[arg(long, required = true)]
    spool_dir: PathBuf,
    /// The archive the stopped writer wrote to (a path, file:///abs/path, or
    /// s3://bucket/prefix); no default, so that it is never guessed.
    #[arg(long, env = "SEALTRAIL_STORE", required = true)]
    store: String,
    /// Signing key (PKCS#8 PEM) of the new writer.
    #[arg(long, env = "SEALTRAIL_SIGNING_KEY_FILE", required = true)]
    signing_key: PathBuf,
    /// Public key(s) the stopped writer's seals are signed with (repeat, or
    /// separate with commas; default: the public key of --signing-key).
    /// Which records are sealed already is read only from seals that verify
    /// with one of them.
    #[arg(long = "public-key", value_delimiter = ',')]
    public_keys: Vec<PathBuf>,
    /// The stopped writer's id (default: as the spool's conflict record
    /// names it, else the spool's default writer id).
    #[arg(long)]
    from_writer: Option<String>,
    /// The new writer id (default: a new one, `<host>-<8 hex digits>`); it
    /// must not have seals yet.
    #[arg(long)]
    writer_id: Option<String>,
    /// Recover a spool whose writer recorded no conflict (its start refuses
    /// because the archive's seals do not cover its records).
    #[arg(long)]
    force: bool,
    /// S3 only: lock every object under Object Lock for this long (e.g. 7y, 90d).
    #[arg(long, env = "SEALTRAIL_RETENTION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// The Object Lock mode of --retention.
    #[arg(long, env = "SEALTRAIL_LOCK_MODE", default_value = "compliance", value_parser = ["compliance", "governance"])]
    lock_mode: String,
    /// S3 only: accept a bucket without Object Lock.
    #[arg(long, env = "SEALTRAIL_ALLOW_UNLOCKED")]
    allow_unlocked: bool,
}

/// Runs outside any async runtime: the sealer has its own.
pub(crate) fn run(a: &RecoverArgs) -> sealtrail::Result<ExitCode> {
    if let Some(id) = &a.writer_id {
        if !sealtrail::writer::valid_writer_id(id) {
            return Err(sealtrail::Error::InvalidWriterId { id: id.clone() });
        }
    }
    let key = keys::read_signing_key(&a.signing_key)?;
    let trusted = a
        .public_keys
        .iter()
        .map(|p| keys::read_verifying_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let archive = crate::open_archive(&a.store, a.retention, &a.lock_mode)?;
    let cfg = SealerConfig {
        archive,
        key,
        writer_id: a.writer_id.clone().unwrap_or_default(),
        flush_interval: Duration::from_secs(1),
        heartbeat: sealtrail::writer::DEFAULT_HEARTBEAT,
        max_batch_records: 10_000,
        max_batch_bytes: 8 << 20,
        allow_unlocked: a.allow_unlocked,
        zstd_level: sealtrail::writer::DEFAULT_ZSTD_LEVEL,
    };
    let r = sealtrail::recover::recover_spool(
        &a.spool_dir,
        a.from_writer.as_deref(),
        cfg,
        &trusted,
        a.force,
    )?;
    let dir = a.spool_dir.display();
    if r.into_writer.is_empty() {
        outln!(
            "{dir}: nothing to move: the {} record(s) it holds are sealed by writer {} already; \
             it holds nothing else that is acknowledged",
            r.already_sealed,
            r.from_writer
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if r.moved == 0 && r.resumed && r.closed_at.is_none() {
        outln!(
            "{dir}: its records are archived as writer {} already (an earlier recover); nothing to do",
            r.into_writer
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{dir}: {} record(s) of writer {} archived as writer {}{}{}",
        r.moved,
        r.from_writer,
        r.into_writer,
        match r.closed_at {
            Some(n) => format!(", sealed up to batch {n} and closed"),
            None => String::new(),
        },
        if r.already_sealed > 0 {
            format!(
                "; {} spooled record(s) that {} had sealed were left as they are",
                r.already_sealed, r.from_writer
            )
        } else {
            String::new()
        }
    )?;
    outln!(
        "verify reports any batch object of {} that no seal covers (written when the conflict was found); \
         {dir} is kept: remove it once verify reports writer {}",
        r.from_writer,
        r.into_writer
    )?;
    Ok(ExitCode::SUCCESS)
}
