//! The partition log store: record batches keyed by `(partition uid, base offset)`. One
//! RocksDB database per node ([`rocks::RocksLog`]) in production, an in-memory twin
//! ([`memory::MemoryLog`]) for unit tests; both pass the [`conformance`] suite.
//!
//! The store is synchronous (RocksDB calls block): the group-commit writer runs on its own
//! thread and reads go through `spawn_blocking`.

pub mod conformance;
pub mod memory;
pub mod rocks;

use bytes::Bytes;
use sluice_proto::model::{Offset, PartitionId, TopicId};

/// A node-local id of one partition replica; a recreated topic gets new uids, so no data of a
/// deleted topic can ever surface under a new one.
pub type Uid = u64;

/// Names one partition replica (topic id, not name: names are reused after deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The topic's id.
    pub topic_id: TopicId,
    /// The partition index.
    pub partition: PartitionId,
}

/// What `open` recovered of a replica's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedLog {
    /// The replica's uid.
    pub uid: Uid,
    /// First offset still in the log.
    pub log_start: Offset,
    /// Offset the next appended record gets (one past the last stored record).
    pub log_end: Offset,
}

/// One batch to append, with its offsets already assigned.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Target replica.
    pub uid: Uid,
    /// Base offset of the batch (already written into `batch`).
    pub base_offset: Offset,
    /// The whole encoded batch.
    pub batch: &'a [u8],
}

/// Failures of the log store; they surface to clients as `STORAGE_ERROR`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("log storage error: {0}")]
pub struct LogError(pub String);

/// A node's partition logs.
pub trait LogStore: Send + Sync + 'static {
    /// Opens (creating when new) the replica's log and recovers its bounds.
    fn open(&self, key: PartitionKey) -> Result<OpenedLog, LogError>;
    /// Every replica with a log on this node.
    fn list(&self) -> Result<Vec<(PartitionKey, Uid)>, LogError>;
    /// Appends several batches, of one or more replicas, atomically and in order.
    fn append(&self, appends: &[Append<'_>]) -> Result<(), LogError>;
    /// Whole batches holding offsets from `from` on, stopping before any batch whose last
    /// offset is at or past `limit`, and after `max_bytes` (the first batch is always
    /// returned whole, however large).
    fn read(
        &self,
        uid: Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, LogError>;
    /// Deletes a replica's log and its uid mapping.
    fn delete(&self, key: PartitionKey) -> Result<(), LogError>;
    /// Makes every acknowledged append durable on disk (fsync of the write-ahead log).
    fn sync(&self) -> Result<(), LogError>;
}
