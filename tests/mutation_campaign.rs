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

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug)]
enum Mutation {
    Flip { key: String, byte: usize, bit: u8 },
    Truncate { key: String, to: usize },
    Delete { key: String },
    Append { key: String, bytes: Vec<u8> },
}

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
        let (key, bytes) = &files[rng.below(files.len())];
        let key = key.clone();
        let m = match rng.below(10) {
            0..=4 => {
                counts[0] += 1;
                Mutation::Flip {
                    key,
                    byte: rng.below(bytes.len()),
                    bit: rng.below(8) as u8,
                }
            }
            5 | 6 => {
                counts[1] += 1;
                Mutation::Truncate {
                    key,
                    to: rng.below(bytes.len()),
                }
            }
            7 => {
                counts[2] += 1;
                Mutation::Delete { key }
            }
            _ => {
                counts[3] += 1;
                let n = 1 + rng.below(16);
                Mutation::Append {
                    key,
                    bytes: (0..n).map(|_| rng.next() as u8).collect(),
                }
            }
        };
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
        let bytes = match m {
            Some(Mutation::Flip { key: k, byte, bit }) if k == key => {
                let mut v = bytes.to_vec();
                v[*byte] ^= 1 << bit;
                Bytes::from(v)
            }
            Some(Mutation::Truncate { key: k, to }) if k == key => bytes.slice(..*to),
            Some(Mutation::Delete { key: k }) if k == key => continue,
            Some(Mutation::Append {
                key: k,
                bytes: extra,
            }) if k == key => Bytes::from([&bytes[..], extra].concat()),
            _ => bytes.clone(),
        };
        store
            .put(&Path::from(key.as_str()), PutPayload::from(bytes))
            .await
            .unwrap();
    }
    let store: Arc<dyn ObjectStore> = store;
    Archive::from_store(store, "", "memory://")
}
