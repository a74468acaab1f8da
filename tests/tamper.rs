//! Each way of tampering with an archive is detected and named precisely.

mod common;

use common::*;
use sealtrail::seal::Seal;
use sealtrail::verify::{Location, Problem};
use sealtrail::Digest;

/// Batch 1 holds records 12..24: sessions 0, 1, 2 in turn, seqs 4..=7 each.
async fn fixture() -> Fixture {
    let f = build(3, 4, 12).await;
    let r = f.verify().await;
    assert!(r.is_intact(), "{}", show(&r));
    assert_eq!((r.writers, r.batches, r.sessions, r.records), (1, 6, 3, 48));
    f
}

fn line_of(lines: &[Vec<u8>], session: &str, seq: u64) -> usize {
    lines
        .iter()
        .position(|l| {
            let r = parse_line(l).record;
            r.session == session && r.seq == seq
        })
        .unwrap()
}

#[tokio::test]
async fn one_changed_byte_in_a_record_is_named_by_session_and_seq() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    let i = line_of(&lines, "session-1", 5);
    let original = parse_line(&lines[i]);
    let pos = lines[i].windows(8).position(|w| w == b"question").unwrap();
    lines[i][pos] = b'Q';
    let offset: usize = lines[..i].iter().map(|l| l.len() + 1).sum();
    f.write_lines(&key, &lines).await;

    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::RecordHashMismatch { .. }));
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(
        hits[0].at,
        Location {
            writer: Some("w1".into()),
            batch_no: Some(1),
            key: Some(key.clone()),
            session: Some("session-1".into()),
            seq: Some(5),
            offset: Some(offset as u64),
        }
    );
    match &hits[0].problem {
        Problem::RecordHashMismatch { expected, .. } => assert_eq!(*expected, original.hash),
        p => unreachable!("{p:?}"),
    }
    assert!(r.has(&Problem::BatchDigestMismatch {
        expected: sealed_digest(&f, 1).await,
        found: Digest::sha256(&f.get(&key).await),
    }));
    // The record hash as stored still links, so no chain finding is invented.
    assert!(with_problem(&r, |p| matches!(
        p,
        Problem::ChainLinkBroken { .. } | Problem::SeqDiscontinuity { .. }
    ))
    .is_empty());
}

/// A changed byte that leaves a record's chain fields findable but makes it
/// no JSON object (here: the quote that ends a string): the record is
/// malformed, not placed in its chain, and still a hash mismatch, as
/// FORMAT.md §7 says (and as the independent verifier reports).
#[tokio::test]
async fn an_altered_record_that_is_no_json_object_is_malformed() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    let i = line_of(&lines, "session-1", 5);
    let pos = lines[i].windows(8).position(|w| w == b"question").unwrap();
    let end = pos + lines[i][pos..].iter().position(|b| *b == b'"').unwrap();
    lines[i][end] = b'\xa2'; // '"' with its high bit set
    f.write_lines(&key, &lines).await;

    let r = f.verify().await;
    let malformed = with_problem(&r, |p| matches!(p, Problem::RecordMalformed { .. }));
    assert_eq!(malformed.len(), 1, "{}", show(&r));
    assert_eq!(
        (malformed[0].at.session.as_deref(), malformed[0].at.seq),
        (None, None),
        "{}",
        show(&r)
    );
    assert_eq!(
        with_problem(&r, |p| matches!(p, Problem::RecordHashMismatch { .. })).len(),
        1
    );
    // Not placed: the next record of its session is a seq gap.
    assert!(
        with_problem(&r, |p| matches!(p, Problem::SeqDiscontinuity { .. }))
            .iter()
            .any(|f| f.at.session.as_deref() == Some("session-1") && f.at.seq == Some(6))
    );
}

/// A seal without a batch lists no session. One signed by the key holder
/// that lists some claims records that no batch holds (a way to skip over
/// records): each listed session is named, as the independent verifier does.
#[tokio::test]
async fn a_seal_without_a_batch_that_lists_sessions_is_reported() {
    let f = fixture().await;
    let objects = f.objects().await;
    let newest = objects
        .iter()
        .filter(|o| o.key.contains("/seals/"))
        .map(|o| o.key.clone())
        .max()
        .unwrap();
    let mut s: Seal = serde_json::from_slice(&f.get(&newest).await).unwrap();
    assert!(s.body.batch.is_none() && s.body.sessions.is_empty());
    // The closing seal claims 5 more records of session-0 than were written.
    let before: Seal =
        serde_json::from_slice(&f.get(&f.seal_key(s.body.batch_no - 1)).await).unwrap();
    let mut skip = before.body.sessions[0].clone();
    skip.first_seq = skip.last_seq + 1;
    skip.last_seq += 5;
    skip.count = 5;
    skip.head = Digest::sha256(b"records no batch holds");
    s.body.sessions.push(skip);
    let s = sealtrail::seal::seal(s.body, &key()).unwrap();
    f.overwrite(&newest, serde_json::to_vec(&s).unwrap()).await;

    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::SessionNotInBatch));
    let named: Vec<_> = hits
        .iter()
        .map(|h| (h.at.batch_no, h.at.session.clone(), h.at.key.clone()))
        .collect();
    let want = vec![(
        Some(s.body.batch_no),
        Some(s.body.sessions[0].id.clone()),
        None,
    )];
    assert_eq!(named, want, "{}", show(&r));
    assert_eq!(r.findings.len(), 1, "{}", show(&r));
}

async fn sealed_digest(f: &Fixture, n: u64) -> Digest {
    let s: Seal = serde_json::from_slice(&f.get(&f.seal_key(n)).await).unwrap();
    s.body.batch.unwrap().sha256
}

#[tokio::test]
async fn a_changed_seal_field_breaks_its_hash_and_a_rehash_its_signature() {
    let f = fixture().await;
    let key = f.seal_key(3);
    let mut s: Seal = serde_json::from_slice(&f.get(&key).await).unwrap();
    s.body.sessions[0].count += 1;
    f.overwrite(&key, serde_json::to_vec(&s).unwrap()).await;
    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::SealHashMismatch { .. }));
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(
        (hits[0].at.batch_no, hits[0].at.key.as_deref()),
        (Some(3), Some(key.as_str()))
    );

    // Recomputing the hash does not help without the key.
    s.hash = sealtrail::seal::seal_hash(&s.body).unwrap();
    f.overwrite(&key, serde_json::to_vec(&s).unwrap()).await;
    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::BadSignature { .. }));
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(hits[0].at.batch_no, Some(3));
    assert!(with_problem(&r, |p| matches!(p, Problem::SealHashMismatch { .. })).is_empty());
    // The next seal links to the original hash.
    let links = with_problem(&r, |p| matches!(p, Problem::SealLinkBroken { .. }));
    assert_eq!(links.len(), 1, "{}", show(&r));
    assert_eq!(links[0].at.batch_no, Some(4));
}

#[tokio::test]
async fn a_deleted_record_is_a_seq_gap() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    lines.remove(line_of(&lines, "session-0", 6));
    f.write_lines(&key, &lines).await;
    let r = f.verify().await;
    let gaps = with_problem(&r, |p| matches!(p, Problem::SeqDiscontinuity { .. }));
    assert_eq!(gaps.len(), 1, "{}", show(&r));
    assert_eq!(
        gaps[0].problem,
        Problem::SeqDiscontinuity {
            expected: 6,
            found: 7
        }
    );
    assert_eq!(
        (gaps[0].at.session.as_deref(), gaps[0].at.seq),
        (Some("session-0"), Some(7))
    );
    assert!(r.has(&Problem::RecordCountMismatch {
        expected: 12,
        found: 11
    }));
    assert!(with_problem(&r, |p| matches!(p, Problem::MerkleRootMismatch { .. })).len() == 1);
    assert!(r.has(&Problem::SessionSummaryMismatch {
        field: "count",
        expected: "4".into(),
        found: "3".into()
    }));
}

#[tokio::test]
async fn a_forged_record_with_a_consistent_hash_is_caught_by_the_seal() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    // Append a record that continues session-2's chain perfectly.
    let last = parse_line(&lines[line_of(&lines, "session-2", 7)]);
    let mut forged = sample_record("session-2", 999);
    forged.seq = 8;
    forged.prev = last.hash;
    lines.push(forge_line(&forged));
    f.write_lines(&key, &lines).await;
    let r = f.verify().await;
    let heads = with_problem(&r, |p| {
        matches!(p, Problem::SessionSummaryMismatch { field: "head", .. })
    });
    assert_eq!(heads.len(), 1, "{}", show(&r));
    assert_eq!(
        (heads[0].at.batch_no, heads[0].at.session.as_deref()),
        (Some(1), Some("session-2"))
    );
    assert!(r.has(&Problem::SessionSummaryMismatch {
        field: "last_seq",
        expected: "7".into(),
        found: "8".into()
    }));
    assert!(r.has(&Problem::RecordCountMismatch {
        expected: 12,
        found: 13
    }));
    assert_eq!(
        with_problem(&r, |p| matches!(p, Problem::MerkleRootMismatch { .. })).len(),
        1
    );
    // And the chain in the next batch no longer fits.
    let gaps = with_problem(&r, |p| matches!(p, Problem::SeqDiscontinuity { .. }));
    assert_eq!(gaps.len(), 1, "{}", show(&r));
    assert_eq!(
        (gaps[0].at.batch_no, &gaps[0].problem),
        (
            Some(3),
            &Problem::SeqDiscontinuity {
                expected: 9,
                found: 8
            }
        )
    );
}

#[tokio::test]
async fn swapped_records_are_out_of_order() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    let (a, b) = (
        line_of(&lines, "session-0", 5),
        line_of(&lines, "session-0", 6),
    );
    lines.swap(a, b);
    f.write_lines(&key, &lines).await;
    let r = f.verify().await;
    let gaps = with_problem(&r, |p| matches!(p, Problem::SeqDiscontinuity { .. }));
    assert_eq!(
        gaps.iter()
            .map(|g| (g.at.seq, g.problem.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                Some(5),
                Problem::SeqDiscontinuity {
                    expected: 7,
                    found: 5
                }
            ),
            (
                Some(6),
                Problem::SeqDiscontinuity {
                    expected: 5,
                    found: 6
                }
            ),
        ],
        "{}",
        show(&r)
    );
    assert_eq!(
        with_problem(&r, |p| matches!(p, Problem::MerkleRootMismatch { .. })).len(),
        1
    );
    // Swapping records of different sessions keeps every chain intact but not the Merkle root.
    let f = fixture().await;
    let mut lines = f.lines(&key).await;
    let (a, b) = (
        line_of(&lines, "session-0", 5),
        line_of(&lines, "session-1", 5),
    );
    lines.swap(a, b);
    f.write_lines(&key, &lines).await;
    let r = f.verify().await;
    assert_eq!(
        with_problem(&r, |p| matches!(p, Problem::MerkleRootMismatch { .. })).len(),
        1,
        "{}",
        show(&r)
    );
}

#[tokio::test]
async fn a_record_moved_to_another_session_is_named() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    let i = line_of(&lines, "session-0", 6);
    let mut moved = parse_line(&lines[i]).record;
    moved.session = "session-1".into();
    lines[i] = forge_line(&moved);
    f.write_lines(&key, &lines).await;
    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::RecordOutOfSession { .. }));
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(
        hits[0].problem,
        Problem::RecordOutOfSession {
            belongs_to: "session-0".into()
        }
    );
    assert_eq!(
        (hits[0].at.session.as_deref(), hits[0].at.seq),
        (Some("session-1"), Some(6))
    );
    // session-0 lost its seq 6.
    assert!(with_problem(&r, |p| *p
        == Problem::SeqDiscontinuity {
            expected: 6,
            found: 7
        })
    .iter()
    .any(|g| g.at.session.as_deref() == Some("session-0")));
}

#[tokio::test]
async fn a_deleted_batch_and_seal_in_the_middle_are_missing() {
    let f = fixture().await;
    f.delete(&f.batch_key(1)).await;
    f.delete(&f.seal_key(1)).await;
    let r = f.verify().await;
    let hits = with_problem(&r, |p| matches!(p, Problem::MissingSeals { .. }));
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(hits[0].problem, Problem::MissingSeals { first: 1, last: 1 });
    assert_eq!(hits[0].at.writer.as_deref(), Some("w1"));
    // Every session then jumps from seq 4 to seq 8 in batch 3.
    let gaps = with_problem(&r, |p| {
        *p == Problem::SeqDiscontinuity {
            expected: 4,
            found: 8,
        }
    });
    assert_eq!(gaps.len(), 3, "{}", show(&r));
}

#[tokio::test]
async fn a_truncated_archive_is_detected_once_a_heartbeat_is_overdue() {
    let f = fixture().await;
    // Remove the newest data batch and the closing seal after it.
    let newest = f.receipts.iter().map(|r| r.batch_no).max().unwrap();
    for n in [newest, newest - 1] {
        if let Some(b) = f
            .receipts
            .iter()
            .find(|r| r.batch_no == n)
            .unwrap()
            .batch_key
            .clone()
        {
            f.delete(&b).await;
        }
        f.delete(&f.seal_key(n)).await;
    }
    let last_kept: Seal = serde_json::from_slice(&f.get(&f.seal_key(newest - 2)).await).unwrap();
    let t = last_kept.body.created_ns;
    // Within a heartbeat of the last kept seal, truncation cannot be told apart
    // from a writer still running (documented in FORMAT.md §7); the report
    // says until when.
    let r = f.verify_as_of(t + 30_000_000_000).await;
    assert!(r.is_intact());
    let w = &r.writer_states[0];
    assert_eq!((w.closed, w.last_seal_ns), (false, t));
    assert_eq!(w.silent_after_ns, Some(t + 65_000_000_000));
    assert!(w.to_string().contains("open, last seal"), "{w}");
    let as_of = t + 66_000_000_000;
    let r = f.verify_as_of(as_of).await;
    assert_eq!(r.findings.len(), 1, "{}", show(&r));
    assert_eq!(
        r.findings[0].problem,
        Problem::WriterSilent {
            last_seal_ns: t,
            as_of_ns: as_of,
            allowed_ns: 65_000_000_000
        }
    );
    assert_eq!(r.findings[0].at.batch_no, Some(newest - 2));
}

/// Each writer's chain proves itself only: a writer deleted whole leaves no
/// trace, unless the verifier is told to expect it. The report lists the
/// writers it found, so that an auditor can see which are there.
#[tokio::test]
async fn a_writer_deleted_whole_is_found_only_when_expected() {
    let archive = sealtrail::Archive::memory();
    let a = build_in(archive.clone(), "w1", 2, 2, 4).await;
    let b = build_in(archive.clone(), "w2", 2, 2, 4).await;
    for o in archive.list("v1/writers/w2/").await.unwrap() {
        b.delete(&o.key).await;
    }
    let as_of = a.now.load(std::sync::atomic::Ordering::SeqCst);
    let trusted = [key().verifying_key()];
    let opts = sealtrail::VerifyOptions::default().with_as_of(as_of);
    let r = sealtrail::verify(&archive, &trusted, &opts).await.unwrap();
    assert!(r.is_intact(), "{}", show(&r));
    let writers: Vec<_> = r.writer_states.iter().map(|w| w.writer.as_str()).collect();
    assert_eq!(writers, ["w1"]);
    assert!(r.writer_states[0].closed);
    let opts = opts.with_expected_writers(["w1".to_owned(), "w2".to_owned()]);
    let r = sealtrail::verify(&archive, &trusted, &opts).await.unwrap();
    assert_eq!(r.findings.len(), 1, "{}", show(&r));
    assert_eq!(r.findings[0].problem, Problem::WriterMissing);
    assert_eq!(r.findings[0].at.writer.as_deref(), Some("w2"));
}

#[tokio::test]
async fn an_insider_rewrite_with_another_key_is_rejected() {
    // The same records, written consistently by someone holding another key.
    let forged = build_in_with_key(other_key()).await;
    let r = verify_with(&forged, &[key().verifying_key()]).await;
    assert!(!r.is_intact());
    let bad = with_problem(&r, |p| matches!(p, Problem::UnknownSigningKey { .. }));
    assert_eq!(bad.len() as u64, r.batches, "{}", show(&r));
    assert!(r
        .findings
        .iter()
        .all(|f| matches!(f.problem, Problem::UnknownSigningKey { .. })));

    // Claiming our key id does not help: the signature fails.
    let ours = sealtrail::keys::key_id(&key().verifying_key());
    for o in forged.objects().await {
        if o.key.contains("/seals/") {
            let mut s: Seal = serde_json::from_slice(&forged.get(&o.key).await).unwrap();
            s.body.key_id = ours.clone();
            s.hash = sealtrail::seal::seal_hash(&s.body).unwrap();
            forged
                .overwrite(&o.key, serde_json::to_vec(&s).unwrap())
                .await;
        }
    }
    let r = verify_with(&forged, &[key().verifying_key()]).await;
    let bad = with_problem(&r, |p| matches!(p, Problem::BadSignature { .. }));
    assert_eq!(bad.len() as u64, r.batches, "{}", show(&r));
}

async fn build_in_with_key(k: sealtrail::keys::SigningKey) -> Fixture {
    let (now, clk) = clock();
    let archive = sealtrail::Archive::memory();
    let opts = sealtrail::WriterOptions::default()
        .with_heartbeat(HEARTBEAT)
        .with_clock(clk);
    let mut w = sealtrail::Writer::open(archive.clone(), k, "w1", opts)
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for i in 0..24 {
        w.append(sample_record(&format!("session-{}", i % 3), i))
            .unwrap();
        if i % 12 == 11 {
            receipts.push(w.flush().await.unwrap().unwrap());
        }
    }
    receipts.push(w.close().await.unwrap());
    Fixture {
        archive,
        receipts,
        now,
    }
}

async fn verify_with(f: &Fixture, keys: &[sealtrail::keys::VerifyingKey]) -> sealtrail::Report {
    let as_of = f.now.load(std::sync::atomic::Ordering::SeqCst);
    sealtrail::verify(
        &f.archive,
        keys,
        &sealtrail::VerifyOptions::default().with_as_of(as_of),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn bytes_after_the_zstd_frame_are_reported() {
    let f = fixture().await;
    let key = f.batch_key(0);
    let mut bytes = f.get(&key).await.to_vec();
    let frame_len = bytes.len() as u64;
    bytes.extend_from_slice(b"hidden");
    f.overwrite(&key, bytes).await;
    let r = f.verify().await;
    assert!(
        r.has(&Problem::BatchTrailingData {
            frame_len,
            found_len: frame_len + 6
        }),
        "{}",
        show(&r)
    );
    assert!(r.has(&Problem::BatchLengthMismatch {
        expected: frame_len,
        found: frame_len + 6
    }));
    // The records themselves are intact and still checked.
    assert!(with_problem(&r, |p| matches!(p, Problem::RecordHashMismatch { .. })).is_empty());
    assert_eq!(r.records, 48);
}

#[tokio::test]
async fn an_object_too_large_to_be_a_batch_or_seal_is_reported_without_being_read() {
    let f = fixture().await;
    let (batch, seal) = (f.batch_key(1), f.seal_key(2));
    let sealed_len = f.get(&batch).await.len() as u64;
    let huge = vec![0x28u8; 2 << 20];
    f.overwrite(&batch, huge.clone()).await;
    f.overwrite(&seal, huge).await;
    let r = f
        .verify_opts(sealtrail::VerifyOptions::default().with_max_batch_bytes(1 << 20))
        .await;
    let at = |key: &str, n| Location {
        writer: Some("w1".into()),
        batch_no: Some(n),
        key: Some(key.into()),
        ..Default::default()
    };
    let found = |p: fn(&Problem) -> bool| with_problem(&r, p);
    let length = found(|p| matches!(p, Problem::BatchLengthMismatch { .. }));
    assert_eq!(length.len(), 1, "{}", show(&r));
    assert_eq!(length[0].at, at(&batch, 1));
    assert_eq!(
        length[0].problem,
        Problem::BatchLengthMismatch {
            expected: sealed_len,
            found: 2 << 20
        }
    );
    let not_read = found(|p| {
        matches!(p, Problem::BatchUndecodable { reason } | Problem::SealUnreadable { reason }
            if reason.starts_with("not read: the object is 2097152 bytes"))
    });
    let keys: Vec<_> = not_read.iter().map(|x| x.at.clone()).collect();
    assert_eq!(keys, vec![at(&batch, 1), at(&seal, 2)], "{}", show(&r));
    // Never read, so never hashed.
    assert!(found(|p| matches!(p, Problem::BatchDigestMismatch { .. })).is_empty());
}

#[tokio::test]
async fn a_seal_with_anything_but_its_canonical_bytes_is_unreadable() {
    let f = fixture().await;
    let key = f.seal_key(2);
    let bytes = f.get(&key).await;
    for changed in [
        [&bytes[..], b"\n"].concat(),
        [&b" "[..], &bytes[..]].concat(),
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen("\"body\":", "\"body\" :", 1)
            .into_bytes(),
    ] {
        f.overwrite(&key, changed).await;
        let r = f.verify().await;
        let found = with_problem(
            &r,
            |p| matches!(p, Problem::SealUnreadable { reason } if reason == "not the canonical (JCS) bytes of its content"),
        );
        assert_eq!(found.len(), 1, "{}", show(&r));
        assert_eq!(found[0].at.key.as_deref(), Some(key.as_str()));
    }
}

#[tokio::test]
async fn an_object_no_seal_covers_is_reported() {
    let f = fixture().await;
    let stray = "v1/writers/w1/batches/00000000000000000009-0123456789abcdef.jsonl.zst";
    f.overwrite(stray, &b"unsealed"[..]).await;
    f.overwrite("notes.txt", &b"hello"[..]).await;
    let r = f.verify().await;
    let hits = with_problem(&r, |p| *p == Problem::UncoveredObject);
    let keys: Vec<_> = hits.iter().map(|h| h.at.key.as_deref().unwrap()).collect();
    assert_eq!(keys, vec!["notes.txt", stray], "{}", show(&r));
    assert_eq!(r.findings.len(), 2);
}

#[tokio::test]
async fn corrupt_or_truncated_seals_and_batches_never_panic() {
    let f = fixture().await;
    let seal_key = f.seal_key(1);
    let batch_key = f.batch_key(1);
    let seal = f.get(&seal_key).await;
    let batch = f.get(&batch_key).await;
    for cut in (0..seal.len()).step_by(13) {
        f.overwrite(&seal_key, seal.slice(..cut)).await;
        let r = f.verify().await;
        assert!(r.has_problem_at(1), "cut {cut}: {}", show(&r));
    }
    f.overwrite(&seal_key, seal).await;
    for cut in (0..batch.len()).step_by(11) {
        f.overwrite(&batch_key, batch.slice(..cut)).await;
        let r = f.verify().await;
        assert!(r.has(&Problem::BatchLengthMismatch {
            expected: batch.len() as u64,
            found: cut as u64
        }));
    }
    // Garbage that decodes: a valid zstd frame of nonsense lines.
    f.overwrite(
        &batch_key,
        zstd::encode_all(&b"{\"hash\":1}\nnot json\n\xff\xfe\n"[..], 1).unwrap(),
    )
    .await;
    let r = f.verify().await;
    assert_eq!(
        with_problem(&r, |p| matches!(p, Problem::LineMalformed { .. })).len(),
        3,
        "{}",
        show(&r)
    );
}

/// Lines that are not record lines, among records (within the 64 lines
/// verify hashes together): each is reported where it is, and every record
/// around it is still checked against its own hash and placed in its chain.
#[tokio::test]
async fn a_foreign_line_among_records_is_reported_alone() {
    let f = fixture().await;
    let batch_key = f.batch_key(1);
    let content = zstd::decode_all(&f.get(&batch_key).await[..]).unwrap();
    let lines: Vec<&[u8]> = content.split_inclusive(|c| *c == b'\n').collect();
    assert!(lines.len() >= 3, "the fixture's batch 1 has records");
    let mut changed = b"not a record line\n".to_vec();
    changed.extend_from_slice(lines[0]);
    changed.extend_from_slice(b"{\"hash\":1}\n");
    for l in &lines[1..] {
        changed.extend_from_slice(l);
    }
    f.overwrite(&batch_key, zstd::encode_all(&changed[..], 1).unwrap())
        .await;
    let r = f.verify().await;
    let malformed = with_problem(&r, |p| matches!(p, Problem::LineMalformed { .. }));
    let offsets: Vec<_> = malformed.iter().map(|m| m.at.offset).collect();
    let second = (18 + lines[0].len()) as u64;
    assert_eq!(offsets, [Some(0), Some(second)], "{}", show(&r));
    // The object's length and digest differ from the seal's, and nothing else.
    let others: Vec<_> = r
        .findings
        .iter()
        .filter(|f| {
            !matches!(
                f.problem,
                Problem::LineMalformed { .. }
                    | Problem::BatchLengthMismatch { .. }
                    | Problem::BatchDigestMismatch { .. }
            )
        })
        .collect();
    assert!(others.is_empty(), "{}", show(&r));
}

trait HasProblemAt {
    fn has_problem_at(&self, batch_no: u64) -> bool;
}
impl HasProblemAt for sealtrail::Report {
    fn has_problem_at(&self, batch_no: u64) -> bool {
        self.findings
            .iter()
            .any(|f| f.at.batch_no == Some(batch_no))
    }
}

/// A record or a seal of a format this verifier does not read is reported,
/// not checked under the rules of format 1.
#[tokio::test]
async fn records_and_seals_of_another_format_version_are_reported() {
    let f = fixture().await;
    let key = f.batch_key(1);
    let mut lines = f.lines(&key).await;
    let i = line_of(&lines, "session-2", 6);
    let mut changed = lines[i].clone();
    let at = changed.len() - 3; // `…,"v":1}}`
    assert_eq!(&changed[at..], b"1}}");
    changed[at] = b'2';
    lines[i] = changed;
    f.write_lines(&key, &lines).await;
    let seal_key = f.seal_key(2);
    let mut s: Seal = serde_json::from_slice(&f.get(&seal_key).await).unwrap();
    s.body.format = 2;
    f.overwrite(&seal_key, serde_json::to_vec(&s).unwrap())
        .await;

    let r = f.verify().await;
    let hits = with_problem(
        &r,
        |p| matches!(p, Problem::RecordMalformed { reason } if reason.contains("format version 2")),
    );
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(
        (hits[0].at.session.as_deref(), hits[0].at.seq),
        (Some("session-2"), Some(6))
    );
    let hits = with_problem(
        &r,
        |p| matches!(p, Problem::SealUnreadable { reason } if reason.contains("seal format 2")),
    );
    assert_eq!(hits.len(), 1, "{}", show(&r));
    assert_eq!(hits[0].at.batch_no, Some(2));
}
