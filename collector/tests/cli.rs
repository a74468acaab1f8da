//! The `sealtrail` command as a user runs it: keygen, demo, verify and its exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn sealtrail(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealtrail"))
        .args(args)
        .current_dir(dir)
        .env_remove("SEALTRAIL_STORE")
        .output()
        .expect("run sealtrail")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn keygen_then_demo_then_verify_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sealtrail(d, &["keygen", "--out", "audit.key"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(d.join("audit.key").exists() && d.join("audit.key.pub").exists());

    // Refuses to overwrite, and leaves the key as it was.
    let before = std::fs::read(d.join("audit.key")).unwrap();
    let o = sealtrail(d, &["keygen", "--out", "audit.key"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    assert_eq!(std::fs::read(d.join("audit.key")).unwrap(), before);

    // Both files are what other tools read (PKCS#8 v1 and SPKI PEM): the
    // public key can be derived again from the secret one.
    let python = std::env::var("SEALTRAIL_PYTHON").unwrap_or_else(|_| {
        panic!("SEALTRAIL_PYTHON is not set: run the suite with `bash scripts/test`, which creates .venv")
    });
    let derive = r#"
import sys
from cryptography.hazmat.primitives import serialization as s
k = s.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
sys.stdout.write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode())
"#;
    let o = std::process::Command::new(python)
        .args(["-c", derive])
        .arg(d.join("audit.key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        std::fs::read_to_string(d.join("audit.key.pub")).unwrap()
    );

    let o = sealtrail(d, &["demo", "--sessions", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sealtrail(d, &["verify", "--public-key", "audit.key.pub"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out.lines().last().unwrap(),
        "intact: 1 writer(s), 3 seal(s), 2 session(s), 12 record(s), 0 finding(s)"
    );

    let o = sealtrail(d, &["verify", "--public-key", "audit.key.pub", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["records"], 12);
    assert_eq!(v["findings"], serde_json::json!([]));

    // A session that is not there is not "intact".
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--json",
            "--session",
            "no-such-session",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["problem"], "session_not_found", "{v}");
    assert_eq!(v["findings"][0]["session"], "no-such-session", "{v}");
}

#[test]
fn verify_exits_1_and_names_a_tampered_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sealtrail(d, &["keygen"]).status.success());
    assert!(
        sealtrail(d, &["demo", "--sessions", "1", "--store", "data"])
            .status
            .success()
    );
    let batches = d.join("data/v1/writers/demo/batches");
    let file = std::fs::read_dir(&batches)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let o = sealtrail(
        d,
        &["verify", "--store", "data", "--public-key", "audit.key.pub"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("writer demo batch 0"), "{out}");
    assert!(out.contains("batch object SHA-256 is"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("NOT INTACT: ")), "{out}");

    let o = sealtrail(
        d,
        &[
            "verify",
            "--store",
            "data",
            "--public-key",
            "audit.key.pub",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["problem"].as_str().unwrap())
        .collect();
    assert!(problems.contains(&"batch_digest_mismatch"), "{problems:?}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sealtrail(d, &["verify", "--public-key", "missing.pub"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("missing.pub"), "{}", text(&o));

    std::fs::write(d.join("bad.pub"), "not a key").unwrap();
    let o = sealtrail(d, &["verify", "--public-key", "bad.pub"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("SPKI PEM"), "{}", text(&o));

    assert!(sealtrail(d, &["keygen"]).status.success());
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--as-of",
            "yesterday",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("RFC 3339"), "{}", text(&o));

    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--store",
            "ftp://x/y",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unsupported scheme"), "{}", text(&o));

    // A mistyped store path is an error, and is not created.
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--store",
            "no-such-dir",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no archive here"), "{}", text(&o));
    assert!(!d.join("no-such-dir").exists());
    for cmd in [&["sessions"][..], &["show", "--session", "x"][..]] {
        let o = sealtrail(d, &[cmd, &["--store", "no-such-dir"]].concat());
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", text(&o));
        assert!(!d.join("no-such-dir").exists());
    }
    // An archive without a single seal proves nothing: not intact.
    std::fs::create_dir(d.join("empty")).unwrap();
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--store",
            "empty",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("holds no seal"), "{}", text(&o));

    // A demo with a world-readable key is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("audit.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let o = sealtrail(d, &["demo"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    }
}

#[test]
fn as_of_and_session_filters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sealtrail(d, &["keygen"]).status.success());
    assert!(sealtrail(d, &["demo", "--sessions", "2"]).status.success());
    // The demo closes its writer, so a later --as-of finds nothing missing.
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--as-of",
            "2100-01-01T00:00:00Z",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = sealtrail(
        d,
        &[
            "verify",
            "--public-key",
            "audit.key.pub",
            "--session",
            "claims-0-1",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Narrowed, and saying so: that session's chains and records only.
    assert!(
        text(&o).contains("intact (session \"claims-0-1\" only): 1 writer(s), 3 seal(s), 1 session(s), 6 record(s)"),
        "{}",
        text(&o)
    );
    // Never from the environment (SEALTRAIL_SESSION is `show`'s).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sealtrail"))
        .args(["verify", "--public-key", "audit.key.pub"])
        .env("SEALTRAIL_SESSION", "claims-0-1")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        text(&o).contains("intact: 1 writer(s), 3 seal(s), 2 session(s), 12 record(s)"),
        "{}",
        text(&o)
    );
    let o = sealtrail(
        d,
        &["verify", "--public-key", "audit.key.pub", "--session", ""],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // RFC 3339 with any offset; without one, refused (which zone?).
    let as_of = |t: &str| {
        sealtrail(
            d,
            &["verify", "--public-key", "audit.key.pub", "--as-of", t],
        )
    };
    assert_eq!(as_of("2100-01-01T01:00:00+01:00").status.code(), Some(0));
    let o = as_of("2100-01-01T00:00:00");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("with an offset"), "{}", text(&o));
}

/// `sealtrail … | head -1`: a reader that goes away ends the output, and the
/// exit status is still the command's own (not a panic).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sealtrail(d, &["keygen"]).status.success());
    assert!(sealtrail(d, &["demo", "--sessions", "50"]).status.success());
    for args in [
        &["sessions"][..],
        &["sessions", "--json"],
        &["verify", "--public-key", "audit.key.pub"],
        &["show", "--session", "claims-0-1"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sealtrail"))
            .args(args)
            .current_dir(d)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
}

#[test]
fn sessions_and_show_read_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sealtrail(d, &["keygen"]).status.success());
    assert!(sealtrail(d, &["demo", "--sessions", "2"]).status.success());
    let o = sealtrail(d, &["sessions"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("claims-0-0") && out.contains("claims-0-1"),
        "{out}"
    );
    assert!(out.contains("2 session(s)"), "{out}");
    assert!(out.contains("llm_call=1 policy_check=2"), "{out}");

    let o = sealtrail(d, &["show", "--session", "claims-0-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[1].contains("llm_call") && lines[1].contains("gen_ai.request.model=gpt-4o"),
        "{out}"
    );
    assert!(
        lines[4].contains("policy.decision=deny") && lines[4].contains("error=denied by policy"),
        "{out}"
    );

    let o = sealtrail(d, &["show", "--session", "claims-0-1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let seqs: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);

    // Times above 2^53 as strings, as in the records (a JSON number would
    // lose nanoseconds in most parsers).
    let o = sealtrail(d, &["sessions", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first: u64 = v[0]["first_start_ns"].as_str().unwrap().parse().unwrap();
    let last: u64 = v[0]["last_end_ns"].as_str().unwrap().parse().unwrap();
    assert!(first > 1 << 53 && last >= first, "{v}");

    let o = sealtrail(d, &["show", "--session", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no records of session"), "{}", text(&o));
}

#[test]
fn demo_and_verify_on_s3_under_object_lock() {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts the S3 server")
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sealtrail(d, &["keygen"]).status.success());
    let store = format!("s3://{bucket}/cli-{}", std::process::id());
    let o = sealtrail(
        d,
        &[
            "demo",
            "--store",
            &store,
            "--retention",
            "1d",
            "--sessions",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = sealtrail(
        d,
        &[
            "verify",
            "--store",
            &store,
            "--public-key",
            "audit.key.pub",
            "--check-retention",
            "1d",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Governance is not what the demo locked with: every object is reported.
    let o = sealtrail(
        d,
        &[
            "verify",
            "--store",
            &store,
            "--public-key",
            "audit.key.pub",
            "--check-retention",
            "1d",
            "--lock-mode",
            "governance",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the policy requires GOVERNANCE"),
        "{}",
        text(&o)
    );
    // A bucket without Object Lock is refused, and how to enable it is said.
    let o = sealtrail(d, &["demo", "--store", "s3://sealtrail-unlocked/cli"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("--object-lock-enabled-for-bucket"),
        "{}",
        text(&o)
    );
}
