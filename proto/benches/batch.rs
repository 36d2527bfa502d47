//! The record-batch codec on the produce and fetch hot paths: what a producer pays to build a
//! 256 KiB batch, what a storage node pays to validate one (header CRC, every record), and what
//! a consumer pays to decode it.

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_proto::batch::{
    BatchBuilder, Compression, Record, decode_records_shared, set_base_offset, validate,
    validate_records,
};
use std::hint::black_box;

/// 256 records of 1 KiB random values and 16-byte keys: one full producer batch.
fn records() -> Vec<Record> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = |n: usize| {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    };
    (0..256)
        .map(|i| Record {
            key: Some(random(16)),
            value: Some(random(1024)),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i,
        })
        .collect()
}

fn build(records: &[Record], compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(compression);
    for r in records {
        b.push(r);
    }
    b.finish(0).unwrap()
}

fn codec(c: &mut Criterion) {
    let recs = records();
    let raw = recs.len() as u64 * (16 + 1024);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(raw));
    for (name, comp) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        g.bench_function(format!("build/{name}"), |b| {
            b.iter(|| build(black_box(&recs), comp))
        });
        let batch = build(&recs, comp);
        g.bench_function(format!("validate_records/{name}"), |b| {
            b.iter(|| validate_records(black_box(&batch)).unwrap())
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_records_shared(black_box(&batch)).unwrap())
        });
    }
    let batch = build(&recs, Compression::None);
    g.bench_function("validate_header_crc", |b| {
        b.iter(|| validate(black_box(&batch)).unwrap())
    });
    g.bench_function("set_base_offset", |b| {
        b.iter_batched(
            || batch.to_vec(),
            |mut v| set_base_offset(&mut v, 42),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
