//! A randomized campaign of single mutations over every file of an archive:
//! bit flips, truncations, deletions and appends. Every one must be detected.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sealtrail::verify::{verify, VerifyOptions};
use sealtrail::Archive;

use common::*;

const MUTATIONS: usize = 1200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_mutation_is_detected() {
    // Two writers sharing one archive; data batches, a heartbeat, closing seals.
    let archive = Archive::memory();
    let a = build_in(archive.clone(), "w1", 3, 4, 10).await;
    let b = build_in(archive.clone(), "w2", 2, 3, 8).await;
    let as_of = a
        .now
        .load(std::sync::atomic::Ordering::SeqCst)
        .max(b.now.load(std::sync::atomic::Ordering::SeqCst))
        + 600_000_000_000;
    let mut files: Vec<(String, Bytes)> = Vec::new();
    for o in archive.list("").await.unwrap() {
        let bytes = archive.get(&o.key).await.unwrap();
        files.push((o.key, bytes));
    }
    let trusted = [key().verifying_key()];
    let opts = VerifyOptions::default().with_as_of(as_of).with_threads(1);
    let base = restore(&files, None).await;
    let r = verify(&base, &trusted, &opts).await.unwrap();
    assert!(r.is_intact(), "{}", show(&r));

    let mut rng = Rng(0x5ea1_7a11);
    let mut undetected = Vec::new();
    let mut counts = [0usize; 4];
    for _ in 0..MUTATIONS {
        let m = Mutation::random(&mut rng, &files);
        counts[m.kind()] += 1;
        let mutated = restore(&files, Some(&m)).await;
        let r = verify(&mutated, &trusted, &opts).await.unwrap();
        if r.is_intact() {
            undetected.push(format!("{m:?}"));
        }
    }
    println!(
        "{MUTATIONS} mutations over {} files ({} flips, {} truncations, {} deletions, {} appends): {} detected",
        files.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        MUTATIONS - undetected.len()
    );
    assert!(
        undetected.is_empty(),
        "undetected mutations:\n{}",
        undetected.join("\n")
    );
}

async fn restore(files: &[(String, Bytes)], m: Option<&Mutation>) -> Archive {
    let store = Arc::new(InMemory::new());
    for (key, bytes) in files {
        let Some(bytes) = m.map_or(Some(bytes.clone()), |m| m.apply(key, bytes)) else {
            continue;
        };
        store
            .put(&Path::from(key.as_str()), PutPayload::from(bytes))
            .await
            .unwrap();
    }
    let store: Arc<dyn ObjectStore> = store;
    Archive::from_store(store, "", "memory://")
}
