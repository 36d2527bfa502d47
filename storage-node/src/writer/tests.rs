//! Tests of the group-commit writer on the in-memory log.

use std::sync::Arc;

use bytes::BytesMut;
use sluice_proto::batch::{BatchBuilder, BatchHeader, Compression, Record};
use sluice_proto::model::TopicId;

use super::*;
use crate::log::conformance::batch;
use crate::log::memory::MemoryLog;
use crate::replica::{Assignment, Leadership, ReplicaConfig};

fn replica(log: &dyn LogStore, p: i32, leader: i32, epoch: i32) -> Arc<Replica> {
    let key = PartitionKey {
        topic_id: TopicId([1; 16]),
        partition: p,
    };
    let o = log.open(key).unwrap();
    Replica::new(
        0,
        "t".into(),
        key,
        o,
        Assignment {
            leadership: Leadership { leader, epoch },
            replicas: vec![0],
            isr: vec![0],
            partition_epoch: 0,
            isr_incarnations: Default::default(),
            adding: Vec::new(),
        },
        ReplicaConfig {
            max_batch_bytes: 1 << 20,
            min_insync: 1,
            max_lag_ms: 10_000,
            ..Default::default()
        },
    )
}

fn produced(records: usize) -> (BytesMut, BatchHeader) {
    let b = batch(0, records);
    (BytesMut::from(&b[..]), BatchHeader::parse(&b).unwrap())
}

/// `b` with `values` values of `value`, finished as a producer sends it.
fn produced_from(mut b: BatchBuilder, values: usize, value: &[u8]) -> (BytesMut, BatchHeader) {
    for _ in 0..values {
        b.push(&Record {
            value: Some(bytes::Bytes::copy_from_slice(value)),
            ..Default::default()
        });
    }
    let b = b.finish(0).unwrap();
    (BytesMut::from(&b[..]), BatchHeader::parse(&b).unwrap())
}

fn idempotent(pid: i64, seq: i32) -> (BytesMut, BatchHeader) {
    let b = BatchBuilder::new(Compression::None).with_producer(pid, 0, seq);
    produced_from(b, 1, b"x")
}

#[tokio::test]
async fn concurrent_appends_get_consecutive_offsets_and_the_leader_epoch() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let (a, b) = (
        replica(log.as_ref(), 0, 0, 3),
        replica(log.as_ref(), 1, 0, 3),
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (w, r) = (
            writer.clone(),
            if i % 2 == 0 { a.clone() } else { b.clone() },
        );
        tasks.push(tokio::spawn(async move {
            let (bytes, h) = produced(3);
            w.append(r, bytes, h).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!((a.log_end(), b.log_end()), (75, 75));
    assert_eq!(
        a.high_watermark(),
        75,
        "a lone leader commits what it appends"
    );
    let stored = log.read(a.uid, 0, 75, usize::MAX).unwrap();
    let headers: Vec<_> = stored
        .iter()
        .map(|s| BatchHeader::parse(s).unwrap())
        .collect();
    assert!(
        headers
            .windows(2)
            .all(|w| w[1].base_offset == w[0].next_offset())
    );
    assert!(headers.iter().all(|h| h.partition_leader_epoch == 3));
    assert!(
        sluice_proto::batch::validate(&stored[0]).is_ok(),
        "rewriting offsets keeps the CRC valid"
    );
    assert_eq!(
        log.open(a.key).unwrap().epochs,
        vec![crate::log::EpochEntry {
            epoch: 3,
            start_offset: 0
        }]
    );
}

#[tokio::test]
async fn appends_to_a_deleted_or_no_longer_led_replica_fail_and_write_nothing() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 0, 0);
    r.mark_deleted();
    let (bytes, h) = produced(1);
    assert!(matches!(
        writer.append(r.clone(), bytes, h).await,
        Err(AppendError::Deleted)
    ));
    let follower = replica(log.as_ref(), 1, 2, 0);
    let (bytes, h) = produced(1);
    assert!(matches!(
        writer.append(follower.clone(), bytes, h).await,
        Err(AppendError::NotLeader)
    ));
    assert_eq!((r.log_end(), follower.log_end()), (0, 0));
}

#[tokio::test]
async fn a_retried_idempotent_batch_is_answered_with_its_first_offset_and_not_written_twice() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 0, 0);
    let (b1, h1) = idempotent(9, 0);
    let first = writer.append(r.clone(), b1.clone(), h1).await.unwrap();
    let again = writer.append(r.clone(), b1, h1).await.unwrap();
    assert_eq!(
        (again.base_offset, again.duplicate),
        (first.base_offset, true)
    );
    assert_eq!(r.log_end(), 1);
    let (gap, hg) = idempotent(9, 5);
    assert!(matches!(
        writer.append(r.clone(), gap, hg).await,
        Err(AppendError::OutOfOrder { expected: 1 })
    ));
}

#[tokio::test]
async fn replicated_batches_may_leave_a_gap_but_never_overlap_the_log() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 5, 1);
    assert_eq!(writer.replicate(r.clone(), batch(0, 2)).await.unwrap(), 2);
    assert!(matches!(
        writer.replicate(r.clone(), batch(1, 1)).await,
        Err(AppendError::Gap {
            expected: 2,
            got: 1
        })
    ));
    assert_eq!(r.log_end(), 2);
    assert_eq!(
        r.high_watermark(),
        0,
        "a follower commits only what its leader says"
    );
    r.follow_high_watermark(10);
    assert_eq!(r.high_watermark(), 2, "capped at its own log end");
    assert_eq!(
        writer.replicate(r.clone(), batch(7, 1)).await.unwrap(),
        8,
        "batches 2..7 were compacted away on the leader"
    );
}

#[tokio::test]
async fn chunks_still_queued_when_the_node_took_over_leadership_are_refused() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 5, 1);
    let queued = writer
        .submit_replicated(r.clone(), batch(0, 2))
        .await
        .unwrap();
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    r.assign(Assignment {
        leadership: Leadership {
            leader: 0,
            epoch: 2,
        },
        replicas: vec![0],
        isr: vec![0],
        partition_epoch: 1,
        isr_incarnations: Default::default(),
        adding: Vec::new(),
    });
    assert!(matches!(
        writer.replicate(r.clone(), batch(2, 1)).await,
        Err(AppendError::NotFollower)
    ));
    assert_eq!(r.log_end(), 2);
}

#[tokio::test]
async fn truncation_drops_the_divergent_tail_its_epochs_and_its_producers() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 5, 2);
    let mut tail = BatchBuilder::new(Compression::None).with_producer(4, 0, 0);
    tail.push(&Record::default());
    let mut tail = tail.finish(3).unwrap().to_vec();
    sluice_proto::batch::set_partition_leader_epoch(&mut tail, 1);
    writer.replicate(r.clone(), batch(0, 3)).await.unwrap();
    writer.replicate(r.clone(), tail.into()).await.unwrap();
    assert_eq!(r.epochs.lock().unwrap().last_epoch(), 1);
    let end = writer.truncate(r.clone(), 3, 0).await.unwrap();
    assert_eq!((end, r.log_end()), (3, 3));
    assert_eq!(r.epochs.lock().unwrap().last_epoch(), 0);
    assert_eq!(log.open(r.key).unwrap().log_end, 3);
    let (b, h) = idempotent(4, 1);
    let check = r.producers.lock().unwrap().check(&BatchHeader { ..h });
    assert_eq!(
        check,
        crate::replica::producers::SequenceCheck::Append,
        "the truncated producer is forgotten"
    );
    drop(b);
}

#[tokio::test]
async fn the_high_watermark_is_checkpointed_with_the_log_and_restored_on_open() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 0, 0);
    for _ in 0..2 {
        let (bytes, h) = produced(2);
        writer.append(r.clone(), bytes, h).await.unwrap();
    }
    assert_eq!(r.high_watermark(), 4);
    // Each group checkpoints the commit point it saw; the shutdown checkpoint has the last one.
    checkpoint_high_watermarks(log.as_ref(), std::slice::from_ref(&r)).unwrap();
    let reopened = log.open(r.key).unwrap();
    assert_eq!(reopened.high_watermark, 4);
    let follower = replica(log.as_ref(), 0, 7, 1);
    assert_eq!(
        follower.high_watermark(),
        4,
        "a restarted replica starts from its checkpoint, not 0"
    );
}

/// A produced batch of `records` values of 1 KiB each.
fn produced_kib(records: usize) -> (BytesMut, BatchHeader) {
    produced_from(BatchBuilder::new(Compression::None), records, &[7u8; 1024])
}

/// Records which thread made each write, and how many appends it carried.
struct WhoWrites {
    inner: MemoryLog,
    writes: std::sync::Mutex<Vec<(Option<String>, usize)>>,
}

impl LogStore for WhoWrites {
    fn open(&self, key: PartitionKey) -> Result<crate::log::OpenedLog, crate::log::LogError> {
        self.inner.open(key)
    }
    fn list(&self) -> Result<Vec<(PartitionKey, crate::log::Uid)>, crate::log::LogError> {
        self.inner.list()
    }
    fn write(&self, ops: &[LogOp<'_>]) -> Result<(), crate::log::LogError> {
        let appends = ops.iter().filter(|o| matches!(o, LogOp::Append(_))).count();
        let thread = std::thread::current().name().map(str::to_string);
        self.writes.lock().unwrap().push((thread, appends));
        self.inner.write(ops)
    }
    fn read(
        &self,
        uid: crate::log::Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<bytes::Bytes>, crate::log::LogError> {
        self.inner.read(uid, from, limit, max_bytes)
    }
    fn delete(&self, key: PartitionKey) -> Result<(), crate::log::LogError> {
        self.inner.delete(key)
    }
    fn sync(&self) -> Result<(), crate::log::LogError> {
        self.inner.sync()
    }
    fn segments(
        &self,
        uid: crate::log::Uid,
    ) -> Result<Vec<crate::log::SegmentInfo>, crate::log::LogError> {
        self.inner.segments(uid)
    }
    fn replace_segments(
        &self,
        uid: crate::log::Uid,
        old: &[crate::log::SegmentInfo],
        batches: &[bytes::Bytes],
    ) -> Result<(), crate::log::LogError> {
        self.inner.replace_segments(uid, old, batches)
    }
    fn offset_for_timestamp(
        &self,
        uid: crate::log::Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, crate::log::LogError> {
        self.inner.offset_for_timestamp(uid, from, timestamp)
    }
}

#[tokio::test]
async fn small_changes_submitted_together_share_one_write_on_the_runtime() {
    let who = Arc::new(WhoWrites {
        inner: MemoryLog::new(),
        writes: Default::default(),
    });
    let log: Arc<dyn LogStore> = who.clone();
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let replicas: Vec<_> = (0..3).map(|p| replica(log.as_ref(), p, 0, 0)).collect();
    // One task submits three partitions' batches before it waits (as a ProduceMany does).
    let mut pending = Vec::new();
    for r in &replicas {
        let (bytes, h) = produced(2);
        pending.push(writer.submit(r.clone(), bytes, h).await.unwrap());
    }
    for rx in pending {
        assert_eq!(rx.await.unwrap().unwrap().end_offset, 2);
    }
    let writes = who.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one group write for the three: {writes:?}");
    assert_eq!(writes[0].1, 3);
    assert_ne!(
        writes[0].0.as_deref(),
        Some("sluice-writer"),
        "small changes are written on the runtime, without a hop to the writer thread"
    );
    for r in &replicas {
        assert_eq!(r.log_end(), 2);
    }
}

#[test]
fn a_write_task_the_runtime_drops_unrun_leaves_its_group_to_the_thread() {
    let who = Arc::new(WhoWrites {
        inner: MemoryLog::new(),
        writes: Default::default(),
    });
    let log: Arc<dyn LogStore> = who.clone();
    let (writer, _h) = Writer::spawn(log.clone(), true);
    let r = replica(log.as_ref(), 0, 0, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // `submit` never waits here, so `block_on` returns before the spawned write task runs, and
    // shutting the runtime down drops that task unrun.
    let (bytes, h) = produced(2);
    let mut rx = runtime
        .block_on(writer.submit(r.clone(), bytes, h))
        .unwrap();
    drop(runtime);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let done = loop {
        match rx.try_recv() {
            Ok(done) => break done,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("the change was stranded with the dropped task: {e}"),
        }
    };
    assert_eq!(done.unwrap().end_offset, 2);
    let writes = who.writes.lock().unwrap().clone();
    assert_eq!(writes, vec![(Some("sluice-writer".to_string()), 1)]);
}

#[tokio::test]
async fn large_and_small_changes_keep_submission_order_across_both_writers() {
    for inline in [true, false] {
        let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
        let (writer, _h) = Writer::spawn(log.clone(), inline);
        let r = replica(log.as_ref(), 0, 0, 0);
        // 300 KiB batches go to the thread, 1 KiB ones may be written inline: queued without
        // waiting, each must still land after everything submitted before it.
        let sizes = [300, 1, 1, 300, 1, 300, 300, 1, 1, 1];
        let mut pending = Vec::new();
        for &n in &sizes {
            let (bytes, h) = produced_kib(n);
            pending.push(writer.submit(r.clone(), bytes, h).await.unwrap());
        }
        let mut expected_base = 0;
        for (rx, &n) in pending.into_iter().zip(&sizes) {
            let a = rx.await.unwrap().unwrap();
            assert_eq!(a.base_offset, expected_base, "inline={inline}");
            expected_base += n as i64;
        }
        assert_eq!(r.log_end(), expected_base);
    }
}

#[tokio::test]
async fn dropping_every_handle_drains_the_queue_and_stops_the_thread() {
    let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
    let (writer, thread) = Writer::spawn(log.clone(), false);
    let r = replica(log.as_ref(), 0, 0, 0);
    let mut pending = Vec::new();
    for _ in 0..20 {
        let (bytes, h) = produced(1);
        pending.push(writer.submit(r.clone(), bytes, h).await.unwrap());
    }
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    for rx in pending {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(r.log_end(), 20);
}
