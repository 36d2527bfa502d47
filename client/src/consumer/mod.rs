//! The consumer: reads assigned partitions from their leaders, from a chosen position, in offset
//! order per partition. One fetch task per partition fills a bounded queue that
//! [`Consumer::next`] (or the [`Stream`] impl) drains.
//!
//! Positions are the offsets of the next record `next()` returns, per partition; a seek replaces
//! the partition's fetch task, and records the old task already queued are dropped.
//!
//! Records travel from a fetch task to `next()` a whole fetch answer at a time (one channel send
//! per answer, not per record); the queue's bound is kept in records by a semaphore.

mod fetcher;
pub(crate) mod offsets;
mod session;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use sluice_proto::pb::ErrorCode;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::config::ConsumerConfig;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use fetcher::{Chunk, FetchEvent, Fetcher, Target};
use session::Sessions;

/// Where to start or resume reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The oldest record still retained.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
    /// This exact offset (beyond the log's end, `next()` reports `OFFSET_OUT_OF_RANGE`).
    Offset(i64),
    /// The first record with a timestamp at or after this time (ms since the Unix epoch), or the
    /// log end when there is none.
    Timestamp(i64),
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic read from.
    pub topic: String,
    /// Partition read from.
    pub partition: i32,
    /// The record's position in its partition.
    pub offset: i64,
    /// Create time (or log-append time, per topic config) in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Application headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A partition being read: its position and the task fetching it (aborted when dropped).
struct Assigned {
    topic: String,
    partition: i32,
    position: i64,
    task: JoinHandle<()>,
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads manually assigned partitions. Consumer groups (coordinated assignment and committed
/// offsets) build on this later.
pub struct Consumer {
    cfg: Arc<ConsumerConfig>,
    meta: Arc<Metadata>,
    tx: mpsc::UnboundedSender<FetchEvent>,
    rx: mpsc::UnboundedReceiver<FetchEvent>,
    /// Free room in the queue, in records (`queue_records` when empty).
    room: Arc<Semaphore>,
    /// The chunk `next()` is handing out, and the fetch task it came from.
    current: Option<(u64, Chunk)>,
    /// Assigned partitions by the id of their current fetch task.
    assigned: HashMap<u64, Assigned>,
    next_fetch_id: u64,
    /// One push stream per node, shared by the partitions it leads.
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut positions: Vec<_> = self
            .assigned
            .values()
            .map(|a| (a.topic.as_str(), a.partition, a.position))
            .collect();
        positions.sort();
        f.debug_struct("Consumer")
            .field("positions", &positions)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer with nothing assigned; no connection is made until `assign`.
    pub async fn new(cfg: ConsumerConfig) -> Result<Self> {
        cfg.validate()?;
        let meta = Metadata::new(&cfg.client)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(cfg.queue_records));
        let sessions = Sessions::new(
            meta.pool.clone(),
            fetcher::decode_limit(&cfg),
            cfg.client.request_timeout,
        );
        Ok(Self {
            sessions,
            room,
            current: None,
            cfg: Arc::new(cfg),
            meta,
            tx,
            rx,
            assigned: HashMap::new(),
            next_fetch_id: 0,
        })
    }

    /// The partition ids of `topic`, for assigning all of them.
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<i32>> {
        let info = self.meta.topic(topic).await?;
        Ok((0..info.partitions.len() as i32).collect())
    }

    /// Replaces the assignment with `partitions`, each starting at `start`. Fails, keeping the
    /// previous assignment, when a topic or partition does not exist or a start offset cannot be
    /// resolved.
    pub async fn assign(&mut self, partitions: Vec<(String, i32)>, start: SeekTo) -> Result<()> {
        let mut unique = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if !unique.contains(&tp) {
                unique.push(tp);
            }
        }
        let offsets = futures::future::try_join_all(
            unique
                .iter()
                .map(|(topic, partition)| self.resolve(topic, *partition, start)),
        )
        .await?;
        self.assigned.clear();
        for ((topic, partition), offset) in unique.into_iter().zip(offsets) {
            self.start_fetch(topic, partition, offset);
        }
        Ok(())
    }

    /// Moves an assigned partition's position; records of the old position still queued are
    /// dropped.
    pub async fn seek(&mut self, topic: &str, partition: i32, to: SeekTo) -> Result<()> {
        let Some(id) = self.fetch_id(topic, partition) else {
            return Err(ClientError::Config(format!(
                "{topic}-{partition} is not assigned to this consumer; assign it first"
            )));
        };
        let offset = self.resolve(topic, partition, to).await?;
        self.assigned.remove(&id);
        self.start_fetch(topic.to_string(), partition, offset);
        Ok(())
    }

    /// The offset of the next record `next()` returns for this partition, if assigned.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let id = self.fetch_id(topic, partition)?;
        Some(self.assigned[&id].position)
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut out: Vec<_> = self
            .assigned
            .values()
            .map(|a| (a.topic.clone(), a.partition))
            .collect();
        out.sort();
        out
    }

    /// The next record of any assigned partition (in offset order within a partition), or an
    /// error that stopped a partition (such as `OFFSET_OUT_OF_RANGE`; seek to resume it).
    /// Waits while nothing is available; `None` only when nothing is assigned.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord>> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ConsumerRecord>>> {
        loop {
            if self.assigned.is_empty() {
                self.current = None;
                return Poll::Ready(None);
            }
            if let Some((fetch_id, chunk)) = &mut self.current {
                // Records of replaced fetch tasks are stale.
                if let Some(assigned) = self.assigned.get_mut(fetch_id)
                    && let Some(record) = chunk.records.pop_front()
                {
                    assigned.position = record.offset + 1;
                    return Poll::Ready(Some(Ok(record)));
                }
                // Drained or stale: dropping it gives its room back to the fetch tasks.
                self.current = None;
            }
            let Some(event) = ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            if !self.assigned.contains_key(&event.fetch_id) {
                continue;
            }
            match event.item {
                Ok(chunk) => self.current = Some((event.fetch_id, chunk)),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn fetch_id(&self, topic: &str, partition: i32) -> Option<u64> {
        self.assigned
            .iter()
            .find(|(_, a)| a.topic == topic && a.partition == partition)
            .map(|(&id, _)| id)
    }

    /// Checks that the partition exists and resolves `to` to an offset.
    async fn resolve(&self, topic: &str, partition: i32, to: SeekTo) -> Result<i64> {
        let info = self.meta.topic(topic).await?;
        if partition < 0 || partition as usize >= info.partitions.len() {
            return Err(ClientError::api(
                ErrorCode::UnknownPartition,
                format!(
                    "topic '{topic}' has {} partitions, so partition {partition} does not exist",
                    info.partitions.len()
                ),
            ));
        }
        offsets::resolve(
            &self.meta,
            self.cfg.client.request_timeout,
            topic,
            partition,
            to,
        )
        .await
    }

    /// Starts reading one more partition at `position` (a group assignment); a partition
    /// already being read keeps its position.
    pub(crate) fn add_partition(&mut self, topic: String, partition: i32, position: i64) {
        if self.fetch_id(&topic, partition).is_none() {
            self.start_fetch(topic, partition, position);
        }
    }

    /// Stops reading a partition (a group revocation); records of it still queued are dropped.
    /// Returns its position, if it was being read.
    pub(crate) fn remove_partition(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let id = self.fetch_id(topic, partition)?;
        self.assigned.remove(&id).map(|a| a.position)
    }

    /// Stops reading every partition.
    pub(crate) fn clear(&mut self) {
        self.assigned.clear();
    }

    /// The metadata cache, shared with the group machinery.
    pub(crate) fn metadata(&self) -> &Arc<Metadata> {
        &self.meta
    }

    /// Resolves a start position for a partition, checking that it exists.
    pub(crate) async fn resolve_start(
        &self,
        topic: &str,
        partition: i32,
        to: SeekTo,
    ) -> Result<i64> {
        self.resolve(topic, partition, to).await
    }

    fn start_fetch(&mut self, topic: String, partition: i32, position: i64) {
        let fetch_id = self.next_fetch_id;
        self.next_fetch_id += 1;
        tracing::debug!(%topic, partition, position, "fetching");
        let target = Target::new(
            fetch_id,
            topic.clone(),
            partition,
            position,
            self.tx.clone(),
            self.room.clone(),
            self.cfg.queue_records,
        );
        let fetcher = Fetcher {
            target: Arc::new(target),
            meta: self.meta.clone(),
            cfg: self.cfg.clone(),
            sessions: self.sessions.clone(),
        };
        let task = tokio::spawn(fetcher.run());
        self.assigned.insert(
            fetch_id,
            Assigned {
                topic,
                partition,
                position,
                task,
            },
        );
    }
}

impl Drop for Consumer {
    /// Wakes deliveries waiting for queue room (a node session may be in one) so they see the
    /// consumer gone instead of waiting forever.
    fn drop(&mut self) {
        self.room.close();
    }
}

/// Records as a stream, for `StreamExt` combinators; the same as calling [`Consumer::next`].
impl Stream for Consumer {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_record(cx)
    }
}
