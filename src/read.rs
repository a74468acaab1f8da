//! Reading an archive for people: sessions and their records, in chain order.
//!
//! Reading follows the seals: only sealed batches are read, and a batch that
//! cannot be read or decoded is an error naming it. Reading does not prove
//! anything; run [`crate::verify()`] for that.

use std::collections::BTreeMap;

use crate::archive::{layout, Archive};
use crate::error::{Error, Result};
use crate::record::{Kind, StoredRecord, TraceRecord};
use crate::seal::Seal;

/// One session of one writer, as listed by `sealtrail sessions`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub session: String,
    /// The writer.
    pub writer: String,
    /// Records archived.
    pub records: u64,
    /// Earliest record start, unix ns (a decimal string in JSON, as in records).
    #[serde(with = "crate::record::u64_string")]
    pub first_start_ns: u64,
    /// Latest record end, unix ns (a decimal string in JSON).
    #[serde(with = "crate::record::u64_string")]
    pub last_end_ns: u64,
    /// Records per kind.
    pub kinds: BTreeMap<String, u64>,
}

/// Every sealed record, writer by writer, in seal order; `filter` picks sessions.
pub async fn records(
    archive: &Archive,
    filter: impl Fn(&str) -> bool,
) -> Result<Vec<(String, TraceRecord)>> {
    let mut out = Vec::new();
    let objects = archive.list(layout::ROOT).await?;
    for obj in &objects {
        let Some(layout::Name::Seal { writer, .. }) = layout::parse(&obj.key) else {
            continue;
        };
        let bad = |reason: String| Error::InvalidRecord {
            reason: format!("{}: {reason}", obj.key),
        };
        let seal: Seal = serde_json::from_slice(&archive.get(&obj.key).await?)
            .map_err(|e| bad(e.to_string()))?;
        let Some(batch) = seal.body.batch else {
            continue;
        };
        if !seal.body.sessions.iter().any(|s| filter(&s.id)) {
            continue;
        }
        let bytes = archive.get(&batch.key).await?;
        let (content, _) = crate::verify::batch::decode(&bytes, 1 << 30)
            .map_err(|e| bad(format!("{}: {e}", batch.key)))?;
        for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let stored: StoredRecord =
                serde_json::from_slice(line).map_err(|e| bad(format!("{}: {e}", batch.key)))?;
            if filter(&stored.record.session) {
                out.push((writer.clone(), stored.record));
            }
        }
    }
    Ok(out)
}

/// The sessions in the archive, sorted by first start time.
pub async fn sessions(archive: &Archive) -> Result<Vec<SessionInfo>> {
    let mut by: BTreeMap<(String, String), SessionInfo> = BTreeMap::new();
    for (writer, r) in records(archive, |_| true).await? {
        let e = by
            .entry((writer.clone(), r.session.clone()))
            .or_insert_with(|| SessionInfo {
                session: r.session.clone(),
                writer,
                records: 0,
                first_start_ns: u64::MAX,
                last_end_ns: 0,
                kinds: BTreeMap::new(),
            });
        e.records += 1;
        e.first_start_ns = e.first_start_ns.min(r.start_ns);
        e.last_end_ns = e.last_end_ns.max(r.end_ns);
        *e.kinds.entry(r.kind.as_str().to_owned()).or_default() += 1;
    }
    let mut v: Vec<SessionInfo> = by.into_values().collect();
    v.sort_by(|a, b| (a.first_start_ns, &a.session).cmp(&(b.first_start_ns, &b.session)));
    Ok(v)
}

/// The attributes worth a glance for a record of this kind, in display order.
pub fn key_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::LlmCall => &[
            "gen_ai.request.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.response.finish_reasons",
        ],
        Kind::ToolCall => &[
            "gen_ai.tool.name",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        ],
        Kind::PolicyCheck => &["policy.name", "policy.decision", "policy.reason"],
        Kind::Agent => &[
            "gen_ai.agent.name",
            "audit.permission_set",
            "audit.authorized_by",
        ],
        Kind::Human => &[
            "audit.human.actor",
            "audit.human.action",
            "audit.human.comment",
        ],
        Kind::DataAccess => &["db.system", "db.query.text", "audit.data.records"],
        Kind::Gap => &["audit.dropped", "audit.dropped_total"],
        Kind::Span => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::{Writer, WriterOptions};

    #[tokio::test]
    async fn lists_sessions_and_reads_one_in_order() {
        let archive = Archive::memory();
        let mut w = Writer::open(
            archive.clone(),
            SigningKey::from_bytes(&[5; 32]),
            "w",
            WriterOptions::default(),
        )
        .await
        .unwrap();
        for (i, s) in ["a", "b", "a"].iter().enumerate() {
            let mut r = TraceRecord::new(
                *s,
                if i == 1 {
                    Kind::ToolCall
                } else {
                    Kind::LlmCall
                },
                format!("r{i}"),
            );
            r.start_ns = 10 + i as u64;
            r.end_ns = 20 + i as u64;
            w.append(r).unwrap();
            w.flush().await.unwrap();
        }
        w.close().await.unwrap();
        let s = sessions(&archive).await.unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].session.as_str(),
                s[0].records,
                s[0].first_start_ns,
                s[0].last_end_ns
            ),
            ("a", 2, 10, 22)
        );
        assert_eq!(s[1].kinds.get("tool_call"), Some(&1));
        let a = records(&archive, |x| x == "a").await.unwrap();
        assert_eq!(
            a.iter()
                .map(|(_, r)| (r.seq, r.name.as_str()))
                .collect::<Vec<_>>(),
            [(0, "r0"), (1, "r2")]
        );
    }
}
