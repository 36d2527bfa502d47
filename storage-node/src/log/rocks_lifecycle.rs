//! The parts of [`RocksLog`] that change a log's shape rather than append to it: segment
//! summaries kept right through truncations, the log start moved by retention and
//! DeleteRecords, and the lookups retention and offset-by-time make on the summaries.

use rocksdb::{ReadOptions, WriteBatch};
use sluice_proto::model::Offset;

use super::{
    CF_INDEX, CF_META, CF_SEGMENTS, RocksLog, decode_entry, entry_max_timestamp, err, log_key,
    parse_log_key, recovery_key, start_key,
};
use crate::log::segment_index::{self, Placed};
use crate::log::{LogError, LogOp, LogStore, SegmentInfo, Uid};

/// Segment files a write leaves without batches, removed once it is committed.
pub(super) enum Removal {
    /// Those after the last remaining batch's segment (a truncation).
    After,
    /// Those before this segment, or all of them when `None` (the log start moved).
    Before(Option<u64>),
}

impl RocksLog {
    pub(super) fn put_summary(&self, wb: &mut WriteBatch, uid: Uid, s: &SegmentInfo) {
        wb.put_cf(
            self.cf(CF_SEGMENTS),
            log_key(uid, s.id as Offset),
            segment_index::encode(s),
        );
    }

    /// The summary of segment `id` of the replica as stored (cached for the active one).
    pub(super) fn active_summary(
        &self,
        uid: Uid,
        id: u64,
    ) -> Result<Option<SegmentInfo>, LogError> {
        if let Some(s) = self.summaries.get(uid).filter(|s| s.id == id) {
            return Ok(Some(s));
        }
        self.db
            .get_cf(self.cf(CF_SEGMENTS), log_key(uid, id as Offset))
            .map_err(err)?
            .map(|v| segment_index::decode(id, &v))
            .transpose()
    }

    /// Index entries of `uid` from `from` on, in order: (base, entry bytes).
    fn entries_from(&self, uid: Uid, from: Offset) -> rocksdb::DBRawIterator<'_> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(uid + 1, 0).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_INDEX), ro);
        it.seek(log_key(uid, from));
        it
    }

    /// The batch holding `offset`, or else the first one after it: (base, segment).
    fn first_batch_from(
        &self,
        uid: Uid,
        offset: Offset,
    ) -> Result<Option<(Offset, u64)>, LogError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_INDEX));
        it.seek_for_prev(log_key(uid, offset));
        if let (Some((u, base)), Some(v)) = (it.key().and_then(parse_log_key), it.value())
            && u == uid
        {
            let (loc, next) = decode_entry(v)?;
            if next > offset {
                return Ok(Some((base, loc.segment)));
            }
        }
        let it = self.entries_from(uid, offset);
        match (it.key().and_then(parse_log_key), it.value()) {
            (Some((u, base)), Some(v)) if u == uid => Ok(Some((base, decode_entry(v)?.0.segment))),
            _ => {
                it.status().map_err(err)?;
                Ok(None)
            }
        }
    }

    /// Adds to `wb` what a truncation from `from` does to the segment summaries: those of
    /// segments left without batches go, and the last remaining one is recomputed from its
    /// entries below `from`.
    pub(super) fn truncate_summaries(
        &self,
        wb: &mut WriteBatch,
        uid: Uid,
        from: Offset,
    ) -> Result<(), LogError> {
        let segs = self.cf(CF_SEGMENTS);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_INDEX));
        it.seek_for_prev(log_key(uid, (from - 1).max(0)));
        let last_kept = match (it.key().and_then(parse_log_key), it.value()) {
            (Some((u, base)), Some(v)) if u == uid && base < from => Some(decode_entry(v)?.0),
            _ => None,
        };
        let Some(kept) = last_kept else {
            wb.delete_range_cf(segs, log_key(uid, 0), log_key(uid + 1, 0));
            return Ok(());
        };
        wb.delete_range_cf(
            segs,
            log_key(uid, kept.segment as Offset + 1),
            log_key(uid + 1, 0),
        );
        let start = match self.active_summary(uid, kept.segment)? {
            Some(s) => s.base,
            None => crate::log::segments::id_base(kept.segment) as Offset,
        };
        let mut summary = None;
        let mut it = self.entries_from(uid, start);
        while let (Some((u, base)), Some(v)) = (it.key().and_then(parse_log_key), it.value()) {
            let (loc, next) = decode_entry(v)?;
            if u != uid || base >= from || loc.segment != kept.segment {
                break;
            }
            let placed = Placed {
                loc,
                base,
                next,
                max_timestamp: entry_max_timestamp(v),
            };
            summary = Some(segment_index::fold(summary, &placed));
            it.next();
        }
        it.status().map_err(err)?;
        if let Some(s) = summary {
            self.put_summary(wb, uid, &s);
        }
        Ok(())
    }

    /// Adds to `wb` the move of the log start to `offset`; returns the segment of the first
    /// batch kept (`None`: none is, the log continues empty at `offset`).
    pub(super) fn delete_before(
        &self,
        wb: &mut WriteBatch,
        uid: Uid,
        offset: Offset,
    ) -> Result<Option<u64>, LogError> {
        let (index, segs) = (self.cf(CF_INDEX), self.cf(CF_SEGMENTS));
        wb.put_cf(self.cf(CF_META), start_key(uid), offset.to_be_bytes());
        let Some((base, segment)) = self.first_batch_from(uid, offset)? else {
            wb.delete_range_cf(index, log_key(uid, 0), log_key(uid + 1, 0));
            wb.delete_range_cf(segs, log_key(uid, 0), log_key(uid + 1, 0));
            return Ok(None);
        };
        wb.delete_range_cf(index, log_key(uid, 0), log_key(uid, base));
        wb.delete_range_cf(segs, log_key(uid, 0), log_key(uid, segment as Offset));
        if let Some(mut s) = self.active_summary(uid, segment)?
            && s.base < base
        {
            s.base = base;
            self.put_summary(wb, uid, &s);
        }
        Ok(Some(segment))
    }

    /// Checks the batches written after the replica's recovery point (all of them when it has
    /// none): each must lie inside its segment file and pass its CRC. A crash before the page
    /// cache reached the disk can leave either wrong; the log is cut before the first bad
    /// batch (the replica re-fetches the rest from its leader). Returns the log end after.
    pub(super) fn recover(&self, uid: Uid, start: Offset, end: Offset) -> Result<Offset, LogError> {
        let point = match self
            .db
            .get_cf(self.cf(CF_META), recovery_key(uid))
            .map_err(err)?
        {
            Some(v) => i64::from_be_bytes(v.as_slice().try_into().map_err(err)?).max(start),
            None => start,
        };
        if point >= end {
            return Ok(end);
        }
        let Some((first, _)) = self.first_batch_from(uid, point)? else {
            return Ok(end);
        };
        let mut it = self.entries_from(uid, first);
        let mut lengths: std::collections::HashMap<u64, u64> = Default::default();
        let mut damage = None;
        while let (Some((u, base)), Some(v)) = (it.key().and_then(parse_log_key), it.value()) {
            if u != uid {
                break;
            }
            let (loc, _) = decode_entry(v)?;
            let len = *lengths
                .entry(loc.segment)
                .or_insert_with(|| self.segments.file_len(uid, loc.segment));
            let problem = if len < loc.pos + u64::from(loc.len) {
                Some(format!(
                    "its index entry points to bytes {}..{} of a {len}-byte segment file",
                    loc.pos,
                    loc.pos + u64::from(loc.len)
                ))
            } else {
                match self.segments.read(uid, &[loc]) {
                    Err(e) => Some(e.to_string()),
                    Ok(b) => match sluice_proto::batch::validate_stored(&b[0]) {
                        Ok(h) if h.base_offset == base => None,
                        Ok(h) => Some(format!("it holds base offset {}", h.base_offset)),
                        Err(e) => Some(e.to_string()),
                    },
                }
            };
            if let Some(problem) = problem {
                damage = Some((base, problem));
                break;
            }
            it.next();
        }
        it.status().map_err(err)?;
        let Some((from, problem)) = damage else {
            return Ok(end);
        };
        tracing::warn!(uid, from, old_end = end, %problem, "damaged log tail (written shortly before a crash, not yet on disk): truncating to the last valid batch; the replica re-fetches the rest from its leader");
        self.write(&[LogOp::TruncateFrom { uid, from }])?;
        Ok(from.max(start))
    }

    /// Every stored segment summary of the replica, oldest first.
    pub(super) fn segment_summaries(&self, uid: Uid) -> Result<Vec<SegmentInfo>, LogError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(uid + 1, 0).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_SEGMENTS), ro);
        it.seek(log_key(uid, 0));
        let mut out = Vec::new();
        while let (Some((u, id)), Some(v)) = (it.key().and_then(parse_log_key), it.value()) {
            if u != uid {
                break;
            }
            let cached = self.summaries.get(uid).filter(|s| s.id == id as u64);
            out.push(match cached {
                Some(s) => s,
                None => segment_index::decode(id as u64, v)?,
            });
            it.next();
        }
        it.status().map_err(err)?;
        Ok(out)
    }

    /// See [`crate::log::LogStore::offset_for_timestamp`]: segments whose records are all
    /// older are skipped by their summary; inside the first that is not, the index entries
    /// (which carry each batch's largest timestamp) are scanned.
    pub(super) fn find_timestamp(
        &self,
        uid: Uid,
        from: Offset,
        timestamp: i64,
    ) -> Result<Option<Offset>, LogError> {
        let summaries = self.segment_summaries(uid)?;
        let Some(first) = summaries
            .iter()
            .find(|s| s.next > from && s.max_timestamp >= timestamp)
        else {
            return Ok(None);
        };
        let mut it = self.entries_from(uid, first.base.max(0));
        while let (Some((u, base)), Some(v)) = (it.key().and_then(parse_log_key), it.value()) {
            if u != uid {
                break;
            }
            let (_, next) = decode_entry(v)?;
            if next > from && entry_max_timestamp(v) >= timestamp {
                return Ok(Some(base));
            }
            it.next();
        }
        it.status().map_err(err)?;
        Ok(None)
    }
}
