//! Overload: `Block` never drops under a slow store; `DropWithGapRecord`
//! drops, and says so in a signed gap record that verify reports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::ObjectStore;
use sealtrail::layer::Overload;
use sealtrail::verify::Problem;
use sealtrail::{Archive, Kind};
use tracing::info_span;
use tracing_subscriber::prelude::*;

fn slow_archive(put_delay: Duration) -> Archive {
    let cfg = ThrottleConfig {
        wait_put_per_call: put_delay,
        ..Default::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(InMemory::new(), cfg));
    Archive::from_store(store, "", "memory://slow")
}

/// The records the report says were dropped (in signed gap records); any
/// other finding fails the test.
fn stated_losses(report: &sealtrail::Report) -> u64 {
    report
        .findings
        .iter()
        .map(|f| match f.problem {
            Problem::RecordsDropped { count, .. } => count,
            ref p => panic!("unexpected finding {p:?}"),
        })
        .sum()
}

/// A layer whose queue holds 1 MiB and whose worker takes no more spans
/// until a seal succeeds (a backlog limit of 1 byte).
fn stalled_1_mib_queue(archive: &Archive, dir: &std::path::Path) -> sealtrail::AuditLayerBuilder {
    layer_builder(archive, dir)
        .with_max_queue_bytes(1 << 20)
        .with_max_backlog(1)
        .with_flush_interval(Duration::from_millis(1))
        .with_shutdown_timeout(Duration::from_secs(120))
}

/// `n` chat spans of a 200 KB prompt each.
fn emit_prompts(layer: sealtrail::AuditLayer, n: usize) {
    let prompt = "p".repeat(200_000);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..n {
            info_span!(
                "chat",
                gen_ai.operation.name = "chat",
                audit.session_id = "s",
                gen_ai.prompt = prompt.as_str(),
                i
            )
            .in_scope(|| {});
        }
    });
}

fn emit(layer: sealtrail::AuditLayer, n: usize) {
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..n {
            info_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                audit.session_id = "s",
                i
            )
            .in_scope(|| {});
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_never_drops_under_a_slow_store() {
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_millis(100));
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_queue_capacity(8)
        .with_max_batch_records(16)
        .with_flush_interval(Duration::from_millis(1))
        .with_shutdown_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let n = 400;
    let started = std::time::Instant::now();
    emit(layer, n);
    let stats = guard.stats();
    drop(guard);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.captured, n as u64);
    // The store was the bottleneck: the agent waited for it (backpressure).
    assert!(stats.seals >= 2, "{stats:?}");
    let _ = started;
    let records = all_records(&archive).await;
    assert_eq!(records.len(), n);
    assert!(records.iter().all(|r| r.kind == Kind::ToolCall));
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_gap_record_states_its_loss_and_verify_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_millis(200));
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_overload(Overload::DropWithGapRecord)
        .with_queue_capacity(4)
        .with_max_batch_records(4)
        .with_flush_interval(Duration::from_millis(1))
        .with_shutdown_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let n = 3000;
    emit(layer, n);
    let stats = guard.stats();
    drop(guard);
    assert!(stats.dropped > 0, "the queue never overflowed: {stats:?}");
    assert_eq!(stats.captured + stats.dropped, n as u64);

    let records = all_records(&archive).await;
    let gaps: Vec<_> = records.iter().filter(|r| r.kind == Kind::Gap).collect();
    let kept = records.iter().filter(|r| r.kind == Kind::ToolCall).count() as u64;
    assert_eq!(kept, stats.captured);
    let stated: u64 = gaps
        .iter()
        .map(|g| match g.attributes.get("audit.dropped") {
            Some(sealtrail::Value::Int(n)) => *n as u64,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(stated, stats.dropped);
    assert!(gaps
        .iter()
        .all(|g| g.session == sealtrail::layer::GAP_SESSION));

    let report = verify_now(&archive).await;
    let reported = stated_losses(&report);
    assert_eq!(reported, stats.dropped, "{}", show(&report));
    assert!(!report.is_intact());

    // Verifying one session still states the losses (a gap record does not
    // say which sessions lost spans).
    let one = sealtrail::verify(
        &archive,
        &[key().verifying_key()],
        &sealtrail::VerifyOptions::default().with_session("s"),
    )
    .await
    .unwrap();
    let reported = stated_losses(&one);
    assert_eq!(reported, stats.dropped, "{}", show(&one));
}

/// While the store fails, `Block` keeps memory bounded: past the backlog
/// limit the worker takes no more spans, the queue fills and the agent
/// waits. Nothing is dropped, and once the store is back everything is
/// sealed and verify is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_at_the_backlog_limit_while_the_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let archive = Archive::open(data.to_str().unwrap()).unwrap();
    const BACKLOG: usize = 32 << 10;
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_queue_capacity(8)
        .with_max_batch_records(16)
        .with_max_backlog(BACKLOG)
        .with_flush_interval(Duration::from_millis(1))
        .with_shutdown_timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // The store fails: its directory is replaced by a file.
    let moved = dir.path().join("data.away");
    std::fs::rename(&data, &moved).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();

    let n = 2_000;
    let emitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let e = emitted.clone();
    let agent = std::thread::spawn(move || {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for i in 0..n {
                info_span!(
                    "execute_tool",
                    gen_ai.operation.name = "execute_tool",
                    audit.session_id = "s",
                    i
                )
                .in_scope(|| {});
                e.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    });

    // The agent stops: it waits for room rather than filling memory.
    let progress = || emitted.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = progress();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = progress();
        assert!(
            now < n,
            "all {n} spans were taken while the store failed: no backpressure"
        );
        if now == last && guard.stats().store_errors > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never waited"
        );
        last = now;
    }
    let stats = guard.stats();
    assert!(
        stats.backlog_bytes >= BACKLOG as u64 && stats.backlog_bytes < 2 * BACKLOG as u64,
        "{stats:?}"
    );
    assert_eq!(stats.dropped, 0);

    // The store is back: the agent goes on, and everything is sealed.
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();
    agent.join().unwrap();
    let stats = guard.stats();
    drop(guard);
    assert_eq!((stats.captured, stats.dropped), (n as u64, 0));
    let records = all_records(&archive).await;
    assert_eq!(records.len(), n);
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
}

/// With a healthy store, a backlog limit smaller than a batch does not make
/// the agent wait for the flush interval: reaching it seals at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_backlog_seals_early_rather_than_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_queue_capacity(16)
        .with_max_backlog(16 << 10)
        .with_flush_interval(Duration::from_secs(3600))
        .with_heartbeat(Duration::from_secs(3600))
        .build()
        .unwrap();
    let n = 2_000;
    emit(layer, n);
    // Reaching the limit seals at once, not at the flush interval (an hour).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while guard.stats().sealed == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing sealed: {:?}",
            guard.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(guard.stats().captured, n as u64);
    drop(guard);
    assert_eq!(all_records(&archive).await.len(), n);
}

/// Dropping the guard waits at most the shutdown timeout, even when the
/// worker is stuck on a store that does not answer and the queue is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_is_bounded_while_the_store_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_secs(120));
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_overload(Overload::DropWithGapRecord)
        .with_queue_capacity(1)
        .with_flush_interval(Duration::from_millis(1))
        .with_shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let agent = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let spans = |n: usize| {
        tracing::dispatcher::with_default(&agent, || {
            for i in 0..n {
                info_span!("execute_tool", gen_ai.operation.name = "execute_tool", i)
                    .in_scope(|| {});
            }
        })
    };
    // A seal starts, and hangs in the store.
    spans(5);
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    // The worker now waits for that seal (1 s bound for the caller)...
    assert!(guard.flush().is_err(), "the store never answered");
    // ... while the queue fills.
    spans(50);
    assert!(guard.stats().dropped > 0, "{:?}", guard.stats());
    drop(guard);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "flush and drop waited {waited:?}; the bound is 1 s each"
    );
}

/// Spans that close while the guard's final seal is being written are not
/// counted as captured and then lost: every span counted as captured is in
/// the archive, the others are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_closing_during_the_final_seal_are_archived_or_counted_as_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_millis(300));
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_flush_interval(Duration::from_secs(3600))
        .with_shutdown_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let agent = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let stop = Arc::new(AtomicBool::new(false));
    let emitter = {
        let (agent, stop) = (agent.clone(), stop.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&agent, || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    info_span!("execute_tool", gen_ai.operation.name = "execute_tool", i)
                        .in_scope(|| {});
                    i += 1;
                    if i.is_multiple_of(64) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                i
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // The final seal takes at least 300 ms (two puts), while spans go on closing.
    drop(guard);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let emitted = emitter.join().unwrap();
    let stats = agent
        .downcast_ref::<sealtrail::AuditLayer>()
        .expect("the audit layer")
        .stats();
    let records = all_records(&archive).await;
    let archived = records.iter().filter(|r| r.kind == Kind::ToolCall).count() as u64;
    assert!(
        stats.dropped > 0,
        "spans closed after the shutdown: {stats:?}"
    );
    assert_eq!(archived, stats.captured, "{stats:?}");
    assert_eq!(stats.captured + stats.dropped, emitted, "{stats:?}");
    let report = verify_now(&archive).await;
    assert!(
        report
            .findings
            .iter()
            .all(|f| matches!(f.problem, Problem::RecordsDropped { .. })),
        "{}",
        show(&report)
    );
}

/// A captured span still open when the guard is dropped (a task still
/// running, a span around the code that drops it) is stated in a signed gap
/// record, and counted as dropped once, also when it closes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_open_at_shutdown_are_stated_in_a_gap_record() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let agent = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&agent, || {
        let outer = info_span!("invoke_agent", gen_ai.operation.name = "invoke_agent");
        let _in = outer.enter();
        info_span!("execute_tool", gen_ai.operation.name = "execute_tool").in_scope(|| {});
        let still_open = info_span!("chat", gen_ai.operation.name = "chat");
        drop(guard);
        drop(still_open);
    });
    let stats = agent
        .downcast_ref::<sealtrail::AuditLayer>()
        .unwrap()
        .stats();
    assert_eq!((stats.captured, stats.dropped), (1, 2), "{stats:?}");
    let records = all_records(&archive).await;
    let gap = records
        .iter()
        .find(|r| r.kind == Kind::Gap)
        .expect("a gap record");
    assert_eq!(gap.name, "spans open at shutdown");
    assert_eq!(
        gap.attributes.get("audit.open_at_shutdown"),
        Some(&sealtrail::Value::Int(2))
    );
    let report = verify_now(&archive).await;
    let dropped: Vec<u64> = report
        .findings
        .iter()
        .filter_map(|f| match f.problem {
            Problem::RecordsDropped { count, .. } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [2], "{}", show(&report));
}

/// `FlushGuard::shutdown` says how the final seal went: the counters when it
/// was written, the store's error when it was not (what it did not seal
/// stays in the spool, and the next start seals it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_the_final_seal() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    emit(layer, 3);
    let stats = guard.shutdown().expect("sealed");
    assert_eq!((stats.captured, stats.sealed), (3, 3), "{stats:?}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let archive = Archive::open(data.to_str().unwrap()).unwrap();
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_shutdown_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // The store fails: its directory is replaced by a file.
    std::fs::rename(&data, dir.path().join("data.away")).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();
    emit(layer, 3);
    let err = guard
        .shutdown()
        .expect_err("the store refused the final seal");
    assert!(
        matches!(
            err,
            sealtrail::Error::Store { .. } | sealtrail::Error::Io { .. }
        ),
        "{err:?}"
    );
}

/// The queue to the worker is bounded in bytes as well as in spans: while
/// the worker waits for the store, large spans (a 200 KB prompt each) fill
/// the 1 MiB byte bound long before the 65,536-span capacity, and the
/// overload policy applies (here: dropped, and stated in a gap record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_in_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_millis(500));
    let (layer, guard) = stalled_1_mib_queue(&archive, dir.path())
        .with_overload(Overload::DropWithGapRecord)
        .build()
        .unwrap();
    emit_prompts(layer, 50);
    let stats = guard.stats();
    drop(guard);
    assert_eq!(stats.captured + stats.dropped, 50, "{stats:?}");
    // At most 5 in the queue (1 MiB / 200 KB), one in the worker's hands,
    // one sealing: the rest is dropped.
    assert!(stats.captured <= 8, "{stats:?}");
    let records = all_records(&archive).await;
    let kept = records.iter().filter(|r| r.kind == Kind::LlmCall).count() as u64;
    assert_eq!(kept, stats.captured);
    let report = verify_now(&archive).await;
    let reported = stated_losses(&report);
    assert_eq!(reported, stats.dropped, "{}", show(&report));
}

/// Under `Block`, a full byte bound makes the agent wait for room, which
/// the worker gives back as it takes spans: nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_room_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = slow_archive(Duration::from_millis(50));
    let (layer, guard) = stalled_1_mib_queue(&archive, dir.path()).build().unwrap();
    emit_prompts(layer, 30);
    let stats = guard.shutdown().unwrap();
    assert_eq!((stats.captured, stats.dropped), (30, 0), "{stats:?}");
    let records = all_records(&archive).await;
    assert_eq!(
        records.iter().filter(|r| r.kind == Kind::LlmCall).count(),
        30
    );
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
}
