//! In-memory twin of the RocksDB log, for fast unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::Offset;

use super::{
    EpochEntry, LogError, LogOp, LogStore, OpenedLog, PartitionKey, SegmentInfo, Uid,
    epochs_from_batches,
};

#[derive(Default)]
struct Inner {
    next_uid: Uid,
    uids: HashMap<PartitionKey, Uid>,
    batches: BTreeMap<(Uid, Offset), Bytes>,
    epochs: HashMap<Uid, Vec<EpochEntry>>,
    high_watermarks: HashMap<Uid, Offset>,
    starts: HashMap<Uid, Offset>,
}

/// A [`LogStore`] in a mutex-guarded map; its whole log is one segment.
#[derive(Default)]
pub struct MemoryLog {
    inner: Mutex<Inner>,
}

impl MemoryLog {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn next_offset(batch: &[u8]) -> Result<Offset, LogError> {
    BatchHeader::parse(batch)
        .map(|h| h.next_offset())
        .map_err(|e| LogError(e.to_string()))
}

impl LogStore for MemoryLog {
    fn open(&self, key: PartitionKey) -> Result<OpenedLog, LogError> {
        let mut g = self.inner.lock().expect("poisoned");
        let uid = match g.uids.get(&key) {
            Some(u) => *u,
            None => {
                g.next_uid += 1;
                let u = g.next_uid;
                g.uids.insert(key, u);
                u
            }
        };
        let mut range = g.batches.range((uid, 0)..=(uid, Offset::MAX));
        let first = range.next().map(|((_, o), _)| *o);
        let stored = g.starts.get(&uid).copied();
        let log_start = stored.or(first).unwrap_or(0);
        let log_end = match g.batches.range((uid, 0)..=(uid, Offset::MAX)).next_back() {
            Some((_, b)) => next_offset(b)?,
            None => log_start,
        };
        let log_start = log_start.min(log_end);
        let epochs = match g.epochs.get(&uid) {
            Some(e) => e.clone(),
            None => epochs_from_batches(
                g.batches
                    .range((uid, 0)..=(uid, Offset::MAX))
                    .map(|(_, b)| b.as_ref()),
            ),
        };
        let high_watermark = g
            .high_watermarks
            .get(&uid)
            .copied()
            .unwrap_or(0)
            .min(log_end);
        Ok(OpenedLog {
            uid,
            log_start,
            log_end,
            epochs,
            high_watermark,
        })
    }

    fn list(&self) -> Result<Vec<(PartitionKey, Uid)>, LogError> {
        let g = self.inner.lock().expect("poisoned");
        let mut v: Vec<_> = g.uids.iter().map(|(k, u)| (*k, *u)).collect();
        v.sort();
        Ok(v)
    }

    fn write(&self, ops: &[LogOp<'_>]) -> Result<(), LogError> {
        let mut g = self.inner.lock().expect("poisoned");
        for op in ops {
            match op {
                LogOp::Append(a) => {
                    g.batches
                        .insert((a.uid, a.base_offset), Bytes::copy_from_slice(a.batch));
                }
                LogOp::TruncateFrom { uid, from } => {
                    let doomed: Vec<_> = g
                        .batches
                        .range((*uid, *from)..=(*uid, Offset::MAX))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in doomed {
                        g.batches.remove(&k);
                    }
                }
                LogOp::PutHighWatermark { uid, offset } => {
                    g.high_watermarks.insert(*uid, *offset);
                }
                LogOp::PutEpochs { uid, epochs } => {
                    g.epochs.insert(*uid, epochs.to_vec());
                }
                LogOp::DeleteBefore { uid, offset } => {
                    let mut doomed = Vec::new();
                    for ((_, base), b) in g.batches.range((*uid, 0)..(*uid, *offset)) {
                        if next_offset(b)? <= *offset {
                            doomed.push((*uid, *base));
                        }
                    }
                    for k in doomed {
                        g.batches.remove(&k);
                    }
                    g.starts.insert(*uid, *offset);
                }
            }
        }
        Ok(())
    }

    fn read(
        &self,
        uid: Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, LogError> {
        let g = self.inner.lock().expect("poisoned");
        let start = match g.batches.range((uid, 0)..=(uid, from)).next_back() {
            Some(((_, base), b)) if next_offset(b)? > from => *base,
            _ => from,
        };
        let mut out = Vec::new();
        let mut size = 0;
        for (_, b) in g.batches.range((uid, start)..=(uid, Offset::MAX)) {
            if super::read_stops_before(out.len(), size, b.len(), next_offset(b)?, limit, max_bytes)
            {
                break;
            }
            size += b.len();
            out.push(b.clone());
        }
        Ok(out)
    }

    fn delete(&self, key: PartitionKey) -> Result<(), LogError> {
        let mut g = self.inner.lock().expect("poisoned");
        if let Some(uid) = g.uids.remove(&key) {
            g.epochs.remove(&uid);
            g.high_watermarks.remove(&uid);
            g.starts.remove(&uid);
            let keys: Vec<_> = g
                .batches
                .range((uid, 0)..=(uid, Offset::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                g.batches.remove(&k);
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn segments(&self, uid: Uid) -> Result<Vec<SegmentInfo>, LogError> {
        let g = self.inner.lock().expect("poisoned");
        let mut out: Option<SegmentInfo> = None;
        for ((_, base), b) in g.batches.range((uid, 0)..=(uid, Offset::MAX)) {
            let h = BatchHeader::parse(b).map_err(|e| LogError(e.to_string()))?;
            let s = out.get_or_insert(SegmentInfo {
                id: *base as u64,
                base: *base,
                next: *base,
                bytes: 0,
                max_timestamp: -1,
            });
            s.next = h.next_offset();
            s.bytes += b.len() as u64;
            s.max_timestamp = s.max_timestamp.max(h.max_timestamp);
        }
        Ok(out.into_iter().collect())
    }

    fn replace_segments(
        &self,
        uid: Uid,
        old: &[SegmentInfo],
        batches: &[Bytes],
    ) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (old.first(), old.last()) else {
            return Ok(());
        };
        let mut g = self.inner.lock().expect("poisoned");
        let doomed: Vec<_> = g
            .batches
            .range((uid, first.base)..(uid, last.next))
            .map(|(k, _)| *k)
            .collect();
        for k in doomed {
            g.batches.remove(&k);
        }
        for b in batches {
            let base = BatchHeader::parse(b)
                .map_err(|e| LogError(e.to_string()))?
                .base_offset;
            g.batches.insert((uid, base), b.clone());
        }
        Ok(())
    }

    fn offset_for_timestamp(
        &self,
        uid: Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, LogError> {
        let g = self.inner.lock().expect("poisoned");
        for ((_, base), b) in g.batches.range((uid, 0)..=(uid, Offset::MAX)) {
            let h = BatchHeader::parse(b).map_err(|e| LogError(e.to_string()))?;
            if h.next_offset() > from && h.max_timestamp >= timestamp {
                return Ok(Some(*base));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    crate::log_store_conformance!(|| (super::MemoryLog::new(), ()));
}
