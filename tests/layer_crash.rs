//! A process killed with SIGKILL mid-run loses nothing it had spooled: after
//! a restart on the same spool, every spooled record is archived once, the
//! chains continue, and the archive verifies.
//!
//! The test runs itself as the child process (with `SEALTRAIL_CRASH_CHILD`
//! set), the way a real agent would run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sealtrail::{Archive, Value};
use tracing::info_span;
use tracing_subscriber::prelude::*;

const CHILD_ENV: &str = "SEALTRAIL_CRASH_CHILD";
const KILL_AFTER_SPOOLED: u64 = 2500;

fn builder(dir: &Path) -> sealtrail::AuditLayerBuilder {
    sealtrail::AuditLayer::builder()
        .with_store(dir.join("data").to_str().unwrap())
        .with_signing_key(key())
        .with_spool_dir(dir.join("spool"))
        .with_writer_id("crash-writer")
        // Seal only every 1000 records, so that spooled-but-unsealed records
        // are certain to exist when the process is killed.
        .with_flush_interval(Duration::from_secs(3600))
        .with_max_batch_records(1000)
}

fn span(n: u64) {
    let session = format!("s{}", n % 3);
    info_span!(
        "execute_tool",
        gen_ai.operation.name = "execute_tool",
        audit.session_id = session.as_str(),
        n
    )
    .in_scope(|| {});
}

fn child(dir: &Path) {
    let (layer, guard) = builder(dir).build().unwrap();
    let _s = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let started = Instant::now();
    let mut out = std::io::stdout();
    for n in 0.. {
        span(n);
        if n % 50 == 0 {
            writeln!(out, "spooled {}", guard.stats().spooled).unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the parent never killed this child"
        );
    }
}

#[test]
fn a_killed_writer_loses_nothing_it_spooled() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_writer_loses_nothing_it_spooled",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut spooled = 0;
    for line in BufReader::new(proc.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("spooled ") {
            spooled = n.parse().unwrap();
            if spooled >= KILL_AFTER_SPOOLED {
                break;
            }
        }
    }
    proc.kill().unwrap(); // SIGKILL
    let status = proc.wait().unwrap();
    assert!(!status.success());
    assert!(
        spooled >= KILL_AFTER_SPOOLED,
        "the child stopped early at {spooled}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let archive = Archive::open(dir.path().join("data").to_str().unwrap()).unwrap();
    let before = rt.block_on(all_records(&archive)).len() as u64;
    assert!(
        before < spooled,
        "some spooled records were not sealed before the kill ({before} of {spooled})"
    );

    // Restart on the same spool and store; add a few more spans.
    let (layer, guard) = builder(dir.path()).build().unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for n in 1_000_000..1_000_010 {
            span(n);
        }
    });
    drop(guard);

    let records = rt.block_on(all_records(&archive));
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for r in &records {
        if let Some(Value::Int(n)) = r.attributes.get("n") {
            *seen.entry(*n).or_default() += 1;
        }
    }
    for n in 0..spooled as i64 {
        assert_eq!(
            seen.get(&n),
            Some(&1),
            "span {n} (spooled before the kill) is archived exactly once"
        );
    }
    assert!(seen.values().all(|c| *c == 1), "no span is archived twice");
    for n in 1_000_000..1_000_010 {
        assert_eq!(seen.get(&n), Some(&1));
    }
    // Chains continue across the restart: per session, seq 0, 1, 2, … in archive order.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for r in &records {
        let e = next.entry(r.session.as_str()).or_default();
        assert_eq!(r.seq, *e, "session {}", r.session);
        *e += 1;
    }
    let report = rt.block_on(verify_now(&archive));
    assert!(report.is_intact(), "{}", show(&report));
    eprintln!("killed after {spooled} spooled, {before} sealed before the kill, {} archived after restart", records.len());
}
