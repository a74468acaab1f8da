//! Starting with a configured retention shorter (or in a weaker mode) than
//! the bucket's default Object Lock retention warns: each object's own lock
//! replaces the default, so the archive would be locked for less than the
//! bucket's policy. (A `tracing` warning, which the application's own
//! subscriber shows.) Its own test binary: it sets a global subscriber to
//! catch the warning from the layer's worker thread.

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
fn a_retention_weaker_than_the_bucket_default_is_warned_about() {
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
    // The bucket's default is GOVERNANCE for 1 day.
    let start = |name: &str, mode, secs| {
        let url = format!(
            "s3://sealtrail-default-retention/{name}-{}",
            sealtrail::writer::now_ns()
        );
        let (_layer, guard) = sealtrail::AuditLayer::builder()
            .with_store(url.as_str())
            .with_signing_key(key())
            .with_spool_dir(dir.path().join(name))
            .with_writer_id(name)
            .with_retention(sealtrail::archive::Retention {
                mode,
                period: std::time::Duration::from_secs(secs),
            })
            .build()
            .unwrap();
        drop(guard);
        let log = String::from_utf8(std::mem::take(&mut *captured.0.lock().unwrap())).unwrap();
        log
    };
    use sealtrail::archive::LockMode::{Compliance, Governance};
    // Longer, or as long in a stronger mode: each object is locked for at
    // least the bucket's policy. No warning.
    for (name, mode, secs) in [
        ("longer", Governance, 2 * 86_400),
        ("same", Compliance, 86_400),
    ] {
        let log = start(name, mode, secs);
        assert!(!log.contains("WARN"), "{name}: {log}");
    }
    let log = start("shorter", Governance, 12 * 3600);
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("shorter or weaker than the bucket's default"),
        "{log}"
    );
    assert!(
        log.contains("bucket_default_secs=86400") && log.contains("configured_secs=43200"),
        "{log}"
    );
}
