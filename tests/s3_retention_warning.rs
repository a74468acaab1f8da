//! Starting against a bucket whose default Object Lock retention is shorter
//! than the configured retention warns (a `tracing` warning, which the
//! application's own subscriber shows). Its own test binary: it sets a
//! global subscriber to catch the warning from the layer's worker thread.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn a_shorter_bucket_default_retention_is_warned_about() {
    assert!(
        std::env::var("SEALTRAIL_TEST_S3_BUCKET").is_ok(),
        "run the suite with `bash scripts/test`, which starts the S3 server and creates the buckets"
    );
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    // The bucket's default is GOVERNANCE for 1 day; ask for 2 days.
    let url = format!(
        "s3://sealtrail-default-retention/warn-{}",
        sealtrail::writer::now_ns()
    );
    let (_layer, guard) = sealtrail::AuditLayer::builder()
        .with_store(url.as_str())
        .with_signing_key(key())
        .with_spool_dir(dir.path().join("spool"))
        .with_writer_id("warn-writer")
        .with_retention(sealtrail::archive::Retention {
            mode: sealtrail::archive::LockMode::Governance,
            period: std::time::Duration::from_secs(2 * 86_400),
        })
        .build()
        .unwrap();
    drop(guard);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("default Object Lock retention is shorter"),
        "{log}"
    );
    assert!(
        log.contains("bucket_default_secs=86400") && log.contains("configured_secs=172800"),
        "{log}"
    );
}
