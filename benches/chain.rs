//! Chaining one ~1 KiB record: assign seq and prev, encode canonically, hash.
//! `Writer::append` adds the batch bookkeeping (session summary, Merkle leaf list).

use std::cell::Cell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[path = "fixtures.rs"]
mod fixtures;

fn bench(c: &mut Criterion) {
    let records: Vec<_> = (0..1024)
        .map(|i| fixtures::genai_record(&format!("session-{}", i % 64), i))
        .collect();
    let next = Cell::new(0usize);
    let pick = || {
        next.set(next.get() + 1);
        records[next.get() % records.len()].clone()
    };
    let mut g = c.benchmark_group("chain_append");
    g.throughput(Throughput::Elements(1));
    let mut chain = sealtrail::chain::Chain::new("bench");
    let mut out = Vec::with_capacity(8 << 20);
    g.bench_function("chain_append_1KiB", |b| {
        b.iter_batched(
            pick,
            |mut r| {
                if out.len() > (4 << 20) {
                    out.clear();
                }
                black_box(chain.append(&mut r, &mut out).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = sealtrail::keys::SigningKey::from_bytes(&[1; 32]);
    let mut w = rt
        .block_on(sealtrail::Writer::open(
            sealtrail::Archive::memory(),
            key,
            "bench",
            sealtrail::WriterOptions::default(),
        ))
        .unwrap();
    g.bench_function("writer_append_1KiB", |b| {
        b.iter_batched(
            pick,
            |r| {
                if w.pending_records() >= 4096 {
                    rt.block_on(w.flush()).unwrap();
                }
                black_box(w.append(r).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
