//! An event whose value, when formatted, emits an event in the same span
//! does not deadlock the layer. With a global default subscriber (what
//! `.init()` sets) tracing lets such a nested event through, so this test has
//! a binary of its own.

mod common;

use common::*;
use sealtrail::Archive;
use tracing::{info, info_span};
use tracing_subscriber::prelude::*;

struct Noisy;

impl std::fmt::Debug for Noisy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        info!("formatting a noisy value");
        f.write_str("noisy")
    }
}

#[test]
fn a_value_that_logs_while_it_is_formatted_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    tracing_subscriber::registry().with(layer).init();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        info_span!("execute_tool", gen_ai.operation.name = "execute_tool")
            .in_scope(|| info!(value = ?Noisy, "tool output"));
        let _ = done_tx.send(());
    });
    done.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the layer deadlocked on an event emitted while formatting another");
    drop(guard);
    let records = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(all_records(&archive));
    let events: Vec<&str> = records[0].events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["formatting a noisy value", "tool output"]);
}
