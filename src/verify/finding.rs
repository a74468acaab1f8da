//! What `verify` can find wrong: one [`Problem`] variant per way a trail can
//! be wrong, each at a precise [`Location`].

use std::fmt;

use serde::Serialize;

use crate::digest::Digest;

/// Where a finding is. Fields that do not apply are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Writer id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Batch number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_no: Option<u64>,
    /// Object key, relative to the archive root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Record seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Byte offset of the line within the decompressed batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut part = |f: &mut fmt::Formatter<'_>, s: String| {
            let r = write!(f, "{sep}{s}");
            sep = " ";
            r
        };
        if let Some(w) = &self.writer {
            part(f, format!("writer {w}"))?;
        }
        if let Some(b) = self.batch_no {
            part(f, format!("batch {b}"))?;
        }
        if let Some(s) = &self.session {
            part(f, format!("session {s:?}"))?;
        }
        if let Some(s) = self.seq {
            part(f, format!("seq {s}"))?;
        }
        if let Some(o) = self.offset {
            part(f, format!("at byte {o}"))?;
        }
        if let Some(k) = &self.key {
            // An object alone is named as it is; after a place, in brackets.
            let alone = self.writer.is_none()
                && self.batch_no.is_none()
                && self.session.is_none()
                && self.seq.is_none()
                && self.offset.is_none();
            part(f, if alone { k.clone() } else { format!("({k})") })?;
        }
        Ok(())
    }
}

/// One way the archive differs from what was sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The archive holds no seal at all: nothing is proven, not even that
    /// nothing was written (a wrong store, or everything deleted).
    NoSeals,
    /// The session asked for (`--session`) has no record in the archive.
    SessionNotFound,
    /// A writer the verifier was told to expect (`--expect-writer`) has no
    /// seal in the archive: deleted whole, or never written.
    WriterMissing,
    /// An object that no seal covers (an unsealed batch, or anything else in the archive).
    UncoveredObject,
    /// S3: a delete marker hides the object (it was verified from its version).
    /// Who can place one is an access-control question the auditor needs to see.
    DeleteMarker,
    /// S3: the object's lock is missing, of another mode, or ends before its
    /// write time plus the retention policy (`--check-retention`).
    RetentionInsufficient {
        /// The policy's mode.
        expected_mode: &'static str,
        /// The object's mode, if locked.
        found_mode: Option<&'static str>,
        /// Write time plus the policy's period, unix ns.
        required_until_ns: u64,
        /// The object's retain-until, unix ns, if locked.
        found_until_ns: Option<u64>,
    },
    /// S3: the object version a seal names (the version written) is not there
    /// any more, or is not the version first written: it was deleted.
    SealedVersionMissing {
        /// The version id the seal names.
        version_id: String,
    },
    /// S3: the key has newer versions than the one first written (which was verified).
    ObjectOverwritten {
        /// How many versions with data the key has.
        versions: u64,
    },
    /// A seal object cannot be parsed.
    SealUnreadable {
        /// The parser's message.
        reason: String,
    },
    /// A seal's content does not match its key (writer, batch number, or batch key).
    SealMisplaced {
        /// The field.
        field: &'static str,
        /// What the key implies.
        expected: String,
        /// What the seal says.
        found: String,
    },
    /// A seal's stored hash is not the hash of its body: the body was changed.
    SealHashMismatch {
        /// The hash of the body as stored.
        expected: Digest,
        /// The stored hash.
        found: Digest,
    },
    /// A seal is signed by a key that is not trusted.
    UnknownSigningKey {
        /// Its key id.
        found: String,
        /// The trusted key ids.
        trusted: Vec<String>,
    },
    /// A seal's signature does not verify.
    BadSignature {
        /// The key id tried.
        key_id: String,
    },
    /// Seals (and their batches) are missing from a writer's sequence.
    MissingSeals {
        /// First missing batch number.
        first: u64,
        /// Last missing batch number.
        last: u64,
    },
    /// A seal's `prev_seal` is not the hash of the writer's previous seal.
    SealLinkBroken {
        /// The previous seal's hash.
        expected: Digest,
        /// The `prev_seal` found.
        found: Digest,
    },
    /// A seal is older than the seal before it.
    SealTimeRegressed {
        /// The previous seal's time.
        previous_ns: u64,
        /// This seal's time.
        found_ns: u64,
    },
    /// Two consecutive seals of an open writer are further apart than its heartbeat.
    HeartbeatGap {
        /// Time between the seals.
        gap_ns: u64,
        /// Heartbeat interval plus grace.
        allowed_ns: u64,
    },
    /// The newest seal of a writer that did not close is older than one heartbeat
    /// before the verification time: later seals may have been removed.
    WriterSilent {
        /// Time of the newest seal.
        last_seal_ns: u64,
        /// The verification time (`--as-of`).
        as_of_ns: u64,
        /// Heartbeat interval plus grace.
        allowed_ns: u64,
    },
    /// A sealed batch object is not in the archive.
    BatchMissing,
    /// A batch object's length differs from its seal.
    BatchLengthMismatch {
        /// Sealed length.
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// A batch object's SHA-256 differs from its seal.
    BatchDigestMismatch {
        /// Sealed digest.
        expected: Digest,
        /// Digest of the object found.
        found: Digest,
    },
    /// A batch object is not one complete zstd frame.
    BatchUndecodable {
        /// What failed.
        reason: String,
    },
    /// Bytes follow the zstd frame of a batch object.
    BatchTrailingData {
        /// Length of the frame.
        frame_len: u64,
        /// Length of the object.
        found_len: u64,
    },
    /// A batch line is not `{"hash":"<64 hex>","record":{…}}`.
    LineMalformed {
        /// What is wrong.
        reason: String,
    },
    /// A record's JSON lacks a readable `session`, `seq` or `prev`.
    RecordMalformed {
        /// The parser's message.
        reason: String,
    },
    /// A record's bytes do not hash to the hash it was chained and sealed with: the record was changed.
    RecordHashMismatch {
        /// The stored (sealed) hash.
        expected: Digest,
        /// The hash of the record's bytes as found.
        found: Digest,
    },
    /// A batch holds a different number of records than its seal states.
    RecordCountMismatch {
        /// Sealed count.
        expected: u64,
        /// Count found.
        found: u64,
    },
    /// The Merkle root of a batch's record hashes differs from its seal.
    MerkleRootMismatch {
        /// Sealed root.
        expected: Digest,
        /// Root of the records found.
        found: Digest,
    },
    /// A session's seq does not continue from the previous record (missing,
    /// inserted, duplicated or reordered records).
    SeqDiscontinuity {
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A record's `prev` is not the hash of the session's previous record.
    ChainLinkBroken {
        /// Hash of the previous record.
        expected: Digest,
        /// The `prev` found.
        found: Digest,
    },
    /// A session's first record does not start from the session's genesis value.
    GenesisMismatch {
        /// The genesis value of this writer and session.
        expected: Digest,
        /// The `prev` found.
        found: Digest,
    },
    /// A record chains onto another session's records: it was moved between sessions.
    RecordOutOfSession {
        /// The session its `prev` belongs to.
        belongs_to: String,
    },
    /// A session's summary in the seal differs from the batch's records.
    SessionSummaryMismatch {
        /// `count`, `first_seq`, `last_seq` or `head`.
        field: &'static str,
        /// Sealed value.
        expected: String,
        /// Value found.
        found: String,
    },
    /// The seal lists a session that has no record in the batch.
    SessionNotInBatch,
    /// The batch holds records of a session that its seal does not list.
    SessionNotInSeal,
    /// The writer states, in a signed `gap` record, that it dropped records
    /// (its overload policy was to drop rather than wait): the trail is
    /// authentic but knowingly incomplete.
    RecordsDropped {
        /// How many records the gap record says were dropped.
        count: u64,
        /// Start of the period, unix ns.
        from_ns: u64,
        /// End of the period, unix ns.
        until_ns: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            NoSeals => write!(f, "the archive holds no seal: nothing is proven (wrong store, or everything deleted?)"),
            SessionNotFound => write!(f, "no record of this session is in the archive"),
            WriterMissing => write!(f, "no seal of this expected writer is in the archive (deleted whole?)"),
            UncoveredObject => write!(f, "object not covered by any seal"),
            DeleteMarker => write!(f, "a delete marker hides this object; its version was verified"),
            SealedVersionMissing { version_id } => {
                write!(f, "the version the seals name ({version_id}) is not the version found first: it was deleted")
            }
            RetentionInsufficient {
                expected_mode,
                found_mode,
                required_until_ns,
                found_until_ns,
            } => write!(
                f,
                "Object Lock is {} until {}; the policy requires {expected_mode} until {}",
                found_mode.unwrap_or("absent"),
                found_until_ns.map_or("-".into(), |n| (n / 1_000_000_000).to_string()),
                required_until_ns / 1_000_000_000
            ),
            ObjectOverwritten { versions } => write!(
                f,
                "the key has {versions} versions: it was written again after its first write, which was verified"
            ),
            SealUnreadable { reason } => write!(f, "seal unreadable: {reason}"),
            SealMisplaced { field, expected, found } => {
                write!(f, "seal {field} is {found:?} but its key implies {expected:?}")
            }
            SealHashMismatch { expected, found } => {
                write!(f, "seal body changed: it hashes to {expected}, stored hash is {found}")
            }
            UnknownSigningKey { found, trusted } => {
                write!(f, "signed by untrusted key {found} (trusted: {})", trusted.join(", "))
            }
            BadSignature { key_id } => write!(f, "signature does not verify with key {key_id}"),
            MissingSeals { first, last } if first == last => write!(f, "seal {first} missing"),
            MissingSeals { first, last } => write!(f, "seals {first} to {last} missing"),
            SealLinkBroken { expected, found } => {
                write!(f, "prev_seal is {found}, previous seal hashes to {expected}")
            }
            SealTimeRegressed { previous_ns, found_ns } => {
                write!(f, "seal time {found_ns} is before the previous seal's {previous_ns}")
            }
            HeartbeatGap { gap_ns, allowed_ns } => write!(
                f,
                "{} s without a seal; the heartbeat allows {} s",
                secs(*gap_ns),
                secs(*allowed_ns)
            ),
            WriterSilent { last_seal_ns, as_of_ns, allowed_ns } => write!(
                f,
                "newest seal is {} s older than the verification time (heartbeat allows {} s): the archive may be truncated",
                secs(as_of_ns.saturating_sub(*last_seal_ns)),
                secs(*allowed_ns)
            ),
            BatchMissing => write!(f, "sealed batch object is missing"),
            BatchLengthMismatch { expected, found } => {
                write!(f, "batch object is {found} bytes, sealed as {expected}")
            }
            BatchDigestMismatch { expected, found } => {
                write!(f, "batch object SHA-256 is {found}, sealed as {expected}")
            }
            BatchUndecodable { reason } => write!(f, "batch object cannot be decoded: {reason}"),
            BatchTrailingData { frame_len, found_len } => write!(
                f,
                "{} bytes follow the zstd frame (frame {frame_len} bytes, object {found_len})",
                found_len - frame_len
            ),
            LineMalformed { reason } => write!(f, "malformed line: {reason}"),
            RecordMalformed { reason } => write!(f, "malformed record: {reason}"),
            RecordHashMismatch { expected, found } => {
                write!(f, "record changed: its bytes hash to {found}, sealed as {expected}")
            }
            RecordCountMismatch { expected, found } => {
                write!(f, "batch holds {found} records, sealed as {expected}")
            }
            MerkleRootMismatch { expected, found } => {
                write!(f, "Merkle root of the records is {found}, sealed as {expected}")
            }
            SeqDiscontinuity { expected, found } => write!(f, "seq {found} where {expected} should follow"),
            ChainLinkBroken { expected, found } => {
                write!(f, "prev is {found}, the previous record hashes to {expected}")
            }
            GenesisMismatch { expected, found } => {
                write!(f, "first record's prev is {found}, the session's genesis is {expected}")
            }
            RecordOutOfSession { belongs_to } => {
                write!(f, "record chains onto session {belongs_to:?}: moved between sessions")
            }
            SessionSummaryMismatch { field, expected, found } => {
                write!(f, "session {field} is {found} in the batch, sealed as {expected}")
            }
            SessionNotInBatch => write!(f, "sealed session has no record in the batch"),
            SessionNotInSeal => write!(f, "session in the batch is not in its seal"),
            RecordsDropped { count, from_ns, until_ns } => write!(
                f,
                "the writer dropped {count} record(s) between {from_ns} and {until_ns} (unix ns) and says so in a signed gap record"
            ),
        }
    }
}

fn secs(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e9)
}

/// One thing wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where.
    #[serde(flatten)]
    pub at: Location,
    /// What.
    #[serde(flatten)]
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.to_string();
        if at.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{at}: {}", self.problem)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_read_as_sentences() {
        let f = |at: Location, problem| Finding { at, problem }.to_string();
        assert_eq!(
            f(Location::default(), Problem::NoSeals),
            "the archive holds no seal: nothing is proven (wrong store, or everything deleted?)"
        );
        let object = Location {
            key: Some("notes.txt".into()),
            ..Default::default()
        };
        assert!(f(object, Problem::UncoveredObject).starts_with("notes.txt: "));
        let writer = Location {
            writer: Some("w".into()),
            batch_no: Some(1),
            key: Some("k".into()),
            ..Default::default()
        };
        assert_eq!(
            f(writer, Problem::MissingSeals { first: 1, last: 2 }),
            "writer w batch 1 (k): seals 1 to 2 missing"
        );
    }
}
