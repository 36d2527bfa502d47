//! The log's tail in memory: [`TailCachedLog`] wraps a [`LogStore`] and keeps the most recently
//! written batches of every replica (up to a node-wide byte budget, oldest evicted first), so
//! tailing consumers and follower pushes read them without a RocksDB read or a trip through
//! `spawn_blocking`. The cache only ever holds a contiguous suffix of each replica's log; any
//! read it cannot answer whole goes to the store beneath.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::Offset;

use super::{
    Append, LogError, LogOp, LogStore, OpenedLog, PartitionKey, SegmentInfo, SegmentPolicy, Uid,
};

/// Default node-wide budget of cached batch bytes.
pub const DEFAULT_TAIL_CACHE_BYTES: usize = 64 << 20;

/// One cached batch.
struct Cached {
    base: Offset,
    next: Offset,
    bytes: Bytes,
}

#[derive(Default)]
struct Tails {
    /// Per replica, contiguous batches ending at the replica's log end.
    by_uid: HashMap<Uid, VecDeque<Cached>>,
    /// Every cached batch in insertion order, for oldest-first eviction; entries whose batch was
    /// since truncated or dropped are skipped when they reach the front.
    order: VecDeque<(Uid, Offset)>,
    bytes: usize,
    /// Batches cached (the live entries of `order`).
    entries: usize,
}

impl Tails {
    fn push(&mut self, uid: Uid, base: Offset, bytes: Bytes, budget: usize) {
        let Ok(h) = BatchHeader::parse(&bytes) else {
            // Not a batch the cache can index: forget the replica's tail so reads go beneath.
            self.drop_uid(uid);
            return;
        };
        let tail = self.by_uid.entry(uid).or_default();
        if tail.back().is_some_and(|c| c.next != base) {
            // Not contiguous with what is cached (cannot happen with ordered writes); restart.
            self.entries -= tail.len();
            self.bytes -= tail.drain(..).map(|c| c.bytes.len()).sum::<usize>();
        }
        self.bytes += bytes.len();
        self.entries += 1;
        tail.push_back(Cached {
            base,
            next: h.next_offset(),
            bytes,
        });
        self.order.push_back((uid, base));
        while self.bytes > budget {
            let Some((uid, base)) = self.order.pop_front() else {
                break;
            };
            let Some(tail) = self.by_uid.get_mut(&uid) else {
                continue;
            };
            if tail.front().is_some_and(|c| c.base == base) {
                let c = tail.pop_front().expect("front exists");
                self.bytes -= c.bytes.len();
                self.entries -= 1;
                if tail.is_empty() {
                    self.by_uid.remove(&uid);
                }
            }
        }
        // Truncations and drops leave stale order entries behind; keep them bounded.
        if self.order.len() > 2 * self.entries + 64 {
            let live = &self.by_uid;
            self.order.retain(|(u, b)| {
                // Each tail is sorted by base offset.
                live.get(u)
                    .is_some_and(|t| t.binary_search_by_key(b, |c| c.base).is_ok())
            });
        }
    }

    fn truncate(&mut self, uid: Uid, from: Offset) {
        let Some(tail) = self.by_uid.get_mut(&uid) else {
            return;
        };
        while tail.back().is_some_and(|c| c.next > from) {
            let c = tail.pop_back().expect("back exists");
            self.bytes -= c.bytes.len();
            self.entries -= 1;
        }
        if tail.is_empty() {
            self.by_uid.remove(&uid);
        }
    }

    fn drop_uid(&mut self, uid: Uid) {
        if let Some(tail) = self.by_uid.remove(&uid) {
            self.entries -= tail.len();
            self.bytes -= tail.iter().map(|c| c.bytes.len()).sum::<usize>();
        }
    }

    /// The same answer as [`LogStore::read`], if the cached suffix covers `from`.
    fn read(&self, uid: Uid, from: Offset, limit: Offset, max_bytes: usize) -> Option<Vec<Bytes>> {
        let tail = self.by_uid.get(&uid)?;
        if tail.front()?.base > from {
            return None;
        }
        // The first batch ending after `from` holds it (or, in a gap, follows it).
        let first = tail.partition_point(|c| c.next <= from);
        let mut out = Vec::new();
        let mut size = 0;
        for c in tail.range(first..) {
            if super::read_stops_before(out.len(), size, c.bytes.len(), c.next, limit, max_bytes) {
                break;
            }
            size += c.bytes.len();
            out.push(c.bytes.clone());
        }
        Some(out)
    }
}

/// A [`LogStore`] that remembers the tail of every replica's log in memory.
pub struct TailCachedLog<L> {
    inner: L,
    budget: usize,
    tails: Mutex<Tails>,
    /// Uids by partition, to drop a deleted replica's tail.
    uids: Mutex<HashMap<PartitionKey, Uid>>,
}

impl<L: LogStore> TailCachedLog<L> {
    /// Wraps `inner`, caching up to `budget` bytes of recent batches across all replicas.
    pub fn new(inner: L, budget: usize) -> Self {
        Self {
            inner,
            budget,
            tails: Mutex::new(Tails::default()),
            uids: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes of batches currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.tails.lock().expect("poisoned").bytes
    }
}

impl<L: LogStore> LogStore for TailCachedLog<L> {
    fn open(&self, key: PartitionKey) -> Result<OpenedLog, LogError> {
        let opened = self.inner.open(key)?;
        self.uids.lock().expect("poisoned").insert(key, opened.uid);
        Ok(opened)
    }

    fn list(&self) -> Result<Vec<(PartitionKey, Uid)>, LogError> {
        self.inner.list()
    }

    fn write(&self, ops: &[LogOp<'_>]) -> Result<(), LogError> {
        // Truncations leave the cache first, so no reader is served a removed batch from it.
        {
            let mut tails = self.tails.lock().expect("poisoned");
            for op in ops {
                match op {
                    LogOp::TruncateFrom { uid, from } => tails.truncate(*uid, *from),
                    // The log start moves rarely: the cache refills from the next appends.
                    LogOp::DeleteBefore { uid, .. } => tails.drop_uid(*uid),
                    _ => {}
                }
            }
        }
        let result = self.inner.write(ops);
        let mut tails = self.tails.lock().expect("poisoned");
        for op in ops {
            match op {
                // A failed write may or may not be on disk: reads of these replicas go beneath.
                LogOp::Append(Append { uid, .. }) | LogOp::TruncateFrom { uid, .. }
                    if result.is_err() =>
                {
                    tails.drop_uid(*uid)
                }
                LogOp::Append(a) => tails.push(a.uid, a.base_offset, a.batch.clone(), self.budget),
                _ => {}
            }
        }
        result
    }

    fn read(
        &self,
        uid: Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, LogError> {
        match self.read_cached(uid, from, limit, max_bytes) {
            Some(batches) => Ok(batches),
            None => self.inner.read(uid, from, limit, max_bytes),
        }
    }

    fn read_cached(
        &self,
        uid: Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Option<Vec<Bytes>> {
        self.tails
            .lock()
            .expect("poisoned")
            .read(uid, from, limit, max_bytes)
    }

    fn delete(&self, key: PartitionKey) -> Result<(), LogError> {
        if let Some(uid) = self.uids.lock().expect("poisoned").remove(&key) {
            self.tails.lock().expect("poisoned").drop_uid(uid);
        }
        self.inner.delete(key)
    }

    fn sync(&self) -> Result<(), LogError> {
        self.inner.sync()
    }

    fn segments(&self, uid: Uid) -> Result<Vec<SegmentInfo>, LogError> {
        self.inner.segments(uid)
    }

    fn replace_segments(
        &self,
        uid: Uid,
        old: &[SegmentInfo],
        batches: &[Bytes],
    ) -> Result<(), LogError> {
        // Cached batches of the cleaned range would be served with their removed records.
        self.tails.lock().expect("poisoned").drop_uid(uid);
        self.inner.replace_segments(uid, old, batches)
    }

    fn checkpoint_recovery(&self, ends: &[(Uid, Offset)]) -> Result<(), LogError> {
        self.inner.checkpoint_recovery(ends)
    }

    fn set_segment_policy(&self, uid: Uid, policy: SegmentPolicy) {
        self.inner.set_segment_policy(uid, policy)
    }

    fn offset_for_timestamp(
        &self,
        uid: Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, LogError> {
        self.inner.offset_for_timestamp(uid, from, timestamp)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut stats = self.inner.stats();
        stats.push(("tail_cache_bytes", self.cached_bytes() as u64));
        stats
    }
}

#[cfg(test)]
mod over_memory {
    crate::log_store_conformance!(|| (
        crate::log::tail::TailCachedLog::new(crate::log::memory::MemoryLog::new(), 1 << 20),
        ()
    ));
}

#[cfg(test)]
mod over_rocks_with_a_tiny_budget {
    // A budget of about one small batch: reads mix cached answers and fall-throughs.
    crate::log_store_conformance!(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let rocks = crate::log::rocks::RocksLog::open(dir.path(), false).expect("open");
        (crate::log::tail::TailCachedLog::new(rocks, 120), dir)
    });
}

#[cfg(test)]
mod tests {
    use sluice_proto::model::TopicId;

    use super::*;
    use crate::log::conformance::batch;
    use crate::log::memory::MemoryLog;

    fn key(t: u8, p: i32) -> PartitionKey {
        PartitionKey {
            topic_id: TopicId([t; 16]),
            partition: p,
        }
    }

    fn append(log: &impl LogStore, uid: Uid, b: &Bytes) {
        crate::log::conformance::append_each(log, uid, std::slice::from_ref(b));
    }

    #[test]
    fn the_tail_is_served_from_memory_and_older_reads_go_beneath() {
        let log = TailCachedLog::new(MemoryLog::new(), 1 << 20);
        let uid = log.open(key(1, 0)).unwrap().uid;
        let bs: Vec<Bytes> = (0..4).map(|i| batch(i * 3, 3)).collect();
        for b in &bs {
            append(&log, uid, b);
        }
        assert_eq!(log.read_cached(uid, 4, 12, 1 << 20).unwrap(), bs[1..]);
        assert!(log.read_cached(uid, 12, 12, 1 << 20).unwrap().is_empty());
        // A budget of two batches evicts the oldest two; reads below them fall through.
        let last_two = bs[2].len() + bs[3].len();
        let small = TailCachedLog::new(MemoryLog::new(), last_two);
        let uid = small.open(key(1, 0)).unwrap().uid;
        for b in &bs {
            append(&small, uid, b);
        }
        assert_eq!(small.cached_bytes(), last_two);
        assert!(small.read_cached(uid, 0, 12, 1 << 20).is_none());
        assert_eq!(small.read(uid, 0, 12, 1 << 20).unwrap(), bs);
        assert_eq!(small.read_cached(uid, 7, 12, 1 << 20).unwrap(), bs[2..]);
    }

    #[test]
    fn truncation_and_deletion_leave_the_cache() {
        let log = TailCachedLog::new(MemoryLog::new(), 1 << 20);
        let k = key(1, 0);
        let uid = log.open(k).unwrap().uid;
        let bs: Vec<Bytes> = (0..3).map(|i| batch(i * 2, 2)).collect();
        for b in &bs {
            append(&log, uid, b);
        }
        log.write(&[LogOp::TruncateFrom { uid, from: 2 }]).unwrap();
        assert_eq!(log.read_cached(uid, 0, 6, 1 << 20).unwrap(), bs[..1]);
        let again = batch(2, 5);
        append(&log, uid, &again);
        assert_eq!(
            log.read_cached(uid, 3, 7, 1 << 20).unwrap(),
            vec![again.clone()]
        );
        assert_eq!(
            log.read(uid, 0, 7, 1 << 20).unwrap(),
            vec![bs[0].clone(), again]
        );
        log.delete(k).unwrap();
        assert_eq!(log.cached_bytes(), 0);
    }

    #[test]
    fn many_replicas_share_one_budget_and_stale_entries_stay_bounded() {
        let one = batch(0, 1).len();
        let log = TailCachedLog::new(MemoryLog::new(), 10 * one);
        let uids: Vec<Uid> = (0..4).map(|p| log.open(key(1, p)).unwrap().uid).collect();
        for i in 0..100 {
            for &uid in &uids {
                append(&log, uid, &batch(i, 1));
                if i % 3 == 2 {
                    log.write(&[LogOp::TruncateFrom { uid, from: i }]).unwrap();
                    append(&log, uid, &batch(i, 1));
                }
            }
        }
        assert!(log.cached_bytes() <= 10 * one);
        let tails = log.tails.lock().unwrap();
        assert!(tails.order.len() <= 2 * 10 + 64, "{}", tails.order.len());
        for &uid in &uids {
            let got = tails.read(uid, 99, 100, 1 << 20).expect("newest is cached");
            assert_eq!(got, vec![batch(99, 1)]);
        }
    }
}
