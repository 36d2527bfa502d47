//! Per-partition queues of batches waiting to be sent, and the decisions about them: which
//! partition a keyless record sticks to, when a batch is closed, which partitions may send now
//! (full or lingered, not in flight, not backing off), and which batches expired.
//!
//! No I/O and no clock of its own (callers pass `now`), so every decision is unit tested.
//!
//! Invariants: per partition, batches leave in queue order and at most one is in flight; a
//! batch that failed and will be retried goes back to the *front*, so retries never reorder a
//! partition. Only the last batch of a queue may be open (accepting records). With idempotence,
//! a batch gets its producer id and sequence when it is first drained and keeps them for every
//! retry (see [`super::sequence`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sluice_proto::batch::{BatchBuilder, BatchError, Compression, Record};
use sluice_proto::pb::ErrorCode;
use tokio::sync::OwnedSemaphorePermit;

use super::delivery::{Acked, BatchDelivery, Ticket};

/// Largest buffer a new batch reserves up front; bigger batches grow past it.
const MAX_PREALLOCATED: usize = 1 << 20;
use super::sequence::{Failure, Identity, PartitionSequence, Stamp};
use crate::error::ClientError;
use crate::partitioner::{StickyPartitioner, partition_for_key};

#[derive(Debug)]
enum BatchData {
    Open(BatchBuilder),
    Encoded(Bytes),
}

/// A batch of one partition, from its first record until every record's future is resolved.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    /// Monotonic over the producer's life; `flush` waits for every id below a mark.
    pub(crate) id: u64,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    data: BatchData,
    /// Records in the batch, and the notice that tells their futures how it ended.
    records: usize,
    delivery: BatchDelivery,
    size: usize,
    pub(crate) created: Instant,
    /// Send attempts so far.
    pub(crate) attempts: u32,
    retry_at: Option<Instant>,
    closed: bool,
    /// Buffer memory the records hold; released when the batch is dropped.
    memory: Option<OwnedSemaphorePermit>,
    /// Producer id and sequence, set at the first drain when idempotence is on.
    pub(crate) stamp: Option<Stamp>,
    /// Whether an attempt may have been appended although it failed.
    maybe_written: bool,
}

impl ProducerBatch {
    fn new(id: u64, topic: &str, partition: i32, settings: &BatchSettings, now: Instant) -> Self {
        // Room for a full batch up front (capped): growing the buffer would copy it again.
        let capacity = settings.batch_size.min(MAX_PREALLOCATED);
        let builder = BatchBuilder::with_capacity(settings.compression, capacity);
        Self {
            id,
            topic: topic.to_string(),
            partition,
            size: builder.estimated_size(),
            data: BatchData::Open(builder),
            records: 0,
            delivery: BatchDelivery::new(),
            created: now,
            attempts: 0,
            retry_at: None,
            closed: false,
            memory: None,
            stamp: None,
            maybe_written: false,
        }
    }

    /// Fixes the producer fields the encoded batch will carry (before its first encoding).
    fn set_stamp(&mut self, stamp: Stamp) {
        let data = std::mem::replace(&mut self.data, BatchData::Encoded(Bytes::new()));
        self.data = match data {
            BatchData::Open(builder) => BatchData::Open(builder.with_producer(
                stamp.identity.producer_id,
                stamp.identity.epoch,
                stamp.base_sequence,
            )),
            encoded @ BatchData::Encoded(_) => encoded,
        };
        self.stamp = Some(stamp);
    }

    /// Notes a failed attempt, remembering whether the leader may have appended it anyway.
    pub(crate) fn attempt_failed(&mut self, err: &ClientError) {
        self.maybe_written |= err.may_have_been_written();
    }

    /// How the batch failed for good, given its last error (`None`: it expired while queued).
    fn failure(&self, last: Option<&ClientError>) -> Failure {
        match last.and_then(ClientError::code) {
            Some(ErrorCode::OutOfOrderSequence | ErrorCode::InvalidProducerEpoch) => {
                Failure::SequenceRejected
            }
            _ if self.maybe_written => Failure::MaybeWritten,
            _ => Failure::NotWritten,
        }
    }

    fn push(&mut self, record: &Record, memory: Option<OwnedSemaphorePermit>) -> Ticket {
        let BatchData::Open(builder) = &mut self.data else {
            unreachable!("records are only appended to open batches");
        };
        builder.push(record);
        self.size = builder.estimated_size();
        let ticket = self.delivery.ticket(self.records, record.timestamp_ms);
        self.records += 1;
        match (&mut self.memory, memory) {
            (Some(held), Some(more)) => held.merge(more),
            (held @ None, more) => *held = more,
            (Some(_), None) => {}
        }
        ticket
    }

    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.records
    }

    /// Bytes of the records in the batch (about its encoded size).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The encoded batch to send, encoding it on first call (offsets are assigned by the
    /// leader, so the client encodes base offset 0 and retries resend the same bytes).
    pub(crate) fn payload(&mut self) -> std::result::Result<Bytes, BatchError> {
        let data = std::mem::replace(&mut self.data, BatchData::Encoded(Bytes::new()));
        let bytes = match data {
            BatchData::Open(builder) => builder.finish(0)?,
            BatchData::Encoded(bytes) => bytes,
        };
        self.data = BatchData::Encoded(bytes.clone());
        Ok(bytes)
    }

    /// Resolves every record's future from the leader's answer. `base_offset` is -1 for
    /// `acks=0`; `append_time_ms` replaces record timestamps when the topic uses log-append time.
    pub(crate) fn succeed(self, base_offset: i64, append_time_ms: i64) {
        self.delivery.resolve(Ok(Acked {
            base_offset,
            append_time_ms,
        }));
    }

    /// Resolves every record's future with `err`.
    pub(crate) fn fail(self, err: &ClientError) {
        self.delivery.resolve(Err(err.clone()));
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    batches: VecDeque<ProducerBatch>,
    /// Id of the batch being sent, if any.
    in_flight: Option<u64>,
    sequence: PartitionSequence,
}

impl PartitionQueue {
    /// The batch accepting records: the last one, unless closed or already encoded.
    fn open_batch(&mut self) -> Option<&mut ProducerBatch> {
        self.batches.back_mut().filter(|b| !b.closed)
    }
}

/// A partition with a batch that may be sent now, oldest batches first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    created: Instant,
}

/// What the sender should do at `now`.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Partitions whose head batch may be drained, oldest first.
    pub(crate) ready: Vec<Ready>,
    /// Batches that waited past the delivery timeout without being sent.
    pub(crate) expired: Vec<ProducerBatch>,
    /// When the next batch lingers out or leaves its backoff.
    pub(crate) next_wakeup: Option<Instant>,
}

/// Batching settings the accumulator decides with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) compression: Compression,
    pub(crate) delivery_timeout: Duration,
}

/// The queues of every partition the producer wrote to.
#[derive(Debug)]
pub(crate) struct Accumulator {
    settings: BatchSettings,
    topics: HashMap<String, HashMap<i32, PartitionQueue>>,
    sticky: StickyPartitioner,
    rng: SmallRng,
    next_batch_id: u64,
    /// Batches with an id below this are sent without waiting for linger (a flush is pending).
    flush_below: u64,
    /// The idempotent producer's current identity; `None` when idempotence is off.
    identity: Option<Identity>,
    /// A partition waits for a newer identity than the current one.
    identity_wanted: bool,
}

impl Accumulator {
    pub(crate) fn new(settings: BatchSettings) -> Self {
        Self {
            settings,
            topics: HashMap::new(),
            sticky: StickyPartitioner::default(),
            rng: SmallRng::from_rng(&mut rand::rng()),
            next_batch_id: 0,
            flush_below: 0,
            identity: None,
            identity_wanted: false,
        }
    }

    /// Installs a producer id from the coordinator (turning idempotence on). Partitions number
    /// their next batch under it from sequence 0.
    pub(crate) fn set_identity(&mut self, producer_id: i64, epoch: i16) {
        let generation = self.identity.map_or(1, |i| i.generation + 1);
        self.identity = Some(Identity {
            producer_id,
            epoch,
            generation,
        });
        self.identity_wanted = false;
    }

    /// The identity batches are stamped with now.
    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Whether a partition cannot send until a new identity is installed.
    pub(crate) fn wants_identity(&self) -> bool {
        self.identity_wanted
    }

    /// The partition for a record: the one asked for, Kafka's murmur2 of the key, or the
    /// topic's sticky partition for keyless records. A keyless record that would not fit into
    /// the sticky partition's open batch closes it and moves on, so it starts the next batch
    /// elsewhere rather than a new one on the same partition.
    pub(crate) fn choose_partition(
        &mut self,
        topic: &str,
        explicit: Option<i32>,
        key: Option<&[u8]>,
        partitions: i32,
        record_size: usize,
    ) -> i32 {
        if let Some(p) = explicit {
            return p;
        }
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        let p = self.sticky.partition(topic, partitions, &mut self.rng);
        let batch_size = self.settings.batch_size;
        let full = self
            .queue(topic, p)
            .open_batch()
            .is_some_and(|b| b.size + record_size > batch_size && b.records > 0);
        if full {
            self.close_open_batch(topic, p);
            return self.sticky.partition(topic, partitions, &mut self.rng);
        }
        p
    }

    /// Appends a record to the partition's open batch, opening one if needed (stamped with
    /// `now()`, read only then: the clock costs more than the append); closes the batch once it
    /// reaches `batch_size`. Returns whether the sender must look again (a batch was
    /// opened, so a linger timer starts, or closed, so it is ready).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        topic: &str,
        partition: i32,
        record: &Record,
        record_size: usize,
        memory: Option<OwnedSemaphorePermit>,
        now: impl FnOnce() -> Instant,
    ) -> (bool, Ticket) {
        let batch_size = self.settings.batch_size;
        let mut wake = false;
        let fits = self
            .queue(topic, partition)
            .open_batch()
            .map(|b| b.records == 0 || b.size + record_size <= batch_size);
        if fits == Some(false) {
            self.close_open_batch(topic, partition);
            wake = true;
        }
        if fits != Some(true) {
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let batch = ProducerBatch::new(id, topic, partition, &self.settings, now());
            self.queue(topic, partition).batches.push_back(batch);
            wake = true;
        }
        let q = self.queue(topic, partition);
        let batch = q.open_batch().expect("an open batch was just ensured");
        let ticket = batch.push(record, memory);
        if batch.size >= batch_size {
            self.close_open_batch(topic, partition);
            wake = true;
        }
        (wake, ticket)
    }

    fn queue(&mut self, topic: &str, partition: i32) -> &mut PartitionQueue {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::new());
        }
        let parts = self.topics.get_mut(topic).expect("inserted above");
        parts.entry(partition).or_default()
    }

    fn close_open_batch(&mut self, topic: &str, partition: i32) {
        if let Some(b) = self.queue(topic, partition).open_batch() {
            b.closed = true;
            self.sticky.on_batch_closed(topic, partition);
        }
    }

    /// Makes every batch that exists now sendable at once; returns the mark a flush waits for
    /// (see [`Accumulator::pending_below`]).
    pub(crate) fn begin_flush(&mut self) -> u64 {
        self.flush_below = self.next_batch_id;
        self.flush_below
    }

    /// Whether any batch with an id below `mark` is still queued or in flight.
    pub(crate) fn pending_below(&self, mark: u64) -> bool {
        self.topics.values().flat_map(|t| t.values()).any(|q| {
            q.in_flight.is_some_and(|id| id < mark) || q.batches.iter().any(|b| b.id < mark)
        })
    }

    /// Whether no batch is queued or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| t.values())
            .all(|q| q.in_flight.is_none() && q.batches.is_empty())
    }

    /// Decides what can be sent at `now`: a partition is ready when nothing of it is in flight,
    /// its head batch is out of backoff, and that batch is closed, lingered `linger`, covered by a
    /// pending flush, or `closing` is set. Batches older than the delivery timeout that are not
    /// in flight are taken out as expired.
    pub(crate) fn plan(&mut self, now: Instant, closing: bool) -> Plan {
        let s = self.settings;
        let mut plan = Plan::default();
        let mut wake = |at: Instant| {
            plan.next_wakeup = Some(plan.next_wakeup.map_or(at, |w| w.min(at)));
        };
        let mut expired = Vec::new();
        let mut ready = Vec::new();
        for (topic, parts) in &mut self.topics {
            for (&partition, q) in parts.iter_mut() {
                if q.in_flight.is_some() {
                    continue;
                }
                while q
                    .batches
                    .front()
                    .is_some_and(|b| now >= b.created + s.delivery_timeout)
                {
                    let b = q.batches.pop_front().expect("front checked");
                    if !b.closed {
                        self.sticky.on_batch_closed(topic, partition);
                    }
                    if let Some(stamp) = &b.stamp {
                        self.identity_wanted |= q.sequence.failed(stamp, b.failure(None));
                    }
                    expired.push(b);
                }
                let Some(head) = q.batches.front() else {
                    continue;
                };
                wake(head.created + s.delivery_timeout);
                // Woken again by the new identity's arrival.
                if head.stamp.is_none() && self.identity.is_some_and(|id| q.sequence.waiting(&id)) {
                    continue;
                }
                if let Some(at) = head.retry_at.filter(|&at| now < at) {
                    wake(at);
                    continue;
                }
                let lingered = head.created + s.linger;
                if head.closed || closing || head.id < self.flush_below || now >= lingered {
                    ready.push(Ready {
                        topic: topic.clone(),
                        partition,
                        created: head.created,
                    });
                } else {
                    wake(lingered);
                }
            }
        }
        ready.sort_by_key(|r| r.created);
        plan.ready = ready;
        plan.expired = expired;
        plan
    }

    /// Takes the head batch of a ready partition for sending and marks the partition in flight.
    /// With idempotence, a batch sent for the first time is stamped with the identity and the
    /// partition's next sequence; `None` while the partition waits for a new identity.
    pub(crate) fn drain(&mut self, topic: &str, partition: i32) -> Option<ProducerBatch> {
        let identity = self.identity;
        let q = self.queue(topic, partition);
        if q.in_flight.is_some() {
            return None;
        }
        let head = q.batches.front_mut()?;
        if let Some(identity) = identity
            && head.stamp.is_none()
        {
            let stamp = q.sequence.stamp(&identity, head.len())?;
            head.set_stamp(stamp);
        }
        let mut batch = q.batches.pop_front()?;
        q.in_flight = Some(batch.id);
        batch.attempts += 1;
        batch.retry_at = None;
        if !batch.closed {
            batch.closed = true;
            self.sticky.on_batch_closed(topic, partition);
        }
        Some(batch)
    }

    /// The partition's in-flight request succeeded (its batch is about to be resolved).
    pub(crate) fn complete(&mut self, topic: &str, partition: i32) {
        self.queue(topic, partition).in_flight = None;
    }

    /// The partition's in-flight batch failed for good with `err`: frees the partition and
    /// settles its sequence (see [`super::sequence`]).
    pub(crate) fn fail(&mut self, batch: &ProducerBatch, err: &ClientError) {
        let how = batch.failure(Some(err));
        let q = self.queue(&batch.topic, batch.partition);
        q.in_flight = None;
        let wanted = batch
            .stamp
            .is_some_and(|stamp| q.sequence.failed(&stamp, how));
        self.identity_wanted |= wanted;
    }

    /// The partition's in-flight batch vanished (its send task panicked): frees the partition;
    /// its sequence is unknown from now on.
    pub(crate) fn lose(&mut self, topic: &str, partition: i32) {
        let idempotent = self.identity.is_some();
        let q = self.queue(topic, partition);
        q.in_flight = None;
        let wanted = idempotent && q.sequence.abandon();
        self.identity_wanted |= wanted;
    }

    /// Puts a failed batch back at the front of its partition, to be sent again from `retry_at`
    /// on, ahead of every later batch of that partition.
    pub(crate) fn requeue(&mut self, mut batch: ProducerBatch, retry_at: Instant) {
        batch.retry_at = Some(retry_at);
        let q = self.queue(&batch.topic.clone(), batch.partition);
        q.in_flight = None;
        q.batches.push_front(batch);
    }
}

#[cfg(test)]
#[path = "accumulator_tests.rs"]
mod tests;
