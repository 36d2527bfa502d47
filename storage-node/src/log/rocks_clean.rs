//! The cleaner's swap: closed segments replaced by new files holding their cleaned batches,
//! in one atomic index write, and leftover files (of a swap a crash interrupted) collected
//! when a log is opened.

use std::fs::OpenOptions;
use std::io::Write;

use bytes::Bytes;
use rocksdb::{WriteBatch, WriteOptions};
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::Offset;

use super::{CF_INDEX, CF_META, CF_SEGMENTS, RocksLog, encode_entry, err, log_key, start_key};
use crate::log::segment_index::{self, Placed};
use crate::log::segments::{Location, file_segment_id, generation, segment_id};
use crate::log::{LogError, SegmentInfo, Uid};

impl RocksLog {
    pub(super) fn swap_segments(
        &self,
        uid: Uid,
        old: &[SegmentInfo],
        batches: &[Bytes],
    ) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (old.first(), old.last()) else {
            return Ok(());
        };
        let _reshaping = self.reshape.lock().expect("poisoned");
        let current = self.segment_summaries(uid)?;
        let at = current.iter().position(|s| s.id == first.id);
        let matches = at.is_some_and(|i| {
            current.get(i..i + old.len()) == Some(old) && i + old.len() < current.len()
        });
        if !matches {
            return Err(LogError(format!(
                "segments of uid {uid} changed while they were cleaned; cleaning again later"
            )));
        }
        let next_gen = old
            .iter()
            .map(|s| generation(s.id))
            .max()
            .unwrap_or(0)
            .wrapping_add(1);
        // Group the batches into files of at most the replica's segment size.
        let limit = self.segments.policy(uid).bytes;
        let mut files: Vec<Vec<&Bytes>> = Vec::new();
        let mut size = u64::MAX;
        for b in batches {
            if size.saturating_add(b.len() as u64) > limit {
                files.push(Vec::new());
                size = 0;
            }
            size += b.len() as u64;
            files.last_mut().expect("pushed above").push(b);
        }
        let mut wb = WriteBatch::default();
        let (index, segs) = (self.cf(CF_INDEX), self.cf(CF_SEGMENTS));
        // The log start stays where it is when the first batches go.
        if self.stored_start(uid)?.is_none() {
            let start = current[0].base;
            wb.put_cf(self.cf(CF_META), start_key(uid), start.to_be_bytes());
        }
        wb.delete_range_cf(index, log_key(uid, first.base), log_key(uid, last.next));
        for s in old {
            wb.delete_cf(segs, log_key(uid, s.id as Offset));
        }
        let mut written = Vec::new();
        let result = (|| {
            for file in &files {
                let h0 = BatchHeader::parse(file[0]).map_err(err)?;
                let id = segment_id(h0.base_offset as u64, next_gen);
                if old.iter().any(|s| s.id == id) {
                    return Err(LogError(format!(
                        "segment id {id} of uid {uid} is still taken; cleaning again later"
                    )));
                }
                let path = self.segments.path(uid, id);
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| LogError(format!("creating {}: {e}", path.display())))?;
                written.push(id);
                let mut summary = None;
                let mut pos = 0u64;
                for b in file {
                    f.write_all(b)
                        .map_err(|e| LogError(format!("writing {}: {e}", path.display())))?;
                    let h = BatchHeader::parse(b).map_err(err)?;
                    let loc = Location {
                        segment: id,
                        pos,
                        len: b.len() as u32,
                    };
                    pos += b.len() as u64;
                    let next = h.next_offset();
                    wb.put_cf(
                        index,
                        log_key(uid, h.base_offset),
                        encode_entry(loc, next, h.max_timestamp),
                    );
                    let placed = Placed {
                        loc,
                        base: h.base_offset,
                        next,
                        max_timestamp: h.max_timestamp,
                    };
                    summary = Some(segment_index::fold(summary, &placed));
                }
                f.sync_data()
                    .map_err(|e| LogError(format!("syncing {}: {e}", path.display())))?;
                if let Some(s) = summary {
                    self.put_summary(&mut wb, uid, &s);
                }
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db.write_opt(wb, &wo).map_err(err)
        })();
        if let Err(e) = result {
            for id in written {
                let _ = std::fs::remove_file(self.segments.path(uid, id));
            }
            return Err(e);
        }
        let ids: Vec<u64> = old.iter().map(|s| s.id).collect();
        self.segments.remove_files(uid, &ids)
    }

    /// Removes segment files of `uid` that no summary names: what a swap (or an append) left
    /// when a crash cut it short. Called when a log is opened, before anything appends to it.
    pub(super) fn collect_leftovers(&self, uid: Uid) -> Result<(), LogError> {
        let known: std::collections::HashSet<u64> =
            self.segment_summaries(uid)?.iter().map(|s| s.id).collect();
        let Ok(entries) = std::fs::read_dir(self.segments.path(uid, 0).parent().expect("a dir"))
        else {
            return Ok(());
        };
        let stray: Vec<u64> = entries
            .flatten()
            .filter_map(|e| file_segment_id(&e.file_name()))
            .filter(|id| !known.contains(id))
            .collect();
        if !stray.is_empty() {
            tracing::info!(
                uid,
                files = stray.len(),
                "removing segment files no index names (left by an interrupted clean)"
            );
        }
        self.segments.remove_files(uid, &stray)
    }
}
