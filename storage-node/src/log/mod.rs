//! The partition log store: record batches keyed by `(partition uid, base offset)`. In
//! production, segment files written once plus one RocksDB index per node ([`rocks::RocksLog`],
//! [`segments`]), wrapped in an in-memory tail ([`tail`]); an in-memory twin
//! ([`memory::MemoryLog`]) for unit tests; all pass the [`conformance`] suite.
//!
//! The store is synchronous (RocksDB calls block): the group-commit writer runs on its own
//! thread; reads are answered from the in-memory tail ([`tail`]) or go through `spawn_blocking`.

#[cfg(test)]
pub mod conformance;
#[cfg(test)]
pub mod memory;
mod readbuf;
pub mod rocks;
mod segment_index;
pub mod segments;
mod syncer;
pub mod tail;

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

/// One entry of a replica's leader-epoch history: `epoch` began at `start_offset` (the base
/// offset of the first batch written in it). Used to find where two replicas' logs diverge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// First offset written in that epoch.
    pub start_offset: Offset,
}

/// What `open` recovered of a replica's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedLog {
    /// The replica's uid.
    pub uid: Uid,
    /// First offset still in the log.
    pub log_start: Offset,
    /// Offset the next appended record gets (one past the last stored record).
    pub log_end: Offset,
    /// The leader-epoch history as last written with the log.
    pub epochs: Vec<EpochEntry>,
    /// The last high-watermark checkpoint (0 when none was written).
    pub high_watermark: Offset,
}

/// One change to the log store; a [`LogStore::write`] applies several atomically, in order.
#[derive(Debug, Clone, Copy)]
pub enum LogOp<'a> {
    /// Stores a batch (offsets already assigned).
    Append(Append<'a>),
    /// Removes every batch of `uid` whose base offset is at or after `from` (a batch boundary).
    TruncateFrom {
        /// Target replica.
        uid: Uid,
        /// First removed offset.
        from: Offset,
    },
    /// Checkpoints the replica's high watermark, so a restarted leader does not report a lower
    /// commit point (e.g. to a consumer seeking to the end) while its followers reconnect.
    PutHighWatermark {
        /// Target replica.
        uid: Uid,
        /// The high watermark.
        offset: Offset,
    },
    /// Replaces the replica's stored leader-epoch history.
    PutEpochs {
        /// Target replica.
        uid: Uid,
        /// The whole history, oldest first.
        epochs: &'a [EpochEntry],
    },
    /// Moves the log start up to `offset` (retention, DeleteRecords, or a follower learning
    /// the leader's log start): batches wholly below it are removed, a batch holding it stays
    /// (reads start inside it). At or past the log end, the log becomes empty and continues
    /// at `offset` (a follower whose leader no longer holds anything it has).
    DeleteBefore {
        /// Target replica.
        uid: Uid,
        /// The new log start.
        offset: Offset,
    },
}

/// One segment of a replica's log, oldest first; the last one is the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's id (see [`segments::segment_id`]).
    pub id: u64,
    /// Base offset of its first batch still in the log.
    pub base: Offset,
    /// The offset after its last batch.
    pub next: Offset,
    /// Bytes of the segment file.
    pub bytes: u64,
    /// Largest record timestamp in it (-1 when no batch carries one).
    pub max_timestamp: i64,
}

/// When a replica's active segment is closed and a new one started (topic `segment.bytes`
/// and `segment.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// Roll once the active segment holds this many bytes.
    pub bytes: u64,
    /// Roll at the first append after the active segment is this old.
    pub max_age: std::time::Duration,
}

/// One batch to append, with its offsets already assigned.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Target replica.
    pub uid: Uid,
    /// Base offset of the batch (already written into `batch`).
    pub base_offset: Offset,
    /// The whole encoded batch (shared, so a cache can keep it without a copy).
    pub batch: &'a Bytes,
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
    /// Applies appends, truncations and epoch-history updates, of one or more replicas,
    /// atomically and in order.
    fn write(&self, ops: &[LogOp<'_>]) -> Result<(), LogError>;
    /// Appends batches atomically (a [`LogStore::write`] of appends only).
    fn append(&self, appends: &[Append<'_>]) -> Result<(), LogError> {
        let ops: Vec<LogOp<'_>> = appends.iter().map(|a| LogOp::Append(*a)).collect();
        self.write(&ops)
    }
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
    /// The answer [`LogStore::read`] would give, when it is in memory and needs no blocking
    /// I/O; `None` sends the caller to `read` (on a blocking thread).
    fn read_cached(
        &self,
        _uid: Uid,
        _from: Offset,
        _limit: Offset,
        _max_bytes: usize,
    ) -> Option<Vec<Bytes>> {
        None
    }
    /// The replica's segments, oldest first (the last is the active one); empty for an empty
    /// log.
    fn segments(&self, uid: Uid) -> Result<Vec<SegmentInfo>, LogError>;
    /// Sets when the replica's active segment rolls (until set, the store's default).
    fn set_segment_policy(&self, _uid: Uid, _policy: SegmentPolicy) {}
    /// Base offset of the first batch, at or after `from`, whose largest timestamp is at or
    /// after `timestamp`; `None` when there is none.
    fn offset_for_timestamp(
        &self,
        uid: Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, LogError>;
    /// Replaces the closed segments `old` (consecutive, oldest first, as [`LogStore::segments`]
    /// gave them; never the active one) with `batches`, their cleaned batches covering the same
    /// offsets, in order: new segment files are written and synced, one atomic index write swaps
    /// them in, then the old files are removed. Fails, changing nothing, when `old` no longer
    /// matches the log (retention or a truncation moved it meanwhile).
    fn replace_segments(
        &self,
        uid: Uid,
        old: &[SegmentInfo],
        batches: &[Bytes],
    ) -> Result<(), LogError>;
    /// Deletes a replica's log and its uid mapping.
    fn delete(&self, key: PartitionKey) -> Result<(), LogError>;
    /// Makes every acknowledged append durable on disk (fsync of the write-ahead log).
    fn sync(&self) -> Result<(), LogError>;
    /// Makes everything written so far durable, as [`LogStore::sync`], then records that each
    /// listed replica's log is on disk up to the given end (its recovery point): after a crash,
    /// opening a log verifies only the batches written after it.
    fn checkpoint_recovery(&self, _ends: &[(Uid, Offset)]) -> Result<(), LogError> {
        self.sync()
    }
    /// Engine statistics for monitoring, as (metric suffix, value).
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Where every store's [`LogStore::read`] stops: before a batch ending past `limit`, and before
/// one that would take the answer past `max_bytes` (unless nothing was taken yet: the first batch
/// is returned whole however large). `taken` batches of `size` bytes are already in the answer.
pub fn read_stops_before(
    taken: usize,
    size: usize,
    batch_len: usize,
    batch_next: Offset,
    limit: Offset,
    max_bytes: usize,
) -> bool {
    batch_next > limit || (taken > 0 && size + batch_len > max_bytes)
}

/// Reads from an async context: from memory when the store can answer there, else on a
/// blocking thread (a RocksDB read must not stall the runtime's workers).
pub async fn read_async(
    log: &std::sync::Arc<dyn LogStore>,
    uid: Uid,
    from: Offset,
    limit: Offset,
    max_bytes: usize,
) -> Result<Vec<Bytes>, LogError> {
    if let Some(batches) = log.read_cached(uid, from, limit, max_bytes) {
        return Ok(batches);
    }
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.read(uid, from, limit, max_bytes))
        .await
        .map_err(|e| LogError(format!("log read task failed: {e}")))?
}

/// Encodes an epoch history for the meta column family: `(epoch i32 BE, start i64 BE)*`.
pub fn encode_epochs(epochs: &[EpochEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(epochs.len() * 12);
    for e in epochs {
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.start_offset.to_be_bytes());
    }
    out
}

/// Inverse of [`encode_epochs`]; `None` when the bytes are not a whole number of entries.
pub fn decode_epochs(bytes: &[u8]) -> Option<Vec<EpochEntry>> {
    if !bytes.len().is_multiple_of(12) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(12)
            .map(|c| EpochEntry {
                epoch: i32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                start_offset: i64::from_be_bytes([
                    c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11],
                ]),
            })
            .collect(),
    )
}

/// Rebuilds an epoch history from batch headers (for a log that holds batches but no stored
/// history): a new entry wherever a batch's epoch exceeds the last one seen.
pub fn epochs_from_batches<'a>(batches: impl IntoIterator<Item = &'a [u8]>) -> Vec<EpochEntry> {
    let mut out: Vec<EpochEntry> = Vec::new();
    for b in batches {
        if let Ok(h) = sluice_proto::batch::BatchHeader::parse(b)
            && out
                .last()
                .is_none_or(|l| h.partition_leader_epoch > l.epoch)
        {
            out.push(EpochEntry {
                epoch: h.partition_leader_epoch,
                start_offset: h.base_offset,
            });
        }
    }
    out
}
