//! The RocksDB log: one database per node, column family `log` holding one record batch per
//! value under `uid (8 bytes BE) | base offset (8 bytes BE)`, so a fetch is one seek plus a
//! forward scan and the bytes go out as stored; column family `meta` maps partitions to uids.
//! The write-ahead log is on, so every acknowledged append survives a SIGKILL of the process.

use std::path::Path;

use bytes::Bytes;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::{Offset, TopicId};

use super::{
    EpochEntry, LogError, LogOp, LogStore, OpenedLog, PartitionKey, Uid, decode_epochs,
    encode_epochs, epochs_from_batches,
};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
/// `meta` key prefix of partition → uid mappings: `p | topic id (16) | partition (4 BE)`.
const META_PARTITION: u8 = b'p';
/// `meta` key prefix of leader-epoch histories: `e | uid (8 BE)`.
const META_EPOCHS: u8 = b'e';
/// `meta` key prefix of high-watermark checkpoints: `h | uid (8 BE)`.
const META_HW: u8 = b'h';
/// `meta` key holding the last uid handed out.
const META_LAST_UID: &[u8] = b"last_uid";

/// A [`LogStore`] on RocksDB.
pub struct RocksLog {
    db: DB,
    /// Fsync the WAL in every append (group commit shares one fsync among concurrent appends).
    sync_appends: bool,
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

fn next_offset(batch: &[u8]) -> Result<Offset, LogError> {
    BatchHeader::parse(batch)
        .map(|h| h.next_offset())
        .map_err(err)
}

impl RocksLog {
    /// Opens (creating when missing) the node's database under `dir`. With `sync_appends`,
    /// an append returns only once its WAL record is fsynced (survives power loss); without,
    /// once it is in the OS page cache (survives a process crash).
    pub fn open(dir: &Path, sync_appends: bool) -> Result<Self, LogError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // The `meta` family takes few, small writes and would rarely flush on its own, pinning
        // every WAL file since its last flush (4 GB of WAL after 2 GB appended). Past this total
        // RocksDB flushes it, so old WAL files go.
        opts.set_max_total_wal_size(256 << 20);
        let mut log_opts = Options::default();
        // Batches arrive compressed by producers; compressing again costs CPU for little gain.
        log_opts.set_compression_type(rocksdb::DBCompressionType::None);
        log_opts.set_write_buffer_size(64 << 20);
        // Batches are large values under small keys: keep them in blob files so compaction moves
        // 16-byte keys instead of rewriting every batch at each level (it cost ~15 % of a core
        // under W1). Tiny batches (a lone record) stay inline. Garbage collection reclaims blob
        // files whose batches were truncated or deleted.
        log_opts.set_enable_blob_files(true);
        log_opts.set_min_blob_size(4096);
        log_opts.set_blob_file_size(256 << 20);
        log_opts.set_blob_compression_type(rocksdb::DBCompressionType::None);
        log_opts.set_enable_blob_gc(true);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_LOG, log_opts),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(err)?;
        Ok(Self { db, sync_appends })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn bounds(&self, uid: Uid) -> Result<(Offset, Offset), LogError> {
        let cf = self.cf(CF_LOG);
        let first = self
            .db
            .iterator_cf(cf, IteratorMode::From(&log_key(uid, 0), Direction::Forward))
            .next()
            .transpose()
            .map_err(err)?
            .and_then(|(k, _)| parse_log_key(&k).filter(|(u, _)| *u == uid));
        let Some((_, start)) = first else {
            return Ok((0, 0));
        };
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
            Some((k, v)) if parse_log_key(&k).is_some_and(|(u, _)| u == uid) => next_offset(&v)?,
            _ => start,
        };
        Ok((start, end))
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
        let (log_start, log_end) = self.bounds(uid)?;
        let epochs = self.load_epochs(uid, log_start, log_end)?;
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
        let (cf, meta) = (self.cf(CF_LOG), self.cf(CF_META));
        let mut wb = WriteBatch::default();
        for op in ops {
            match op {
                LogOp::Append(a) => wb.put_cf(cf, log_key(a.uid, a.base_offset), a.batch),
                LogOp::TruncateFrom { uid, from } => {
                    wb.delete_range_cf(cf, log_key(*uid, *from), log_key(uid + 1, 0))
                }
                LogOp::PutHighWatermark { uid, offset } => {
                    wb.put_cf(meta, hw_key(*uid), offset.to_be_bytes())
                }
                LogOp::PutEpochs { uid, epochs } => {
                    wb.put_cf(meta, epochs_key(*uid), encode_epochs(epochs))
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_appends);
        self.db.write_opt(wb, &wo).map_err(err)
    }

    fn read(
        &self,
        uid: Uid,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, LogError> {
        let cf = self.cf(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(uid + 1, 0).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        // The batch holding `from` may start before it.
        it.seek_for_prev(log_key(uid, from));
        let holds_from = match (it.key().and_then(parse_log_key), it.value()) {
            (Some((u, _)), Some(v)) if u == uid => next_offset(v)? > from,
            _ => false,
        };
        if !holds_from {
            it.seek(log_key(uid, from));
        }
        let mut out = Vec::new();
        let mut size = 0;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if parse_log_key(k).is_none_or(|(u, _)| u != uid) || next_offset(v)? > limit {
                break;
            }
            if !out.is_empty() && size + v.len() > max_bytes {
                break;
            }
            size += v.len();
            out.push(Bytes::copy_from_slice(v));
            it.next();
        }
        it.status().map_err(err)?;
        Ok(out)
    }

    fn delete(&self, key: PartitionKey) -> Result<(), LogError> {
        let meta = self.cf(CF_META);
        let Some(v) = self.db.get_cf(meta, meta_key(&key)).map_err(err)? else {
            return Ok(());
        };
        let uid = u64::from_be_bytes(v.as_slice().try_into().map_err(err)?);
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(self.cf(CF_LOG), log_key(uid, 0), log_key(uid + 1, 0));
        wb.delete_cf(meta, meta_key(&key));
        wb.delete_cf(meta, epochs_key(uid));
        wb.delete_cf(meta, hw_key(uid));
        self.db.write(wb).map_err(err)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let cf = self.cf(CF_LOG);
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
        self.db.flush_wal(true).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    crate::log_store_conformance!(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        (super::RocksLog::open(dir.path(), false).expect("open"), dir)
    });

    #[test]
    fn appended_batches_survive_reopen() {
        use super::super::{Append, LogStore, PartitionKey};
        let dir = tempfile::tempdir().unwrap();
        let key = PartitionKey {
            topic_id: sluice_proto::model::TopicId([1; 16]),
            partition: 0,
        };
        let batch = super::super::conformance::batch(0, 3);
        {
            let log = super::RocksLog::open(dir.path(), false).unwrap();
            let uid = log.open(key).unwrap().uid;
            log.append(&[Append {
                uid,
                base_offset: 0,
                batch: &batch,
            }])
            .unwrap();
        }
        let log = super::RocksLog::open(dir.path(), false).unwrap();
        let opened = log.open(key).unwrap();
        assert_eq!((opened.log_start, opened.log_end), (0, 3));
        assert_eq!(
            log.read(opened.uid, 0, 3, 1 << 20).unwrap()[0].as_ref(),
            batch.as_ref()
        );
    }
}
