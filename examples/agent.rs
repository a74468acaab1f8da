//! A small claims agent instrumented with plain `tracing` spans, audited by
//! sealtrail with one line. Run it, then verify the archive:
//!
//! ```sh
//! cargo run -p sealtrail-collector -- keygen --out audit.key     # or `sealtrail keygen`
//! SEALTRAIL_SIGNING_KEY_FILE=audit.key cargo run --example agent
//! cargo run -p sealtrail-collector -- verify --store ./sealtrail-data --public-key audit.key.pub
//! ```

use tracing::{error, info, info_span, Span};
use tracing_subscriber::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("SEALTRAIL_SIGNING_KEY_FILE").unwrap_or_else(|_| "audit.key".into());
    let (audit, guard) = sealtrail::AuditLayer::builder()
        .with_signing_key_file(key)
        .build()?;
    tracing_subscriber::registry().with(audit).init();

    let session = format!("claim-C-1042-{}", std::process::id());
    run_agent(&session);

    let stats = guard.stats();
    drop(guard); // seals and flushes everything
    println!(
        "audited session {session}: {} spans captured, {} dropped",
        stats.captured, stats.dropped
    );
    Ok(())
}

/// One agent turn, instrumented with plain `tracing` spans (also run by
/// tests/example_agent.rs).
pub fn run_agent(session: &str) {
    let agent = info_span!(
        "invoke_agent claims-agent",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = "claims-agent",
        gen_ai.conversation.id = session,
        audit.permission_set = "claims-read,payments-propose",
        audit.authorized_by = "ops@example.com",
    );
    let _agent = agent.enter();

    // The model asks for a tool.
    let llm = info_span!(
        "chat gpt-4o",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = "gpt-4o",
        gen_ai.input.messages = r#"[{"role":"user","content":"Should we pay out claim C-1042?"}]"#,
        gen_ai.output.messages = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    );
    llm.in_scope(|| {
        // Recorded when the response arrives.
        Span::current()
            .record(
                "gen_ai.output.messages",
                r#"[{"role":"assistant","tool_calls":[{"name":"lookup_claim","arguments":{"id":"C-1042"}}]}]"#,
            )
            .record("gen_ai.usage.input_tokens", 412)
            .record("gen_ai.usage.output_tokens", 38);
    });
    drop(llm);

    policy("claims.read", "allow", "agent may read claims");
    info_span!(
        "execute_tool lookup_claim",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = "lookup_claim",
        gen_ai.tool.call.arguments = r#"{"id":"C-1042"}"#,
        gen_ai.tool.call.result = r#"{"status":"open","amount":1250.00}"#,
    )
    .in_scope(|| info!(rows = 1, "claim found"));

    policy(
        "payments.execute",
        "deny",
        "amount 1250.00 is above the autonomous limit of 1000.00",
    );

    info_span!(
        "human approval",
        audit.kind = "human",
        audit.human.actor = "adjuster.kim@example.com",
        audit.human.action = "approve",
        audit.human.comment = "invoice verified",
    )
    .in_scope(|| info!("payment approved by a human"));

    // A field recorded later must be declared (as `Empty`): tracing ignores
    // `record` for a field the span does not have.
    info_span!(
        "chat gpt-4o",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = "gpt-4o",
        gen_ai.output.messages = tracing::field::Empty,
    )
    .in_scope(|| {
        Span::current().record(
            "gen_ai.output.messages",
            "Claim C-1042 approved by an adjuster; payment scheduled.",
        );
    });
}

fn policy(name: &str, decision: &str, reason: &str) {
    let span = info_span!(
        "policy check",
        audit.kind = "policy_check",
        policy.name = name,
        policy.decision = decision,
        policy.reason = reason,
    );
    let _e = span.enter();
    if decision == "deny" {
        error!(policy = name, "denied: {reason}");
    }
}
