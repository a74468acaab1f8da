//! Per-session hash chains.
//!
//! For each session a writer keeps the next `seq` and the hash of the last
//! record. [`Chain::append`] stamps a record with both and encodes it as one
//! batch line, `{"hash":"<64 hex>","record":<canonical record>}\n`, hashing the
//! canonical record bytes in place (docs/FORMAT.md §4).

use std::collections::HashMap;
use std::ops::Range;

use crate::canonical;
use crate::digest::{genesis, record_hash, record_hashes, Digest};
use crate::error::{Error, Result};
use crate::record::{TraceRecord, FORMAT_VERSION};

/// Bytes before the record hash in a batch line.
pub const LINE_PREFIX: &[u8] = b"{\"hash\":\"";
/// Bytes between the record hash and the record in a batch line.
pub const LINE_MIDDLE: &[u8] = b"\",\"record\":";
/// Offset of the canonical record within a batch line.
pub const RECORD_OFFSET: usize = LINE_PREFIX.len() + 64 + LINE_MIDDLE.len();
/// Longest accepted session id, in bytes.
pub const MAX_SESSION_LEN: usize = 1024;
/// Largest `seq` (JSON numbers are exact up to 2^53).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Where a session's chain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The seq the next record will get.
    pub next_seq: u64,
    /// The hash of the last record (the next record's `prev`).
    pub hash: Digest,
}

/// The chains of all sessions of one writer.
#[derive(Debug)]
pub struct Chain {
    writer: String,
    heads: HashMap<Box<str>, Head>,
}

impl Chain {
    /// An empty chain set for `writer`.
    pub fn new(writer: impl Into<String>) -> Self {
        Chain {
            writer: writer.into(),
            heads: HashMap::new(),
        }
    }

    /// The writer id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Where `session` stands, or `None` if it has no record yet.
    pub fn head(&self, session: &str) -> Option<Head> {
        self.heads.get(session).copied()
    }

    /// Number of sessions known.
    pub fn sessions(&self) -> usize {
        self.heads.len()
    }

    /// Sets where `session` stands (used when a writer continues an archive).
    pub fn set_head(&mut self, session: &str, head: Head) {
        self.heads.insert(session.into(), head);
    }

    /// Assigns `record.seq` and `record.prev`, appends its batch line
    /// (ending in `\n`) to `line`, and returns the record's hash.
    ///
    /// On error nothing is appended and the chain does not move.
    pub fn append(&mut self, record: &mut TraceRecord, line: &mut Vec<u8>) -> Result<Digest> {
        self.stamp(record)?;
        let hash = encode_line(record, line)?;
        self.advance(record, hash);
        Ok(hash)
    }

    /// Appends `records` in order, exactly as [`Chain::append`] on each in
    /// turn would (the same lines, hashes and errors), and returns for each
    /// its hash and the range of its line in `lines`. The hashes of a run of
    /// records of distinct sessions are computed side by side
    /// ([`record_hashes`]): a record's `prev` is the hash of its session's
    /// record before, so only records of different sessions can be.
    pub fn append_many(
        &mut self,
        records: &mut [TraceRecord],
        lines: &mut Vec<u8>,
    ) -> Vec<Result<(Digest, Range<usize>)>> {
        const RUN: usize = HASH_RUN;
        let mut results = Vec::with_capacity(records.len());
        // (record index, line start, record bytes) of the run's lines.
        let mut run: Vec<(usize, usize, Range<usize>)> = Vec::with_capacity(RUN);
        // Hashes of the run's session ids: a collision only ends a run
        // early (those records are then hashed one at a time).
        let mut seen = std::collections::HashSet::with_capacity(RUN);
        let mut digests = [[0u8; 32]; RUN];
        let mut from = 0;
        while from < records.len() {
            seen.clear();
            let mut end = from;
            while end < records.len()
                && end - from < RUN
                && seen.insert(session_key(&records[end].session))
            {
                end += 1;
            }
            for record in &mut records[from..end] {
                let i = results.len();
                let line = self.stamp(record).and_then(|()| begin_line(record, lines));
                results.push(line.map(|(start, rec)| {
                    run.push((i, start, rec));
                    (Digest::default(), start..lines.len())
                }));
            }
            let mut bodies: [&[u8]; RUN] = [&[]; RUN];
            for (body, (_, _, rec)) in bodies.iter_mut().zip(&run) {
                *body = &lines[rec.clone()];
            }
            let digests = &mut digests[..run.len()];
            record_hashes(&bodies[..run.len()], digests);
            for ((i, start, _), d) in run.drain(..).zip(digests.iter()) {
                let hash = Digest(*d);
                finish_line(lines, start, &hash);
                self.advance(&records[i], hash);
                if let Ok((h, _)) = &mut results[i] {
                    *h = hash;
                }
            }
            from = end;
        }
        results
    }

    /// Assigns `record.seq` and `record.prev` from its session's head;
    /// the chain does not move.
    fn stamp(&self, record: &mut TraceRecord) -> Result<()> {
        validate(record)?;
        let head = match self.heads.get(record.session.as_str()) {
            Some(h) => *h,
            None => Head {
                next_seq: 0,
                hash: genesis(&self.writer, &record.session),
            },
        };
        if head.next_seq > MAX_SEQ {
            return Err(Error::InvalidRecord {
                reason: format!("session {:?} reached the largest seq", record.session),
            });
        }
        record.seq = head.next_seq;
        record.prev = head.hash;
        Ok(())
    }

    /// Moves the session of a stamped `record` past it.
    fn advance(&mut self, record: &TraceRecord, hash: Digest) {
        let next = Head {
            next_seq: record.seq + 1,
            hash,
        };
        match self.heads.get_mut(record.session.as_str()) {
            Some(h) => *h = next,
            None => {
                self.heads.insert(record.session.as_str().into(), next);
            }
        }
    }
}

/// The most records [`Chain::append_many`] hashes side by side: enough to
/// keep the SHA unit's lanes full, few enough that their bytes stay in the
/// CPU's cache. Callers that gather records for it need gather no more.
pub const HASH_RUN: usize = 64;

/// A 64-bit hash of a session id, for [`Chain::append_many`]'s runs.
fn session_key(session: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(session)
}

fn validate(record: &TraceRecord) -> Result<()> {
    let reason = if record.session.is_empty() {
        "the session id is empty".to_owned()
    } else if record.session.len() > MAX_SESSION_LEN {
        format!(
            "the session id is {} bytes long; the limit is {MAX_SESSION_LEN}",
            record.session.len()
        )
    } else if record.v != FORMAT_VERSION {
        format!("format version {} is not {FORMAT_VERSION}", record.v)
    } else {
        return Ok(());
    };
    Err(Error::InvalidRecord { reason })
}

/// Appends `{"hash":"…","record":…}\n` for `record` to `out` and returns the hash.
/// On error, `out` is left as it was.
pub fn encode_line(record: &TraceRecord, out: &mut Vec<u8>) -> Result<Digest> {
    let (start, rec) = begin_line(record, out)?;
    let hash = record_hash(&out[rec]);
    finish_line(out, start, &hash);
    Ok(hash)
}

/// Appends the batch line of `record` with its hash left as zeros; returns
/// where the line starts and where its record is. On error nothing is
/// appended.
fn begin_line(record: &TraceRecord, out: &mut Vec<u8>) -> Result<(usize, Range<usize>)> {
    let start = out.len();
    out.extend_from_slice(LINE_PREFIX);
    out.extend_from_slice(&[b'0'; 64]);
    out.extend_from_slice(LINE_MIDDLE);
    let rec_start = out.len();
    if let Err(e) = canonical::write_record(record, out) {
        out.truncate(start);
        return Err(Error::InvalidRecord {
            reason: format!("cannot encode: {e}"),
        });
    }
    let rec_end = out.len();
    out.extend_from_slice(b"}\n");
    Ok((start, rec_start..rec_end))
}

/// Writes `hash` into the line [`begin_line`] began at `start`.
fn finish_line(out: &mut [u8], start: usize, hash: &Digest) {
    let mut hex = [0u8; 64];
    hash.write_hex(&mut hex);
    out[start + LINE_PREFIX.len()..start + LINE_PREFIX.len() + 64].copy_from_slice(&hex);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, StoredRecord};

    #[test]
    fn seqs_are_contiguous_per_session_and_linked() {
        let mut chain = Chain::new("w1");
        let mut out = Vec::new();
        let mut hashes = Vec::new();
        for (i, s) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            let mut r = TraceRecord::new(*s, Kind::Span, format!("r{i}"));
            hashes.push((
                s.to_string(),
                chain.append(&mut r, &mut out).unwrap(),
                r.seq,
                r.prev,
            ));
        }
        let seqs: Vec<u64> = hashes.iter().map(|h| h.2).collect();
        assert_eq!(seqs, [0, 0, 1, 2, 1]);
        assert_eq!(hashes[0].3, genesis("w1", "a"));
        assert_eq!(hashes[2].3, hashes[0].1);
        assert_eq!(hashes[3].3, hashes[2].1);
        assert_eq!(hashes[4].3, hashes[1].1);
        // Each line is the canonical JSON of the envelope and round-trips.
        for (line, h) in out.split(|b| *b == b'\n').zip(&hashes) {
            let stored: StoredRecord = serde_json::from_slice(line).unwrap();
            assert_eq!(stored.hash, h.1);
            assert_eq!(canonical::to_vec(&stored).unwrap(), line);
            assert_eq!(record_hash(&line[RECORD_OFFSET..line.len() - 1]), h.1);
        }
    }

    /// `append_many` is `append` on each record in turn: the same bytes,
    /// hashes, errors and heads, across runs that repeat a session, runs
    /// longer than 64 records, and records the chain refuses (an empty
    /// session id, a value that cannot be encoded, a session at its last seq).
    #[test]
    fn append_many_is_append_in_turn() {
        let mut records = Vec::new();
        for i in 0..300u64 {
            let session = match i % 7 {
                0 | 3 => format!("s{}", i % 5),
                6 if i % 4 == 0 => String::new(),
                _ => format!("s{}", i % 97),
            };
            let mut r = TraceRecord::new(session, Kind::Span, format!("r{i}"));
            if i % 41 == 0 {
                r.attributes
                    .insert("x", crate::record::Value::Float(f64::NAN));
            }
            if i % 13 == 0 {
                r.attributes.insert("text", "x\"y".repeat(i as usize));
            }
            records.push(r);
        }
        records.push(TraceRecord::new("full", Kind::Span, "refused"));
        let full = Head {
            next_seq: MAX_SEQ + 1,
            hash: Digest::sha256(b"h"),
        };
        let (mut one, mut many) = (Chain::new("w"), Chain::new("w"));
        one.set_head("full", full);
        many.set_head("full", full);
        let (mut one_out, mut many_out) = (b"x".to_vec(), b"x".to_vec());
        let mut expected = Vec::new();
        for r in &records {
            let mut r = r.clone();
            let start = one_out.len();
            expected.push(
                one.append(&mut r, &mut one_out)
                    .map(|h| (h, start..one_out.len()))
                    .map_err(|e| e.to_string()),
            );
        }
        let got: Vec<_> = many
            .append_many(&mut records.clone(), &mut many_out)
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(many_out, one_out);
        assert!(expected.iter().filter(|r| r.is_err()).count() >= 10);
        assert_eq!(many.sessions(), one.sessions());
        for r in &records {
            assert_eq!(many.head(&r.session), one.head(&r.session));
        }
    }

    #[test]
    fn invalid_record_leaves_chain_and_buffer_untouched() {
        let mut chain = Chain::new("w");
        let mut out = b"x".to_vec();
        let mut r = TraceRecord::new("", Kind::Span, "n");
        assert!(matches!(
            chain.append(&mut r, &mut out),
            Err(Error::InvalidRecord { .. })
        ));
        assert_eq!(out, b"x");
        assert_eq!(chain.sessions(), 0);
    }

    #[test]
    fn genesis_depends_on_writer() {
        let mut a = Chain::new("w1");
        let mut b = Chain::new("w2");
        let (mut r1, mut r2) = (
            TraceRecord::new("s", Kind::Span, "n"),
            TraceRecord::new("s", Kind::Span, "n"),
        );
        let mut out = Vec::new();
        assert_ne!(
            a.append(&mut r1, &mut out).unwrap(),
            b.append(&mut r2, &mut out).unwrap()
        );
    }
}
