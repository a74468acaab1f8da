//! One conformance suite that every storage backend runs, in the manner of
//! object_store's own integration suite: the in-memory store, a local
//! directory, and S3 (a real S3-compatible server that `scripts/test` starts).

mod common;

use bytes::Bytes;
use common::*;
use sealtrail::{Archive, Error};

/// Everything sealtrail needs from a store, checked on `archive`.
async fn conformance(archive: Archive) {
    // Write once: a second write of the same key fails and changes nothing.
    archive
        .put_new("c/one", Bytes::from_static(b"first"))
        .await
        .unwrap();
    let err = archive
        .put_new("c/one", Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { ref key } if key == "c/one"),
        "{err}"
    );
    assert_eq!(
        archive.get("c/one").await.unwrap(),
        Bytes::from_static(b"first")
    );

    // Reading what is not there is an error naming the key.
    let err = archive.get("c/missing").await.unwrap_err();
    assert!(err.to_string().contains("c/missing"), "{err}");

    // Listing: sorted, sizes right, scoped to the directory asked for.
    archive
        .put_new("c/two", Bytes::from_static(b"22"))
        .await
        .unwrap();
    archive
        .put_new("d/three", Bytes::from_static(b"333"))
        .await
        .unwrap();
    let listed = archive.list("c/").await.unwrap();
    let got: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(got, [("c/one", 5), ("c/two", 2)]);
    assert_eq!(archive.list("").await.unwrap().len(), 3);

    // Empty and large objects round-trip.
    archive.put_new("c/empty", Bytes::new()).await.unwrap();
    assert!(archive.get("c/empty").await.unwrap().is_empty());
    let big = Bytes::from(vec![7u8; 3 << 20]);
    archive.put_new("c/big", big.clone()).await.unwrap();
    assert_eq!(archive.get("c/big").await.unwrap(), big);

    // A writer and the verifier work on it end to end (in a fresh prefix of keys).
    let f = build_in(archive.clone(), "conformance-writer", 3, 3, 10).await;
    let r = f.verify().await;
    let uncovered = with_problem(&r, |p| *p == sealtrail::verify::Problem::UncoveredObject).len();
    // The objects written above are not sealtrail's, and verify says so; nothing else is wrong.
    assert_eq!(uncovered, 5, "{}", show(&r));
    assert_eq!(r.findings.len(), 5, "{}", show(&r));
    assert_eq!(r.records, 30);
}

#[tokio::test]
async fn memory() {
    conformance(Archive::memory()).await;
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Archive::open(dir.path().to_str().unwrap()).unwrap()).await;
    // A file:// URL opens the same directory.
    let again = Archive::open(&format!("file://{}", dir.path().display())).unwrap();
    assert_eq!(
        again.get("c/one").await.unwrap(),
        Bytes::from_static(b"first")
    );
}

#[tokio::test]
async fn s3() {
    let bucket = std::env::var("SEALTRAIL_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!(
            "SEALTRAIL_TEST_S3_BUCKET is not set: run the suite with `bash scripts/test`, which starts a \
             moto S3 server on loopback, creates the bucket and exports AWS_ENDPOINT_URL and the credentials"
        )
    });
    // A fresh prefix per run: the server keeps its data for the whole suite.
    let prefix = format!(
        "conformance-{}-{}",
        std::process::id(),
        sealtrail::writer::now_ns()
    );
    let archive = Archive::open(&format!("s3://{bucket}/{prefix}")).unwrap();
    conformance(archive).await;
}
