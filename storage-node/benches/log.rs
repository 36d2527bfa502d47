//! The RocksDB log's append and read paths as the writer thread and fetch use them: one write of
//! eight 256 KiB batches (a group commit over 8 partitions), with and without fsync, and a fetch
//! of 1 MiB from the middle of a partition.

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_proto::batch::{BatchBuilder, Compression, Record, set_base_offset};
use sluice_proto::model::TopicId;
use sluice_storage_node::log::rocks::RocksLog;
use sluice_storage_node::log::{Append, LogStore, PartitionKey};
use std::hint::black_box;

const RECORDS: i64 = 256;

fn batch() -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..RECORDS {
        let mut v = Vec::with_capacity(1024);
        while v.len() < 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        b.push(&Record {
            key: None,
            value: Some(Bytes::from(v)),
            headers: Vec::new(),
            timestamp_ms: i,
        });
    }
    b.finish(0).unwrap().to_vec()
}

fn open(sync: bool) -> (tempfile::TempDir, RocksLog, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), sync).unwrap();
    let uids = (0..8)
        .map(|p| {
            log.open(PartitionKey {
                topic_id: TopicId([7; 16]),
                partition: p,
            })
            .unwrap()
            .uid
        })
        .collect();
    (dir, log, uids)
}

fn append(c: &mut Criterion) {
    let template = batch();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(8 * template.len() as u64));
    g.sample_size(20);
    for sync in [false, true] {
        let (_dir, log, uids) = open(sync);
        let next = std::cell::Cell::new(0i64);
        let name = if sync {
            "append_8x256KiB_fsync"
        } else {
            "append_8x256KiB"
        };
        g.bench_function(name, |b| {
            // Stamping the offsets copies the batches; that is set-up, not the timed append.
            let stamped = || {
                let base = next.replace(next.get() + RECORDS);
                let bufs: Vec<Bytes> = (0..8)
                    .map(|_| {
                        let mut buf = template.clone();
                        set_base_offset(&mut buf, base);
                        Bytes::from(buf)
                    })
                    .collect();
                (base, bufs)
            };
            b.iter_batched(
                stamped,
                |(base, bufs)| {
                    let appends: Vec<Append<'_>> = uids
                        .iter()
                        .zip(&bufs)
                        .map(|(uid, buf)| Append {
                            uid: *uid,
                            base_offset: base,
                            batch: buf,
                        })
                        .collect();
                    log.append(&appends).unwrap();
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let (_dir, log, uids) = open(false);
    let mut buf = batch();
    for i in 0..64 {
        set_base_offset(&mut buf, i * RECORDS);
        let stamped = Bytes::copy_from_slice(&buf);
        let appends: Vec<Append<'_>> = uids
            .iter()
            .map(|uid| Append {
                uid: *uid,
                base_offset: i * RECORDS,
                batch: &stamped,
            })
            .collect();
        log.append(&appends).unwrap();
    }
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(4 * buf.len() as u64));
    g.bench_function("read_1MiB", |b| {
        b.iter(|| {
            // Four whole batches (about 1 MiB): max_bytes stops a read before a batch would
            // pass it.
            let got = log
                .read(
                    uids[3],
                    black_box(30 * RECORDS + 5),
                    i64::MAX,
                    4 * buf.len(),
                )
                .unwrap();
            assert_eq!(got.len(), 4);
            got
        })
    });
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
