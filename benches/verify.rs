//! Verify throughput over an archive of ~1 KiB GenAI records, in decompressed
//! record bytes per second, against raw SHA-256 of the same bytes, on one
//! core and on all cores.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::hint::black_box;

#[path = "fixtures.rs"]
mod fixtures;

const BATCHES: u64 = 32;
const PER_BATCH: u64 = 1000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = sealtrail::keys::SigningKey::from_bytes(&[1; 32]);
    let archive = sealtrail::Archive::memory();
    let mut contents: Vec<Vec<u8>> = Vec::new();
    rt.block_on(async {
        let mut w = sealtrail::Writer::open(
            archive.clone(),
            key.clone(),
            "bench",
            sealtrail::WriterOptions::default(),
        )
        .await
        .unwrap();
        let mut i = 0;
        for _ in 0..BATCHES {
            for _ in 0..PER_BATCH {
                w.append(fixtures::genai_record(&format!("session-{}", i % 200), i))
                    .unwrap();
                i += 1;
            }
            let r = w.flush().await.unwrap().unwrap();
            let bytes = archive.get(r.batch_key.as_deref().unwrap()).await.unwrap();
            contents.push(zstd::decode_all(&bytes[..]).unwrap());
        }
        w.close().await.unwrap();
    });
    let total: u64 = contents.iter().map(|c| c.len() as u64).sum();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "archive: {BATCHES} batches, {} records, {total} decompressed bytes; {cores} cores",
        BATCHES * PER_BATCH
    );

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(10);
    let trusted = [key.verifying_key()];
    for threads in [1, cores] {
        let opts = sealtrail::VerifyOptions::default().with_threads(threads);
        g.bench_function(format!("sealtrail_verify_{threads}_threads"), |b| {
            b.iter(|| {
                let r = rt
                    .block_on(sealtrail::verify(&archive, &trusted, &opts))
                    .unwrap();
                assert!(r.is_intact());
                black_box(r.records)
            })
        });
    }
    g.bench_function("raw_sha256_1_thread", |b| {
        b.iter(|| {
            for c in &contents {
                black_box(Sha256::digest(c));
            }
        })
    });
    // Reading every record's top-level members as verify does (every
    // record walked as JSON), alone.
    let lines: Vec<&[u8]> = contents
        .iter()
        .flat_map(|c| c.split(|b| *b == b'\n').filter(|l| l.len() > 84))
        .map(|l| &l[84..l.len() - 1])
        .collect();
    g.bench_function("part_read_records_1_thread", |b| {
        b.iter(|| {
            for l in &lines {
                assert!(sealtrail::verify::read_record_for_bench(l));
            }
        })
    });
    // The unavoidable parts of verification on one core, for reference.
    let compressed: Vec<Vec<u8>> = contents
        .iter()
        .map(|c| zstd::bulk::compress(c, 3).unwrap())
        .collect();
    g.bench_function("part_zstd_decompress_1_thread", |b| {
        b.iter(|| {
            for (c, raw) in compressed.iter().zip(&contents) {
                black_box(zstd::bulk::decompress(c, raw.len()).unwrap());
            }
        })
    });
    // The work no verifier of this format can skip, on one core: decompress,
    // hash every record, build the Merkle tree, digest the stored object.
    // (Lines found with memchr, as verify does: `split` byte by byte alone
    // costs a fifth of this.)
    // (Records hashed side by side, as verify hashes them.)
    let records_of = |raw: &[u8]| -> Vec<(usize, usize)> {
        let mut start = 0;
        memchr::memchr_iter(b'\n', raw)
            .map(|end| {
                let r = (start + 84, end - 1);
                start = end + 1;
                r
            })
            .collect()
    };
    let hashes_of = |raw: &[u8]| -> Vec<sealtrail::Digest> {
        let records: Vec<&[u8]> = records_of(raw).iter().map(|&(a, b)| &raw[a..b]).collect();
        let mut out = vec![[0u8; 32]; records.len()];
        sealtrail::digest::record_hashes(&records, &mut out);
        out.into_iter().map(sealtrail::Digest).collect()
    };
    // The SHA-256 work alone (record hashes, Merkle tree, object digest):
    // the format's ceiling for any verifier, as a fraction of raw SHA-256.
    let hashes: Vec<Vec<sealtrail::Digest>> = contents.iter().map(|c| hashes_of(c)).collect();
    g.bench_function("floor_sha256_work_1_thread", |b| {
        b.iter(|| {
            for ((c, raw), h) in compressed.iter().zip(&contents).zip(&hashes) {
                black_box(Sha256::digest(c));
                black_box(hashes_of(raw));
                black_box(sealtrail::merkle::root(h));
            }
        })
    });
    g.bench_function("floor_mandatory_work_1_thread", |b| {
        b.iter(|| {
            for (c, raw) in compressed.iter().zip(&contents) {
                black_box(Sha256::digest(c));
                let d = zstd::bulk::decompress(c, raw.len()).unwrap();
                black_box(sealtrail::merkle::root(&hashes_of(&d)));
            }
        })
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .unwrap();
    g.bench_function(format!("raw_sha256_{cores}_threads"), |b| {
        b.iter(|| {
            pool.install(|| {
                contents.par_iter().for_each(|c| {
                    black_box(Sha256::digest(c));
                })
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
