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
    let reported: u64 = report
        .findings
        .iter()
        .map(|f| match f.problem {
            Problem::RecordsDropped { count, .. } => count,
            ref p => panic!("unexpected finding {p:?}"),
        })
        .sum();
    assert_eq!(reported, stats.dropped, "{}", show(&report));
    assert!(!report.is_intact());
}
