//! One partition replica hosted by this node: its identity, its leadership as last seen in the
//! metadata, and its log bounds. The group-commit writer is the only writer of the log end.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sluice_proto::model::{LeaderEpoch, NodeId, Offset, PartitionId, TopicId};
use tokio::sync::watch;

use crate::log::{PartitionKey, Uid};

/// Leadership of a replica, from the partition state in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The current leader's node id, or -1.
    pub leader: NodeId,
    /// The current leader epoch.
    pub epoch: LeaderEpoch,
}

/// A partition replica on this node.
pub struct Replica {
    /// Topic name (for errors and logs).
    pub topic: String,
    /// Identity of the partition.
    pub key: PartitionKey,
    /// Node-local log uid.
    pub uid: Uid,
    leadership: Mutex<Leadership>,
    log_start: AtomicI64,
    log_end: AtomicI64,
    high_watermark: watch::Sender<Offset>,
    max_batch_bytes: AtomicUsize,
    deleted: AtomicBool,
}

impl Replica {
    /// A replica whose log holds `[log_start, log_end)`.
    pub fn new(
        topic: String,
        key: PartitionKey,
        uid: Uid,
        log_start: Offset,
        log_end: Offset,
        leadership: Leadership,
        max_batch_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            topic,
            key,
            uid,
            leadership: Mutex::new(leadership),
            log_start: AtomicI64::new(log_start),
            log_end: AtomicI64::new(log_end),
            // One replica per partition for now: everything appended is committed.
            high_watermark: watch::Sender::new(log_end),
            max_batch_bytes: AtomicUsize::new(max_batch_bytes),
            deleted: AtomicBool::new(false),
        })
    }

    /// The topic id.
    pub fn topic_id(&self) -> TopicId {
        self.key.topic_id
    }

    /// The partition index.
    pub fn partition(&self) -> PartitionId {
        self.key.partition
    }

    /// Leadership as last seen.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.lock().expect("poisoned")
    }

    /// Records a leadership change seen in the metadata.
    pub fn set_leadership(&self, l: Leadership) {
        *self.leadership.lock().expect("poisoned") = l;
    }

    /// First offset in the log.
    pub fn log_start(&self) -> Offset {
        self.log_start.load(Ordering::Acquire)
    }

    /// One past the last appended offset.
    pub fn log_end(&self) -> Offset {
        self.log_end.load(Ordering::Acquire)
    }

    /// Offsets below it are committed and visible to consumers.
    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// Notified whenever the high watermark moves (long-poll fetches wait on it).
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    /// Called by the writer after a durable append. With a single replica the high watermark
    /// follows the log end.
    pub fn advance_log_end(&self, end: Offset) {
        self.log_end.store(end, Ordering::Release);
        self.high_watermark.send_replace(end);
    }

    /// Largest batch accepted, from the topic's `max.message.bytes`.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes.load(Ordering::Relaxed)
    }

    /// Updates the batch-size limit after a config change.
    pub fn set_max_batch_bytes(&self, v: usize) {
        self.max_batch_bytes.store(v, Ordering::Relaxed);
    }

    /// Marks the replica deleted: pending and later requests fail instead of writing.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        // Wake long-polls so they notice.
        self.high_watermark.send_modify(|_| {});
    }

    /// Whether the replica was deleted (topic deleted or partition moved away).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}
