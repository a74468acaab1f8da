//! A spool that can no longer be written (the disk is full) does not stop
//! the audit trail: records are still chained and sealed (only no longer
//! durable before their seal), the loss of durability is counted, and the
//! next start on that spool recovers cleanly, archiving nothing twice.
//!
//! The test runs itself as the child process (with `SEALTRAIL_FULL_CHILD`
//! set), under a file size limit (`RLIMIT_FSIZE`) that the spool's segment
//! outgrows: its writes then fail with EFBIG, as on a full disk.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use sealtrail::Archive;
use tracing::info_span;
use tracing_subscriber::prelude::*;

const CHILD_ENV: &str = "SEALTRAIL_FULL_CHILD";
const SPANS: u64 = 3000;
/// Larger than any batch or seal object written here, smaller than the spool segment.
const FILE_LIMIT: u64 = 512 << 10;

fn builder(dir: &Path) -> sealtrail::AuditLayerBuilder {
    sealtrail::AuditLayer::builder()
        .with_store(dir.join("data").to_str().unwrap())
        .with_signing_key(key())
        .with_spool_dir(dir.join("spool"))
        .with_writer_id("full-writer")
        .with_flush_interval(Duration::from_secs(3600))
        .with_max_batch_records(100_000)
        .with_shutdown_timeout(Duration::from_secs(60))
}

fn child(dir: &Path) {
    // SAFETY: plain libc calls on this process, before any thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: FILE_LIMIT,
            rlim_max: FILE_LIMIT,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let (layer, guard) = builder(dir).build().unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for n in 0..SPANS {
            info_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                audit.session_id = "s",
                gen_ai.tool.call.arguments = "{\"claim\":\"C-1\",\"note\":\"the same long note, again and again, so that batches compress well but the spool, which is not compressed, grows past the limit\"}",
                n
            )
            .in_scope(|| {});
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let before = guard.stats();
    drop(guard);
    println!(
        "stats spool_errors={} spooled={} captured={}",
        before.spool_errors, before.spooled, before.captured
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_stops_neither_sealing_nor_the_next_start() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_full_spool_stops_neither_sealing_nor_the_next_start",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = text
        .lines()
        .find_map(|l| l.split_once("stats ").map(|(_, s)| s))
        .unwrap_or_else(|| panic!("no stats from the child: {text}"));
    let field = |name: &str| -> u64 {
        stats
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("spool_errors") > 0, "the spool never failed: {stats}");
    assert!(field("spooled") < SPANS, "{stats}");
    assert_eq!(field("captured"), SPANS, "{stats}");

    // Everything was sealed all the same.
    let archive = Archive::open(dir.path().join("data").to_str().unwrap()).unwrap();
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.records, SPANS);

    // The next start recovers the spool (its torn end cut off, the lines
    // the seals cover skipped), and archives nothing twice.
    let (_layer, guard) = builder(dir.path()).build().unwrap();
    drop(guard);
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.records, SPANS);
}
