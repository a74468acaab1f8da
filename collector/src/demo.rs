//! `sealtrail demo`: writes the archive of a small, scripted agent run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sealtrail::archive::DEFAULT_STORE;
use sealtrail::writer::now_ns;
use sealtrail::{
    keys, Attributes, Event, Kind, Status, StatusCode, TraceRecord, Value, Writer, WriterOptions,
};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Archive URL: a path, file:///abs/path, or memory://.
    #[arg(long, env = "SEALTRAIL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Secret signing key file (see `sealtrail keygen`).
    #[arg(long, env = "SEALTRAIL_SIGNING_KEY_FILE", default_value = "audit.key")]
    signing_key: PathBuf,
    /// Writer id.
    #[arg(long, env = "SEALTRAIL_WRITER_ID", default_value = "demo")]
    writer_id: String,
    /// Agent sessions to simulate.
    #[arg(long, default_value_t = 3)]
    sessions: u32,
    /// S3 only: lock every object under Object Lock for this long (e.g. 7y, 90d).
    #[arg(long, env = "SEALTRAIL_RETENTION", value_parser = humantime::parse_duration)]
    retention: Option<std::time::Duration>,
    /// The Object Lock mode of --retention.
    #[arg(long, env = "SEALTRAIL_LOCK_MODE", default_value = "compliance", value_parser = ["compliance", "governance"])]
    lock_mode: String,
    /// S3 only: accept a bucket without Object Lock.
    #[arg(long, env = "SEALTRAIL_ALLOW_UNLOCKED")]
    allow_unlocked: bool,
}

fn attrs<const N: usize>(kv: [(&str, Value); N]) -> Attributes {
    kv.into_iter().collect()
}

/// One agent turn: an LLM call that asks for a tool, a policy check, the tool
/// call, a denied policy check, a human approval, and the final answer.
fn session_records(session: &str, t0: u64) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    let mut t = t0;
    let mut rec = |kind: Kind, name: &str, a: Attributes, status: StatusCode| {
        let mut r = TraceRecord::new(session, kind, name);
        r.start_ns = t;
        t += 250_000_000;
        r.end_ns = t;
        r.received_ns = t;
        r.attributes = a;
        r.source = "demo".into();
        r.status = Status {
            code: status,
            message: (status == StatusCode::Error).then(|| "denied by policy".to_owned()),
        };
        r.resource = attrs([("service.name", "claims-agent".into())]);
        out.push(r);
    };
    rec(
        Kind::Agent,
        "invoke_agent claims-agent",
        attrs([
            ("gen_ai.operation.name", "invoke_agent".into()),
            ("gen_ai.agent.name", "claims-agent".into()),
            (
                "audit.permission_set",
                "claims-read,payments-propose".into(),
            ),
            ("audit.authorized_by", "ops@example.com".into()),
        ]),
        StatusCode::Ok,
    );
    rec(
        Kind::LlmCall,
        "chat gpt-4o",
        attrs([
            ("gen_ai.operation.name", "chat".into()),
            ("gen_ai.request.model", "gpt-4o".into()),
            ("gen_ai.usage.input_tokens", Value::Int(412)),
            ("gen_ai.usage.output_tokens", Value::Int(38)),
            ("gen_ai.input.messages", r#"[{"role":"user","content":"Pay out claim C-1042?"}]"#.into()),
            ("gen_ai.output.messages", r#"[{"role":"assistant","tool_calls":[{"name":"lookup_claim","arguments":{"id":"C-1042"}}]}]"#.into()),
        ]),
        StatusCode::Ok,
    );
    rec(
        Kind::PolicyCheck,
        "policy claims.read",
        attrs([
            ("policy.name", "claims.read".into()),
            ("policy.decision", "allow".into()),
        ]),
        StatusCode::Ok,
    );
    rec(
        Kind::ToolCall,
        "execute_tool lookup_claim",
        attrs([
            ("gen_ai.operation.name", "execute_tool".into()),
            ("gen_ai.tool.name", "lookup_claim".into()),
            ("gen_ai.tool.call.arguments", r#"{"id":"C-1042"}"#.into()),
            (
                "gen_ai.tool.call.result",
                r#"{"status":"open","amount":1250.0}"#.into(),
            ),
        ]),
        StatusCode::Ok,
    );
    rec(
        Kind::PolicyCheck,
        "policy payments.execute",
        attrs([
            ("policy.name", "payments.execute".into()),
            ("policy.decision", "deny".into()),
            (
                "policy.reason",
                "amount above the agent's autonomous limit of 1000.00".into(),
            ),
        ]),
        StatusCode::Error,
    );
    rec(
        Kind::Human,
        "human approval",
        attrs([
            ("audit.human.action", "approve".into()),
            ("audit.human.actor", "adjuster.kim@example.com".into()),
            ("audit.human.comment", "verified invoice".into()),
        ]),
        StatusCode::Ok,
    );
    if let Some(last) = out.last_mut() {
        last.events.push(Event {
            attributes: attrs([("decision", "approve".into())]),
            name: "approval.recorded".into(),
            time_ns: last.end_ns,
        });
    }
    out
}

pub(crate) async fn run(a: &DemoArgs) -> sealtrail::Result<ExitCode> {
    // Settings first: a failing command creates nothing.
    if !sealtrail::writer::valid_writer_id(&a.writer_id) {
        return Err(sealtrail::Error::InvalidWriterId {
            id: a.writer_id.clone(),
        });
    }
    let key = keys::read_signing_key(&a.signing_key)?;
    let archive = crate::open_archive(&a.store, a.retention, &a.lock_mode)?;
    let (archive, _) = archive.checked_for_lock(a.allow_unlocked).await?;
    let mut writer = Writer::open(archive, key, &a.writer_id, WriterOptions::default()).await?;
    let t0 = now_ns();
    let run = writer.next_batch_no();
    let mut records = 0;
    for s in 0..a.sessions {
        for r in session_records(&format!("claims-{run}-{s}"), t0) {
            writer.append(r)?;
            records += 1;
        }
        // One batch per session here; a real writer batches by time and size.
        writer.flush().await?;
    }
    let last = writer.close().await?;
    outln!(
        "wrote {records} records in {} sessions to {} (writer {}, batches up to {})",
        a.sessions,
        a.store,
        a.writer_id,
        last.batch_no
    )?;
    Ok(ExitCode::SUCCESS)
}
