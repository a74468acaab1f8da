//! `sealtrail sessions` and `sealtrail show`: what an archive holds, for people.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use sealtrail::archive::DEFAULT_STORE;
use sealtrail::read::{key_fields, records, sessions};
use sealtrail::{Archive, StatusCode, Value};

#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// Archive URL: a path, file:///abs/path, or memory://.
    #[arg(long, env = "SEALTRAIL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Print JSON.
    #[arg(long, env = "SEALTRAIL_JSON")]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Archive URL: a path, file:///abs/path, or memory://.
    #[arg(long, env = "SEALTRAIL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// The session to show.
    #[arg(long, env = "SEALTRAIL_SESSION", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    session: String,
    /// Print the records as JSON (one array, in chain order).
    #[arg(long, env = "SEALTRAIL_JSON")]
    json: bool,
}

fn time(ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// A value as a reader wants to see it: `stop`, `42`, `[stop, length]`, `{k: v}`.
fn plain(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(", ")),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", plain(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn short(v: &Value) -> String {
    let s = plain(v);
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(79).collect::<String>())
    } else {
        s
    }
}

pub(crate) async fn run_sessions(a: &SessionsArgs) -> sealtrail::Result<ExitCode> {
    let list = sessions(&Archive::open_existing(&a.store)?).await?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<40} {:<24} {:>8}  {:<24}  {:<24}  kinds",
        "session",
        "writer",
        "records",
        "first start",
        "last end"
    )?;
    for s in &list {
        let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
        outln!(
            "{:<40} {:<24} {:>8}  {:<24}  {:<24}  {}",
            s.session,
            s.writer,
            s.records,
            time(s.first_start_ns),
            time(s.last_end_ns),
            kinds.join(" ")
        )?;
    }
    outln!("{} session(s)", list.len())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_show(a: &ShowArgs) -> sealtrail::Result<ExitCode> {
    let session = sealtrail::map::named_session(&a.session);
    let recs = records(&Archive::open_existing(&a.store)?, |s| s == session).await?;
    if recs.is_empty() {
        eprintln!("no records of session {:?} in {}", a.session, a.store);
        return Ok(ExitCode::from(1));
    }
    if a.json {
        let v: Vec<_> = recs
            .iter()
            .map(|(w, r)| serde_json::json!({"writer": w, "record": r}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (writer, r) in &recs {
        let mut fields: Vec<String> = key_fields(r.kind)
            .iter()
            .filter_map(|k| r.attributes.get(k).map(|v| format!("{k}={}", short(v))))
            .collect();
        // A log record (the collector archives GenAI events as records):
        // its body is what it says.
        if let Some(body) = r.attributes.get("log.body") {
            fields.push(format!("log.body={}", short(body)));
        }
        if r.status.code == StatusCode::Error {
            fields.push(format!(
                "error={}",
                r.status.message.as_deref().unwrap_or("")
            ));
        }
        // Which span: two lines with the same name are told apart by it.
        let span = r
            .span_id
            .as_deref()
            .map_or(String::new(), |s| format!(" span {s}"));
        outln!(
            "{:>5}  {}  {:<12}  {:<32}  {}  [{writer}{span}]",
            r.seq,
            time(r.start_ns),
            r.kind.as_str(),
            r.name,
            fields.join("  ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_plainly() {
        let v = Value::Array(vec!["stop".into(), Value::Int(2)]);
        assert_eq!(short(&v), "[stop, 2]");
        let m: sealtrail::Attributes = [("a", Value::Bool(true))].into_iter().collect();
        assert_eq!(short(&Value::Map(m)), "{a: true}");
        assert_eq!(short(&Value::Str("x".repeat(100))).chars().count(), 80);
    }
}
