//! `sealtrail serve` with real Python clients (tests/python/otlp_agent.py):
//! the OpenTelemetry SDK's OTLP exporters over gRPC and HTTP; the openai
//! client with the OpenTelemetry GenAI instrumentation (spans and log
//! events) and with OpenInference's; the openai-agents SDK with a function
//! tool and an input guardrail. Each runs one turn against a fake
//! OpenAI-compatible server: a tool call, then an answer.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{assert_intact, records, session, workdir, Collector};
use sealtrail::{Kind, Value};

fn python() -> String {
    std::env::var("SEALTRAIL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SEALTRAIL_PYTHON is not set. Run the suite with `bash scripts/test`, which creates .venv \
             with tests/requirements.txt, or set SEALTRAIL_PYTHON to a python that has those packages."
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/otlp_agent.py")
}

/// Runs one scenario against a fresh collector; returns the session's kinds
/// and the archive's records.
fn run(scenario: &str) -> (Vec<Kind>, Vec<sealtrail::TraceRecord>, tempfile::TempDir) {
    let dir = workdir();
    let c = Collector::start(dir.path(), &[]);
    let conv = format!("conv-{scenario}");
    let o = Command::new(python())
        .arg(script())
        .args([
            scenario,
            "--grpc",
            &c.grpc,
            "--http",
            &c.http,
            "--session",
            &conv,
        ])
        .output()
        .expect("run python (SEALTRAIL_PYTHON)");
    assert!(
        o.status.success(),
        "{scenario}: {}{}\n(missing packages? `bash scripts/test` installs tests/requirements.txt into .venv)",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    c.stop_ok();
    let all = records(dir.path());
    let kinds = session(&all, &conv).iter().map(|r| r.kind).collect();
    assert_intact(dir.path());
    (kinds, all, dir)
}

fn count(kinds: &[Kind], k: Kind) -> usize {
    kinds.iter().filter(|x| **x == k).count()
}

#[test]
fn python_sdk_exporters_over_grpc_and_http() {
    for scenario in ["sdk-grpc", "sdk-http"] {
        let (kinds, all, _dir) = run(scenario);
        assert_eq!(
            kinds,
            [
                Kind::LlmCall,
                Kind::ToolCall,
                Kind::PolicyCheck,
                Kind::Agent
            ],
            "{scenario}"
        );
        assert!(
            all.iter()
                .all(|r| r.resource.get("service.name")
                    == Some(&Value::Str(format!("py-{scenario}"))))
        );
    }
}

#[test]
fn openai_with_the_opentelemetry_genai_instrumentation() {
    let (kinds, all, _dir) = run("genai-openai");
    // Two chat completions as spans and as log events (content), the app's
    // tool call, guardrail and agent span: all in the agent's session,
    // although only the agent span names it, and it ends last.
    assert_eq!(count(&kinds, Kind::LlmCall), 4, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::ToolCall), 1, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::PolicyCheck), 1, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::Agent), 1, "{kinds:?}");
    assert_eq!(
        all.len(),
        kinds.len(),
        "records outside the session: {all:#?}"
    );
    let chat = all
        .iter()
        .find(|r| r.name == "chat gpt-4o")
        .expect("a chat span");
    assert_eq!(
        chat.attributes.get("gen_ai.usage.input_tokens"),
        Some(&Value::Int(42))
    );
    let details: Vec<_> = all
        .iter()
        .filter(|r| r.name == "gen_ai.client.inference.operation.details")
        .collect();
    assert_eq!(details.len(), 2);
    assert!(details.iter().all(|r| r.span_id.is_some()));
}

#[test]
fn openai_with_the_openinference_instrumentation() {
    let (kinds, all, _dir) = run("openinference");
    assert_eq!(count(&kinds, Kind::LlmCall), 2, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::ToolCall), 1, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::PolicyCheck), 1, "{kinds:?}");
    assert_eq!(
        all.len(),
        kinds.len(),
        "records outside the session: {all:#?}"
    );
    let llm = all.iter().find(|r| r.kind == Kind::LlmCall).unwrap();
    assert_eq!(
        llm.attributes.get("openinference.span.kind"),
        Some(&Value::Str("LLM".into()))
    );
}

#[test]
fn the_openai_agents_sdk_with_a_tool_and_an_input_guardrail() {
    let (kinds, all, _dir) = run("agents");
    assert_eq!(count(&kinds, Kind::LlmCall), 2, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::ToolCall), 1, "{kinds:?}");
    assert_eq!(count(&kinds, Kind::PolicyCheck), 1, "{kinds:?}");
    assert!(count(&kinds, Kind::Agent) >= 1, "{kinds:?}");
    assert_eq!(
        all.len(),
        kinds.len(),
        "records outside the session: {all:#?}"
    );
    let tool = all.iter().find(|r| r.kind == Kind::ToolCall).unwrap();
    assert_eq!(tool.name, "lookup_order");
    let guard = all.iter().find(|r| r.kind == Kind::PolicyCheck).unwrap();
    assert_eq!(guard.name, "no_card_numbers");
}
