//! Canonical (RFC 8785) encoding of a ~1 KiB record: sealtrail's encoder vs
//! plain `serde_json` (not canonical, the cost floor) vs `serde_jcs` (the
//! reference implementation).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

#[path = "fixtures.rs"]
mod fixtures;

fn bench(c: &mut Criterion) {
    let r = fixtures::genai_record("session-1", 42);
    let len = sealtrail::canonical::to_vec(&r).unwrap().len();
    let mut g = c.benchmark_group("encode_1KiB_record");
    g.throughput(Throughput::Bytes(len as u64));
    let mut buf = Vec::with_capacity(4096);
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&r)).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("sealtrail_canonical", |b| {
        b.iter(|| {
            buf.clear();
            sealtrail::canonical::write(black_box(&r), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("sealtrail_canonical_record_fast_path", |b| {
        b.iter(|| {
            buf.clear();
            sealtrail::canonical::write_record(black_box(&r), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("serde_jcs", |b| {
        b.iter(|| black_box(serde_jcs::to_vec(black_box(&r)).unwrap()))
    });
    g.finish();
    println!("record size: {len} bytes");
}

criterion_group!(benches, bench);
criterion_main!(benches);
