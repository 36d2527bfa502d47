//! The producer: `send` picks a partition and appends the record to that partition's open batch
//! (returning at once); a background sender ships batches straight to partition leaders.
//!
//! Flow of one record: [`Producer::send`] → [`accumulator::Accumulator::append`] (under a
//! short lock) → the sender task (`sender::run`) notices a full or lingered batch, encodes it
//! and sends a `Produce` request to the leader → the answer resolves each record's
//! [`DeliveryFuture`].
//!
//! With idempotence (the default) the producer first gets a producer id from a coordinator, and
//! every batch carries it with per-partition sequence numbers, so the leader de-duplicates the
//! retries a failover causes ([`sequence`]).

mod accumulator;
mod delivery;
mod identity;
mod request;
mod sender;
mod sequence;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_proto::batch::{BatchBuilder, Record};
use sluice_proto::pb::ErrorCode;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::ProducerConfig;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use accumulator::{Accumulator, BatchSettings};
use sender::Control;

/// A record to send. `partition: None` lets the producer choose (by key, or sticky for keyless
/// records); `timestamp_ms: None` stamps the time of `send`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic to append to.
    pub topic: String,
    /// Explicit partition, overriding the key.
    pub partition: Option<i32>,
    /// Key: selects the partition (Kafka-compatible murmur2) and identifies the record for
    /// compaction.
    pub key: Option<Bytes>,
    /// Payload; `None` is a tombstone on compacted topics.
    pub value: Option<Bytes>,
    /// Application headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record with a value, the common case; refine it with the builder methods.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// Sets the key, so records with equal keys land in the same partition, in order.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition whatever the key.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sets the create time instead of the time of `send`.
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic written to.
    pub topic: String,
    /// Partition chosen for the record.
    pub partition: i32,
    /// Offset the leader assigned; -1 with `acks=0`, which waits for no answer.
    pub offset: i64,
    /// The record's timestamp (the append time when the topic uses log-append time).
    pub timestamp_ms: i64,
}

/// Resolves when the record is acknowledged (per `acks`) or has finally failed. Dropping it
/// does not cancel the send (fire and forget, then `flush`, is fine; the error is then only
/// logged).
#[derive(Debug)]
pub struct DeliveryFuture {
    topic: String,
    partition: i32,
    ticket: delivery::Ticket,
}

impl DeliveryFuture {
    pub(crate) fn new(topic: String, partition: i32, ticket: delivery::Ticket) -> Self {
        Self {
            topic,
            partition,
            ticket,
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.ticket.poll_outcome(cx).map(|outcome| {
            outcome.map(|(offset, timestamp_ms)| RecordMetadata {
                topic: std::mem::take(&mut this.topic),
                partition: this.partition,
                offset,
                timestamp_ms,
            })
        })
    }
}

/// State shared by `send` callers and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: ProducerConfig,
    pub(crate) metadata: Arc<Metadata>,
    pub(crate) acc: Mutex<Accumulator>,
    /// Wakes the sender when a batch opens (linger timer) or fills.
    pub(crate) wake: Notify,
    /// Buffer memory, one permit per byte of record.
    memory: Arc<Semaphore>,
    /// One `ProduceStream` per node, carrying the `ProduceMany` requests.
    pub(crate) streams: stream::ProduceStreams,
}

/// Sends records to partition leaders in batches; cheap to share behind an `Arc` across tasks.
/// Dropping it sends what is buffered in the background; [`Producer::close`] waits for that.
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl Producer {
    /// Starts the background sender. With idempotence on, first gets a producer id from a
    /// coordinator (trying each in turn, retrying retriable errors within the request timeout)
    /// and fails if none grants one; otherwise no connection is made until the first `send`.
    /// Refuses idempotence with `acks` other than [`crate::Acks::All`].
    pub async fn new(cfg: ProducerConfig) -> Result<Self> {
        cfg.validate()?;
        let metadata = Metadata::new(&cfg.client)?;
        let settings = BatchSettings {
            batch_size: cfg.batch_size,
            linger: cfg.linger,
            compression: cfg.compression,
            delivery_timeout: cfg.delivery_timeout,
        };
        let mut acc = Accumulator::new(settings);
        if cfg.enable_idempotence {
            let (producer_id, epoch) =
                identity::init(&metadata, cfg.client.request_timeout, cfg.retry_backoff).await?;
            tracing::debug!(producer_id, epoch, "idempotent producer initialised");
            acc.set_identity(producer_id, epoch);
        }
        let streams =
            stream::ProduceStreams::new(metadata.pool.clone(), cfg.client.request_timeout);
        let shared = Arc::new(Shared {
            memory: Arc::new(Semaphore::new(
                cfg.buffer_memory.min(Semaphore::MAX_PERMITS),
            )),
            cfg,
            metadata,
            acc: Mutex::new(acc),
            wake: Notify::new(),
            streams,
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(sender::run(shared.clone(), control_rx));
        Ok(Self {
            shared,
            control,
            task,
        })
    }

    /// Queues a record and returns at once with a future of its delivery. Waits only to learn a
    /// new topic's partitions and when `buffer_memory` is used up (backpressure). Fails at once
    /// for an unknown topic or partition.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        if self.task.is_finished() {
            return Err(ClientError::Closed);
        }
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            timestamp_ms,
        } = record;
        let info = self.shared.metadata.topic(&topic).await?;
        let partitions = i32::try_from(info.partitions.len()).unwrap_or(i32::MAX);
        if partitions == 0 {
            return Err(ClientError::api(
                ErrorCode::UnknownPartition,
                format!("topic '{topic}' has no partitions yet; retry shortly"),
            ));
        }
        if let Some(p) = partition.filter(|p| !(0..partitions).contains(p)) {
            return Err(ClientError::api(
                ErrorCode::UnknownPartition,
                format!(
                    "topic '{topic}' has partitions 0 to {}; partition {p} does not exist",
                    partitions - 1
                ),
            ));
        }
        let record = Record {
            key,
            value,
            headers,
            timestamp_ms: timestamp_ms.unwrap_or_else(now_ms),
        };
        let size = BatchBuilder::record_size(&record);
        let cost = size
            .min(self.shared.cfg.buffer_memory)
            .min(u32::MAX as usize) as u32;
        let memory = self
            .shared
            .memory
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| ClientError::Closed)?;
        let (wake, partition, ticket) = {
            let mut acc = self.shared.acc.lock().unwrap();
            let p =
                acc.choose_partition(&topic, partition, record.key.as_deref(), partitions, size);
            let (wake, ticket) = acc.append(&topic, p, &record, size, Some(memory), Instant::now);
            (wake, p, ticket)
        };
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(DeliveryFuture::new(topic, partition, ticket))
    }

    /// The producer id batches are stamped with now, `None` without idempotence. It changes
    /// when a partition had to restart its sequence (after a batch whose outcome is unknown
    /// failed for good); useful in tests and diagnostics.
    pub fn producer_id(&self) -> Option<i64> {
        self.shared
            .acc
            .lock()
            .unwrap()
            .identity()
            .map(|i| i.producer_id)
    }

    /// Sends every record queued before this call without waiting for linger, and waits until
    /// each is acknowledged or failed (their futures say which).
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Flush(tx))
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Sends everything queued, waits for the answers (up to the delivery timeout), then stops
    /// the sender.
    pub async fn close(self) -> Result<()> {
        let _ = self.control.send(Control::Close);
        self.task.await.map_err(|e| {
            tracing::error!(error = %e, "producer sender task failed");
            ClientError::Closed
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
