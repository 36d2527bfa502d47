//! The one test suite every [`LogStore`](super::LogStore) backend passes. A backend's tests
//! invoke `log_store_conformance!(factory)` where `factory()` returns `(store, guard)`; the guard
//! (e.g. a temp dir) lives as long as the case.

use bytes::Bytes;
use sluice_proto::batch::{BatchBuilder, Compression, Record};
use sluice_proto::model::Offset;

/// A valid batch of `count` small records starting at `base`, written in leader epoch 0.
pub fn batch(base: Offset, count: usize) -> Bytes {
    batch_at(base, count, 1_000)
}

/// [`batch`] with record timestamps `timestamp`, `timestamp + 1`, …
pub fn batch_at(base: Offset, count: usize, timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count {
        b.push(&Record {
            key: None,
            value: Some(Bytes::from(format!("v{}", base + i as Offset))),
            headers: Vec::new(),
            timestamp_ms: timestamp + i as i64,
        });
    }
    // Stored batches carry the epoch of the leader that wrote them (producers send -1).
    let mut bytes = b.finish(base).expect("valid batch").to_vec();
    sluice_proto::batch::set_partition_leader_epoch(&mut bytes, 0);
    Bytes::from(bytes)
}

/// Appends `batches` one write each, at the base offsets they carry.
pub fn append_each(log: &impl super::LogStore, uid: super::Uid, batches: &[Bytes]) {
    for b in batches {
        let base = sluice_proto::batch::BatchHeader::parse(b)
            .expect("a batch")
            .base_offset;
        log.append(&[super::Append {
            uid,
            base_offset: base,
            batch: b,
        }])
        .expect("appended");
    }
}

/// Generates one `#[test]` per conformance case for a backend.
#[macro_export]
macro_rules! log_store_conformance {
    ($factory:expr) => {
        use sluice_proto::model::TopicId;
        use $crate::log::conformance::{batch, batch_at};
        use $crate::log::{Append, EpochEntry, LogOp, LogStore, PartitionKey};

        fn key(t: u8, p: i32) -> PartitionKey {
            PartitionKey {
                topic_id: TopicId([t; 16]),
                partition: p,
            }
        }

        #[test]
        fn open_gives_distinct_uids_and_reopen_the_same_one() {
            let (log, _g) = ($factory)();
            let a = log.open(key(1, 0)).unwrap();
            let b = log.open(key(1, 1)).unwrap();
            assert_ne!(a.uid, b.uid);
            assert_eq!(log.open(key(1, 0)).unwrap().uid, a.uid);
            assert_eq!((a.log_start, a.log_end), (0, 0));
            let mut listed = log.list().unwrap();
            listed.sort();
            assert_eq!(listed, vec![(key(1, 0), a.uid), (key(1, 1), b.uid)]);
        }

        #[test]
        fn appended_batches_read_back_in_order_and_set_the_log_end() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            let (b0, b1) = (batch(0, 2), batch(2, 3));
            log.append(&[
                Append {
                    uid,
                    base_offset: 0,
                    batch: &b0,
                },
                Append {
                    uid,
                    base_offset: 2,
                    batch: &b1,
                },
            ])
            .unwrap();
            assert_eq!(
                log.read(uid, 0, 5, 1 << 20).unwrap(),
                vec![b0.clone(), b1.clone()]
            );
            let opened = log.open(key(1, 0)).unwrap();
            assert_eq!((opened.log_start, opened.log_end), (0, 5));
        }

        #[test]
        fn read_from_inside_a_batch_starts_with_that_batch() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            let (b0, b1) = (batch(0, 4), batch(4, 4));
            log.append(&[
                Append {
                    uid,
                    base_offset: 0,
                    batch: &b0,
                },
                Append {
                    uid,
                    base_offset: 4,
                    batch: &b1,
                },
            ])
            .unwrap();
            assert_eq!(log.read(uid, 2, 8, 1 << 20).unwrap(), vec![b0, b1.clone()]);
            assert_eq!(log.read(uid, 5, 8, 1 << 20).unwrap(), vec![b1]);
            assert!(log.read(uid, 8, 8, 1 << 20).unwrap().is_empty());
        }

        #[test]
        fn read_stops_before_the_limit_and_after_max_bytes() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            let bs: Vec<_> = (0..4).map(|i| batch(i * 2, 2)).collect();
            let appends: Vec<_> = bs
                .iter()
                .enumerate()
                .map(|(i, b)| Append {
                    uid,
                    base_offset: i as i64 * 2,
                    batch: b,
                })
                .collect();
            log.append(&appends).unwrap();
            assert_eq!(
                log.read(uid, 0, 4, 1 << 20).unwrap().len(),
                2,
                "limit excludes batches at or past it"
            );
            assert_eq!(
                log.read(uid, 0, 8, 1).unwrap().len(),
                1,
                "at least one batch, however small max_bytes"
            );
            assert_eq!(
                log.read(uid, 0, 8, bs[0].len() + bs[1].len())
                    .unwrap()
                    .len(),
                2
            );
        }

        #[test]
        fn partitions_do_not_see_each_others_batches() {
            let (log, _g) = ($factory)();
            let a = log.open(key(1, 0)).unwrap().uid;
            let b = log.open(key(2, 0)).unwrap().uid;
            let (ba, bb) = (batch(0, 1), batch(0, 2));
            log.append(&[
                Append {
                    uid: a,
                    base_offset: 0,
                    batch: &ba,
                },
                Append {
                    uid: b,
                    base_offset: 0,
                    batch: &bb,
                },
            ])
            .unwrap();
            assert_eq!(log.read(a, 0, 10, 1 << 20).unwrap(), vec![ba]);
            assert_eq!(log.read(b, 0, 10, 1 << 20).unwrap(), vec![bb]);
        }

        #[test]
        fn delete_removes_the_log_and_a_reopen_starts_empty_with_a_new_uid() {
            let (log, _g) = ($factory)();
            let old = log.open(key(1, 0)).unwrap().uid;
            let b = batch(0, 3);
            log.append(&[Append {
                uid: old,
                base_offset: 0,
                batch: &b,
            }])
            .unwrap();
            log.delete(key(1, 0)).unwrap();
            assert!(log.read(old, 0, 10, 1 << 20).unwrap().is_empty());
            let again = log.open(key(1, 0)).unwrap();
            assert_ne!(again.uid, old);
            assert_eq!(again.log_end, 0);
            log.sync().unwrap();
        }

        #[test]
        fn truncation_removes_batches_from_a_boundary_and_epochs_persist_with_the_log() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            let (b0, b1, b2) = (batch(0, 2), batch(2, 2), batch(4, 2));
            let epochs = [
                EpochEntry {
                    epoch: 0,
                    start_offset: 0,
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 4,
                },
            ];
            log.write(&[
                LogOp::Append(Append {
                    uid,
                    base_offset: 0,
                    batch: &b0,
                }),
                LogOp::Append(Append {
                    uid,
                    base_offset: 2,
                    batch: &b1,
                }),
                LogOp::Append(Append {
                    uid,
                    base_offset: 4,
                    batch: &b2,
                }),
                LogOp::PutEpochs {
                    uid,
                    epochs: &epochs,
                },
            ])
            .unwrap();
            assert_eq!(log.open(key(1, 0)).unwrap().epochs, epochs.to_vec());
            log.write(&[
                LogOp::TruncateFrom { uid, from: 2 },
                LogOp::PutEpochs {
                    uid,
                    epochs: &epochs[..1],
                },
            ])
            .unwrap();
            let opened = log.open(key(1, 0)).unwrap();
            assert_eq!((opened.log_end, opened.epochs), (2, epochs[..1].to_vec()));
            assert_eq!(log.read(uid, 0, 10, usize::MAX).unwrap(), vec![b0]);
        }

        #[test]
        fn epochs_are_rebuilt_from_batch_headers_when_none_were_stored() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            let mut later = batch(2, 2).to_vec();
            sluice_proto::batch::set_partition_leader_epoch(&mut later, 5);
            let later = bytes::Bytes::from(later);
            let first = batch(0, 2);
            log.append(&[
                Append {
                    uid,
                    base_offset: 0,
                    batch: &first,
                },
                Append {
                    uid,
                    base_offset: 2,
                    batch: &later,
                },
            ])
            .unwrap();
            assert_eq!(
                log.open(key(1, 0)).unwrap().epochs,
                vec![
                    EpochEntry {
                        epoch: 0,
                        start_offset: 0
                    },
                    EpochEntry {
                        epoch: 5,
                        start_offset: 2
                    }
                ]
            );
        }

        #[test]
        fn high_watermark_checkpoints_persist_and_are_capped_at_the_log_end() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            assert_eq!(log.open(key(1, 0)).unwrap().high_watermark, 0);
            let b = batch(0, 3);
            log.write(&[
                LogOp::Append(Append {
                    uid,
                    base_offset: 0,
                    batch: &b,
                }),
                LogOp::PutHighWatermark { uid, offset: 2 },
            ])
            .unwrap();
            assert_eq!(log.open(key(1, 0)).unwrap().high_watermark, 2);
            log.write(&[LogOp::PutHighWatermark { uid, offset: 9 }])
                .unwrap();
            assert_eq!(
                log.open(key(1, 0)).unwrap().high_watermark,
                3,
                "never above the log end"
            );
        }
        #[test]
        fn delete_before_moves_the_log_start_and_keeps_the_batch_holding_it() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            $crate::log::conformance::append_each(
                &log,
                uid,
                &[batch(0, 3), batch(3, 3), batch(6, 3)],
            );
            log.write(&[LogOp::DeleteBefore { uid, offset: 4 }])
                .unwrap();
            let o = log.open(key(1, 0)).unwrap();
            assert_eq!((o.log_start, o.log_end), (4, 9));
            let read = log.read(uid, 4, 9, usize::MAX).unwrap();
            assert_eq!(
                read,
                vec![batch(3, 3), batch(6, 3)],
                "the batch holding 4 stays"
            );
            log.write(&[LogOp::DeleteBefore { uid, offset: 6 }])
                .unwrap();
            assert_eq!(log.open(key(1, 0)).unwrap().log_start, 6);
            assert_eq!(log.read(uid, 0, 9, usize::MAX).unwrap(), vec![batch(6, 3)]);
            $crate::log::conformance::append_each(&log, uid, &[batch(9, 2)]);
            let o = log.open(key(1, 0)).unwrap();
            assert_eq!((o.log_start, o.log_end), (6, 11));
            let sizes: u64 = log.segments(uid).unwrap().iter().map(|s| s.bytes).sum();
            assert!(sizes > 0);
        }

        #[test]
        fn delete_before_past_the_end_empties_the_log_and_it_continues_there() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            $crate::log::conformance::append_each(&log, uid, &[batch(0, 3), batch(3, 3)]);
            log.write(&[LogOp::DeleteBefore { uid, offset: 20 }])
                .unwrap();
            let o = log.open(key(1, 0)).unwrap();
            assert_eq!((o.log_start, o.log_end), (20, 20));
            assert!(log.read(uid, 0, 100, usize::MAX).unwrap().is_empty());
            assert!(log.segments(uid).unwrap().is_empty());
            $crate::log::conformance::append_each(&log, uid, &[batch(20, 2)]);
            let o = log.open(key(1, 0)).unwrap();
            assert_eq!((o.log_start, o.log_end), (20, 22));
            assert_eq!(
                log.read(uid, 20, 22, usize::MAX).unwrap(),
                vec![batch(20, 2)]
            );
        }

        #[test]
        fn offset_for_timestamp_finds_the_first_batch_reaching_it() {
            let (log, _g) = ($factory)();
            let uid = log.open(key(1, 0)).unwrap().uid;
            $crate::log::conformance::append_each(
                &log,
                uid,
                &[
                    batch_at(0, 2, 100),
                    batch_at(2, 2, 300),
                    batch_at(4, 2, 200),
                    batch_at(6, 2, 500),
                ],
            );
            let at = |from, ts| log.offset_for_timestamp(uid, from, ts).unwrap();
            assert_eq!(at(0, 0), Some(0));
            assert_eq!(at(0, 101), Some(0));
            assert_eq!(at(0, 102), Some(2));
            assert_eq!(at(0, 302), Some(6), "the batch at 4 tops out at 201");
            assert_eq!(at(0, 502), None);
            assert_eq!(at(3, 100), Some(2), "from inside a batch");
            assert_eq!(at(4, 250), Some(6));
            let segments = log.segments(uid).unwrap();
            assert_eq!(segments.first().map(|s| s.base), Some(0));
            assert_eq!(segments.last().map(|s| s.next), Some(8));
            assert_eq!(segments.iter().map(|s| s.max_timestamp).max(), Some(501));
        }
    };
}
