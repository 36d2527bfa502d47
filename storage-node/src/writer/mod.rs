//! Group commit: every change of this node's logs goes through one queue, and one writer at a
//! time drains all pending appends (of any partitions), assigns their offsets, and writes them
//! to the log store in a single atomic write. Concurrent producers thus share one RocksDB write
//! (and one WAL record), and offsets are assigned only by the holder of the writer role, which
//! moves the log end, with no further lock. The holder is the writer thread, or the submitting
//! task itself for a small change that finds nobody writing (`queue` says when and why).
//! Replicated appends, truncations and deletions go through the same queue, so they are ordered
//! with the appends queued before them.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{self, BatchHeader, BatchIter};
use sluice_proto::model::{LeaderEpoch, Offset};
use tokio::sync::oneshot;

mod lifecycle;
mod queue;
use queue::Queue;

use crate::log::{Append, LogError, LogOp, LogStore, PartitionKey};
use crate::replica::Replica;
use crate::replica::epochs::EpochHistory;
use crate::replica::producers::{ProducerState, SequenceCheck};

/// Changes waiting for the writer, at most; producers wait (backpressure) beyond it.
pub(crate) const QUEUE_DEPTH: usize = 4096;
/// Upper bound of one group, so one RocksDB write stays reasonably sized.
pub(crate) const MAX_GROUP_BYTES: usize = 32 << 20;
/// How much of a log's tail is scanned to rebuild producer state after a truncation or at open.
pub const PRODUCER_STATE_SCAN_OFFSETS: Offset = 100_000;

/// Why a log change failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The log store failed the write; nothing of the group was written.
    #[error(transparent)]
    Storage(#[from] LogError),
    /// The replica was deleted while the change waited.
    #[error("partition was deleted")]
    Deleted,
    /// The writer has stopped (node shutting down).
    #[error("storage node is shutting down")]
    Stopped,
    /// This node stopped leading the partition before the batch got its offsets.
    #[error("this node no longer leads the partition")]
    NotLeader,
    /// An idempotent producer skipped sequences.
    #[error("out-of-order sequence: the partition expects sequence {expected} next")]
    OutOfOrder {
        /// The sequence the partition expects.
        expected: i32,
    },
    /// An idempotent producer's epoch is older than one already seen.
    #[error("producer epoch is older than the partition has seen (a fenced producer)")]
    StaleProducerEpoch,
    /// Replicated batches start before the follower's log end (they overlap what it has; a
    /// gap after it is normal, where the leader compacted whole batches away).
    #[error("replicated batches start at {got}, before the log end {expected}")]
    Gap {
        /// The follower's log end.
        expected: Offset,
        /// The first replicated offset.
        got: Offset,
    },
    /// Replicated batches arrived after this node became the partition's leader.
    #[error("this node leads the partition now; replicated data is refused")]
    NotFollower,
    /// Replicated bytes are not whole valid batches.
    #[error("replicated data is corrupt: {0}")]
    Corrupt(String),
}

/// The result of a leader append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Base offset of the batch.
    pub base_offset: Offset,
    /// One past its last offset.
    pub end_offset: Offset,
    /// The batch was a retry of one already in the log; nothing was written.
    pub duplicate: bool,
}

type Reply<T> = oneshot::Sender<Result<T, AppendError>>;

/// Work for the writer thread.
enum Job {
    /// A produced batch: the leader assigns its offsets.
    Append {
        replica: Arc<Replica>,
        batch: BytesMut,
        header: BatchHeader,
        reply: Reply<Appended>,
    },
    /// Batches fetched from the leader, offsets already assigned.
    Replicate {
        replica: Arc<Replica>,
        batches: Bytes,
        reply: Reply<Offset>,
    },
    /// Truncates a follower's log from `to` (rounded down to a batch boundary) and forgets
    /// epochs above `keep_epoch`.
    Truncate {
        replica: Arc<Replica>,
        to: Offset,
        keep_epoch: LeaderEpoch,
        reply: Reply<Offset>,
    },
    /// Deletes a replica's log after everything queued before it.
    Delete(PartitionKey),
    /// Moves the log start up (see [`lifecycle`]); only with `past_end` beyond the log end.
    DeleteBefore {
        replica: Arc<Replica>,
        offset: Offset,
        past_end: bool,
        reply: Reply<Offset>,
    },
}

/// Handle to submit log changes; cloning is cheap. The writer thread stops once every handle
/// is dropped and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Handle>,
}

/// Owned by the handles only, so its drop means the last one is gone.
struct Handle {
    queue: Arc<Queue>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Writer {
    /// Starts the writer thread. With `inline`, a task whose small change finds nobody writing
    /// writes it itself (see [`queue`]); pass `false` when appends fsync, so no async worker
    /// ever waits on the disk.
    pub fn spawn(log: Arc<dyn LogStore>, inline: bool) -> (Self, JoinHandle<()>) {
        let queue = Arc::new(Queue::new(log, inline));
        let q = queue.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-writer".into())
            .spawn(move || q.run_thread())
            .expect("spawn writer thread");
        let inner = Arc::new(Handle { queue });
        (Self { inner }, handle)
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, AppendError>>, AppendError> {
        let (reply, rx) = oneshot::channel();
        let queue = &self.inner.queue;
        queue.reserve().await;
        queue.push(make(reply));
        Ok(rx)
    }

    /// Queues a validated batch (waiting while the queue is full) and returns the receiver of
    /// its result, so `acks=0` requests get backpressure without waiting for the write.
    pub async fn submit(
        &self,
        replica: Arc<Replica>,
        batch: BytesMut,
        header: BatchHeader,
    ) -> Result<oneshot::Receiver<Result<Appended, AppendError>>, AppendError> {
        self.send(|reply| Job::Append {
            replica,
            batch,
            header,
            reply,
        })
        .await
    }

    /// Queues a batch and waits until it is in the log.
    pub async fn append(
        &self,
        replica: Arc<Replica>,
        batch: BytesMut,
        header: BatchHeader,
    ) -> Result<Appended, AppendError> {
        self.submit(replica, batch, header)
            .await?
            .await
            .map_err(|_| AppendError::Stopped)?
    }

    /// Appends replicated batches (as fetched from the leader); returns the new log end.
    pub async fn replicate(
        &self,
        replica: Arc<Replica>,
        batches: Bytes,
    ) -> Result<Offset, AppendError> {
        self.submit_replicated(replica, batches)
            .await?
            .await
            .map_err(|_| AppendError::Stopped)?
    }

    /// Queues replicated batches (waiting while the queue is full) and returns the receiver of
    /// the new log end, so a follower can take the next chunk while this one is written.
    /// Chunks queued in order are written in order.
    pub async fn submit_replicated(
        &self,
        replica: Arc<Replica>,
        batches: Bytes,
    ) -> Result<oneshot::Receiver<Result<Offset, AppendError>>, AppendError> {
        self.send(|reply| Job::Replicate {
            replica,
            batches,
            reply,
        })
        .await
    }

    /// Truncates a follower's divergent tail; returns the new log end.
    pub async fn truncate(
        &self,
        replica: Arc<Replica>,
        to: Offset,
        keep_epoch: LeaderEpoch,
    ) -> Result<Offset, AppendError> {
        self.send(|reply| Job::Truncate {
            replica,
            to,
            keep_epoch,
            reply,
        })
        .await?
        .await
        .map_err(|_| AppendError::Stopped)?
    }

    /// Queues the deletion of a replica's log after everything queued before it; never waits
    /// (callable from a blocking context).
    pub fn delete_blocking(&self, key: PartitionKey) -> Result<(), AppendError> {
        self.inner.queue.push(Job::Delete(key));
        Ok(())
    }
}

/// Runs a change that is not written as part of a group.
fn run_alone(log: &dyn LogStore, job: Job) {
    match job {
        Job::Delete(key) => delete(log, key),
        Job::Truncate {
            replica,
            to,
            keep_epoch,
            reply,
        } => {
            let _ = reply.send(truncate(log, &replica, to, keep_epoch));
        }
        Job::DeleteBefore {
            replica,
            offset,
            past_end,
            reply,
        } => {
            let _ = reply.send(lifecycle::delete_before(log, &replica, offset, past_end));
        }
        data @ (Job::Append { .. } | Job::Replicate { .. }) => write_group(log, &mut vec![data]),
    }
}

fn job_bytes(j: &Job) -> usize {
    match j {
        Job::Append { batch, .. } => batch.len(),
        Job::Replicate { batches, .. } => batches.len(),
        _ => 0,
    }
}

/// Tentative per-replica state while a group is assembled; committed only if the write succeeds.
struct Pending {
    replica: Arc<Replica>,
    end: Offset,
    epochs: EpochHistory,
    epochs_changed: bool,
    producers: ProducerState,
}

/// What one job of the group turned into.
enum Planned {
    Append {
        base: Offset,
        end: Offset,
        reply: Reply<Appended>,
        batch: Bytes,
        uid: u64,
    },
    Duplicate {
        base: Offset,
        end: Offset,
        reply: Reply<Appended>,
    },
    Replicate {
        batches: Vec<(Offset, Bytes)>,
        uid: u64,
        reply: Reply<Offset>,
    },
    Failed(Box<dyn FnOnce() + Send>),
}

fn pending_for<'a>(map: &'a mut HashMap<u64, Pending>, r: &Arc<Replica>) -> &'a mut Pending {
    map.entry(r.uid).or_insert_with(|| Pending {
        replica: r.clone(),
        end: r.log_end(),
        epochs: r.epochs.lock().expect("poisoned").clone(),
        epochs_changed: false,
        producers: r.producers.lock().expect("poisoned").clone(),
    })
}

fn fail<T: Send + 'static>(reply: Reply<T>, e: AppendError) -> Planned {
    Planned::Failed(Box::new(move || {
        let _ = reply.send(Err(e));
    }))
}

fn plan(job: Job, pending: &mut HashMap<u64, Pending>) -> Planned {
    match job {
        Job::Append {
            replica,
            mut batch,
            header,
            reply,
        } => {
            if replica.is_deleted() {
                return fail(reply, AppendError::Deleted);
            }
            let leadership = replica.leadership();
            if leadership.leader != replica.node_id {
                return fail(reply, AppendError::NotLeader);
            }
            let p = pending_for(pending, &replica);
            let records = i64::from(header.last_offset_delta) + 1;
            match p.producers.check(&header) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(base) => {
                    return Planned::Duplicate {
                        base,
                        end: base + records,
                        reply,
                    };
                }
                SequenceCheck::StaleEpoch => return fail(reply, AppendError::StaleProducerEpoch),
                SequenceCheck::OutOfOrder { expected } => {
                    return fail(reply, AppendError::OutOfOrder { expected });
                }
            }
            let base = p.end;
            batch::set_base_offset(&mut batch, base);
            batch::set_partition_leader_epoch(&mut batch, leadership.epoch);
            let stamped = BatchHeader {
                base_offset: base,
                partition_leader_epoch: leadership.epoch,
                ..header
            };
            p.producers.record(&stamped, base);
            p.epochs_changed |= p.epochs.on_append(leadership.epoch, base);
            p.end = base + records;
            Planned::Append {
                base,
                end: p.end,
                reply,
                batch: batch.freeze(),
                uid: replica.uid,
            }
        }
        Job::Replicate {
            replica,
            batches,
            reply,
        } => {
            if replica.is_deleted() {
                return fail(reply, AppendError::Deleted);
            }
            // A chunk still queued when this node took over leadership belongs to the old
            // leader's stream: appending it after the new epoch began would corrupt the history.
            if replica.leadership().leader == replica.node_id {
                return fail(reply, AppendError::NotFollower);
            }
            let p = pending_for(pending, &replica);
            let mut out = Vec::new();
            let mut end = p.end;
            for item in BatchIter::new(batches) {
                let (h, bytes) = match item {
                    Ok(x) => x,
                    Err(e) => return fail(reply, AppendError::Corrupt(e.to_string())),
                };
                // A gap is fine (the leader compacted whole batches away); an overlap is not.
                if h.base_offset < end {
                    return fail(
                        reply,
                        AppendError::Gap {
                            expected: end,
                            got: h.base_offset,
                        },
                    );
                }
                out.push((h.base_offset, bytes));
                end = h.next_offset();
            }
            // Commit the tentative state only now that the whole chunk is known good.
            for (base, bytes) in &out {
                if let Ok(h) = BatchHeader::parse(bytes) {
                    p.producers.record(&h, *base);
                    p.epochs_changed |= p.epochs.on_append(h.partition_leader_epoch, *base);
                }
            }
            p.end = end;
            Planned::Replicate {
                batches: out,
                uid: replica.uid,
                reply,
            }
        }
        Job::Truncate { reply, .. } | Job::DeleteBefore { reply, .. } => {
            fail(reply, AppendError::Stopped)
        }
        Job::Delete(_) => Planned::Failed(Box::new(|| {})),
    }
}

fn write_group(log: &dyn LogStore, group: &mut Vec<Job>) {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let planned: Vec<Planned> = group.drain(..).map(|j| plan(j, &mut pending)).collect();
    let epoch_lists: Vec<(u64, Vec<crate::log::EpochEntry>)> = pending
        .values()
        .filter(|p| p.epochs_changed)
        .map(|p| (p.replica.uid, p.epochs.entries().to_vec()))
        .collect();
    let mut ops: Vec<LogOp<'_>> = Vec::new();
    for p in &planned {
        match p {
            Planned::Append {
                base, batch, uid, ..
            } => {
                ops.push(LogOp::Append(Append {
                    uid: *uid,
                    base_offset: *base,
                    batch,
                }));
            }
            Planned::Replicate { batches, uid, .. } => {
                for (base, b) in batches {
                    ops.push(LogOp::Append(Append {
                        uid: *uid,
                        base_offset: *base,
                        batch: b,
                    }));
                }
            }
            _ => {}
        }
    }
    for (uid, epochs) in &epoch_lists {
        ops.push(LogOp::PutEpochs { uid: *uid, epochs });
    }
    // Checkpoint each touched replica's commit point with its data (it lags by one group at most).
    for p in pending.values() {
        ops.push(LogOp::PutHighWatermark {
            uid: p.replica.uid,
            offset: p.replica.high_watermark(),
        });
    }
    let result = if ops.is_empty() {
        Ok(())
    } else {
        log.write(&ops)
    };
    drop(ops);
    if let Err(error) = &result {
        tracing::error!(%error, changes = planned.len(), "group write failed");
    } else {
        // Groups are written in order, so log ends only move forward here.
        for p in pending.into_values() {
            *p.replica.epochs.lock().expect("poisoned") = p.epochs;
            *p.replica.producers.lock().expect("poisoned") = p.producers;
            p.replica.set_log_end(p.end);
        }
    }
    for p in planned {
        match (p, &result) {
            (Planned::Failed(f), _) => f(),
            (Planned::Append { reply, .. } | Planned::Duplicate { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(AppendError::Storage(e.clone())));
            }
            (Planned::Replicate { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(AppendError::Storage(e.clone())));
            }
            (
                Planned::Append {
                    base, end, reply, ..
                },
                Ok(()),
            ) => {
                let _ = reply.send(Ok(Appended {
                    base_offset: base,
                    end_offset: end,
                    duplicate: false,
                }));
            }
            (Planned::Duplicate { base, end, reply }, Ok(())) => {
                let _ = reply.send(Ok(Appended {
                    base_offset: base,
                    end_offset: end,
                    duplicate: true,
                }));
            }
            (Planned::Replicate { batches, reply, .. }, Ok(())) => {
                let end = batches
                    .last()
                    .and_then(|(_, b)| BatchHeader::parse(b).ok())
                    .map(|h| h.next_offset());
                let _ = reply.send(Ok(end.unwrap_or(-1)));
            }
        }
    }
}

/// Truncates from the batch holding `to`, forgets the epochs that began there or above
/// `keep_epoch`, and rebuilds the producer state from what is left.
fn truncate(
    log: &dyn LogStore,
    r: &Arc<Replica>,
    to: Offset,
    keep_epoch: LeaderEpoch,
) -> Result<Offset, AppendError> {
    if r.is_deleted() {
        return Err(AppendError::Deleted);
    }
    let to = to.max(r.log_start());
    let from = match log.read(r.uid, to, Offset::MAX, 1)?.first() {
        Some(b) => BatchHeader::parse(b)
            .map_err(|e| AppendError::Corrupt(e.to_string()))?
            .base_offset
            .min(to),
        None => to.min(r.log_end()),
    };
    let mut epochs = r.epochs.lock().expect("poisoned").clone();
    epochs.truncate_from(from);
    epochs.forget_above(keep_epoch);
    log.write(&[
        LogOp::TruncateFrom { uid: r.uid, from },
        LogOp::PutEpochs {
            uid: r.uid,
            epochs: epochs.entries(),
        },
    ])?;
    tracing::info!(topic = %r.topic, partition = r.partition(), from, old_end = r.log_end(), "truncated divergent log tail");
    *r.epochs.lock().expect("poisoned") = epochs;
    *r.producers.lock().expect("poisoned") = rebuild_producers(log, r.uid, r.log_start(), from)?;
    r.set_log_end(from);
    Ok(from)
}

/// Checkpoints every replica's high watermark (at shutdown, after the last appends).
pub fn checkpoint_high_watermarks(
    log: &dyn LogStore,
    replicas: &[Arc<Replica>],
) -> Result<(), LogError> {
    let ops: Vec<LogOp<'_>> = replicas
        .iter()
        .map(|r| LogOp::PutHighWatermark {
            uid: r.uid,
            offset: r.high_watermark(),
        })
        .collect();
    if ops.is_empty() {
        Ok(())
    } else {
        log.write(&ops)
    }
}

/// Producer state from the batch headers of the last [`PRODUCER_STATE_SCAN_OFFSETS`] offsets.
pub fn rebuild_producers(
    log: &dyn LogStore,
    uid: u64,
    start: Offset,
    end: Offset,
) -> Result<ProducerState, LogError> {
    let mut state = ProducerState::default();
    let mut from = start.max(end - PRODUCER_STATE_SCAN_OFFSETS);
    while from < end {
        let batches = log.read(uid, from, end, 8 << 20)?;
        let Some(last) = batches.last() else { break };
        for b in &batches {
            if let Ok(h) = BatchHeader::parse(b) {
                state.record(&h, h.base_offset);
            }
        }
        from = BatchHeader::parse(last)
            .map(|h| h.next_offset())
            .map_err(|e| LogError(e.to_string()))?;
    }
    Ok(state)
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

#[cfg(test)]
mod tests;
