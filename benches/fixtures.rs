// Shared by the benchmarks: a realistic GenAI span record of about 1 KiB,
// and a GenAI `tracing` span with 8 fields.
#![allow(dead_code)]

use sealtrail::{Attributes, Kind, TraceRecord, Value};

/// A `chat` span with 8 fields, as an instrumented LLM client makes it.
pub fn genai_span(step: u64) -> tracing::Span {
    tracing::info_span!(
        "chat gpt-4o",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = "gpt-4o",
        gen_ai.system = "openai",
        gen_ai.usage.input_tokens = 1200u64,
        gen_ai.usage.output_tokens = 300u64,
        gen_ai.response.finish_reasons = "stop",
        session.id = "session-1",
        step,
    )
}

pub fn genai_record(session: &str, i: u64) -> TraceRecord {
    let mut r = TraceRecord::new(session, Kind::LlmCall, "chat gpt-4o");
    let mut a = Attributes::new();
    a.insert("gen_ai.operation.name", "chat");
    a.insert("gen_ai.system", "openai");
    a.insert("gen_ai.request.model", "gpt-4o-2024-08-06");
    a.insert("gen_ai.response.model", "gpt-4o-2024-08-06");
    a.insert("gen_ai.request.temperature", Value::Float(0.2));
    a.insert(
        "gen_ai.usage.input_tokens",
        Value::Int(1200 + i as i64 % 100),
    );
    a.insert(
        "gen_ai.usage.output_tokens",
        Value::Int(300 + i as i64 % 50),
    );
    a.insert(
        "gen_ai.response.finish_reasons",
        Value::Array(vec!["stop".into()]),
    );
    a.insert(
        "gen_ai.input.messages",
        format!(
            r#"[{{"role":"system","content":"You are a claims assistant. Follow policy P-7 and never pay out above the limit."}},{{"role":"user","content":"Customer {i} asks whether claim C-{i} for water damage in the kitchen is covered under their home policy, and when they will be paid."}}]"#
        ),
    );
    a.insert(
        "gen_ai.output.messages",
        format!(
            r#"[{{"role":"assistant","content":"Claim C-{i} is covered under section 4.2 (sudden water damage). The adjuster approved 1,250.00; payment is scheduled within 5 business days.","finish_reason":"stop"}}]"#
        ),
    );
    r.attributes = a;
    r.resource = [
        ("service.name", "claims-agent"),
        ("service.version", "1.4.2"),
    ]
    .into_iter()
    .collect();
    r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    r.span_id = Some(format!("{:016x}", i + 1));
    r.parent_span_id = Some("00f067aa0ba902b7".into());
    r.start_ns = 1_700_000_000_000_000_000 + i * 1_000_000;
    r.end_ns = r.start_ns + 850_000_000;
    r.received_ns = r.end_ns + 1_000_000;
    r.source = "otlp".into();
    r
}
