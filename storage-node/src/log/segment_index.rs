//! One summary record per segment (column family `segments`): `uid (8 BE) | segment id (8 BE)`
//! → where its first remaining batch starts, the offset after its last batch, its size and its
//! largest record timestamp. Written in the same atomic write as the index entries of the
//! batches it summarises, so retention reads a partition's segments without scanning its index,
//! and a lookup by time skips every segment whose records are all older than the timestamp
//! (the sparse time index: one entry per segment; inside the chosen segment the index entries
//! carry each batch's largest timestamp).
//!
//! The active segment's summary is kept in memory between writes ([`ActiveSummaries`]), so an
//! append costs one small extra put per replica and write, and no read.

use std::collections::HashMap;
use std::sync::Mutex;

use sluice_proto::model::Offset;

use super::segments::Location;
use super::{LogError, SegmentInfo, Uid};

/// The record of one segment.
pub fn encode(s: &SegmentInfo) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..8].copy_from_slice(&s.base.to_be_bytes());
    v[8..16].copy_from_slice(&s.next.to_be_bytes());
    v[16..24].copy_from_slice(&s.bytes.to_be_bytes());
    v[24..].copy_from_slice(&s.max_timestamp.to_be_bytes());
    v
}

/// Inverse of [`encode`], for segment `id`.
pub fn decode(id: u64, v: &[u8]) -> Result<SegmentInfo, LogError> {
    if v.len() != 32 {
        return Err(LogError(format!(
            "corrupt segment record of {} bytes",
            v.len()
        )));
    }
    let at = |i: usize| i64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
    Ok(SegmentInfo {
        id,
        base: at(0),
        next: at(8),
        bytes: at(16) as u64,
        max_timestamp: at(24),
    })
}

/// A batch that was just placed, as far as its segment's summary is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    /// Where it sits.
    pub loc: Location,
    /// Its base offset.
    pub base: Offset,
    /// The offset after it.
    pub next: Offset,
    /// Its largest record timestamp.
    pub max_timestamp: i64,
}

/// Folds `b` into the summary of its segment (`None`: the segment's first batch).
pub fn fold(summary: Option<SegmentInfo>, b: &Placed) -> SegmentInfo {
    let end = b.loc.pos + u64::from(b.loc.len);
    match summary {
        Some(s) if s.id == b.loc.segment => SegmentInfo {
            next: b.next,
            bytes: s.bytes.max(end),
            max_timestamp: s.max_timestamp.max(b.max_timestamp),
            ..s
        },
        _ => SegmentInfo {
            id: b.loc.segment,
            base: b.base,
            next: b.next,
            bytes: end,
            max_timestamp: b.max_timestamp,
        },
    }
}

/// The summary of each replica's active segment as last written.
#[derive(Default)]
pub struct ActiveSummaries {
    by_uid: Mutex<HashMap<Uid, SegmentInfo>>,
}

impl ActiveSummaries {
    /// The cached summary of the replica's active segment.
    pub fn get(&self, uid: Uid) -> Option<SegmentInfo> {
        self.by_uid.lock().expect("poisoned").get(&uid).copied()
    }

    /// Records what a successful write stored.
    pub fn set(&self, uid: Uid, s: SegmentInfo) {
        self.by_uid.lock().expect("poisoned").insert(uid, s);
    }

    /// Forgets the replica's summary (after a failed write, a truncation or a deletion): the
    /// next append reads it from the database.
    pub fn forget(&self, uid: Uid) {
        self.by_uid.lock().expect("poisoned").remove(&uid);
    }
}
