//! `sealtrail serve`: the OTLP collector.
//!
//! Every setting is a flag, an environment variable (`SEALTRAIL_…`) and a key
//! of the optional TOML file given by `--config`; a flag or variable wins
//! over the file, the file over the default.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sealtrail::archive::{LockMode, Retention, DEFAULT_STORE};
use sealtrail::layer::DEFAULT_SPOOL_DIR;
use sealtrail::pipeline::SealerConfig;
use sealtrail::{keys, map, Archive};
use serde::Deserialize;

use crate::pipeline::{Config, Pipeline};
use crate::receivers::{otlp, Shared};

const DEFAULT_GRPC: &str = "127.0.0.1:4317";
const DEFAULT_HTTP: &str = "127.0.0.1:4318";
const DEFAULT_MAX_BODY: usize = 16 << 20;
/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServeArgs {
    /// TOML file with any of these settings (keys as the flags, without `--`).
    #[arg(long, env = "SEALTRAIL_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Archive URL: a path, file:///abs/path, or s3://bucket/prefix
    /// [default: ./sealtrail-data].
    #[arg(long, env = "SEALTRAIL_STORE")]
    store: Option<String>,
    /// Secret signing key file (see `sealtrail keygen`). Required.
    #[arg(long, env = "SEALTRAIL_SIGNING_KEY_FILE")]
    signing_key: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, env = "SEALTRAIL_OTLP_GRPC")]
    otlp_grpc: Option<String>,
    /// OTLP/HTTP listen address, also serving /healthz, /readyz and /metrics
    /// [default: 127.0.0.1:4318].
    #[arg(long, env = "SEALTRAIL_OTLP_HTTP")]
    otlp_http: Option<String>,
    /// Spool directory: records are durable here before they are acknowledged
    /// [default: ./sealtrail-spool].
    #[arg(long, env = "SEALTRAIL_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Seal pending records at least this often [default: 1s].
    #[arg(long, env = "SEALTRAIL_FLUSH_INTERVAL")]
    flush_interval: Option<String>,
    /// Seal an empty batch after this long without one [default: 60s].
    #[arg(long, env = "SEALTRAIL_HEARTBEAT")]
    heartbeat: Option<String>,
    /// The largest request body, compressed and decompressed (e.g. 16MiB, 4096)
    /// [default: 16MiB].
    #[arg(long, env = "SEALTRAIL_MAX_BODY")]
    max_body: Option<String>,
    /// Bytes of records waiting for their seal (the store failing) beyond
    /// which exports are refused as retryable: HTTP 503 / gRPC UNAVAILABLE
    /// [default: 256MiB].
    #[arg(long, env = "SEALTRAIL_MAX_BACKLOG")]
    max_backlog: Option<String>,
    /// Connections each receiver (gRPC, HTTP) keeps open at once; further
    /// clients wait until one closes [default: 256].
    #[arg(long, env = "SEALTRAIL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Close a connection on which nothing was read or written for this
    /// long (clients reconnect) [default: 60s].
    #[arg(long, env = "SEALTRAIL_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// File holding the bearer token every request must carry
    /// (`Authorization: Bearer <token>`); no check without it.
    #[arg(long, env = "SEALTRAIL_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// How long a span waits for an ancestor to name its session before its
    /// trace id becomes its session [default: 30s].
    #[arg(long, env = "SEALTRAIL_HOLD_WAIT")]
    hold_wait: Option<String>,
    /// At shutdown, leave the spans still waiting for their session in the
    /// spool for the next start with the same spool directory. Without it
    /// they are archived under their trace id, so that nothing acknowledged
    /// stays behind (a spool that does not outlive the process).
    #[arg(long, env = "SEALTRAIL_KEEP_HELD_ON_SHUTDOWN")]
    #[serde(default)]
    keep_held_on_shutdown: bool,
    /// Attributes naming a span's session, in order of preference
    /// (comma-separated) [default: audit.session_id, gen_ai.conversation.id,
    /// session.id, traceloop.association.properties.session_id, langfuse.session.id].
    #[arg(long, env = "SEALTRAIL_SESSION_KEYS", value_delimiter = ',')]
    session_keys: Option<Vec<String>>,
    /// Writer id [default: made once and kept in the spool directory].
    #[arg(long, env = "SEALTRAIL_WRITER_ID")]
    writer_id: Option<String>,
    /// Seal when this many records are pending [default: 10000].
    #[arg(long, env = "SEALTRAIL_MAX_BATCH_RECORDS")]
    max_batch_records: Option<usize>,
    /// zstd level of batch objects, 1 (least CPU) to 19 (smallest) [default: 1].
    #[arg(long, env = "SEALTRAIL_ZSTD_LEVEL")]
    zstd_level: Option<i32>,
    /// S3 only: lock every object under Object Lock for this long (e.g. 7y, 90d).
    #[arg(long, env = "SEALTRAIL_RETENTION")]
    retention: Option<String>,
    /// The Object Lock mode of --retention: compliance or governance [default: compliance].
    #[arg(long, env = "SEALTRAIL_LOCK_MODE")]
    lock_mode: Option<String>,
    /// S3 only: accept a bucket without Object Lock.
    #[arg(long, env = "SEALTRAIL_ALLOW_UNLOCKED")]
    #[serde(default)]
    allow_unlocked: bool,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SEALTRAIL_LOG_FORMAT")]
    log_format: Option<String>,
}

impl ServeArgs {
    /// Fills what the flags and environment left unset from the config file.
    fn merged(self) -> Result<ServeArgs, String> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let file: ServeArgs = toml::from_str(&text)
            .map_err(|e| format!("the config file {} is not valid: {e}", path.display()))?;
        macro_rules! or {
            ($($f:ident),*) => { ServeArgs { $($f: self.$f.or(file.$f),)* config: self.config.clone(), allow_unlocked: self.allow_unlocked || file.allow_unlocked, keep_held_on_shutdown: self.keep_held_on_shutdown || file.keep_held_on_shutdown } };
        }
        Ok(or!(
            store,
            signing_key,
            otlp_grpc,
            otlp_http,
            spool_dir,
            flush_interval,
            heartbeat,
            max_body,
            max_backlog,
            max_connections,
            idle_timeout,
            auth_token_file,
            hold_wait,
            session_keys,
            writer_id,
            max_batch_records,
            zstd_level,
            retention,
            lock_mode,
            log_format
        ))
    }
}

fn duration(name: &str, v: Option<&str>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| format!("--{name} {s:?}: {e}")),
    }
}

/// `16MiB`, `512KiB`, `1GiB`, `1000000`, `10MB`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 16MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

fn init_logs(format: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALTRAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        "text" => b.try_init(),
        "json" => b.json().try_init(),
        other => return Err(format!("--log-format {other:?}: use text or json")),
    }
    .map_err(|e| e.to_string())
}

fn read_token(path: &Path) -> Result<Arc<str>, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --auth-token-file {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("--auth-token-file {} is empty", path.display()));
    }
    Ok(t.into())
}

async fn shutdown_signal(term: Option<tokio::signal::unix::Signal>) {
    let Some(mut term) = term else {
        return std::future::pending().await;
    };
    // SIGHUP (a closed terminal) would otherwise end the process without
    // its final seal: it stops the collector as SIGTERM does.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let hangup = async move {
        match hup {
            Some(mut h) => h.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: sealing and stopping"),
        _ = hangup => tracing::info!("SIGHUP: sealing and stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: sealing and stopping"),
    }
}

/// Runs the collector until SIGTERM or SIGINT; exit 0 after the final seal.
pub(crate) fn run(args: ServeArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("sealtrail serve: {msg}");
        ExitCode::from(2)
    };
    let a = match args.merged() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if let Err(e) = init_logs(a.log_format.as_deref().unwrap_or("text")) {
        return fail(e);
    }
    match start(a) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn start(a: ServeArgs) -> Result<ExitCode, String> {
    // Every setting is checked before anything is created or bound.
    let store = a.store.clone().unwrap_or_else(|| DEFAULT_STORE.into());
    let store = store.as_str();
    if store.starts_with("memory:") {
        return Err(format!(
            "--store {store}: an in-memory archive is lost when the collector stops, so \
             nothing it acknowledged would be kept; use a directory or s3://"
        ));
    }
    let mode = match a.lock_mode.as_deref().unwrap_or("compliance") {
        "compliance" => LockMode::Compliance,
        "governance" => LockMode::Governance,
        other => {
            return Err(format!(
                "--lock-mode {other:?}: use compliance or governance"
            ))
        }
    };
    let retention = a
        .retention
        .as_deref()
        .map(|r| {
            humantime::parse_duration(r)
                .map(|period| Retention { mode, period })
                .map_err(|e| format!("--retention {r:?}: {e}"))
        })
        .transpose()?;
    if retention.is_some() && !store.starts_with("s3://") {
        return Err(format!(
            "--retention applies to an s3:// store (Object Lock), not to {store}"
        ));
    }
    let key_path = a.signing_key.clone().ok_or_else(|| {
        "a signing key is required: --signing-key FILE (or SEALTRAIL_SIGNING_KEY_FILE); create one with `sealtrail keygen`".to_owned()
    })?;
    let key = keys::read_signing_key(&key_path).map_err(|e| e.to_string())?;
    let spool_dir = a
        .spool_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_SPOOL_DIR.into());
    if let Some(id) = &a.writer_id {
        if !sealtrail::writer::valid_writer_id(id) {
            return Err(format!(
                "--writer-id {id:?} is not a valid writer id: use 1 to 64 characters from \
                 [A-Za-z0-9._-], not starting with '.'"
            ));
        }
    }
    let max_body = a
        .max_body
        .as_deref()
        .map(|s| parse_size(s).map_err(|e| format!("--max-body {e}")))
        .transpose()?
        .unwrap_or(DEFAULT_MAX_BODY);
    let max_backlog = a
        .max_backlog
        .as_deref()
        .map(|s| parse_size(s).map_err(|e| format!("--max-backlog {e}")))
        .transpose()?
        .unwrap_or(crate::pipeline::DEFAULT_MAX_BACKLOG);
    let max_connections = a
        .max_connections
        .unwrap_or(crate::receivers::DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let idle_timeout = duration(
        "idle-timeout",
        a.idle_timeout.as_deref(),
        crate::receivers::DEFAULT_IDLE_TIMEOUT,
    )?;
    if idle_timeout < Duration::from_millis(100) {
        return Err("--idle-timeout must be at least 100ms".into());
    }
    let token = a.auth_token_file.as_deref().map(read_token).transpose()?;
    let flush_interval = duration(
        "flush-interval",
        a.flush_interval.as_deref(),
        Duration::from_secs(1),
    )?;
    let heartbeat = duration(
        "heartbeat",
        a.heartbeat.as_deref(),
        sealtrail::writer::DEFAULT_HEARTBEAT,
    )?;
    let zstd_level = a
        .zstd_level
        .unwrap_or(sealtrail::writer::DEFAULT_ZSTD_LEVEL);
    if !(1..=19).contains(&zstd_level) {
        return Err(format!(
            "--zstd-level {zstd_level}: use 1 (fastest) to 19 (smallest)"
        ));
    }
    if flush_interval < Duration::from_millis(1) {
        return Err("--flush-interval must be at least 1ms".into());
    }
    if heartbeat < flush_interval {
        return Err("--heartbeat must not be shorter than --flush-interval".into());
    }
    let hold_wait = duration("hold-wait", a.hold_wait.as_deref(), Duration::from_secs(30))?;
    if a.max_batch_records == Some(0) {
        return Err("--max-batch-records must be at least 1".into());
    }
    if let Some(keys) = &a.session_keys {
        if keys.is_empty() || keys.iter().any(|k| k.trim().is_empty()) {
            return Err(format!(
                "--session-keys {keys:?}: name one or more attributes, without empty ones"
            ));
        }
    }
    let key_id = keys::key_id(&key.verifying_key());
    let spool_shown = spool_dir.display().to_string();
    // Creates the archive directory (or checks the bucket), the spool
    // directory and the writer id: once the settings are good and the
    // ports are bound.
    let open = |a: &ServeArgs| -> Result<(Config, String), String> {
        let mut archive = Archive::open(store).map_err(|e| e.to_string())?;
        if let Some(r) = retention {
            archive = archive.with_retention(r).map_err(|e| e.to_string())?;
        }
        sealtrail::spool::create_dir(&spool_dir)
            .map_err(|e| format!("cannot create the spool directory: {e}"))?;
        let writer_id = match &a.writer_id {
            Some(id) => id.clone(),
            None => {
                sealtrail::writer::persisted_writer_id(&spool_dir).map_err(|e| e.to_string())?
            }
        };
        let cfg = Config {
            sealer: SealerConfig {
                archive,
                key: key.clone(),
                writer_id: writer_id.clone(),
                flush_interval,
                heartbeat,
                max_batch_records: a.max_batch_records.unwrap_or(10_000),
                max_batch_bytes: 8 << 20,
                allow_unlocked: a.allow_unlocked,
                zstd_level,
            },
            spool_dir: spool_dir.clone(),
            hold_wait,
            session_keys: a.session_keys.clone().unwrap_or_else(|| {
                map::DEFAULT_SESSION_KEYS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            max_backlog,
            keep_held_on_shutdown: a.keep_held_on_shutdown,
        };
        Ok((cfg, writer_id))
    };
    let grpc_addr = a.otlp_grpc.clone().unwrap_or_else(|| DEFAULT_GRPC.into());
    let http_addr = a.otlp_http.clone().unwrap_or_else(|| DEFAULT_HTTP.into());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sealtrail-serve")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        // From here on SIGTERM is ours: it seals before exiting.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        // Bind first: a port in use is an error before anything else starts.
        let grpc = tokio::net::TcpListener::bind(&grpc_addr)
            .await
            .map_err(|e| format!("cannot listen on --otlp-grpc {grpc_addr}: {e}"))?;
        let http = tokio::net::TcpListener::bind(&http_addr)
            .await
            .map_err(|e| format!("cannot listen on --otlp-http {http_addr}: {e}"))?;
        let (cfg, writer_id) = open(&a)?;
        let (pipeline, thread) = Pipeline::start(cfg).map_err(|e| e.to_string())?;
        pipeline.metrics.ready.store(true, Ordering::Relaxed);
        let shared = Shared {
            pipeline: pipeline.clone(),
            max_body,
            token,
            in_flight: Arc::new(tokio::sync::Semaphore::new(crate::receivers::MAX_IN_FLIGHT)),
        };
        tracing::info!(
            grpc = %grpc.local_addr().map_err(|e| e.to_string())?,
            http = %http.local_addr().map_err(|e| e.to_string())?,
            writer = %writer_id,
            key_id = %key_id,
            store = %store_display(&a.store),
            spool = %spool_shown,
            "listening"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limited = |l| crate::receivers::limit::Listener::new(l, max_connections, idle_timeout);
        let g = tokio::spawn(otlp::grpc::serve(
            shared.clone(),
            limited(grpc),
            stopped(stop_rx.clone()),
        ));
        let h = tokio::spawn(otlp::http::serve(shared, limited(http), stopped(stop_rx)));
        shutdown_signal(term).await;
        pipeline.metrics.ready.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        // In-flight requests finish (and are acknowledged) before the final
        // seal; connections that stay open do not hold the shutdown past
        // SHUTDOWN_GRACE.
        let receivers = async {
            if let Ok(Err(e)) = g.await {
                tracing::error!(error = %e, "the gRPC receiver failed");
            }
            if let Ok(Err(e)) = h.await {
                tracing::error!(error = %e, "the HTTP receiver failed");
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, receivers)
            .await
            .is_err()
        {
            tracing::warn!("clients kept connections open; sealing without waiting for them");
        }
        let sealed = pipeline.shutdown().await;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let m = &pipeline.metrics.sealer;
        if let Err(e) = sealed {
            // Nothing is lost (the spool keeps it), but it is not archived:
            // not a clean stop.
            tracing::error!("{e}");
            return Ok(ExitCode::FAILURE);
        }
        tracing::info!(
            sealed = m.sealed.load(Ordering::Relaxed),
            held = pipeline.metrics.held.load(Ordering::Relaxed),
            "stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn store_display(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| DEFAULT_STORE.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10 MB").unwrap(), 10_000_000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn the_config_file_fills_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealtrail.toml");
        std::fs::write(
            &path,
            "store = \"/srv/archive\"\nmax-body = \"1MiB\"\nmax-connections = 64\notlp-grpc = \"0.0.0.0:4317\"\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(path.clone()),
            otlp_grpc: Some("127.0.0.1:9".into()),
            ..Default::default()
        }
        .merged()
        .unwrap();
        assert_eq!(a.store.as_deref(), Some("/srv/archive"));
        assert_eq!(a.max_body.as_deref(), Some("1MiB"));
        assert_eq!(a.max_connections, Some(64));
        assert_eq!(a.otlp_grpc.as_deref(), Some("127.0.0.1:9"));
        std::fs::write(&path, "stor = \"typo\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .merged()
        .unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
