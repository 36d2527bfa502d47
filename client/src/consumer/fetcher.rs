//! One task per assigned partition: subscribes to the partition's leader from the fetch position
//! (the leader pushes batches as they commit), decodes the batches and hands each push's records
//! to the consumer as one chunk. Subscriptions to one node share its `SubscribeMany` stream (see
//! `session`).
//! The queue is bounded in records by a semaphore (so a slow application pauses fetching instead
//! of growing memory); a chunk's permits return when the consumer has handed all of it out.
//!
//! Retriable errors (leader moved, node unreachable) are retried for as long as the partition
//! stays assigned, following `NOT_LEADER` hints and metadata refreshes. Anything else (notably
//! `OFFSET_OUT_OF_RANGE`) is handed to the application once and stops the task until it seeks.
//! A fetch long-polling a leader the metadata cache has since seen replaced is abandoned and
//! sent to the new leader at once (see `metadata::leadership`), so a hung leader costs the
//! consumer the election, not a request timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sluice_proto::batch::{BatchIter, decode_records_shared};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::session::Sessions;
use super::{ConsumerRecord, SeekTo, offsets};
use crate::config::{ConsumerConfig, OffsetReset};
use crate::connection::MAX_MESSAGE_BYTES;
use crate::error::{ClientError, Result};
use crate::metadata::{Leader, Metadata};
use crate::retry::RetryPolicy;

/// The records of one fetch answer (or a final error) from the fetch task with id `fetch_id`;
/// the consumer drops events of tasks it replaced (after a seek or re-assign).
#[derive(Debug)]
pub(crate) struct FetchEvent {
    pub(crate) fetch_id: u64,
    pub(crate) item: Result<Chunk>,
}

/// Records in offset order, holding their share of the queue bound until dropped.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) records: std::collections::VecDeque<ConsumerRecord>,
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
}

/// Backoff between failed fetches while a partition has no reachable leader.
const RETRY: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    backoff: Duration::from_millis(100),
};

/// Where one partition's records go: its fetch position and the consumer's queue.
pub(crate) struct Target {
    pub(crate) fetch_id: u64,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// Offset of the next record to hand out.
    position: AtomicI64,
    tx: mpsc::UnboundedSender<FetchEvent>,
    /// Free room in the consumer's queue, in records.
    room: Arc<Semaphore>,
    queue_records: usize,
}

/// The state of one partition's fetch loop.
pub(crate) struct Fetcher {
    pub(crate) target: Arc<Target>,
    pub(crate) meta: Arc<Metadata>,
    pub(crate) cfg: Arc<ConsumerConfig>,
    pub(crate) sessions: Arc<Sessions>,
}

impl Target {
    pub(crate) fn new(
        fetch_id: u64,
        topic: String,
        partition: i32,
        position: i64,
        tx: mpsc::UnboundedSender<FetchEvent>,
        room: Arc<Semaphore>,
        queue_records: usize,
    ) -> Self {
        Self {
            fetch_id,
            topic,
            partition,
            position: AtomicI64::new(position),
            tx,
            room,
            queue_records,
        }
    }

    fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// Moves the position (an out-of-range reset).
    fn reset_position(&self, offset: i64) {
        self.position.store(offset, Ordering::Release);
    }

    /// Queues the records at or after the position as one chunk, advancing the position past
    /// each batch. Returns how many records were delivered.
    async fn deliver(&self, resp: pb::FetchResponse) -> std::result::Result<usize, Stop> {
        let mut position = self.position();
        let mut records = std::collections::VecDeque::new();
        for item in BatchIter::new(resp.batches) {
            let (header, batch) = item.map_err(|e| Stop::Corrupt(corrupt(e)))?;
            if header.next_offset() <= position {
                continue;
            }
            if !header.is_control() {
                let decoded =
                    decode_records_shared(&batch).map_err(|e| Stop::Corrupt(corrupt(e)))?;
                records.reserve(decoded.len());
                for r in decoded {
                    if r.offset < position {
                        continue;
                    }
                    position = r.offset + 1;
                    records.push_back(ConsumerRecord {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
            }
            // Compaction and control batches leave offset gaps; the next fetch starts after them.
            position = position.max(header.next_offset());
        }
        let delivered = records.len();
        if delivered == 0 {
            self.position.store(position, Ordering::Release);
            return Ok(0);
        }
        // A chunk larger than the whole queue takes all of it (and waits for an empty queue).
        let wanted = delivered.min(self.queue_records) as u32;
        let permit = self
            .room
            .clone()
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| Stop::QueueClosed)?;
        let chunk = Chunk {
            records,
            _permit: Some(permit),
        };
        self.tx
            .send(FetchEvent {
                fetch_id: self.fetch_id,
                item: Ok(chunk),
            })
            .map_err(|_| Stop::QueueClosed)?;
        self.position.store(position, Ordering::Release);
        Ok(delivered)
    }
}

impl Fetcher {
    /// Fetches until the consumer drops the queue or a non-retriable error was delivered.
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let seen = self.meta.version();
            let err = match self.subscribe(&mut failures).await {
                Stop::QueueClosed => return,
                Stop::Corrupt(e) | Stop::Failed(e) => e,
            };
            if let ClientError::LeaderMoved(_) = &err {
                // A long poll on a deposed leader: refetch from the new one at once.
                tracing::debug!(topic = %self.target.topic, partition = self.target.partition, error = %err, "fetch abandoned; refetching from the new leader");
                continue;
            }
            let err = match self.reset_out_of_range(err).await {
                Ok(()) => {
                    failures = 0;
                    continue;
                }
                Err(err) => err,
            };
            if !err.is_retriable() {
                tracing::warn!(topic = %self.target.topic, partition = self.target.partition, position = self.target.position(), error = %err, "fetch stopped");
                let _ = self.target.tx.send(FetchEvent {
                    fetch_id: self.target.fetch_id,
                    item: Err(err),
                });
                return;
            }
            failures += 1;
            let rerouted = self
                .meta
                .handle_error(&self.target.topic, self.target.partition, &err, seen)
                .await;
            if failures.is_multiple_of(50) {
                tracing::warn!(topic = %self.target.topic, partition = self.target.partition, failures, error = %err, "fetch keeps failing; retrying");
            } else {
                tracing::debug!(topic = %self.target.topic, partition = self.target.partition, error = %err, rerouted, "fetch failed; retrying");
            }
            if !rerouted {
                tokio::time::sleep(RETRY.backoff(failures)).await;
            }
        }
    }

    /// Applies the consumer's `offset_reset` to an `OFFSET_OUT_OF_RANGE`: moves the position to
    /// the log start or end and says so. Hands back any other error, and this one under
    /// [`OffsetReset::None`] or when the new position cannot be looked up.
    async fn reset_out_of_range(&self, err: ClientError) -> Result<()> {
        let to = match (err.code(), self.cfg.offset_reset) {
            (Some(ErrorCode::OffsetOutOfRange), OffsetReset::Earliest) => SeekTo::Earliest,
            (Some(ErrorCode::OffsetOutOfRange), OffsetReset::Latest) => SeekTo::Latest,
            _ => return Err(err),
        };
        let (topic, partition) = (&self.target.topic, self.target.partition);
        let timeout = self.cfg.client.request_timeout;
        let offset = offsets::resolve(&self.meta, timeout, topic, partition, to).await?;
        tracing::warn!(%topic, partition, from = self.target.position(), to = offset, reset = ?self.cfg.offset_reset, "fetch position out of range; moved as offset_reset says");
        self.target.reset_position(offset);
        Ok(())
    }

    /// The request for the next records from the position, to `leader`.
    fn request(&self, leader: &Leader) -> pb::FetchRequest {
        pb::FetchRequest {
            topic: self.target.topic.clone(),
            partition: self.target.partition,
            offset: self.target.position(),
            max_bytes: self.cfg.max_bytes,
            max_wait_ms: i32::try_from(self.cfg.max_wait.as_millis()).unwrap_or(i32::MAX),
            min_bytes: self.cfg.min_bytes,
            leader_epoch: leader.epoch,
            topic_id: leader.topic_id.clone(),
            decode: false,
            replica_read: false,
        }
    }

    /// Subscribes through the leader's session until the subscription ends; a delivered push
    /// resets `failures`. A move of the leader in the metadata cache ends it at once.
    async fn subscribe(&mut self, failures: &mut u32) -> Stop {
        let leader = match self
            .meta
            .leader(&self.target.topic, self.target.partition)
            .await
        {
            Ok(l) => l,
            Err(e) => return Stop::Failed(e),
        };
        let request = self.request(&leader);
        let (target, sessions) = (&self.target, &self.sessions);
        let follow = async {
            let mut subscription = match sessions.add(&leader.address, request).await {
                Ok(s) => s,
                Err(e) => return Ok(Stop::Failed(e)),
            };
            loop {
                match subscription.next().await {
                    Ok(Some(resp)) => {
                        *failures = 0;
                        if let Err(stop) = target.deliver(resp).await {
                            return Ok(stop);
                        }
                    }
                    Ok(None) => {
                        return Ok(Stop::Failed(ClientError::Transport(
                            "the leader ended the subscription".into(),
                        )));
                    }
                    Err(e) => return Ok(Stop::Failed(e.into())),
                }
            }
        };
        // Leaving drops the subscription, which ends it; pushes not yet delivered are dropped
        // with it, so the position stays exact.
        match self
            .meta
            .unless_leader_moves(&target.topic, target.partition, &leader, follow)
            .await
        {
            Ok(stop) => stop,
            Err(moved) => Stop::Failed(moved),
        }
    }
}

/// The largest answer a consumer accepts: a node sends at least one whole batch however small
/// `max_bytes` is, and a `SubscribeMany` message gathers pushes up to 2 MiB plus one more.
pub(crate) fn decode_limit(cfg: &ConsumerConfig) -> usize {
    MAX_MESSAGE_BYTES.max(cfg.max_bytes as usize + (9 << 20))
}

/// Why records stopped flowing.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    QueueClosed,
    Corrupt(ClientError),
    Failed(ClientError),
}

fn corrupt(e: sluice_proto::batch::BatchError) -> ClientError {
    ClientError::Api(ApiError::from(e))
}
