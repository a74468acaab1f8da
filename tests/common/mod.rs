//! Shared fixtures: a small deterministic archive and the tools an attacker
//! with write access to the storage (but not the signing key) would use.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sealtrail::archive::ObjectInfo;
use sealtrail::keys::SigningKey;
use sealtrail::record::StoredRecord;
use sealtrail::verify::{verify, Finding, Problem, Report, VerifyOptions};
use sealtrail::writer::SealReceipt;
use sealtrail::{Archive, Attributes, Kind, TraceRecord, Value, Writer, WriterOptions};

/// 2023-11-14T22:13:20Z in unix nanoseconds.
pub const T0: u64 = 1_700_000_000_000_000_000;
pub const HEARTBEAT: Duration = Duration::from_secs(60);

pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// A clock that advances one second per reading.
pub fn clock() -> (Arc<AtomicU64>, impl Fn() -> u64 + Send + Sync + 'static) {
    let t = Arc::new(AtomicU64::new(T0));
    let c = t.clone();
    (t, move || c.fetch_add(1_000_000_000, Ordering::SeqCst))
}

pub struct Fixture {
    pub archive: Archive,
    pub receipts: Vec<SealReceipt>,
    pub now: Arc<AtomicU64>,
}

/// A record as an agent would produce it: `i` picks the kind and content.
pub fn sample_record(session: &str, i: usize) -> TraceRecord {
    let kinds = [
        Kind::LlmCall,
        Kind::ToolCall,
        Kind::PolicyCheck,
        Kind::Human,
        Kind::Agent,
    ];
    let kind = kinds[i % kinds.len()];
    let mut r = TraceRecord::new(session, kind, format!("{kind} #{i}"));
    r.start_ns = T0 + i as u64 * 1000;
    r.end_ns = r.start_ns + 500;
    r.received_ns = r.end_ns;
    r.source = "test".into();
    let mut a = Attributes::new();
    a.insert("gen_ai.request.model", "gpt-4o");
    a.insert("gen_ai.usage.input_tokens", Value::Int(100 + i as i64));
    a.insert("temperature", 0.25f64);
    a.insert(
        "prompt",
        format!("question {i}: what does clause {i} say? ünïcødé 😀"),
    );
    r.attributes = a;
    r
}

/// Writes `batches` batches of `per_batch` records, interleaving `sessions`
/// sessions, with a heartbeat seal after the second batch, then closes.
pub async fn build_in(
    archive: Archive,
    writer: &str,
    sessions: usize,
    batches: usize,
    per_batch: usize,
) -> Fixture {
    let (now, clk) = clock();
    let opts = WriterOptions::default()
        .with_heartbeat(HEARTBEAT)
        .with_clock(clk);
    let mut w = Writer::open(archive.clone(), key(), writer, opts)
        .await
        .unwrap();
    let mut receipts = Vec::new();
    let mut i = 0;
    for b in 0..batches {
        for _ in 0..per_batch {
            w.append(sample_record(&format!("session-{}", i % sessions), i))
                .unwrap();
            i += 1;
        }
        receipts.push(w.flush().await.unwrap().unwrap());
        if b == 1 {
            receipts.push(w.heartbeat().await.unwrap());
        }
    }
    receipts.push(w.close().await.unwrap());
    Fixture {
        archive,
        receipts,
        now,
    }
}

pub async fn build(sessions: usize, batches: usize, per_batch: usize) -> Fixture {
    build_in(Archive::memory(), "w1", sessions, batches, per_batch).await
}

impl Fixture {
    /// Verifies as of one second after the last seal.
    pub async fn verify(&self) -> Report {
        self.verify_as_of(self.now.load(Ordering::SeqCst)).await
    }

    pub async fn verify_as_of(&self, as_of: u64) -> Report {
        self.verify_with_options(VerifyOptions::default().with_as_of(as_of))
            .await
    }

    /// Verifies with `opts`, as of one second after the last seal.
    pub async fn verify_opts(&self, opts: VerifyOptions) -> Report {
        let now = self.now.load(Ordering::SeqCst);
        self.verify_with_options(opts.with_as_of(now)).await
    }

    async fn verify_with_options(&self, opts: VerifyOptions) -> Report {
        verify(
            &self.archive,
            &[key().verifying_key()],
            &opts.with_threads(2),
        )
        .await
        .unwrap()
    }

    /// The key of batch `n`'s object.
    pub fn batch_key(&self, n: u64) -> String {
        self.receipts
            .iter()
            .find(|r| r.batch_no == n)
            .and_then(|r| r.batch_key.clone())
            .unwrap()
    }

    pub fn seal_key(&self, n: u64) -> String {
        self.receipts
            .iter()
            .find(|r| r.batch_no == n)
            .unwrap()
            .seal_key
            .clone()
    }

    pub async fn objects(&self) -> Vec<ObjectInfo> {
        self.archive.list("").await.unwrap()
    }

    pub async fn get(&self, key: &str) -> Bytes {
        self.archive.get(key).await.unwrap()
    }

    /// Overwrites an object, as someone with storage write access could.
    pub async fn overwrite(&self, key: &str, bytes: impl Into<Bytes>) {
        self.archive
            .store()
            .put(&Path::from(key), PutPayload::from(bytes.into()))
            .await
            .unwrap();
    }

    pub async fn delete(&self, key: &str) {
        self.archive.store().delete(&Path::from(key)).await.unwrap();
    }

    /// The decompressed lines of a batch (without their newlines).
    pub async fn lines(&self, key: &str) -> Vec<Vec<u8>> {
        let raw = zstd::decode_all(&self.get(key).await[..]).unwrap();
        raw.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Recompresses `lines` and overwrites the batch object with them.
    pub async fn write_lines(&self, key: &str, lines: &[Vec<u8>]) {
        let mut raw = Vec::new();
        for l in lines {
            raw.extend_from_slice(l);
            raw.push(b'\n');
        }
        self.overwrite(key, zstd::encode_all(&raw[..], 3).unwrap())
            .await;
    }
}

pub fn parse_line(line: &[u8]) -> StoredRecord {
    serde_json::from_slice(line).unwrap()
}

/// Encodes `record` as a batch line with a hash consistent with its content.
pub fn forge_line(record: &TraceRecord) -> Vec<u8> {
    let mut out = Vec::new();
    sealtrail::chain::encode_line(record, &mut out).unwrap();
    out.pop();
    out
}

/// The findings with this problem.
pub fn with_problem<'a>(
    report: &'a Report,
    pred: impl Fn(&Problem) -> bool + 'a,
) -> Vec<&'a Finding> {
    report
        .findings
        .iter()
        .filter(|f| pred(&f.problem))
        .collect()
}

pub fn show(report: &Report) -> String {
    let mut s = report.summary();
    for f in &report.findings {
        s.push_str(&format!("\n  {f}"));
    }
    s
}

/// Every record in the archive, writer by writer, in batch order.
pub async fn all_records(archive: &Archive) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    for o in archive.list("v1/writers/").await.unwrap() {
        if o.key.ends_with(".jsonl.zst") {
            let raw = zstd::decode_all(&archive.get(&o.key).await.unwrap()[..]).unwrap();
            for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(parse_line(line).record);
            }
        }
    }
    out
}

/// A layer builder for tests: in-memory archive, the test key, a spool in `dir`, fast flushes.
pub fn layer_builder(archive: &Archive, dir: &std::path::Path) -> sealtrail::AuditLayerBuilder {
    sealtrail::AuditLayer::builder()
        .with_archive(archive.clone())
        .with_signing_key(key())
        .with_spool_dir(dir.join("spool"))
        .with_writer_id("test-writer")
        .with_flush_interval(Duration::from_millis(50))
}

/// Traces `n` `chat` spans (field `i`: 0, 1, …) through `layer`, then
/// drops `guard`, which seals them all.
pub fn trace_chats(layer: sealtrail::AuditLayer, guard: sealtrail::FlushGuard, n: u64) {
    use tracing_subscriber::prelude::*;
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..n {
            tracing::info_span!("chat", gen_ai.operation.name = "chat", i).in_scope(|| {});
        }
    });
    drop(guard);
}

/// Verifies the archive at `url` now: it must be intact and hold `records`.
pub async fn assert_intact(url: &str, records: u64) {
    let report = verify_now(&Archive::open(url).unwrap()).await;
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!(report.records, records);
}

/// Verifies now, with the test key.
pub async fn verify_now(archive: &Archive) -> Report {
    verify(archive, &[key().verifying_key()], &VerifyOptions::default())
        .await
        .unwrap()
}

/// SplitMix64: a small, seeded, reproducible generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One change to one file of an archive, as a campaign draws them.
#[derive(Clone, Debug)]
pub enum Mutation {
    Flip { key: String, byte: usize, bit: u8 },
    Truncate { key: String, to: usize },
    Delete { key: String },
    Append { key: String, bytes: Vec<u8> },
}

impl Mutation {
    /// A random mutation of one of `files`: half bit flips, a fifth
    /// truncations, a tenth deletions, a fifth appends of 1 to 16 bytes.
    pub fn random(rng: &mut Rng, files: &[(String, Bytes)]) -> Mutation {
        let (key, bytes) = &files[rng.below(files.len())];
        let key = key.clone();
        match rng.below(10) {
            0..=4 => Mutation::Flip {
                key,
                byte: rng.below(bytes.len()),
                bit: rng.below(8) as u8,
            },
            5 | 6 => Mutation::Truncate {
                key,
                to: rng.below(bytes.len()),
            },
            7 => Mutation::Delete { key },
            _ => {
                let n = 1 + rng.below(16);
                Mutation::Append {
                    key,
                    bytes: (0..n).map(|_| rng.next() as u8).collect(),
                }
            }
        }
    }

    /// 0 flip, 1 truncation, 2 deletion, 3 append.
    pub fn kind(&self) -> usize {
        match self {
            Mutation::Flip { .. } => 0,
            Mutation::Truncate { .. } => 1,
            Mutation::Delete { .. } => 2,
            Mutation::Append { .. } => 3,
        }
    }

    /// What the file `key` holds once mutated; `None` when it is deleted.
    pub fn apply(&self, key: &str, bytes: &Bytes) -> Option<Bytes> {
        Some(match self {
            Mutation::Flip { key: k, byte, bit } if k == key => {
                let mut v = bytes.to_vec();
                v[*byte] ^= 1 << bit;
                Bytes::from(v)
            }
            Mutation::Truncate { key: k, to } if k == key => bytes.slice(..*to),
            Mutation::Delete { key: k } if k == key => return None,
            Mutation::Append {
                key: k,
                bytes: extra,
            } if k == key => Bytes::from([&bytes[..], extra].concat()),
            _ => bytes.clone(),
        })
    }
}
