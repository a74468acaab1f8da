//! The independent Python verifier (tests/independent/verify.py, written from
//! docs/FORMAT.md alone) agrees with `sealtrail verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sealtrail::Archive;

fn python() -> String {
    std::env::var("SEALTRAIL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SEALTRAIL_PYTHON is not set. Run the suite with `bash scripts/test`, which creates .venv \
             with tests/requirements.txt, or set SEALTRAIL_PYTHON to a python that has those packages."
        )
    })
}

fn run(archive: &Path, public_pem: &Path, as_of: Option<u64>) -> (i32, serde_json::Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/independent/verify.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(archive).arg(public_pem);
    if let Some(t) = as_of {
        cmd.args(["--as-of-ns", &t.to_string()]);
    }
    let out = cmd.output().expect("run the Python verifier");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn problems(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["problem"].as_str().unwrap().to_owned())
        .collect()
}

fn public_pem(dir: &Path, key: &sealtrail::keys::SigningKey) -> PathBuf {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let p = dir.join("public.pem");
    std::fs::write(
        &p,
        key.verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap(),
    )
    .unwrap();
    p
}

#[test]
fn the_test_vectors_verify() {
    let v = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/kat");
    let (code, out) = run(&v.join("archive"), &v.join("public.pem"), None);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["records"].as_u64(), out["sessions"].as_u64()),
        (Some(3), Some(2))
    );
}

#[tokio::test]
async fn both_verifiers_agree_on_an_archive_and_on_its_tampering() {
    let (_dir, root, f, pem) = local_archive(5, 4, 30).await;
    let ours = f.verify().await;
    assert!(ours.is_intact());
    let (code, out) = run(&root, &pem, None);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["records"].as_u64(), Some(ours.records));
    assert_eq!(out["sessions"].as_u64(), Some(ours.sessions));
    assert_eq!(out["batches"].as_u64(), Some(ours.batches));
    // One session: its chains and its records.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/independent/verify.py");
    let o = Command::new(python())
        .arg(script)
        .arg(&root)
        .arg(&pem)
        .args(["--session", "session-1"])
        .output()
        .unwrap();
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let one = f
        .verify_opts(sealtrail::VerifyOptions::default().with_session("session-1"))
        .await;
    assert_eq!(
        (theirs["sessions"].as_u64(), theirs["records"].as_u64()),
        (Some(one.sessions), Some(one.records)),
        "{theirs}"
    );
    assert!(one.records > 0 && one.records < ours.records);

    // One changed byte in one record, recompressed.
    let key = f.batch_key(3);
    let mut lines = f.lines(&key).await;
    let pos = lines[7].windows(8).position(|w| w == b"question").unwrap();
    lines[7][pos] = b'Q';
    f.write_lines(&key, &lines).await;
    let (code, out) = run(&root, &pem, None);
    assert_eq!(code, 1);
    assert!(
        problems(&out).contains(&"record_hash_mismatch".to_owned()),
        "{out}"
    );
    assert!(f.verify().await.has_problem_named("record_hash_mismatch"));
}

/// A closing seal (no batch), re-signed by the key holder to list a session
/// it holds no records of: both name that session, and nothing else.
#[tokio::test]
async fn both_name_the_sessions_a_seal_without_a_batch_lists() {
    let (_dir, root, f, pem) = local_archive(2, 2, 5).await;
    let seals = f
        .objects()
        .await
        .into_iter()
        .filter(|o| o.key.contains("/seals/"))
        .count() as u64;
    let newest = f.seal_key(seals - 1);
    let mut s: sealtrail::seal::Seal = serde_json::from_slice(&f.get(&newest).await).unwrap();
    assert!(s.body.batch.is_none() && s.body.closed);
    let mut before: Option<sealtrail::seal::Seal> = None;
    for n in (0..seals - 1).rev() {
        let b: sealtrail::seal::Seal =
            serde_json::from_slice(&f.get(&f.seal_key(n)).await).unwrap();
        if !b.body.sessions.is_empty() {
            before = Some(b);
            break;
        }
    }
    let mut skip = before.unwrap().body.sessions[0].clone();
    skip.first_seq = skip.last_seq + 1;
    skip.last_seq += 3;
    skip.count = 3;
    s.body.sessions.push(skip.clone());
    let s = sealtrail::seal::seal(s.body, &key()).unwrap();
    f.overwrite(&newest, serde_json::to_vec(&s).unwrap()).await;
    let (code, out) = run(&root, &pem, None);
    assert_eq!(code, 1, "{out}");
    let theirs = findings_of(&out);
    let ours = findings_of(&serde_json::to_value(f.verify().await).unwrap());
    assert_eq!(theirs, ours);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(
        ours[0].contains("session_not_in_batch") && ours[0].contains(&skip.id),
        "{ours:?}"
    );
}

/// Records the key holder signed in shapes sealtrail never writes: both
/// verifiers read a record as the JSON it is, by its own top-level members
/// (not one of a nested object), and agree on every finding.
#[tokio::test]
async fn both_read_signed_records_by_their_own_top_level_members() {
    let z = "0".repeat(64);
    let nested = format!(
        r#"{{"attributes":{{"!":{{"b":0,"prev":"{z}","received_ns":"0","seq":0,"session":"evil","source":"x"}},"#
    );
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: [(&str, Edit, &[&str]); 4] = [
        (
            "white space",
            Box::new(|r: &str| {
                format!("{{ {}\t", &r[1..]).replacen(",\"v\":1}", " ,\r\"v\" : 1 }", 1)
            }),
            &[],
        ),
        (
            "a nested object with chain members",
            Box::new(move |r: &str| r.replacen("{\"attributes\":{", &nested, 1)),
            &[],
        ),
        (
            "an escaped member name",
            Box::new(|r: &str| r.replacen(",\"session\":\"", ",\"sessio\\u006e\":\"", 1)),
            &[],
        ),
        (
            "a nested value that is not JSON",
            Box::new(|r: &str| r.replacen("{\"attributes\":{", "{\"attributes\":{\"!\":tru,", 1)),
            &["record_malformed", "session_summary_mismatch"],
        ),
    ];
    for (name, edit, want) in cases {
        let (_dir, root, f, pem) = local_archive(1, 1, 2).await;
        // The session's last record, rewritten and signed again.
        let old_key = f.batch_key(0);
        let mut lines = f.lines(&old_key).await;
        let old = parse_line(&lines[1]).hash;
        let off = sealtrail::chain::RECORD_OFFSET;
        let record = edit(std::str::from_utf8(&lines[1][off..lines[1].len() - 1]).unwrap());
        let hash = sealtrail::digest::record_hash(record.as_bytes());
        lines[1] = format!("{{\"hash\":\"{}\",\"record\":{record}}}", hash.to_hex()).into_bytes();
        let mut raw = Vec::new();
        for l in &lines {
            raw.extend_from_slice(l);
            raw.push(b'\n');
        }
        let bytes = zstd::encode_all(&raw[..], 1).unwrap();
        let sha = sealtrail::Digest::sha256(&bytes);
        let new_key = sealtrail::archive::layout::batch_key("w1", 0, &sha);
        f.delete(&old_key).await;
        f.overwrite(&new_key, bytes.clone()).await;
        let hashes: Vec<_> = lines.iter().map(|l| parse_line_hash(l)).collect();
        let mut prev_seal = None;
        let seals = f.receipts.len() as u64;
        for n in 0..seals {
            let mut s: sealtrail::seal::Seal =
                serde_json::from_slice(&f.get(&f.seal_key(n)).await).unwrap();
            if n == 0 {
                let b = s.body.batch.as_mut().unwrap();
                (b.key, b.len, b.sha256) = (new_key.clone(), bytes.len() as u64, sha);
                b.merkle_root = sealtrail::merkle::root(&hashes).unwrap();
                for summary in &mut s.body.sessions {
                    if summary.head == old {
                        summary.head = hash;
                    }
                }
            }
            if let Some(p) = prev_seal {
                s.body.prev_seal = p;
            }
            let s = sealtrail::seal::seal(s.body, &key()).unwrap();
            prev_seal = Some(s.hash);
            f.overwrite(&f.seal_key(n), serde_json::to_vec(&s).unwrap())
                .await;
        }
        let (_, out) = run(&root, &pem, None);
        let theirs = findings_of(&out);
        let report = f.verify().await;
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(theirs, findings_of(&json), "{name}");
        let mut got = problems(&json);
        got.sort();
        got.dedup();
        assert_eq!(got, want, "{name}: {}", show(&report));
    }
}

/// Chains judged across lines and batches in the cases where a verifier
/// could read FORMAT.md §5 and §7 two ways: both verifiers agree, and on the
/// finding the format names.
#[tokio::test]
async fn both_judge_moved_and_replayed_records_alike() {
    // (case, batch to edit, edit of its lines, a problem both must report)
    type Edit = Box<dyn Fn(&mut Vec<Vec<u8>>)>;
    let forged = |from: &[u8], edit: &dyn Fn(&mut sealtrail::TraceRecord)| {
        let mut r = parse_line(from).record;
        edit(&mut r);
        forge_line(&r)
    };
    let cases: [(&str, u64, Edit, &[&str]); 3] = [
        (
            // A session new to the writer whose first record continues
            // another session's chain: moved, not merely a gap.
            "a new session continuing another's chain",
            1,
            Box::new(move |lines| {
                let a_head = parse_line(&lines[0]).record.prev; // A's head after batch 0
                let last = lines.last().unwrap().clone();
                lines.push(forged(&last, &|r| {
                    r.session = "session-new".into();
                    r.seq = 3;
                    r.prev = a_head;
                }));
            }),
            &["record_out_of_session"],
        ),
        (
            // B's first record in batch 1 follows A's record of the same
            // batch: across batches, A's head before this batch is another.
            "a record following another session's record of the same batch",
            1,
            Box::new(move |lines| {
                let a_here = parse_line(&lines[0]).hash;
                let b = lines[1].clone();
                lines[1] = forged(&b, &|r| r.prev = a_here);
            }),
            &["chain_link_broken"],
        ),
        (
            // A record replayed at the end of its batch: the summary states
            // the last record in the batch, by position.
            "a replayed record at the end of a batch",
            0,
            Box::new(|lines| {
                let again = lines[0].clone();
                lines.push(again);
            }),
            &[
                "\"session_summary_mismatch\"",
                "\"count\"",
                "\"last_seq\"",
                "\"head\"",
            ],
        ),
    ];
    for (name, batch, edit, want) in cases {
        // Batch 0: A0 B0 A1 B1; batch 1: A2 B2 A3 B3.
        let (_dir, root, f, pem) = local_archive(2, 2, 4).await;
        let key = f.batch_key(batch);
        let mut lines = f.lines(&key).await;
        edit(&mut lines);
        f.write_lines(&key, &lines).await;
        let (_, out) = run(&root, &pem, None);
        let theirs = findings_of(&out);
        let json = serde_json::to_value(f.verify().await).unwrap();
        assert_eq!(theirs, findings_of(&json), "{name}");
        for w in want {
            assert!(
                theirs.iter().any(|f| f.contains(w)),
                "{name}: {w} in {theirs:#?}"
            );
        }
    }
}

/// A file whose name object_store keeps for itself (`…#<digits>`) is an
/// object like any other: both report it as one that no seal covers. A loop
/// of symbolic links is walked once.
#[tokio::test]
async fn both_see_every_file_of_a_local_archive() {
    let (_dir, root, f, pem) = local_archive(1, 1, 2).await;
    std::fs::write(root.join("v1/writers/w1/batches/leftover#1"), b"x").unwrap();
    // A loop of symbolic links is walked once (object_store's listing fails on it).
    std::os::unix::fs::symlink(root.join("v1/writers"), root.join("v1/writers/w1/loop")).unwrap();
    let (code, out) = run(&root, &pem, None);
    assert_eq!(code, 1, "{out}");
    let json = serde_json::to_value(f.verify().await).unwrap();
    assert_eq!(findings_of(&out), findings_of(&json));
    assert_eq!(problems(&json), ["uncovered_object"], "{json}");
    assert_eq!(
        json["findings"][0]["key"],
        "v1/writers/w1/batches/leftover#1"
    );
}

/// A local archive of writer "w1" (see [`build_in`]) in a new directory
/// (kept while the first value lives), its root, and the public key's PEM.
async fn local_archive(
    sessions: usize,
    batches: usize,
    per_batch: usize,
) -> (tempfile::TempDir, PathBuf, Fixture, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let archive = Archive::open(root.to_str().unwrap()).unwrap();
    let f = build_in(archive, "w1", sessions, batches, per_batch).await;
    let pem = public_pem(dir.path(), &key());
    (dir, root, f, pem)
}

/// The hash a batch line states (read without parsing the record).
fn parse_line_hash(line: &[u8]) -> sealtrail::Digest {
    sealtrail::Digest::from_hex(&line[9..73]).unwrap()
}

#[tokio::test]
async fn both_reject_an_archive_signed_with_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    build_in(
        Archive::open(root.to_str().unwrap()).unwrap(),
        "w1",
        2,
        2,
        5,
    )
    .await;
    let pem = public_pem(dir.path(), &other_key());
    let (code, out) = run(&root, &pem, None);
    assert_eq!(code, 1);
    assert!(
        problems(&out).iter().all(|p| p == "unknown_signing_key"),
        "{out}"
    );
}

/// Mutated copies of one archive checked by both verifiers.
const MUTATIONS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_verifiers_detect_every_single_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("archives");
    let base = parent.join("base");
    // Two writers; data batches, a heartbeat, closing seals.
    let archive = Archive::open(base.to_str().unwrap()).unwrap();
    let a = build_in(archive.clone(), "w1", 3, 4, 10).await;
    let b = build_in(archive.clone(), "w2", 2, 3, 8).await;
    let now = |f: &Fixture| f.now.load(std::sync::atomic::Ordering::SeqCst);
    let as_of = now(&a).max(now(&b)) + 600_000_000_000;
    let mut files = Vec::new();
    for o in archive.list("").await.unwrap() {
        let bytes = archive.get(&o.key).await.unwrap();
        files.push((o.key, bytes));
    }
    let pem = public_pem(dir.path(), &key());
    let opts = sealtrail::VerifyOptions::default()
        .with_as_of(as_of)
        .with_threads(1);
    let trusted = [key().verifying_key()];

    let mut rng = Rng(0x1d3e_7e4d);
    let mut mutations = Vec::new();
    let mut ours_missed = Vec::new();
    let mut ours = Vec::new();
    for i in 0..MUTATIONS {
        let m = Mutation::random(&mut rng, &files);
        let root = parent.join(format!("m{i:04}"));
        for (k, bytes) in &files {
            if let Some(bytes) = m.apply(k, bytes) {
                let p = root.join(k);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
        }
        let copy = Archive::open(root.to_str().unwrap()).unwrap();
        let r = sealtrail::verify(&copy, &trusted, &opts).await.unwrap();
        if r.is_intact() {
            ours_missed.push(format!("{m:?}"));
        }
        ours.push(findings_of(&serde_json::to_value(&r).unwrap()));
        mutations.push(m);
    }
    assert!(ours_missed.is_empty(), "{ours_missed:?}");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/independent/verify.py");
    let out = Command::new(python())
        .arg(script)
        .arg("--each")
        .arg(&parent)
        .arg(&pem)
        .args(["--as-of-ns", &as_of.to_string()])
        .output()
        .expect("run the Python verifier");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{e}: {l}\n{}", String::from_utf8_lossy(&out.stderr)))
        })
        .collect();
    assert_eq!(lines.len(), MUTATIONS + 1, "{stdout}");
    let base_out = lines.iter().find(|l| l["archive"] == "base").unwrap();
    assert!(problems(base_out).is_empty(), "{base_out}");
    let missed: Vec<String> = lines
        .iter()
        .filter(|l| l["archive"] != "base" && problems(l).is_empty())
        .map(|l| {
            let i: usize = l["archive"].as_str().unwrap()[1..].parse().unwrap();
            format!("{:?}", mutations[i])
        })
        .collect();
    assert!(
        missed.is_empty(),
        "the independent verifier missed {} of {MUTATIONS} mutations:\n{}",
        missed.len(),
        missed.join("\n")
    );
    // Both name the same problems at the same places: FORMAT.md says
    // exactly what to report.
    let differ: Vec<String> = lines
        .iter()
        .filter(|l| l["archive"] != "base")
        .filter_map(|l| {
            let i: usize = l["archive"].as_str().unwrap()[1..].parse().unwrap();
            let theirs = findings_of(l);
            (theirs != ours[i]).then(|| {
                format!(
                    "{:?}\n  sealtrail: {:?}\n  python:    {:?}",
                    mutations[i], ours[i], theirs
                )
            })
        })
        .collect();
    assert!(
        differ.is_empty(),
        "the verifiers differ on {} of {MUTATIONS} mutations:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

/// The findings of a report (either verifier's JSON) as (problem, writer,
/// batch_no, key, session, seq), sorted.
fn findings_of(report: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            [
                "problem",
                "writer",
                "batch_no",
                "key",
                "session",
                "seq",
                "field",
                "count",
                "belongs_to",
            ]
            .iter()
            .map(|m| f.get(*m).map_or("-".to_owned(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
        })
        .collect();
    out.sort();
    out
}

trait Named {
    fn has_problem_named(&self, name: &str) -> bool;
}
impl Named for sealtrail::Report {
    fn has_problem_named(&self, name: &str) -> bool {
        self.findings
            .iter()
            .any(|f| serde_json::to_value(f).unwrap()["problem"] == name)
    }
}
