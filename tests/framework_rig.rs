//! A real Rust agent framework, rig, runs one agent turn with a tool call
//! against a local fake OpenAI-compatible server. With the layer added, the
//! archive holds its LLM and tool calls — model, token usage, tool name — in
//! order, in one session, and verifies intact.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use rig_agent::AgentBuilder;
use rig_core::providers::openai::OpenAIConfig;
use rig_core::tool::PortableTool;
use sealtrail::{Archive, Kind, Value};
use serde_json::{json, Value as Json_};
use tracing_subscriber::prelude::*;

type Seen = Arc<Mutex<Vec<Json_>>>;

/// Scripted: first a tool call, then, once the tool result is in the conversation, the answer.
async fn chat_completions(State(seen): State<Seen>, Json(body): Json<Json_>) -> Json<Json_> {
    seen.lock().unwrap().push(body.clone());
    let answered = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    Json(if !answered {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
          "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]}}],
          "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
    } else {
        json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "2 + 3 = 5"}}],
          "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})
    })
}

#[derive(serde::Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

struct Add;

impl PortableTool for Add {
    const NAME: &'static str = "add";
    type Args = AddArgs;
    type Output = i64;
    type Error = Infallible;
    fn description(&self) -> String {
        "Add two integers".into()
    }
    fn parameters(&self) -> Json_ {
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
    }
    async fn call(&self, args: AddArgs) -> Result<i64, Infallible> {
        Ok(args.a + args.b)
    }
}

fn int(r: &sealtrail::TraceRecord, k: &str) -> Option<i64> {
    match r.attributes.get(k)? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn text<'a>(r: &'a sealtrail::TraceRecord, k: &str) -> Option<&'a str> {
    match r.attributes.get(k)? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

#[tokio::test]
async fn a_rig_agent_turn_with_a_tool_call_is_archived_in_order() {
    let seen: Seen = Default::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::memory();
    let (layer, guard) = layer_builder(&archive, dir.path()).build().unwrap();
    let subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let client = OpenAIConfig::new("sk-test")
        .with_base_url(format!("http://{addr}/v1"))
        .client();
    let agent = AgentBuilder::new(client.chat("gpt-4o-mini"))
        .name("calc")
        .preamble("You are a calculator. Use the add tool.")
        .tool(Add)
        .build();
    let response = agent.prompt("What is 2+3?").max_turns(2).await.unwrap();
    assert_eq!(response.output(), "2 + 3 = 5");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the agent made two model calls"
    );

    drop(subscriber);
    drop(guard);
    server.abort();

    let records = all_records(&archive).await;
    let kinds: Vec<Kind> = records.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [Kind::LlmCall, Kind::ToolCall, Kind::LlmCall, Kind::Agent],
        "{records:#?}"
    );
    // One session (the agent span's trace: it carries no conversation id), chained 0..4.
    assert!(records.iter().all(|r| r.session == records[0].session));
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let (chat1, tool, chat2, agent_rec) = (&records[0], &records[1], &records[2], &records[3]);
    for chat in [chat1, chat2] {
        assert_eq!(text(chat, "gen_ai.request.model"), Some("gpt-4o-mini"));
        assert_eq!(text(chat, "gen_ai.provider.name"), Some("openai"));
        assert_eq!(chat.parent_span_id, agent_rec.span_id);
    }
    assert_eq!(
        (
            int(chat1, "gen_ai.usage.input_tokens"),
            int(chat1, "gen_ai.usage.output_tokens")
        ),
        (Some(11), Some(7))
    );
    assert_eq!(
        (
            int(chat2, "gen_ai.usage.input_tokens"),
            int(chat2, "gen_ai.usage.output_tokens")
        ),
        (Some(20), Some(5))
    );
    assert_eq!(text(tool, "gen_ai.tool.name"), Some("add"));
    assert_eq!(text(agent_rec, "gen_ai.agent.name"), Some("calc"));

    let report = verify_now(&archive).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.records, 4);
}
