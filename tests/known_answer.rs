//! Known-answer tests: the test vectors of docs/FORMAT.md §9.
//!
//! `tests/vectors/kat/` holds a tiny archive written with a fixed key and
//! clock. These tests recompute every hash from the documented inputs and
//! compare with the constants below (which FORMAT.md lists too), and verify
//! the checked-in archive. To rewrite the vector files after a deliberate
//! format change, run with `SEALTRAIL_WRITE_VECTORS=1` (and bump the format
//! version).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sealtrail::digest::{genesis, record_hash, seal_genesis};
use sealtrail::keys::{key_id, SigningKey};
use sealtrail::seal::{seal_hash, verify_seal, Seal};
use sealtrail::verify::{verify, VerifyOptions};
use sealtrail::{
    chain, merkle, Archive, Attributes, Event, Kind, Status, StatusCode, TraceRecord, Value,
    Writer, WriterOptions,
};

const KEY_SEED: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
const WRITER: &str = "kat";
const T0: u64 = 1_700_000_000_000_000_000;

const PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
const KEY_ID: &str = "6095fd172260c3d5";
const GENESIS_S1: &str = "dea19941038236cf442b3677a225a8511adf3934d8e455d3447e7a33b21a6d6c";
const GENESIS_S2: &str = "a7ffa83dca7aabc0b911c24d2efa3a2d47ec81cd012f523a0e8fabb2fca24b3b";
const SEAL1_HASH: &str = "caa28587bc5fdee026259e2a08559c3278341a3eb3fca46b4d58982c32387e89";
const BATCH0_SHA256: &str = "c95e28f18015ca913d72db227c60073a604c22bf73d5434275abc2b2392be599";
const SEAL_GENESIS: &str = "0b5d489dff8dbc32eff77ed365d35978c445cc3dae3c42586a4bbf712ba7d6af";
const RECORD_HASHES: [&str; 3] = [
    "c1cb9f789b86963c09f7566e9f35290dcef1f9ef50b9190270b6414ed88d8e2f",
    "8c4255c9c8106cf265c7bc24d7749f93205dfc9a3da86cad1ea69ac7bfcae05b",
    "901e9c5ffa81ca2f8b8f2e34aeffd2604976c4588cb750abdc7d1bf90314819c",
];
const MERKLE_ROOT: &str = "57142b3bc31cb25ba4894e8211fbddd1fe2d12cd2f2f92b44a6e45f88c169b84";
const SEAL0_HASH: &str = "19a039885bbc403f3ec55d899f4826a73f603b4c7a269f0e959f1cdba22c7300";
const SEAL0_SIGNATURE: &str = "514baf0986edffea18624211189ed14d0042d1774b487d4963b9aa823455db37d318a04d2a39678eb8f4994b3d873138d5e7e063ea9e31a567b6d44610b07d0a";

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/kat")
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&KEY_SEED)
}

/// The three records of the vector archive, before chaining.
fn records() -> Vec<TraceRecord> {
    let mut llm = TraceRecord::new("s-1", Kind::LlmCall, "chat gpt-4o");
    llm.attributes = [
        ("gen_ai.operation.name", Value::from("chat")),
        ("gen_ai.request.model", Value::from("gpt-4o")),
        ("gen_ai.usage.input_tokens", Value::Int(12)),
        ("gen_ai.request.temperature", Value::Float(0.5)),
        (
            "gen_ai.prompt",
            Value::from("Is claim C-1 covered? \u{e9}\u{1f600}\n"),
        ),
    ]
    .into_iter()
    .collect();
    llm.start_ns = T0;
    llm.end_ns = T0 + 1_500_000;
    llm.received_ns = T0 + 2_000_000;
    llm.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    llm.span_id = Some("00f067aa0ba902b7".into());
    llm.source = "otlp".into();
    llm.status = Status {
        code: StatusCode::Ok,
        message: None,
    };
    llm.resource = [("service.name", Value::from("claims-agent"))]
        .into_iter()
        .collect();

    let mut tool = TraceRecord::new("s-1", Kind::ToolCall, "execute_tool lookup");
    tool.attributes = [
        ("gen_ai.tool.name", Value::from("lookup")),
        (
            "args",
            Value::Map([("id", Value::from("C-1"))].into_iter().collect()),
        ),
        (
            "tags",
            Value::Array(vec![Value::Bool(true), Value::Bytes(vec![0, 1, 254])]),
        ),
    ]
    .into_iter()
    .collect();
    tool.start_ns = T0 + 3_000_000;
    tool.end_ns = T0 + 4_000_000;
    tool.received_ns = T0 + 5_000_000;
    tool.parent_span_id = Some("00f067aa0ba902b7".into());
    tool.source = "tracing".into();
    tool.status = Status {
        code: StatusCode::Error,
        message: Some("timeout".into()),
    };
    tool.events = vec![Event {
        attributes: Attributes::new(),
        name: "retry".into(),
        time_ns: T0 + 3_500_000,
    }];

    let mut policy = TraceRecord::new("s-2", Kind::PolicyCheck, "policy payments");
    policy.attributes = [
        ("policy.decision", Value::from("deny")),
        ("policy.name", Value::from("payments")),
    ]
    .into_iter()
    .collect();
    policy.start_ns = T0 + 6_000_000;
    policy.end_ns = T0 + 6_000_000;
    policy.received_ns = T0 + 7_000_000;
    policy.source = "tracing".into();
    vec![llm, tool, policy]
}

fn clock() -> impl Fn() -> u64 + Send + Sync + 'static {
    let t = Arc::new(AtomicU64::new(T0 + 10_000_000_000));
    move || t.fetch_add(1_000_000_000, Ordering::SeqCst)
}

#[test]
fn key_and_genesis_values() {
    let k = key();
    assert_eq!(hex::encode(k.verifying_key().as_bytes()), PUBLIC_KEY);
    assert_eq!(key_id(&k.verifying_key()), KEY_ID);
    assert_eq!(genesis(WRITER, "s-1").to_hex(), GENESIS_S1);
    assert_eq!(genesis(WRITER, "s-2").to_hex(), GENESIS_S2);
    assert_eq!(seal_genesis(WRITER).to_hex(), SEAL_GENESIS);
}

#[test]
fn record_lines_hashes_and_merkle_root() {
    let mut c = chain::Chain::new(WRITER);
    let mut lines = Vec::new();
    let mut hashes = Vec::new();
    for mut r in records() {
        hashes.push(c.append(&mut r, &mut lines).unwrap());
    }
    let want =
        std::fs::read(vectors().join("batch-0.jsonl")).expect("tests/vectors/kat/batch-0.jsonl");
    assert_eq!(
        String::from_utf8_lossy(&lines),
        String::from_utf8_lossy(&want)
    );
    for (i, line) in lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        // The hash is of the bytes between `"record":` and the final `}`.
        assert_eq!(
            record_hash(&line[chain::RECORD_OFFSET..line.len() - 1]),
            hashes[i]
        );
        assert_eq!(hashes[i].to_hex(), RECORD_HASHES[i], "record {i}");
    }
    assert_eq!(merkle::root(&hashes).unwrap().to_hex(), MERKLE_ROOT);
}

#[test]
fn seal_hash_and_signature() {
    let s: Seal = serde_json::from_slice(
        &std::fs::read(vectors().join("archive/v1/writers/kat/seals/00000000000000000000.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seal_hash(&s.body).unwrap().to_hex(), SEAL0_HASH);
    assert_eq!(s.hash.to_hex(), SEAL0_HASH);
    assert_eq!(s.signature, SEAL0_SIGNATURE);
    verify_seal(&s, &[key().verifying_key()]).unwrap();
    let batch = s.body.batch.unwrap();
    assert_eq!(batch.merkle_root.to_hex(), MERKLE_ROOT);
    assert_eq!(batch.sha256.to_hex(), BATCH0_SHA256);
    let object = std::fs::read(vectors().join("archive").join(&batch.key)).unwrap();
    assert_eq!(sealtrail::Digest::sha256(&object).to_hex(), BATCH0_SHA256);

    let s1: Seal = serde_json::from_slice(
        &std::fs::read(vectors().join("archive/v1/writers/kat/seals/00000000000000000001.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seal_hash(&s1.body).unwrap().to_hex(), SEAL1_HASH);
    assert_eq!(s1.body.prev_seal.to_hex(), SEAL0_HASH);
    assert!(s1.body.closed && s1.body.batch.is_none());
    verify_seal(&s1, &[key().verifying_key()]).unwrap();
}

#[tokio::test]
async fn checked_in_archive_verifies_intact() {
    let archive = Archive::open(vectors().join("archive").to_str().unwrap()).unwrap();
    let public = sealtrail::keys::read_verifying_key(&vectors().join("public.pem")).unwrap();
    assert_eq!(public, key().verifying_key());
    let r = verify(&archive, &[public], &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.is_intact(), "{:?}", r.findings);
    assert_eq!((r.writers, r.batches, r.sessions, r.records), (1, 2, 2, 3));
}

/// Writes the vector files when `SEALTRAIL_WRITE_VECTORS=1`; otherwise checks
/// that writing them again gives the same decompressed content and seals
/// (the compressed bytes may differ between zstd versions).
#[tokio::test]
async fn writer_reproduces_the_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(dir.path().to_str().unwrap()).unwrap();
    let opts = WriterOptions::default().with_clock(clock());
    let mut w = Writer::open(archive.clone(), key(), WRITER, opts)
        .await
        .unwrap();
    let mut lines = Vec::new();
    let mut c = chain::Chain::new(WRITER);
    for r in records() {
        c.append(&mut r.clone(), &mut lines).unwrap();
        w.append(r).unwrap();
    }
    let first = w.flush().await.unwrap().unwrap();
    w.close().await.unwrap();
    if std::env::var("SEALTRAIL_WRITE_VECTORS").as_deref() == Ok("1") {
        let out = vectors();
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("batch-0.jsonl"), &lines).unwrap();
        copy_dir(dir.path(), &out.join("archive"));
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let pem = key()
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        std::fs::write(out.join("public.pem"), pem).unwrap();
        let seal: Seal =
            serde_json::from_slice(&archive.get(&first.seal_key).await.unwrap()).unwrap();
        println!(
            "PUBLIC_KEY {}",
            hex::encode(key().verifying_key().as_bytes())
        );
        println!("KEY_ID {}", key_id(&key().verifying_key()));
        println!("GENESIS_S1 {}", genesis(WRITER, "s-1"));
        println!("SEAL_GENESIS {}", seal_genesis(WRITER));
        println!("SEAL0_HASH {}", seal.hash);
        println!("SEAL0_SIGNATURE {}", seal.signature);
        println!(
            "SEAL0 {}",
            String::from_utf8_lossy(&archive.get(&first.seal_key).await.unwrap())
        );
        return;
    }
    let batch = archive
        .get(first.batch_key.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(zstd::decode_all(&batch[..]).unwrap(), lines);
    assert_eq!(
        lines,
        std::fs::read(vectors().join("batch-0.jsonl")).unwrap()
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
