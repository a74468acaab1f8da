//! Checks of one batch object against its seal. Pure CPU work on bytes
//! already read, so that batches can be checked in parallel.

use std::collections::HashMap;

use super::finding::{Finding, Location, Problem};
use crate::chain::{LINE_MIDDLE, LINE_PREFIX, RECORD_OFFSET};
use crate::digest::{genesis, record_hashes, Digest};
use crate::merkle;
use crate::record::{TraceRecord, GAP_DROPPED, GAP_SESSION};
use crate::seal::SealBody;

/// A batch to check: its writer, seal and key.
#[derive(Debug)]
pub(crate) struct BatchJob {
    pub(crate) writer: String,
    pub(crate) seal: SealBody,
    /// Also parse every record against the schema.
    pub(crate) strict: bool,
}

/// One session's records within a batch, as found.
#[derive(Clone, Debug)]
pub(crate) struct FoundSession {
    pub(crate) id: String,
    pub(crate) first_seq: u64,
    pub(crate) first_prev: Digest,
    /// Where the chain stands: the furthest seq reached and its hash (a
    /// record that goes backwards does not move it).
    pub(crate) last_seq: u64,
    pub(crate) head: Digest,
    pub(crate) count: u64,
    /// The seq and stored hash of the session's last record in the batch,
    /// by position: what its seal summary states (FORMAT.md §5).
    pub(crate) end_seq: u64,
    pub(crate) end_head: Digest,
}

/// What checking a batch found.
#[derive(Debug, Default)]
pub(crate) struct BatchResult {
    pub(crate) findings: Vec<Finding>,
    /// Sessions in order of first appearance; `None` if the batch could not be decoded.
    pub(crate) sessions: Option<Vec<FoundSession>>,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl BatchJob {
    fn at(&self) -> Location {
        Location {
            writer: Some(self.writer.clone()),
            batch_no: Some(self.seal.batch_no),
            key: self.seal.batch.as_ref().map(|b| b.key.clone()),
            ..Default::default()
        }
    }

    /// Checks `bytes` (the batch object) against the seal.
    pub(crate) fn check(&self, bytes: &[u8], max_decompressed: u64) -> BatchResult {
        let mut out = BatchResult::default();
        let Some(sealed) = &self.seal.batch else {
            return out;
        };
        let push = |out: &mut BatchResult, at: Location, problem: Problem| {
            out.findings.push(Finding { at, problem })
        };
        if bytes.len() as u64 != sealed.len {
            push(
                &mut out,
                self.at(),
                Problem::BatchLengthMismatch {
                    expected: sealed.len,
                    found: bytes.len() as u64,
                },
            );
        }
        let sha = Digest::sha256(bytes);
        if sha != sealed.sha256 {
            push(
                &mut out,
                self.at(),
                Problem::BatchDigestMismatch {
                    expected: sealed.sha256,
                    found: sha,
                },
            );
        }
        let content = match decode(bytes, max_decompressed) {
            Ok((content, frame_len)) => {
                if frame_len < bytes.len() {
                    push(
                        &mut out,
                        self.at(),
                        Problem::BatchTrailingData {
                            frame_len: frame_len as u64,
                            found_len: bytes.len() as u64,
                        },
                    );
                }
                content
            }
            Err(reason) => {
                push(&mut out, self.at(), Problem::BatchUndecodable { reason });
                return out;
            }
        };
        out.bytes = content.len() as u64;
        self.check_lines(&content, &mut out);
        out
    }

    fn check_lines(&self, content: &[u8], out: &mut BatchResult) {
        let sealed = self.seal.batch.as_ref().expect("checked by caller");
        let mut chains = Chains::with_capacity(sealed.records.min(1 << 20) as usize);
        // Lines are taken a chunk at a time: the chunk's records are hashed
        // side by side, then each line is checked in order.
        const CHUNK: usize = 64;
        let mut lines: Vec<Line<'_>> = Vec::with_capacity(CHUNK);
        let mut records: Vec<&[u8]> = Vec::with_capacity(CHUNK);
        let mut digests = [[0u8; 32]; CHUNK];
        let mut offset = 0usize;
        while offset < content.len() {
            lines.clear();
            records.clear();
            while offset < content.len() && lines.len() < CHUNK {
                let (line, next) = match memchr_newline(&content[offset..]) {
                    Some(i) => (&content[offset..offset + i], offset + i + 1),
                    None => (&content[offset..], content.len()),
                };
                let split = split_line(line);
                records.extend(split.map(|(_, rec)| rec));
                lines.push(Line {
                    start: offset,
                    bytes: line,
                    split,
                });
                offset = next;
            }
            let digests = &mut digests[..records.len()];
            record_hashes(&records, digests);
            let mut digests = digests.iter();
            for line in &lines {
                // A line of the line's form: its stored hash, its record,
                // and the record's hash (one computed per such line).
                let record = line.split.map(|(stored, rec)| {
                    let computed = digests.next().expect("a hash for each record");
                    (stored, rec, Digest(*computed))
                });
                self.check_line(content, line, record, &mut chains, out);
            }
        }
        self.check_totals(chains, out);
    }

    /// Checks one line of the batch; `record` is its stored hash, its
    /// record and the record's computed hash, `None` when the line does not
    /// have the line's form.
    fn check_line(
        &self,
        content: &[u8],
        line: &Line<'_>,
        record: Option<(Digest, &[u8], Digest)>,
        chains: &mut Chains,
        out: &mut BatchResult,
    ) {
        let line_start = line.start;
        let line = line.bytes;
        let at = |session: Option<&str>, seq: Option<u64>| Location {
            session: session.map(str::to_owned),
            seq,
            offset: Some(line_start as u64),
            ..self.at()
        };
        let mut push = |at: Location, problem: Problem| {
            out.findings.push(Finding { at, problem });
        };
        // No newline after the last line.
        if line_start + line.len() == content.len() {
            push(
                at(None, None),
                Problem::LineMalformed {
                    reason: "the last line does not end with a newline".into(),
                },
            );
        }
        let Some((stored, rec, computed)) = record else {
            push(
                at(None, None),
                Problem::LineMalformed {
                    reason: "not {\"hash\":\"<64 lowercase hex>\",\"record\":{…}}".into(),
                },
            );
            return;
        };
        out.records += 1;
        chains.hashes.push(stored);
        // Every record is walked (FORMAT.md §7), also one whose bytes
        // are what was sealed: only its own top-level members count.
        let read = super::scan::read_record(rec);
        let session = read.session.as_deref();
        // Built only for a finding: most records have none.
        let here = || at(session, read.seq);
        if !read.problems.is_empty() {
            let reason = read.problems.join("; ");
            push(here(), Problem::RecordMalformed { reason });
        }
        let placed = match (read.prev, read.seq, session) {
            (Some(prev), Some(seq), Some(s)) => Some((prev, seq, s)),
            _ => None,
        };
        if self.strict && placed.is_some() {
            if let Err(e) = serde_json::from_slice::<TraceRecord>(rec) {
                let reason = e.to_string();
                push(here(), Problem::RecordMalformed { reason });
            }
        }
        if session == Some(GAP_SESSION) {
            push(here(), gap_finding(rec));
        }
        if computed != stored {
            let problem = Problem::RecordHashMismatch {
                expected: stored,
                found: computed,
            };
            push(here(), problem);
        }
        // A record whose prev, seq or session cannot be read is not
        // placed in any chain.
        let Some((prev, seq, session)) = placed else {
            return;
        };
        if let Some(problem) = chains.place(&self.writer, session, seq, prev, stored) {
            push(here(), problem);
        }
    }

    /// The checks of the batch as a whole, once every line is read.
    fn check_totals(&self, chains: Chains, out: &mut BatchResult) {
        let sealed = self.seal.batch.as_ref().expect("checked by caller");
        if out.records != sealed.records {
            out.findings.push(Finding {
                at: self.at(),
                problem: Problem::RecordCountMismatch {
                    expected: sealed.records,
                    found: out.records,
                },
            });
        }
        let root = merkle::root(&chains.hashes).unwrap_or_default();
        if root != sealed.merkle_root {
            out.findings.push(Finding {
                at: self.at(),
                problem: Problem::MerkleRootMismatch {
                    expected: sealed.merkle_root,
                    found: root,
                },
            });
        }
        compare_summaries(self, &chains.sessions, &chains.index, out);
        out.sessions = Some(chains.sessions);
    }
}

/// The chains of one batch, as its lines are read.
struct Chains {
    /// Every line's stored hash, in order (the Merkle leaves).
    hashes: Vec<Digest>,
    /// The session (index) of the first record placed with each stored
    /// hash, to tell where a moved record came from.
    owners: HashMap<Digest, usize>,
    sessions: Vec<FoundSession>,
    index: HashMap<String, usize>,
}

impl Chains {
    fn with_capacity(records: usize) -> Chains {
        Chains {
            hashes: Vec::with_capacity(records),
            owners: HashMap::with_capacity(records),
            sessions: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Places a record (`stored` is its hash as the line states it) in its
    /// session's chain; returns what is wrong with its place, if anything.
    fn place(
        &mut self,
        writer: &str,
        session: &str,
        seq: u64,
        prev: Digest,
        stored: Digest,
    ) -> Option<Problem> {
        let (i, problem) = match self.index.get(session) {
            Some(&i) => (i, self.follow(i, seq, prev, stored)),
            None => self.start(writer, session, seq, prev, stored),
        };
        self.owners.entry(stored).or_insert(i);
        problem
    }

    /// A record of session `i`, seen before in this batch.
    fn follow(&mut self, i: usize, seq: u64, prev: Digest, stored: Digest) -> Option<Problem> {
        let s = &self.sessions[i];
        let next = s.last_seq.wrapping_add(1);
        let seq_problem = (seq != next).then_some(Problem::SeqDiscontinuity {
            expected: next,
            found: seq,
        });
        let problem = if prev != s.head {
            moved_from(&self.owners, &self.sessions, i, &prev)
                .or(seq_problem)
                .or(Some(Problem::ChainLinkBroken {
                    expected: s.head,
                    found: prev,
                }))
        } else {
            seq_problem
        };
        let s = &mut self.sessions[i];
        s.count += 1;
        (s.end_seq, s.end_head) = (seq, stored);
        // A record that goes backwards (reordered or replayed) does not move
        // the chain, so the records after it are judged against the furthest
        // point reached.
        if seq >= next {
            s.last_seq = seq;
            s.head = stored;
        }
        problem
    }

    /// The first record of `session` in this batch.
    fn start(
        &mut self,
        writer: &str,
        session: &str,
        seq: u64,
        prev: Digest,
        stored: Digest,
    ) -> (usize, Option<Problem>) {
        let i = self.sessions.len();
        self.sessions.push(FoundSession {
            id: session.to_owned(),
            first_seq: seq,
            first_prev: prev,
            last_seq: seq,
            head: stored,
            count: 1,
            end_seq: seq,
            end_head: stored,
        });
        self.index.insert(session.to_owned(), i);
        if let Some(problem) = moved_from(&self.owners, &self.sessions, i, &prev) {
            return (i, Some(problem));
        }
        if seq != 0 {
            // Linked to an earlier batch: checked across batches.
            return (i, None);
        }
        let g = genesis(writer, session);
        if prev == g {
            return (i, None);
        }
        let problem = self
            .sessions
            .iter()
            .find(|s| s.id != session && genesis(writer, &s.id) == prev)
            .map(|s| Problem::RecordOutOfSession {
                belongs_to: s.id.clone(),
            })
            .unwrap_or(Problem::GenesisMismatch {
                expected: g,
                found: prev,
            });
        (i, Some(problem))
    }
}

/// The finding for a writer's own `gap` record: always one, whatever else
/// is wrong with the record (count and times 0 where they cannot be read).
/// What a `sealtrail.gaps` record states (FORMAT.md §7, `records_dropped`):
/// each value as the independent reader reads it, 0 where it cannot be.
fn gap_finding(rec: &[u8]) -> Problem {
    let members =
        super::scan::members(rec, ["attributes", "start_ns", "end_ns"]).unwrap_or_default();
    let single = |k: usize| members[k].once();
    // Decimal digits without a leading zero, below `limit`.
    let digits = |s: &str, limit: u128| -> Option<u128> {
        let ok = !s.is_empty()
            && s.len() <= 20
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        s.parse::<u128>().ok().filter(|n| ok && *n < limit)
    };
    let time = |k: usize| {
        single(k)
            .and_then(|raw| serde_json::from_slice::<String>(raw).ok())
            .and_then(|t| digits(&t, 1 << 64))
            .map_or(0, |n| n as u64)
    };
    // attributes → audit.dropped (each once) → an object whose only member
    // is `int`, a string of digits.
    let count = single(0)
        .and_then(|attrs| super::scan::members(attrs, [GAP_DROPPED]).ok())
        .and_then(|[d]| d.once())
        .and_then(|d| super::scan::members_counted(d, ["int"]).ok())
        .and_then(|([int], total)| int.once().filter(|_| total == 1))
        .and_then(super::scan::string_value)
        .and_then(|n| digits(&n, 1 << 63))
        .map_or(0, |n| n as u64);
    Problem::RecordsDropped {
        count,
        from_ns: time(1),
        until_ns: time(2),
    }
}

/// If `prev` is the hash of an earlier record of another session (the
/// first record with that hash), the record was moved.
fn moved_from(
    owners: &HashMap<Digest, usize>,
    sessions: &[FoundSession],
    me: usize,
    prev: &Digest,
) -> Option<Problem> {
    owners
        .get(prev)
        .filter(|owner| **owner != me)
        .map(|owner| Problem::RecordOutOfSession {
            belongs_to: sessions[*owner].id.clone(),
        })
}

fn compare_summaries(
    job: &BatchJob,
    found: &[FoundSession],
    index: &HashMap<String, usize>,
    out: &mut BatchResult,
) {
    let at = |session: &str| Location {
        session: Some(session.to_owned()),
        ..job.at()
    };
    let mut listed = HashMap::new();
    for s in &job.seal.sessions {
        listed.insert(s.id.as_str(), ());
        let Some(&i) = index.get(&s.id) else {
            out.findings.push(Finding {
                at: at(&s.id),
                problem: Problem::SessionNotInBatch,
            });
            continue;
        };
        let f = &found[i];
        let mut mismatch = |field: &'static str, expected: String, found: String| {
            out.findings.push(Finding {
                at: at(&s.id),
                problem: Problem::SessionSummaryMismatch {
                    field,
                    expected,
                    found,
                },
            });
        };
        for (field, expected, found) in [
            ("count", s.count, f.count),
            ("first_seq", s.first_seq, f.first_seq),
            ("last_seq", s.last_seq, f.end_seq),
        ] {
            if expected != found {
                mismatch(field, expected.to_string(), found.to_string());
            }
        }
        if s.head != f.end_head {
            mismatch("head", s.head.to_hex(), f.end_head.to_hex());
        }
    }
    for f in found {
        if !listed.contains_key(f.id.as_str()) {
            out.findings.push(Finding {
                at: at(&f.id),
                problem: Problem::SessionNotInSeal,
            });
        }
    }
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', s)
}

/// A line of a batch: where it starts, its bytes (without the newline), and
/// its stored hash and record if it has the line's form.
struct Line<'a> {
    start: usize,
    bytes: &'a [u8],
    split: Option<(Digest, &'a [u8])>,
}

/// Splits `{"hash":"<hex>","record":<record>}` into the stored hash and the record bytes.
fn split_line(line: &[u8]) -> Option<(Digest, &[u8])> {
    if line.len() < RECORD_OFFSET + 3
        || !line.starts_with(LINE_PREFIX)
        || &line[LINE_PREFIX.len() + 64..RECORD_OFFSET] != LINE_MIDDLE
        || line[RECORD_OFFSET] != b'{'
        || line[line.len() - 1] != b'}'
    {
        return None;
    }
    let hash = Digest::from_hex(&line[LINE_PREFIX.len()..LINE_PREFIX.len() + 64])?;
    Some((hash, &line[RECORD_OFFSET..line.len() - 1]))
}

/// Decodes exactly one zstd frame at the start of `bytes`; returns the content
/// and the frame's length (shorter than `bytes` if data trails it). Content
/// beyond `max` bytes is refused, whether or not the frame states its size.
pub(crate) fn decode(bytes: &[u8], max: u64) -> Result<(Vec<u8>, usize), String> {
    use std::io::Read;
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(bytes).map_err(|code| {
        format!(
            "not a complete zstd frame ({})",
            zstd::zstd_safe::get_error_name(code)
        )
    })?;
    let frame = &bytes[..frame_len];
    let too_large = || format!("content exceeds the limit of {max} bytes");
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n > max => return Err(too_large()),
        Ok(Some(n)) => {
            let content = zstd::bulk::decompress(frame, n as usize).map_err(|e| e.to_string())?;
            if content.len() as u64 != n {
                return Err(format!(
                    "content is {} bytes, the frame header says {n}",
                    content.len()
                ));
            }
            return Ok((content, frame_len));
        }
        Ok(None) => {}
        Err(_) => return Err("the zstd frame header is invalid".into()),
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(|e| e.to_string())?;
    let mut content = Vec::new();
    decoder
        .single_frame()
        .take(max + 1)
        .read_to_end(&mut content)
        .map_err(|e| e.to_string())?;
    if content.len() as u64 > max {
        return Err(too_large());
    }
    Ok((content, frame_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gap record's count and times, read as FORMAT.md §7 says (and as
    /// the independent verifier reads them): 0 for anything else.
    #[test]
    fn gap_records_are_read_exactly() {
        let gap = |count: &str, start: &str| {
            let rec = format!(
                r#"{{"attributes":{{"audit.dropped":{count}}},"end_ns":"20","start_ns":{start},"v":1}}"#
            );
            match gap_finding(rec.as_bytes()) {
                Problem::RecordsDropped {
                    count,
                    from_ns,
                    until_ns,
                } => (count, from_ns, until_ns),
                p => panic!("{p:?}"),
            }
        };
        assert_eq!(gap(r#"{"int":"5"}"#, r#""10""#), (5, 10, 20));
        for count in [
            r#"{"int":"+5"}"#,
            r#"{"int":"05"}"#,
            r#"{"int":"-5"}"#,
            r#"{"int":5}"#,
            r#"{"int":"5","x":1}"#,
            r#"{"int":"9223372036854775808"}"#,
            r#"{"str":"5"}"#,
        ] {
            assert_eq!(gap(count, r#""10""#).0, 0, "{count}");
        }
        for start in [r#""+10""#, r#""010""#, "10", r#""18446744073709551616""#] {
            assert_eq!(gap(r#"{"int":"5"}"#, start).1, 0, "{start}");
        }
        // Only the members on the way are read: anything else in the
        // attributes is not (a lone surrogate, a repeated name elsewhere).
        let rec =
            br#"{"attributes":{"audit.dropped":{"int":"5"},"x":"\ud800","y":{"a":1,"a":2}},"v":1}"#;
        assert!(matches!(
            gap_finding(rec),
            Problem::RecordsDropped { count: 5, .. }
        ));
        // A repeated audit.dropped, or int: unreadable.
        for rec in [
            &br#"{"attributes":{"audit.dropped":{"int":"5"},"audit.dropped":{"int":"5"}},"v":1}"#[..],
            br#"{"attributes":{"audit.dropped":{"int":"5","int":"5"}},"v":1}"#,
        ] {
            assert!(matches!(
                gap_finding(rec),
                Problem::RecordsDropped { count: 0, .. }
            ));
        }
    }

    #[test]
    fn every_gap_record_is_reported_whatever_else_is_wrong_with_it() {
        let found = |rec: &str| gap_finding(rec.as_bytes());
        assert_eq!(
            found(r#"{"attributes":{"audit.dropped":{"int":"5"}},"end_ns":"9","start_ns":"7"}"#),
            Problem::RecordsDropped {
                count: 5,
                from_ns: 7,
                until_ns: 9
            }
        );
        for bad in [
            "",
            "{}",
            r#"{"attributes":{"audit.dropped":{"int":"-3"}}}"#,
            r#"{"attributes":{"audit.dropped":{"str":"x"}}}"#,
        ] {
            assert_eq!(
                found(bad),
                Problem::RecordsDropped {
                    count: 0,
                    from_ns: 0,
                    until_ns: 0
                },
                "{bad}"
            );
        }
    }
}
