//! The RocksDB-indexed segment log: the shared conformance suite (with default and with tiny
//! segments, so nearly every batch rolls a segment, and fsynced with tiny segments, so a write
//! starts writeback and syncs several files), reopening and truncation across segments.

use bytes::Bytes;
use sluice_proto::model::TopicId;

use super::RocksLog;
use crate::log::conformance::batch;
use crate::log::{Append, LogOp, LogStore, PartitionKey, Uid};

mod conformance {
    crate::log_store_conformance!(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        (
            super::super::RocksLog::open(dir.path(), false).expect("open"),
            dir,
        )
    });
}

mod tiny_segments {
    crate::log_store_conformance!(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = super::super::RocksLog::open_with_segment_bytes(dir.path(), false, 100);
        (log.expect("open"), dir)
    });
}

mod fsynced_tiny_segments {
    crate::log_store_conformance!(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = super::super::RocksLog::open_with_segment_bytes(dir.path(), true, 100);
        (log.expect("open"), dir)
    });
}

fn pkey() -> PartitionKey {
    PartitionKey {
        topic_id: TopicId([1; 16]),
        partition: 0,
    }
}

use crate::log::conformance::append_each as append_all;

/// Rolls the replica's segments at `bytes` (and never by age).
fn roll_at(log: &RocksLog, uid: Uid, bytes: u64) {
    log.set_segment_policy(
        uid,
        crate::log::SegmentPolicy {
            bytes,
            max_age: std::time::Duration::MAX,
        },
    );
}

fn segment_files(dir: &std::path::Path, uid: Uid) -> usize {
    std::fs::read_dir(dir.join("segments").join(uid.to_string()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn appended_batches_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(0, 3);
    {
        let log = RocksLog::open(dir.path(), false).unwrap();
        let uid = log.open(pkey()).unwrap().uid;
        append_all(&log, uid, std::slice::from_ref(&b));
    }
    let log = RocksLog::open(dir.path(), false).unwrap();
    let opened = log.open(pkey()).unwrap();
    assert_eq!((opened.log_start, opened.log_end), (0, 3));
    assert_eq!(log.read(opened.uid, 0, 3, 1 << 20).unwrap(), vec![b]);
}

#[test]
fn truncation_across_segments_removes_their_files_and_appends_resume_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bs: Vec<Bytes> = (0..6).map(|i| batch(i * 2, 2)).collect();
    let log = RocksLog::open_with_segment_bytes(dir.path(), false, 100).unwrap();
    let uid = log.open(pkey()).unwrap().uid;
    append_all(&log, uid, &bs);
    let before = segment_files(dir.path(), uid);
    assert!(before >= 3, "tiny segments roll: {before} files");
    log.write(&[LogOp::TruncateFrom { uid, from: 4 }]).unwrap();
    assert!(
        segment_files(dir.path(), uid) < before,
        "truncated segments are removed"
    );
    let again: Vec<Bytes> = (0..3).map(|i| batch(4 + i * 3, 3)).collect();
    append_all(&log, uid, &again[..1]);
    drop(log);
    let log = RocksLog::open_with_segment_bytes(dir.path(), false, 100).unwrap();
    let opened = log.open(pkey()).unwrap();
    assert_eq!(opened.log_end, 7);
    append_all(&log, uid, &again[1..]);
    let mut expected = bs[..2].to_vec();
    expected.extend(again);
    assert_eq!(log.read(uid, 0, 13, usize::MAX).unwrap(), expected);
}

#[test]
fn a_truncation_and_appends_of_one_replica_in_one_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    let uid = log.open(pkey()).unwrap().uid;
    let (b0, b1) = (batch(0, 2), batch(2, 2));
    append_all(&log, uid, std::slice::from_ref(&b0));
    assert!(
        log.write(&[
            LogOp::TruncateFrom { uid, from: 0 },
            LogOp::Append(Append {
                uid,
                base_offset: 0,
                batch: &b1,
            }),
        ])
        .is_err()
    );
    assert_eq!(log.read(uid, 0, 10, usize::MAX).unwrap(), vec![b0.clone()]);
    append_all(&log, uid, std::slice::from_ref(&b1));
    assert_eq!(log.read(uid, 0, 10, usize::MAX).unwrap(), vec![b0, b1]);
}

#[test]
fn a_data_directory_keeps_its_incarnation_and_a_new_one_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = RocksLog::open(dir.path(), false)
        .unwrap()
        .incarnation()
        .unwrap();
    let again = RocksLog::open(dir.path(), false)
        .unwrap()
        .incarnation()
        .unwrap();
    assert_eq!(first, again, "reopening keeps the id");
    std::fs::remove_dir_all(dir.path()).unwrap();
    let wiped = RocksLog::open(dir.path(), false)
        .unwrap()
        .incarnation()
        .unwrap();
    assert_ne!(first, wiped, "a wiped directory is a new incarnation");
}

#[test]
fn a_directory_with_column_families_this_build_does_not_know_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        rocksdb::DB::open_cf(&opts, dir.path(), ["log", "index", "meta"]).unwrap();
    }
    let Err(e) = RocksLog::open(dir.path(), false) else {
        panic!("opened a directory with an unknown column family");
    };
    assert!(e.to_string().contains("move it away"), "{e}");
}

#[test]
fn segments_roll_by_the_replica_policy_and_a_moved_start_removes_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    let uid = log.open(pkey()).unwrap().uid;
    let one = batch(0, 2).len() as u64;
    // Room for two batches, not three (values grow by a digit at 10).
    roll_at(&log, uid, 3 * one - 1);
    let bs: Vec<Bytes> = (0..6).map(|i| batch(i * 2, 2)).collect();
    append_all(&log, uid, &bs);
    let segments = log.segments(uid).unwrap();
    let shape: Vec<(i64, i64)> = segments.iter().map(|s| (s.base, s.next)).collect();
    assert_eq!(
        shape,
        vec![(0, 4), (4, 8), (8, 12)],
        "two batches per segment"
    );
    let sizes: Vec<u64> = segments.iter().map(|s| s.bytes).collect();
    let want: Vec<u64> = bs
        .chunks(2)
        .map(|c| (c[0].len() + c[1].len()) as u64)
        .collect();
    assert_eq!(sizes, want);
    assert_eq!(segment_files(dir.path(), uid), 3);
    // A start inside the second segment keeps it and removes the first file.
    log.write(&[LogOp::DeleteBefore { uid, offset: 5 }])
        .unwrap();
    assert_eq!(segment_files(dir.path(), uid), 2);
    let segments = log.segments(uid).unwrap();
    assert_eq!(segments.first().map(|s| (s.id, s.base)), Some((4 << 8, 4)));
    // A truncation inside the last segment recomputes its summary.
    log.write(&[LogOp::TruncateFrom { uid, from: 10 }]).unwrap();
    let last = *log.segments(uid).unwrap().last().unwrap();
    assert_eq!((last.base, last.next, last.bytes), (8, 10, one));
    append_all(&log, uid, &[batch(10, 2), batch(12, 2)]);
    drop(log);
    let log = RocksLog::open(dir.path(), false).unwrap();
    let opened = log.open(pkey()).unwrap();
    assert_eq!((opened.log_start, opened.log_end), (5, 14));
    let shape: Vec<(i64, i64)> = log
        .segments(uid)
        .unwrap()
        .iter()
        .map(|s| (s.base, s.next))
        .collect();
    assert_eq!(shape, vec![(4, 8), (8, 12), (12, 14)]);
    assert_eq!(
        log.read(uid, 5, 14, usize::MAX).unwrap(),
        vec![
            bs[2].clone(),
            bs[3].clone(),
            bs[4].clone(),
            batch(10, 2),
            batch(12, 2)
        ]
    );
}

#[test]
fn a_segment_older_than_its_max_age_rolls_at_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    let uid = log.open(pkey()).unwrap().uid;
    log.set_segment_policy(
        uid,
        crate::log::SegmentPolicy {
            bytes: 1 << 30,
            max_age: std::time::Duration::from_millis(50),
        },
    );
    append_all(&log, uid, &[batch(0, 2), batch(2, 2)]);
    assert_eq!(log.segments(uid).unwrap().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(60));
    append_all(&log, uid, &[batch(4, 2)]);
    let ids: Vec<u64> = log.segments(uid).unwrap().iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![0, 4 << 8]);
}

/// The segment files of a replica, oldest first.
fn segment_paths(dir: &std::path::Path, uid: Uid) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments").join(uid.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_tail_after_the_recovery_point_is_cut_at_the_first_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    let bs: Vec<Bytes> = (0..6).map(|i| batch(i * 2, 2)).collect();
    let uid = {
        let log = RocksLog::open(dir.path(), false).unwrap();
        let uid = log.open(pkey()).unwrap().uid;
        append_all(&log, uid, &bs[..2]);
        log.checkpoint_recovery(&[(uid, 4)]).unwrap();
        append_all(&log, uid, &bs[2..]);
        uid
    };
    // Flip a byte inside the fourth batch (offsets 6..8), as a torn page would.
    let path = segment_paths(dir.path(), uid).pop().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let at: usize = bs[..3].iter().map(Bytes::len).sum::<usize>() + 70;
    data[at] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    let opened = log.open(pkey()).unwrap();
    assert_eq!(opened.log_end, 6, "cut before the first bad batch");
    assert_eq!(log.read(uid, 0, 100, usize::MAX).unwrap(), bs[..3].to_vec());
    // Appends go on from there, over the damaged bytes.
    append_all(&log, uid, &bs[3..4]);
    assert_eq!(log.read(uid, 0, 100, usize::MAX).unwrap(), bs[..4].to_vec());
}

#[test]
fn an_index_entry_past_the_end_of_its_file_is_cut_and_a_clean_checkpoint_verifies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bs: Vec<Bytes> = (0..4).map(|i| batch(i * 2, 2)).collect();
    let uid = {
        let log = RocksLog::open(dir.path(), false).unwrap();
        let uid = log.open(pkey()).unwrap().uid;
        append_all(&log, uid, &bs);
        uid
    };
    // The last batch's bytes never reached the disk: the file is shorter than the index says.
    let path = segment_paths(dir.path(), uid).pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    {
        let log = RocksLog::open(dir.path(), false).unwrap();
        assert_eq!(log.open(pkey()).unwrap().log_end, 6);
        append_all(&log, uid, &bs[3..]);
        log.checkpoint_recovery(&[(uid, 8)]).unwrap();
    }
    // Damage below the recovery point is not looked for (it was on disk when recorded).
    let log = RocksLog::open(dir.path(), false).unwrap();
    assert_eq!(log.open(pkey()).unwrap().log_end, 8);
    assert_eq!(log.read(uid, 0, 100, usize::MAX).unwrap(), bs);
}

#[test]
fn a_data_directory_is_bound_to_the_first_cluster_it_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    log.bind_cluster("a").unwrap();
    log.bind_cluster("a").unwrap();
    let e = log.bind_cluster("b").unwrap_err();
    assert!(e.to_string().contains("belongs to cluster a"), "{e}");
}

#[test]
fn cleaned_segments_replace_old_ones_in_one_swap_and_stale_plans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path(), false).unwrap();
    let uid = log.open(pkey()).unwrap().uid;
    let one = batch(0, 2).len() as u64;
    roll_at(&log, uid, 3 * one - 1);
    let bs: Vec<Bytes> = (0..6).map(|i| batch(i * 2, 2)).collect();
    append_all(&log, uid, &bs);
    let segments = log.segments(uid).unwrap();
    assert_eq!(segments.len(), 3);
    // The first two segments (offsets 0..8) cleaned down to the batches at 2 and 6.
    let cleaned = vec![bs[1].clone(), bs[3].clone()];
    log.replace_segments(uid, &segments[..2], &cleaned).unwrap();
    let mut want = cleaned.clone();
    want.extend(bs[4..].iter().cloned());
    assert_eq!(log.read(uid, 0, 100, usize::MAX).unwrap(), want);
    assert_eq!(
        log.read(uid, 4, 100, usize::MAX).unwrap(),
        want[1..].to_vec(),
        "gaps are skipped"
    );
    let after = log.segments(uid).unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((after[0].base, after[0].next), (2, 8));
    assert_eq!(crate::log::segments::generation(after[0].id), 1);
    assert_eq!(segment_files(dir.path(), uid), 2, "old files removed");
    // A plan made before the swap no longer matches.
    assert!(log.replace_segments(uid, &segments[..2], &cleaned).is_err());
    assert!(
        log.replace_segments(uid, &after, &cleaned).is_err(),
        "never the active segment"
    );
    // A file no summary names (an interrupted swap) is removed when the log is opened again.
    std::fs::write(
        dir.path()
            .join("segments")
            .join(uid.to_string())
            .join("00000000000000000777.seg"),
        b"junk",
    )
    .unwrap();
    drop(log);
    let log = RocksLog::open(dir.path(), false).unwrap();
    let opened = log.open(pkey()).unwrap();
    assert_eq!(segment_files(dir.path(), uid), 2);
    assert_eq!(
        (opened.log_start, opened.log_end),
        (0, 12),
        "the log start stays where it was"
    );
    assert_eq!(log.read(uid, 0, 100, usize::MAX).unwrap(), want);
}
