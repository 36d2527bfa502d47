//! The node's log: batch bytes in append-only segment files ([`Segments`]), written once, and
//! a RocksDB index of them: column family `index` maps `uid (8 bytes BE) | base offset (8 bytes
//! BE)` to where the batch sits, where it ends and its largest timestamp, so a fetch is one
//! seek, a forward scan of small entries and one positioned read per run of adjacent batches.
//! Column family `segments` summarises each segment ([`segment_index`]). Column family `meta`
//! maps partitions to uids and keeps log starts, epoch histories and high-watermark
//! checkpoints, committed in the same atomic write as the index entries they describe.
//!
//! Bytes are written before the index entry that points at them is committed (and, with
//! `sync_appends`, fsynced before it), so the index never names bytes that are missing; bytes
//! past the last entry (a crash between the two) are overwritten by the next append. RocksDB's
//! write-ahead log is on, so every acknowledged append survives a SIGKILL of the process.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::{Offset, TopicId};

use super::segment_index::{self, ActiveSummaries, Placed};
use super::segments::{Location, SEGMENT_BYTES, Segments};
use super::{
    EpochEntry, LogError, LogOp, LogStore, OpenedLog, PartitionKey, SegmentInfo, SegmentPolicy,
    Uid, decode_epochs, encode_epochs, epochs_from_batches,
};

/// Where each batch sits in the segment files.
const CF_INDEX: &str = "index";
const CF_META: &str = "meta";
/// One summary per segment (see [`segment_index`]).
const CF_SEGMENTS: &str = "segments";
/// `meta` key prefix of log starts: `s | uid (8 BE)` (absent: the first indexed batch).
const META_START: u8 = b's';
/// `meta` key prefix of recovery points: `c | uid (8 BE)`, the offset up to which the replica's
/// batches were on disk at the last checkpoint (absent: verify from the log start).
const META_RECOVERY: u8 = b'c';
/// `meta` key prefix of partition → uid mappings: `p | topic id (16) | partition (4 BE)`.
const META_PARTITION: u8 = b'p';
/// `meta` key prefix of leader-epoch histories: `e | uid (8 BE)`.
const META_EPOCHS: u8 = b'e';
/// `meta` key prefix of high-watermark checkpoints: `h | uid (8 BE)`.
const META_HW: u8 = b'h';
/// `meta` key holding the last uid handed out.
const META_LAST_UID: &[u8] = b"last_uid";
/// The database's incarnation id (see [`RocksLog::incarnation`]).
const META_INCARNATION: &[u8] = b"incarnation";
/// The id of the cluster the data belongs to (see [`RocksLog::bind_cluster`]).
const META_CLUSTER_ID: &[u8] = b"cluster_id";

/// A [`LogStore`] of segment files indexed in RocksDB.
pub struct RocksLog {
    db: DB,
    segments: Segments,
    summaries: ActiveSummaries,
    /// Held by writes that truncate or move a log start, and by the cleaner's swap, so a swap
    /// checks and replaces segments no such write is changing.
    reshape: std::sync::Mutex<()>,
    /// Fsync segments and the WAL in every append (group commit shares them among appends).
    sync_appends: bool,
}

/// An index entry: the batch's location, the offset after its last record and its largest
/// record timestamp.
fn encode_entry(loc: Location, next: Offset, max_timestamp: i64) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[..8].copy_from_slice(&loc.segment.to_be_bytes());
    v[8..16].copy_from_slice(&loc.pos.to_be_bytes());
    v[16..20].copy_from_slice(&loc.len.to_be_bytes());
    v[20..28].copy_from_slice(&next.to_be_bytes());
    v[28..].copy_from_slice(&max_timestamp.to_be_bytes());
    v
}

/// The largest record timestamp of an index entry.
fn entry_max_timestamp(v: &[u8]) -> i64 {
    v.get(28..36)
        .map_or(-1, |b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn decode_entry(v: &[u8]) -> Result<(Location, Offset), LogError> {
    if v.len() != 36 {
        return Err(LogError(format!(
            "corrupt index entry of {} bytes (a data directory of an older development build \
             holds 28-byte entries: move it away and start the node on an empty directory)",
            v.len()
        )));
    }
    let u64_at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
    Ok((
        Location {
            segment: u64_at(0),
            pos: u64_at(8),
            len: u32::from_be_bytes(v[16..20].try_into().expect("4 bytes")),
        },
        u64_at(20) as Offset,
    ))
}

fn err(e: impl std::fmt::Display) -> LogError {
    LogError(e.to_string())
}

fn log_key(uid: Uid, offset: Offset) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&uid.to_be_bytes());
    k[8..].copy_from_slice(&(offset as u64).to_be_bytes());
    k
}

fn parse_log_key(k: &[u8]) -> Option<(Uid, Offset)> {
    let uid = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let off = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    Some((uid, off as Offset))
}

fn meta_key(key: &PartitionKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.push(META_PARTITION);
    k.extend_from_slice(&key.topic_id.0);
    k.extend_from_slice(&key.partition.to_be_bytes());
    k
}

fn epochs_key(uid: Uid) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = META_EPOCHS;
    k[1..].copy_from_slice(&uid.to_be_bytes());
    k
}

fn hw_key(uid: Uid) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = META_HW;
    k[1..].copy_from_slice(&uid.to_be_bytes());
    k
}

fn start_key(uid: Uid) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = META_START;
    k[1..].copy_from_slice(&uid.to_be_bytes());
    k
}

fn recovery_key(uid: Uid) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = META_RECOVERY;
    k[1..].copy_from_slice(&uid.to_be_bytes());
    k
}

impl RocksLog {
    /// Opens (creating when missing) the node's database under `dir`. With `sync_appends`,
    /// an append returns only once its WAL record is fsynced (survives power loss); without,
    /// once it is in the OS page cache (survives a process crash).
    pub fn open(dir: &Path, sync_appends: bool) -> Result<Self, LogError> {
        Self::open_with_segment_bytes(dir, sync_appends, SEGMENT_BYTES)
    }

    /// [`RocksLog::open`] with segments rolled at `segment_bytes` (small ones in tests).
    pub fn open_with_segment_bytes(
        dir: &Path,
        sync_appends: bool,
        segment_bytes: u64,
    ) -> Result<Self, LogError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // The `meta` family takes few, small writes and would rarely flush on its own, pinning
        // every WAL file since its last flush (4 GB of WAL after 2 GB appended). Past this total
        // RocksDB flushes it, so old WAL files go.
        opts.set_max_total_wal_size(256 << 20);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_INDEX, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_SEGMENTS, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            if e.to_string().contains("Column families not opened") {
                LogError(format!(
                    "{} holds column families this build does not know ({e}); it was written by \
                     a development build that kept batches inline: move it away and start the \
                     node on an empty directory",
                    dir.display()
                ))
            } else {
                err(e)
            }
        })?;
        let segments = Segments::open(dir.join("segments"), segment_bytes)?;
        Ok(Self {
            db,
            segments,
            summaries: ActiveSummaries::default(),
            reshape: std::sync::Mutex::new(()),
            sync_appends,
        })
    }

    /// The id of this data directory, made (and synced) the first time the database is opened:
    /// a node that comes back with another one lost its data, however it lost it. Kept in the
    /// database itself, so a directory restored from elsewhere or wiped cannot keep an id it
    /// does not deserve.
    pub fn incarnation(&self) -> Result<String, LogError> {
        let meta = self.cf(CF_META);
        if let Some(v) = self.db.get_cf(meta, META_INCARNATION).map_err(err)? {
            return String::from_utf8(v).map_err(|_| LogError("corrupt incarnation id".into()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(meta, META_INCARNATION, id.as_bytes(), &wo)
            .map_err(err)?;
        tracing::info!(incarnation = %id, "new data directory");
        Ok(id)
    }

    /// Ties the data directory to the cluster whose metadata store holds `cluster_id`: the
    /// first start records it; a later start against a store with another id is refused, as
    /// that store's metadata does not describe this data.
    pub fn bind_cluster(&self, cluster_id: &str) -> Result<(), LogError> {
        let meta = self.cf(CF_META);
        match self.db.get_cf(meta, META_CLUSTER_ID).map_err(err)? {
            Some(v) if v == cluster_id.as_bytes() => Ok(()),
            Some(v) => Err(LogError(format!(
                "this data directory belongs to cluster {}, but the metadata store holds cluster \
                 {cluster_id}: point the node at its own cluster's metadata store (--etcd, \
                 --cluster), or start it on an empty data directory to join this one",
                String::from_utf8_lossy(&v)
            ))),
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db
                    .put_cf_opt(meta, META_CLUSTER_ID, cluster_id.as_bytes(), &wo)
                    .map_err(err)
            }
        }
    }

    /// Where the replica's last indexed batch ends: (segment, position after it).
    fn last_location(&self, uid: Uid) -> Result<Option<(u64, u64)>, LogError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_INDEX));
        it.seek_for_prev(log_key(uid, Offset::MAX));
        match (it.key().and_then(parse_log_key), it.value()) {
            (Some((u, _)), Some(v)) if u == uid => {
                let (loc, _) = decode_entry(v)?;
                Ok(Some((loc.segment, loc.pos + u64::from(loc.len))))
            }
            _ => {
                it.status().map_err(err)?;
                Ok(None)
            }
        }
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// The stored log start, if retention or DeleteRecords ever moved it.
    fn stored_start(&self, uid: Uid) -> Result<Option<Offset>, LogError> {
        match self
            .db
            .get_cf(self.cf(CF_META), start_key(uid))
            .map_err(err)?
        {
            Some(v) => Ok(Some(i64::from_be_bytes(
                v.as_slice().try_into().map_err(err)?,
            ))),
            None => Ok(None),
        }
    }

    fn bounds(&self, uid: Uid) -> Result<(Offset, Offset), LogError> {
        let cf = self.cf(CF_INDEX);
        let stored = self.stored_start(uid)?;
        let first = self
            .db
            .iterator_cf(cf, IteratorMode::From(&log_key(uid, 0), Direction::Forward))
            .next()
            .transpose()
            .map_err(err)?
            .and_then(|(k, _)| parse_log_key(&k).filter(|(u, _)| *u == uid));
        let Some((_, first)) = first else {
            let start = stored.unwrap_or(0);
            return Ok((start, start));
        };
        let start = stored.unwrap_or(first);
        let last = self
            .db
            .iterator_cf(
                cf,
                IteratorMode::From(&log_key(uid, Offset::MAX), Direction::Reverse),
            )
            .next()
            .transpose()
            .map_err(err)?;
        let end = match last {
            Some((k, v)) if parse_log_key(&k).is_some_and(|(u, _)| u == uid) => decode_entry(&v)?.1,
            _ => start,
        };
        Ok((start.min(end), end))
    }
}

impl RocksLog {
    /// The stored epoch history, or one rebuilt from batch headers when none was stored.
    fn load_epochs(
        &self,
        uid: Uid,
        start: Offset,
        end: Offset,
    ) -> Result<Vec<EpochEntry>, LogError> {
        if let Some(v) = self
            .db
            .get_cf(self.cf(CF_META), epochs_key(uid))
            .map_err(err)?
        {
            return decode_epochs(&v)
                .ok_or_else(|| LogError(format!("corrupt epoch history of uid {uid}")));
        }
        if start == end {
            return Ok(Vec::new());
        }
        let batches = self.read(uid, start, end, usize::MAX)?;
        Ok(epochs_from_batches(batches.iter().map(|b| b.as_ref())))
    }
}

impl LogStore for RocksLog {
    fn open(&self, key: PartitionKey) -> Result<OpenedLog, LogError> {
        let meta = self.cf(CF_META);
        let uid = match self.db.get_cf(meta, meta_key(&key)).map_err(err)? {
            Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(err)?),
            None => {
                let last = match self.db.get_cf(meta, META_LAST_UID).map_err(err)? {
                    Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(err)?),
                    None => 0,
                };
                let uid = last + 1;
                let mut wb = WriteBatch::default();
                wb.put_cf(meta, META_LAST_UID, uid.to_be_bytes());
                wb.put_cf(meta, meta_key(&key), uid.to_be_bytes());
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db.write_opt(wb, &wo).map_err(err)?;
                uid
            }
        };
        self.collect_leftovers(uid)?;
        let (log_start, log_end) = self.bounds(uid)?;
        let log_end = self.recover(uid, log_start, log_end)?;
        let log_start = log_start.min(log_end);
        let mut epochs = self.load_epochs(uid, log_start, log_end)?;
        // Epochs that began in a tail the recovery cut away.
        epochs.retain(|e| e.start_offset < log_end);
        let high_watermark = match self.db.get_cf(self.cf(CF_META), hw_key(uid)).map_err(err)? {
            Some(v) => i64::from_be_bytes(v.as_slice().try_into().map_err(err)?).min(log_end),
            None => 0,
        };
        Ok(OpenedLog {
            uid,
            log_start,
            log_end,
            epochs,
            high_watermark,
        })
    }

    fn list(&self) -> Result<Vec<(PartitionKey, Uid)>, LogError> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&[META_PARTITION], Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(err)?;
            if k.first() != Some(&META_PARTITION) || k.len() != 21 {
                break;
            }
            let topic_id = TopicId(k[1..17].try_into().map_err(err)?);
            let partition = i32::from_be_bytes(k[17..21].try_into().map_err(err)?);
            let uid = u64::from_be_bytes(v.as_ref().try_into().map_err(err)?);
            out.push((
                PartitionKey {
                    topic_id,
                    partition,
                },
                uid,
            ));
        }
        Ok(out)
    }

    fn write(&self, ops: &[LogOp<'_>]) -> Result<(), LogError> {
        let (index, meta) = (self.cf(CF_INDEX), self.cf(CF_META));
        let mut wb = WriteBatch::default();
        let mut files: Vec<Arc<File>> = Vec::new();
        let mut appended = Vec::new();
        let mut reshaped = Vec::new();
        let mut removals = Vec::new();
        // Per replica: its active segment's summary as this write leaves it.
        let mut summaries: HashMap<Uid, SegmentInfo> = HashMap::new();
        let reshapes = ops
            .iter()
            .any(|o| matches!(o, LogOp::TruncateFrom { .. } | LogOp::DeleteBefore { .. }));
        let _reshaping = reshapes.then(|| self.reshape.lock().expect("poisoned"));
        let separate = || {
            LogError(
                "appends and a truncation or start move of one replica must be separate writes"
                    .into(),
            )
        };
        let result = (|| {
            for op in ops {
                match op {
                    LogOp::Append(a) => {
                        if reshaped.contains(&a.uid) {
                            return Err(separate());
                        }
                        appended.push(a.uid);
                        let (loc, file) =
                            self.segments
                                .append(a.uid, a.base_offset as u64, a.batch, || {
                                    self.last_location(a.uid)
                                })?;
                        if self.sync_appends {
                            Segments::start_writeback(&file, loc);
                        }
                        let h = BatchHeader::parse(a.batch).map_err(err)?;
                        let next = h.next_offset();
                        let entry = encode_entry(loc, next, h.max_timestamp);
                        wb.put_cf(index, log_key(a.uid, a.base_offset), entry);
                        let placed = Placed {
                            loc,
                            base: a.base_offset,
                            next,
                            max_timestamp: h.max_timestamp,
                        };
                        let current = match summaries.get(&a.uid) {
                            Some(s) if s.id != loc.segment => {
                                // Rolled within this write: the closed segment's summary.
                                self.put_summary(&mut wb, a.uid, s);
                                None
                            }
                            Some(s) => Some(*s),
                            None => self.active_summary(a.uid, loc.segment)?,
                        };
                        summaries.insert(a.uid, segment_index::fold(current, &placed));
                        files.push(file);
                    }
                    LogOp::TruncateFrom { uid, from } => {
                        if appended.contains(uid) {
                            return Err(separate());
                        }
                        reshaped.push(*uid);
                        wb.delete_range_cf(index, log_key(*uid, *from), log_key(uid + 1, 0));
                        self.truncate_summaries(&mut wb, *uid, *from)?;
                        removals.push((*uid, Removal::After));
                    }
                    LogOp::DeleteBefore { uid, offset } => {
                        if appended.contains(uid) {
                            return Err(separate());
                        }
                        reshaped.push(*uid);
                        let keep = self.delete_before(&mut wb, *uid, *offset)?;
                        removals.push((*uid, Removal::Before(keep)));
                    }
                    LogOp::PutHighWatermark { uid, offset } => {
                        wb.put_cf(meta, hw_key(*uid), offset.to_be_bytes())
                    }
                    LogOp::PutEpochs { uid, epochs } => {
                        wb.put_cf(meta, epochs_key(*uid), encode_epochs(epochs))
                    }
                }
            }
            for (uid, s) in &summaries {
                self.put_summary(&mut wb, *uid, s);
            }
            if self.sync_appends {
                self.segments.sync_files(&files)?;
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(self.sync_appends);
            self.db.write_opt(wb, &wo).map_err(err)
        })();
        if result.is_err() {
            // Bytes may have been written past what the index says: append from the index.
            for uid in appended.iter().chain(&reshaped) {
                self.segments.forget_position(*uid);
                self.summaries.forget(*uid);
            }
            return result;
        }
        for (uid, s) in summaries {
            self.summaries.set(uid, s);
        }
        for (uid, removal) in removals {
            self.summaries.forget(uid);
            match removal {
                // Appends resume after the last batch left; later segments hold only removed
                // ones.
                Removal::After => {
                    let keep = self.last_location(uid)?.map(|(segment, _)| segment);
                    self.segments.remove_after(uid, keep)?;
                }
                Removal::Before(keep) => self.segments.remove_before(uid, keep)?,
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
        let cf = self.cf(CF_INDEX);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(uid + 1, 0).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        // The batch holding `from` may start before it.
        it.seek_for_prev(log_key(uid, from));
        let holds_from = match (it.key().and_then(parse_log_key), it.value()) {
            (Some((u, _)), Some(v)) if u == uid => decode_entry(v)?.1 > from,
            _ => false,
        };
        if !holds_from {
            it.seek(log_key(uid, from));
        }
        let (mut bases, mut locs) = (Vec::new(), Vec::new());
        let mut size = 0;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let Some((_, base)) = parse_log_key(k).filter(|(u, _)| *u == uid) else {
                break;
            };
            let (loc, next) = decode_entry(v)?;
            let len = loc.len as usize;
            if super::read_stops_before(locs.len(), size, len, next, limit, max_bytes) {
                break;
            }
            size += len;
            bases.push(base);
            locs.push(loc);
            it.next();
        }
        it.status().map_err(err)?;
        let batches = self.segments.read(uid, &locs)?;
        for (b, base) in batches.iter().zip(&bases) {
            if BatchHeader::parse(b).ok().map(|h| h.base_offset) != Some(*base) {
                return Err(LogError(format!(
                    "segment data of uid {uid} at offset {base} does not match its index"
                )));
            }
        }
        Ok(batches)
    }

    fn delete(&self, key: PartitionKey) -> Result<(), LogError> {
        let meta = self.cf(CF_META);
        let Some(v) = self.db.get_cf(meta, meta_key(&key)).map_err(err)? else {
            return Ok(());
        };
        let uid = u64::from_be_bytes(v.as_slice().try_into().map_err(err)?);
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(self.cf(CF_INDEX), log_key(uid, 0), log_key(uid + 1, 0));
        wb.delete_range_cf(self.cf(CF_SEGMENTS), log_key(uid, 0), log_key(uid + 1, 0));
        wb.delete_cf(meta, meta_key(&key));
        wb.delete_cf(meta, epochs_key(uid));
        wb.delete_cf(meta, hw_key(uid));
        wb.delete_cf(meta, start_key(uid));
        wb.delete_cf(meta, recovery_key(uid));
        self.db.write(wb).map_err(err)?;
        self.summaries.forget(uid);
        self.segments.delete(uid)
    }

    fn segments(&self, uid: Uid) -> Result<Vec<SegmentInfo>, LogError> {
        self.segment_summaries(uid)
    }

    fn set_segment_policy(&self, uid: Uid, policy: SegmentPolicy) {
        self.segments.set_policy(uid, policy);
    }

    fn replace_segments(
        &self,
        uid: Uid,
        old: &[SegmentInfo],
        batches: &[Bytes],
    ) -> Result<(), LogError> {
        self.swap_segments(uid, old, batches)
    }

    fn offset_for_timestamp(
        &self,
        uid: Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, LogError> {
        self.find_timestamp(uid, from, timestamp)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let cf = self.cf(CF_INDEX);
        [
            ("live_data_bytes", "rocksdb.estimate-live-data-size"),
            ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
            ("sst_files_bytes", "rocksdb.total-sst-files-size"),
            ("running_compactions", "rocksdb.num-running-compactions"),
            (
                "pending_compaction_bytes",
                "rocksdb.estimate-pending-compaction-bytes",
            ),
        ]
        .into_iter()
        .filter_map(|(name, prop)| {
            self.db
                .property_int_value_cf(cf, prop)
                .ok()
                .flatten()
                .map(|v| (name, v))
        })
        .collect()
    }

    fn sync(&self) -> Result<(), LogError> {
        self.segments.sync_all()?;
        self.db.flush_wal(true).map_err(err)
    }

    fn checkpoint_recovery(&self, ends: &[(Uid, Offset)]) -> Result<(), LogError> {
        self.sync()?;
        let meta = self.cf(CF_META);
        let mut wb = WriteBatch::default();
        for (uid, end) in ends {
            wb.put_cf(meta, recovery_key(*uid), end.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(err)
    }
}

#[path = "rocks_clean.rs"]
mod clean;
#[path = "rocks_lifecycle.rs"]
mod lifecycle;
use lifecycle::Removal;

#[cfg(test)]
#[path = "rocks_tests.rs"]
mod tests;
