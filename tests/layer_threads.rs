//! 8 threads × 100 sessions at once: every session's chain is contiguous and
//! the archive verifies.

mod common;

use std::collections::HashMap;

use common::*;
use sealtrail::Archive;
use tracing::info_span;
use tracing_subscriber::prelude::*;

const THREADS: usize = 8;
const SESSIONS_PER_THREAD: usize = 100;
const SPANS_PER_SESSION: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_threads_times_a_hundred_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path())
        .with_flush_interval(std::time::Duration::from_millis(5))
        .with_max_batch_records(500)
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let d = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&d, || {
                    // Interleave this thread's sessions.
                    for step in 0..SPANS_PER_SESSION {
                        for s in 0..SESSIONS_PER_THREAD {
                            let session = format!("t{t}-s{s}");
                            info_span!(
                                "chat",
                                gen_ai.operation.name = "chat",
                                session.id = session.as_str(),
                                step
                            )
                            .in_scope(|| {});
                        }
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(dispatch);
    let stats = guard.stats();
    drop(guard);
    let total = THREADS * SESSIONS_PER_THREAD * SPANS_PER_SESSION;
    assert_eq!((stats.captured, stats.dropped), (total as u64, 0));

    let records = all_records(&archive).await;
    assert_eq!(records.len(), total);
    let mut per_session: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    for r in &records {
        let step = match r.attributes.get("step") {
            Some(sealtrail::Value::Int(i)) => *i,
            other => panic!("{other:?}"),
        };
        per_session
            .entry(r.session.as_str())
            .or_default()
            .push((r.seq, step));
    }
    assert_eq!(per_session.len(), THREADS * SESSIONS_PER_THREAD);
    for (s, v) in &per_session {
        let seqs: Vec<u64> = v.iter().map(|x| x.0).collect();
        assert_eq!(
            seqs,
            (0..SPANS_PER_SESSION as u64).collect::<Vec<_>>(),
            "session {s}"
        );
        // One thread per session: the chain follows the order the spans closed.
        let steps: Vec<i64> = v.iter().map(|x| x.1).collect();
        assert_eq!(
            steps,
            (0..SPANS_PER_SESSION as i64).collect::<Vec<_>>(),
            "session {s}"
        );
    }
    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.sessions, (THREADS * SESSIONS_PER_THREAD) as u64);
    assert!(
        report.batches > 2,
        "several seals were written: {}",
        report.batches
    );
}
