//! The tracing layer writes to an `s3://` store on a real S3-compatible
//! server (moto, started by `scripts/test`), and the archive verifies there.

mod common;

use common::*;
use sealtrail::Archive;
use tracing::info_span;
use tracing_subscriber::prelude::*;

/// An archive at `url` that locks every object it writes.
fn locked(url: &str, mode: sealtrail::archive::LockMode, period: std::time::Duration) -> Archive {
    Archive::open(url)
        .unwrap()
        .with_retention(sealtrail::archive::Retention { mode, period })
        .unwrap()
}

fn s3_url(name: &str) -> String {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!(
            "SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts a \
             moto S3 server on loopback, creates the bucket and exports AWS_ENDPOINT_URL and the credentials"
        )
    });
    format!(
        "s3://{bucket}/{name}-{}-{}",
        std::process::id(),
        sealtrail::writer::now_ns()
    )
}

#[test]
fn the_layer_archives_to_s3_and_the_archive_verifies() {
    let url = s3_url("layer");
    let dir = tempfile::tempdir().unwrap();
    let (layer, guard) = sealtrail::AuditLayer::builder()
        .with_store(url.as_str())
        .with_retention(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: std::time::Duration::from_secs(3600),
        })
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("spool"))
        .with_writer_id("s3-writer")
        .build()
        .unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..50 {
            info_span!(
                "chat",
                gen_ai.operation.name = "chat",
                audit.session_id = "s3-session",
                i
            )
            .in_scope(|| {});
        }
    });
    let stats = guard.stats();
    drop(guard);
    assert_eq!(stats.captured, 50);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let archive = Archive::open(&url).unwrap();
    let records = rt.block_on(all_records(&archive));
    assert_eq!(records.len(), 50);
    let report = rt.block_on(verify_now(&archive));
    assert!(report.is_intact(), "{}", show(&report));
    assert_eq!((report.records, report.sessions), (50, 1));
    let prefix = url.splitn(4, '/').nth(3).unwrap().to_owned();
    let objects = server_view(&prefix);
    assert!(!objects.as_array().unwrap().is_empty());
    assert!(
        objects
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["mode"] == "GOVERNANCE"),
        "{objects}"
    );
}

/// Asks the S3 server itself (boto3, in the test venv) about every object
/// under `prefix` in the test bucket, and tries to delete each version.
fn server_view(prefix: &str) -> serde_json::Value {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").expect("set by scripts/test");
    server_view_in(&bucket, prefix)
}

/// [`server_view`] in `bucket`.
fn server_view_in(bucket: &str, prefix: &str) -> serde_json::Value {
    let python = std::env::var("SEALTRAIL_PYTHON").expect("SEALTRAIL_PYTHON, set by scripts/test");
    let script = r#"
import json, os, sys
import boto3, botocore
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
bucket, prefix = sys.argv[2], sys.argv[1]
out = []
for v in s3.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", []):
    h = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    try:
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        deleted = "deleted"
    except botocore.exceptions.ClientError as e:
        deleted = e.response["Error"]["Code"]
    out.append({"key": v["Key"], "mode": h.get("ObjectLockMode"),
                "until": int(h["ObjectLockRetainUntilDate"].timestamp()) if "ObjectLockRetainUntilDate" in h else None,
                "written": int(h["LastModified"].timestamp()),
                "delete": deleted})
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, prefix, bucket])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_object_is_locked_for_its_retention_and_cannot_be_deleted() {
    let url = s3_url("locked");
    let period = std::time::Duration::from_secs(86_400);
    let archive = locked(&url, sealtrail::archive::LockMode::Compliance, period);
    let f = build_in(archive.clone(), "locked-writer", 2, 2, 5).await;
    let report = verify_now(&f.archive).await;
    assert!(report.is_intact(), "{}", show(&report));

    // Write-once still holds with the Object Lock PUT.
    let seal0 = f.seal_key(0);
    let err = archive
        .put_new(&seal0, bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, sealtrail::Error::AlreadyExists { .. }),
        "{err}"
    );

    let prefix = url.splitn(4, '/').nth(3).unwrap().to_owned();
    let objects = server_view(&prefix);
    let objects = objects.as_array().unwrap();
    assert_eq!(objects.len(), f.objects().await.len(), "{objects:?}");
    for o in objects {
        assert_eq!(o["mode"], "COMPLIANCE", "{o}");
        // Locked for the period from the server's own write time (whole
        // seconds), and not much more (the margin for the request).
        let (until, written) = (o["until"].as_u64().unwrap(), o["written"].as_u64().unwrap());
        assert!(until >= written + period.as_secs(), "{o}");
        assert!(until <= written + period.as_secs() + 30 * 60, "{o}");
        assert_eq!(
            o["delete"], "AccessDenied",
            "a locked version cannot be deleted: {o}"
        );
    }
    // Nothing was lost to the delete attempts.
    assert!(verify_now(&f.archive).await.is_intact());
}

#[tokio::test]
async fn a_bucket_without_object_lock_is_refused_unless_allowed() {
    let url = format!(
        "s3://sealtrail-unlocked/refused-{}",
        sealtrail::writer::now_ns()
    );
    let dir = tempfile::tempdir().unwrap();
    let builder = sealtrail::AuditLayer::builder()
        .with_store(url.as_str())
        .with_signing_key(key())
        .with_writer_id("unlocked-writer");
    let err = builder
        .clone()
        .with_spool_dir(dir.path().join("a"))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, sealtrail::Error::ObjectLockDisabled { ref bucket } if bucket == "sealtrail-unlocked"),
        "{err}"
    );
    assert!(
        err.to_string().contains("--object-lock-enabled-for-bucket"),
        "{err}"
    );
    // With a retention, refused even when unlocked objects are allowed:
    // S3 would refuse every locked write, and nothing would ever be sealed.
    let err = builder
        .clone()
        .with_spool_dir(dir.path().join("c"))
        .with_allow_unlocked(true)
        .with_retention(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: std::time::Duration::from_secs(3600),
        })
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "does not have Object Lock enabled, so no object can be written with a retention"
        ),
        "{err}"
    );
    let (layer, guard) = builder
        .with_spool_dir(dir.path().join("b"))
        .with_allow_unlocked(true)
        .build()
        .unwrap();
    trace_chats(layer, guard, 3);
    // Allowed, it archives (unlocked), and the archive verifies.
    assert_intact(&url, 3).await;
    // A locked bucket without a default retention locks nothing by itself:
    // refused, unless a retention is configured or unlocked objects allowed.
    let locked = Archive::open(&s3_url("check")).unwrap();
    let err = locked.check_object_lock(false).await.unwrap_err();
    assert!(
        matches!(err, sealtrail::Error::ObjectLockNoRetention { ref bucket } if bucket == "sealtrail-test"),
        "{err}"
    );
    assert!(err.to_string().contains("--retention"), "{err}");
    assert_eq!(locked.check_object_lock(true).await.unwrap(), None);
    let configured = locked
        .with_retention(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: std::time::Duration::from_secs(3600),
        })
        .unwrap();
    assert_eq!(configured.check_object_lock(false).await.unwrap(), None);
    // A bucket with a default retention reports it.
    let with_default = Archive::open("s3://sealtrail-default-retention/x").unwrap();
    assert_eq!(
        with_default.check_object_lock(false).await.unwrap(),
        Some(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: std::time::Duration::from_secs(86_400),
        })
    );
}

/// With no retention configured, a bucket's default retention locks every
/// object by itself: the layer starts, archives, and the server reports each
/// object locked for the default period from its own write time.
#[tokio::test]
async fn a_bucket_default_retention_alone_locks_every_object() {
    let _ = std::env::var("SEALTRAIL_TEST_S3_BUCKET").expect("set by scripts/test");
    let bucket = "sealtrail-default-retention";
    let prefix = format!(
        "default-{}-{}",
        std::process::id(),
        sealtrail::writer::now_ns()
    );
    let url = format!("s3://{bucket}/{prefix}");
    let dir = tempfile::tempdir().unwrap();
    let (layer, guard) = sealtrail::AuditLayer::builder()
        .with_store(url.as_str())
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("spool"))
        .with_writer_id("default-writer")
        .build()
        .unwrap();
    trace_chats(layer, guard, 5);
    assert_intact(&url, 5).await;
    let objects = server_view_in(bucket, &prefix);
    let objects = objects.as_array().unwrap();
    assert!(!objects.is_empty());
    for o in objects {
        // The bucket's default: GOVERNANCE, 1 day.
        assert_eq!(o["mode"], "GOVERNANCE", "{o}");
        let (until, written) = (o["until"].as_u64().unwrap(), o["written"].as_u64().unwrap());
        assert!(until + 1 >= written + 86_400, "{o}");
        assert_eq!(o["delete"], "AccessDenied", "{o}");
    }
}

/// Does what someone with write access to the bucket (but not the key) could:
/// overwrite a key (a new version) or delete it (a delete marker).
fn tamper_through_server(full_key: &str, action: &str) {
    let python = std::env::var("SEALTRAIL_PYTHON").expect("SEALTRAIL_PYTHON, set by scripts/test");
    let script = r#"
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
bucket, key, action = os.environ["SEALTRAIL_TEST_S3_BUCKET"], sys.argv[1], sys.argv[2]
if action == "overwrite":
    s3.put_object(Bucket=bucket, Key=key, Body=b"forged")
elif action.startswith("delete-version:"):
    s3.delete_object(Bucket=bucket, Key=key, VersionId=action.split(":", 1)[1])
else:
    s3.delete_object(Bucket=bucket, Key=key)
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, full_key, action])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn verify_reads_the_first_version_and_reports_overwrites_and_delete_markers() {
    use sealtrail::verify::Problem;
    let url = s3_url("tampered");
    let prefix = url.splitn(4, '/').nth(3).unwrap().to_owned();
    let archive = locked(
        &url,
        sealtrail::archive::LockMode::Compliance,
        std::time::Duration::from_secs(3600),
    );
    let f = build_in(archive, "tampered-writer", 2, 3, 4).await;
    assert!(f.verify().await.is_intact());
    let batch = f.batch_key(0);
    let seal = f.seal_key(1);
    let hidden_batch = f.batch_key(3);
    tamper_through_server(&format!("{prefix}/{batch}"), "overwrite");
    tamper_through_server(&format!("{prefix}/{seal}"), "delete");
    tamper_through_server(&format!("{prefix}/{hidden_batch}"), "delete");

    let r = f.verify().await;
    let found: Vec<(Option<&str>, &Problem)> = r
        .findings
        .iter()
        .map(|x| (x.at.key.as_deref(), &x.problem))
        .collect();
    assert_eq!(
        found,
        [
            (
                Some(batch.as_str()),
                &Problem::ObjectOverwritten { versions: 2 }
            ),
            (Some(hidden_batch.as_str()), &Problem::DeleteMarker),
            (Some(seal.as_str()), &Problem::DeleteMarker),
        ],
        "{}",
        show(&r)
    );
    // Everything sealed was still verified, from the versions first written.
    assert_eq!(r.records, 12);
}

#[tokio::test]
async fn check_retention_reports_objects_locked_for_less_than_the_policy() {
    use sealtrail::archive::{LockMode, Retention};
    use sealtrail::verify::Problem;
    let url = s3_url("retention");
    let hour = std::time::Duration::from_secs(3600);
    let locked = locked(&url, sealtrail::archive::LockMode::Compliance, hour);
    let f = build_in(locked, "retention-writer", 2, 2, 3).await;
    let check = |policy: Retention| {
        let archive = Archive::open(&url).unwrap();
        let opts = sealtrail::VerifyOptions::default()
            .with_as_of(f.now.load(std::sync::atomic::Ordering::SeqCst))
            .with_retention_policy(policy);
        async move {
            sealtrail::verify(&archive, &[key().verifying_key()], &opts)
                .await
                .unwrap()
        }
    };
    let objects = f.objects().await.len();

    // As locked: nothing to report.
    let r = check(Retention {
        mode: LockMode::Compliance,
        period: hour,
    })
    .await;
    assert!(r.is_intact(), "{}", show(&r));
    // A longer policy, or another mode: every object falls short.
    for policy in [
        Retention {
            mode: LockMode::Compliance,
            period: 2 * hour,
        },
        Retention {
            mode: LockMode::Governance,
            period: hour,
        },
    ] {
        let r = check(policy).await;
        let short = with_problem(&r, |p| {
            matches!(
                p,
                Problem::RetentionInsufficient {
                    found_mode: Some("COMPLIANCE"),
                    ..
                }
            )
        });
        assert_eq!(short.len(), objects, "{}", show(&r));
        assert_eq!(r.findings.len(), objects);
    }
    // An object written without a lock has none.
    let unlocked = Archive::open(&url).unwrap();
    unlocked
        .put_new("notes.txt", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    let r = check(Retention {
        mode: LockMode::Compliance,
        period: hour,
    })
    .await;
    assert!(
        r.findings
            .iter()
            .any(|x| x.at.key.as_deref() == Some("notes.txt")
                && matches!(
                    x.problem,
                    Problem::RetentionInsufficient {
                        found_mode: None,
                        found_until_ns: None,
                        ..
                    }
                )),
        "{}",
        show(&r)
    );
}

/// Why sealtrail's lock PUTs carry `x-amz-sdk-checksum-algorithm` and a SHA-256:
/// the server refuses a lock PUT without a checksum it can check. (boto3 with
/// its automatic checksums turned off sends exactly such a PUT.)
#[test]
fn the_server_refuses_a_lock_put_without_a_checksum() {
    let python = std::env::var("SEALTRAIL_PYTHON").expect("SEALTRAIL_PYTHON, set by scripts/test");
    let script = r#"
import datetime, os
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"],
                  config=Config(request_checksum_calculation="when_required"))
try:
    s3.put_object(Bucket=os.environ["SEALTRAIL_TEST_S3_BUCKET"], Key="no-checksum", Body=b"x",
                  ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    print("accepted")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "MissingUploadObjectWithObjectLockHeaders"
    );
}

#[tokio::test]
async fn seals_name_the_versions_written_and_verify_reads_those() {
    use sealtrail::seal::Seal;
    let url = s3_url("versions");
    let prefix = url.splitn(4, '/').nth(3).unwrap().to_owned();
    let f = build_in(Archive::open(&url).unwrap(), "versions-writer", 2, 3, 40).await;
    let s1: Seal = serde_json::from_slice(&f.get(&f.seal_key(1)).await).unwrap();
    let batch = s1.body.batch.clone().unwrap();
    let batch_version = batch
        .version_id
        .clone()
        .expect("the seal names the batch object's version");
    assert_eq!(
        s1.body.prev_seal_version,
        f.archive.version_of(&f.seal_key(0)).await.unwrap(),
        "the seal names the previous seal's version"
    );
    assert!(f.verify().await.is_intact());
    // A verifier that reads no object over 2,000 bytes (the seals are
    // smaller, the batch objects larger) reads none of the batch versions the
    // seals name (their listed size is enough), and says so.
    let small = sealtrail::VerifyOptions::default()
        .with_as_of(f.now.load(std::sync::atomic::Ordering::SeqCst))
        .with_max_batch_bytes(2_000);
    let r = sealtrail::verify(&f.archive, &[key().verifying_key()], &small)
        .await
        .unwrap();
    let not_read = with_problem(
        &r,
        |p| matches!(p, sealtrail::verify::Problem::BatchUndecodable { reason } if reason.starts_with("not read")),
    );
    assert_eq!(not_read.len(), 3, "{}", show(&r));
    assert_eq!(r.findings.len(), 3, "{}", show(&r));
    // Overwriting the batch makes a new version; the seal still names the first,
    // and verify reads that one.
    tamper_through_server(&format!("{prefix}/{}", batch.key), "overwrite");
    assert_ne!(
        f.archive.version_of(&batch.key).await.unwrap().as_deref(),
        Some(batch_version.as_str())
    );
    let r = f.verify().await;
    assert_eq!(r.findings.len(), 1, "{}", show(&r));
    assert_eq!(
        r.findings[0].problem,
        sealtrail::verify::Problem::ObjectOverwritten { versions: 2 }
    );
    // The version the seal names is deleted (possible here: not locked):
    // reported as such, not read from the forged one.
    tamper_through_server(
        &format!("{prefix}/{}", batch.key),
        &format!("delete-version:{batch_version}"),
    );
    let r = f.verify().await;
    let missing: Vec<_> = r
        .findings
        .iter()
        .filter(|x| {
            x.problem
                == sealtrail::verify::Problem::SealedVersionMissing {
                    version_id: batch_version.clone(),
                }
        })
        .collect();
    assert_eq!(missing.len(), 1, "{}", show(&r));
    assert_eq!(missing[0].at.batch_no, Some(1));
}

/// A delete marker on a writer's newest seal does not make the restarted
/// writer write that seal again (a second version under the same key, a
/// fork of its chain): it continues after the seal as first written.
#[tokio::test]
async fn a_writer_continues_after_a_seal_hidden_by_a_delete_marker() {
    use sealtrail::{Writer, WriterOptions};
    let url = s3_url("hidden-seal");
    let prefix = url.splitn(4, '/').nth(3).unwrap().to_owned();
    let archive = Archive::open(&url).unwrap();
    let open = || {
        Writer::open(
            archive.clone(),
            key(),
            "hidden-writer",
            WriterOptions::default(),
        )
    };
    let mut w = open().await.unwrap();
    for i in 0..2 {
        w.append(sample_record("s", i)).unwrap();
        w.flush().await.unwrap();
    }
    drop(w);
    let hidden = sealtrail::archive::layout::seal_key("hidden-writer", 1);
    tamper_through_server(&format!("{prefix}/{hidden}"), "delete");

    let mut w = open().await.unwrap();
    w.append(sample_record("s", 2)).unwrap();
    let r = w.flush().await.unwrap().unwrap();
    assert_eq!(r.batch_no, 2, "the writer continues after seal 1");
    w.close().await.unwrap();
    let report = verify_now(&archive).await;
    let found: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.at.key.as_deref(), &f.problem))
        .collect();
    assert_eq!(
        found,
        [(
            Some(hidden.as_str()),
            &sealtrail::verify::Problem::DeleteMarker
        )],
        "{}",
        show(&report)
    );
    assert_eq!(report.records, 3);
}
