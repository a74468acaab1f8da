//! The example agent (examples/agent.rs) archives what its spans say: every
//! LLM call with its response, the tool call, both policy decisions and the
//! human approval, in its one session.

mod common;

#[allow(dead_code)]
#[path = "../examples/agent.rs"]
mod agent;

use common::*;
use sealtrail::{Archive, Kind, Value};
use tracing_subscriber::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_agent_archives_every_step_with_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open("memory://").unwrap();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        agent::run_agent("claim-test")
    });
    drop(guard);
    let records = all_records(&archive).await;
    assert!(records.iter().all(|r| r.session == "claim-test"));
    let kinds: Vec<Kind> = records.iter().map(|r| r.kind).collect();
    for kind in [
        Kind::LlmCall,
        Kind::ToolCall,
        Kind::PolicyCheck,
        Kind::Human,
        Kind::Agent,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
    let llm: Vec<_> = records.iter().filter(|r| r.kind == Kind::LlmCall).collect();
    assert_eq!(llm.len(), 2);
    for r in &llm {
        assert!(
            matches!(r.attributes.get("gen_ai.output.messages"), Some(Value::Str(m)) if !m.is_empty()),
            "{} has no response: {:?}",
            r.name,
            r.attributes
        );
    }
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::PolicyCheck)
        .filter_map(|r| match r.attributes.get("policy.decision") {
            Some(Value::Str(d)) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        decisions.contains(&"allow") && decisions.contains(&"deny"),
        "{decisions:?}"
    );
    assert!(verify_now(&archive).await.is_intact());
}
