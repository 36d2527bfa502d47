//! Group commit: every append on this node goes through one writer thread, which drains all
//! pending appends (of any partitions), assigns their offsets, and writes them to the log store
//! in a single atomic write. Concurrent producers thus share one RocksDB write (and one WAL
//! record), and offsets are assigned by the only thread that moves the log end, with no lock.
//! Deleting a replica's log also goes through this queue, so it is ordered after every append
//! queued before it and no append can land after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::BytesMut;
use sluice_proto::batch;
use sluice_proto::model::Offset;
use tokio::sync::{mpsc, oneshot};

use crate::log::{Append, LogError, LogStore, PartitionKey};
use crate::replica::Replica;

/// Appends waiting for the writer, at most; producers wait (backpressure) beyond it.
const QUEUE_DEPTH: usize = 4096;
/// Upper bound of one group, so one RocksDB write stays reasonably sized.
const MAX_GROUP_BYTES: usize = 32 << 20;

/// One batch to append to one replica.
pub struct AppendJob {
    /// Target replica (must be the leader).
    pub replica: Arc<Replica>,
    /// The validated batch; its base offset and leader epoch are rewritten in place.
    pub batch: BytesMut,
    /// Records in the batch (last offset delta + 1).
    pub records: i64,
    /// Receives the assigned base offset once the write is in the WAL (fsynced when the node
    /// runs with `--fsync`; otherwise in the OS page cache, which survives a process crash).
    pub reply: oneshot::Sender<Result<Offset, AppendError>>,
}

/// Work for the writer thread.
enum Job {
    Append(AppendJob),
    /// Deletes a replica's log after everything queued before it.
    Delete(PartitionKey),
}

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The log store failed the write; nothing of the group was written.
    #[error(transparent)]
    Storage(#[from] LogError),
    /// The replica was deleted while the append waited.
    #[error("partition was deleted")]
    Deleted,
    /// The writer has stopped (node shutting down).
    #[error("storage node is shutting down")]
    Stopped,
}

/// Handle to submit appends; cloning is cheap.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread; it stops once every `Writer` handle is dropped and the queue is
    /// drained.
    pub fn spawn(log: Arc<dyn LogStore>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("sluice-writer".into())
            .spawn(move || run(log, rx))
            .expect("spawn writer thread");
        (Self { tx }, handle)
    }

    /// Queues a batch (waiting while the queue is full) and returns the receiver of its result,
    /// so `acks=0` requests are admitted with backpressure without waiting for the write.
    pub async fn submit(
        &self,
        replica: Arc<Replica>,
        batch: BytesMut,
        records: i64,
    ) -> Result<oneshot::Receiver<Result<Offset, AppendError>>, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Append(AppendJob {
                replica,
                batch,
                records,
                reply,
            }))
            .await
            .map_err(|_| AppendError::Stopped)?;
        Ok(rx)
    }

    /// Queues a batch and waits until it is written; returns its base offset.
    pub async fn append(
        &self,
        replica: Arc<Replica>,
        batch: BytesMut,
        records: i64,
    ) -> Result<Offset, AppendError> {
        self.submit(replica, batch, records)
            .await?
            .await
            .map_err(|_| AppendError::Stopped)?
    }

    /// Queues the deletion of a replica's log, from a blocking (non-async) context.
    pub fn delete_blocking(&self, key: PartitionKey) -> Result<(), AppendError> {
        self.tx
            .blocking_send(Job::Delete(key))
            .map_err(|_| AppendError::Stopped)
    }
}

fn run(log: Arc<dyn LogStore>, mut rx: mpsc::Receiver<Job>) {
    let mut group: Vec<AppendJob> = Vec::new();
    let mut next = rx.blocking_recv();
    while let Some(job) = next.take() {
        match job {
            Job::Delete(key) => delete(log.as_ref(), key),
            Job::Append(first) => {
                let mut bytes = first.batch.len();
                group.push(first);
                while bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Job::Append(job)) => {
                            bytes += job.batch.len();
                            group.push(job);
                        }
                        Ok(delete) => {
                            // Write what came before the delete, then handle it next.
                            next = Some(delete);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write_group(log.as_ref(), &mut group);
            }
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
}

fn delete(log: &dyn LogStore, key: PartitionKey) {
    match log.delete(key) {
        Ok(()) => {
            tracing::info!(topic_id = %key.topic_id, partition = key.partition, "replica log deleted")
        }
        Err(error) => {
            tracing::error!(%error, topic_id = %key.topic_id, partition = key.partition, "deleting replica log failed")
        }
    }
}

fn write_group(log: &dyn LogStore, group: &mut Vec<AppendJob>) {
    let mut next: HashMap<u64, Offset> = HashMap::new();
    let mut bases = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        if job.replica.is_deleted() {
            bases.push(None);
            continue;
        }
        let r = &job.replica;
        let base = *next.entry(r.uid).or_insert_with(|| r.log_end());
        batch::set_base_offset(&mut job.batch, base);
        batch::set_partition_leader_epoch(&mut job.batch, r.leadership().epoch);
        next.insert(r.uid, base + job.records);
        bases.push(Some(base));
    }
    let appends: Vec<Append<'_>> = group
        .iter()
        .zip(&bases)
        .filter_map(|(job, base)| {
            base.map(|b| Append {
                uid: job.replica.uid,
                base_offset: b,
                batch: &job.batch,
            })
        })
        .collect();
    let result = if appends.is_empty() {
        Ok(())
    } else {
        log.append(&appends)
    };
    if let Err(error) = &result {
        tracing::error!(%error, batches = appends.len(), "group write failed");
    }
    for (job, base) in group.drain(..).zip(bases) {
        let answer = match (&result, base) {
            (_, None) => Err(AppendError::Deleted),
            (Err(e), _) => Err(AppendError::Storage(e.clone())),
            (Ok(()), Some(b)) => {
                // Groups are written in order, so the log end only ever moves forward here.
                job.replica.advance_log_end(b + job.records);
                Ok(b)
            }
        };
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::PartitionKey;
    use crate::log::conformance::batch;
    use crate::log::memory::MemoryLog;
    use crate::replica::Leadership;
    use sluice_proto::model::TopicId;

    fn replica(log: &dyn LogStore, p: i32) -> Arc<Replica> {
        let key = PartitionKey {
            topic_id: TopicId([1; 16]),
            partition: p,
        };
        let o = log.open(key).unwrap();
        Replica::new(
            "t".into(),
            key,
            o.uid,
            o.log_start,
            o.log_end,
            Leadership {
                leader: 0,
                epoch: 3,
            },
            1 << 20,
        )
    }

    #[tokio::test]
    async fn concurrent_appends_get_consecutive_offsets_per_partition() {
        let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
        let (writer, _h) = Writer::spawn(log.clone());
        let (a, b) = (replica(log.as_ref(), 0), replica(log.as_ref(), 1));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (w, r) = (
                writer.clone(),
                if i % 2 == 0 { a.clone() } else { b.clone() },
            );
            tasks.push(tokio::spawn(async move {
                w.append(r, BytesMut::from(&batch(0, 3)[..]), 3)
                    .await
                    .unwrap()
            }));
        }
        let mut offsets: Vec<_> = Vec::new();
        for t in tasks {
            offsets.push(t.await.unwrap());
        }
        assert_eq!((a.log_end(), b.log_end()), (75, 75));
        assert_eq!(a.high_watermark(), 75);
        let stored = log.read(a.uid, 0, 75, usize::MAX).unwrap();
        let bases: Vec<_> = stored
            .iter()
            .map(|s| sluice_proto::batch::BatchHeader::parse(s).unwrap())
            .collect();
        assert!(
            bases
                .windows(2)
                .all(|w| w[1].base_offset == w[0].next_offset())
        );
        assert!(bases.iter().all(|h| h.partition_leader_epoch == 3));
        assert!(
            sluice_proto::batch::validate(&stored[0]).is_ok(),
            "rewriting offsets keeps the CRC valid"
        );
    }

    #[tokio::test]
    async fn appends_to_a_deleted_replica_fail_and_write_nothing() {
        let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
        let (writer, _h) = Writer::spawn(log.clone());
        let r = replica(log.as_ref(), 0);
        r.mark_deleted();
        let res = writer
            .append(r.clone(), BytesMut::from(&batch(0, 1)[..]), 1)
            .await;
        assert!(matches!(res, Err(AppendError::Deleted)));
        assert_eq!(r.log_end(), 0);
    }
}
