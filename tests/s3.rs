//! The tracing layer writes to an `s3://` store on a real S3-compatible
//! server (moto, started by `scripts/test`), and the archive verifies there.

mod common;

use common::*;
use sealtrail::Archive;
use tracing::info_span;
use tracing_subscriber::prelude::*;

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
}
