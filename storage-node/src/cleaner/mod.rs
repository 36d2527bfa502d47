//! Key compaction on every replica of a `compact` topic (leader and followers alike, as
//! retention): a task picks the closed segments that are committed (below the high watermark)
//! and older than `min.compaction.lag.ms`, and once `min.cleanable.dirty.ratio` of their bytes
//! was written since the last clean, reads them once to learn each key's last offset
//! ([`plan::OffsetMap`]), then rewrites them a group at a time and swaps each group in
//! (`LogStore::replace_segments`: one atomic index write), so memory holds the keys and one
//! group, not the section. Its disk traffic is capped (`--cleaner-io-bytes-per-sec`) so produce
//! latency holds while it works.

pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::model::Offset;

use crate::log::{LogStore, SegmentInfo, Uid};
use crate::partitions::Partitions;
use crate::replica::{Replica, now_ms};

/// Kafka's `log.cleaner.backoff.ms`: how often replicas are looked at.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default cap of the cleaner's reads plus writes.
pub const DEFAULT_IO_BYTES_PER_SEC: u64 = 64 << 20;
/// Bytes read per step of a section (each step waits its turn under the cap).
const READ_STEP: usize = 4 << 20;
/// Bytes of segments rewritten and swapped in at a time, so a pass holds at most this much
/// (plus the keys of the offset map) in memory however large the section.
const GROUP_BYTES: u64 = 64 << 20;

/// A topic's compaction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// `cleanup.policy` includes `compact`.
    pub enabled: bool,
    /// `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`.
    pub min_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`, in thousandths.
    pub dirty_ratio_permille: u16,
}

/// Spends a byte budget at a fixed rate (the cleaner runs on a blocking thread).
struct Throttle {
    per_sec: u64,
    since: Instant,
    spent: u64,
}

impl Throttle {
    fn new(per_sec: u64) -> Self {
        Self {
            per_sec: per_sec.max(1),
            since: Instant::now(),
            spent: 0,
        }
    }

    fn spend(&mut self, bytes: usize) {
        self.spent += bytes as u64;
        let due = Duration::from_secs_f64(self.spent as f64 / self.per_sec as f64);
        if let Some(wait) = (self.since + due).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A long idle spell does not bank a burst.
        if self.since.elapsed() > Duration::from_secs(1) + due {
            (self.since, self.spent) = (Instant::now(), 0);
        }
    }
}

/// The section a pass would clean: the closed, committed segments old enough, oldest first.
pub fn cleanable(
    segments: &[SegmentInfo],
    c: &Compaction,
    now_ms: i64,
    high_watermark: Offset,
) -> Vec<SegmentInfo> {
    let closed = &segments[..segments.len().saturating_sub(1)];
    let young = now_ms.saturating_sub(i64::try_from(c.min_lag_ms).unwrap_or(i64::MAX));
    closed
        .iter()
        .take_while(|s| s.next <= high_watermark && (c.min_lag_ms == 0 || s.max_timestamp < young))
        .copied()
        .collect()
}

/// Whether enough of `section` was written since the last clean (which ended at `cleaned`).
pub fn dirty_enough(section: &[SegmentInfo], cleaned: Offset, permille: u16) -> bool {
    let total: u64 = section.iter().map(|s| s.bytes).sum();
    let dirty: u64 = section
        .iter()
        .filter(|s| s.next > cleaned)
        .map(|s| s.bytes)
        .sum();
    dirty > 0 && dirty * 1000 >= total * u64::from(permille)
}

/// Cleans every compacted replica every `interval` until aborted.
pub async fn run(
    partitions: Arc<Partitions>,
    log: Arc<dyn LogStore>,
    interval: Duration,
    io_bytes_per_sec: u64,
) {
    let state = Arc::new(std::sync::Mutex::new((
        HashMap::<Uid, Offset>::new(),
        Throttle::new(io_bytes_per_sec),
    )));
    loop {
        tokio::time::sleep(interval).await;
        for r in partitions.all() {
            let c = r.compaction();
            if !c.enabled || r.is_deleted() {
                continue;
            }
            let (log, state, replica) = (log.clone(), state.clone(), r.clone());
            let pass = tokio::task::spawn_blocking(move || {
                let (cleaned_to, throttle) = &mut *state.lock().expect("poisoned");
                let done = cleaned_to.get(&replica.uid).copied().unwrap_or(-1);
                let result = clean_one(&replica, log.as_ref(), &c, done, throttle);
                if let Ok(Some(to)) = result {
                    cleaned_to.insert(replica.uid, to);
                }
                result
            })
            .await;
            let error = match pass {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            tracing::warn!(topic = %r.topic, partition = r.partition(), %error, "cleaning failed; retrying later");
        }
    }
}

/// Calls `each` with the section's batches from `from` to `to`, a read step at a time.
fn stream(
    log: &dyn LogStore,
    uid: Uid,
    (from, to): (Offset, Offset),
    throttle: &mut Throttle,
    mut each: impl FnMut(Vec<Bytes>) -> Result<(), String>,
) -> Result<usize, String> {
    let (mut at, mut read) = (from, 0);
    while at < to {
        let chunk = log
            .read(uid, at, to, READ_STEP)
            .map_err(|e| e.to_string())?;
        let Some(last) = chunk.last() else { break };
        at = sluice_proto::batch::BatchHeader::parse(last)
            .map_err(|e| e.to_string())?
            .next_offset();
        let bytes = chunk.iter().map(Bytes::len).sum();
        throttle.spend(bytes);
        read += bytes;
        each(chunk)?;
    }
    Ok(read)
}

/// One pass over one replica (blocking): the offset map of the whole section first, holding
/// only keys; then the section rewritten a group of segments at a time (at most
/// [`GROUP_BYTES`] read), each group swapped in by itself. Returns where the section ended when
/// it cleaned.
fn clean_one(
    r: &Replica,
    log: &dyn LogStore,
    c: &Compaction,
    cleaned: Offset,
    throttle: &mut Throttle,
) -> Result<Option<Offset>, String> {
    let uid = r.uid;
    let segments = log.segments(uid).map_err(|e| e.to_string())?;
    let section = cleanable(&segments, c, now_ms() as i64, r.high_watermark());
    if section.is_empty() || !dirty_enough(&section, cleaned, c.dirty_ratio_permille) {
        return Ok(None);
    }
    let (from, to) = (section[0].base, section[section.len() - 1].next);
    let started = Instant::now();
    let mut map = plan::OffsetMap::default();
    let mut read = stream(log, uid, (from, to), throttle, |chunk| {
        map.add(&chunk).map_err(|e| e.to_string())
    })?;
    let rules = plan::Rules {
        delete_retention_ms: c.delete_retention_ms,
        now_ms: now_ms() as i64,
    };
    let mut written = 0;
    for group in groups(&section) {
        let range = (group[0].base, group[group.len() - 1].next);
        let mut out = Vec::new();
        read += stream(log, uid, range, throttle, |chunk| {
            out.extend(map.clean(&chunk, &rules).map_err(|e| e.to_string())?);
            Ok(())
        })?;
        let bytes: usize = out.iter().map(Bytes::len).sum();
        throttle.spend(bytes);
        written += bytes;
        log.replace_segments(uid, group, &out)
            .map_err(|e| e.to_string())?;
    }
    let took = started.elapsed();
    tracing::info!(topic = %r.topic, partition = r.partition(), from, to, keys = map.keys(), read_bytes = read, written_bytes = written, took_ms = took.as_millis() as u64, "compacted");
    metrics::counter!("sluice_cleaner_read_bytes_total").increment(read as u64);
    metrics::counter!("sluice_cleaner_written_bytes_total").increment(written as u64);
    metrics::counter!("sluice_cleaner_passes_total").increment(1);
    Ok(Some(to))
}

/// Consecutive runs of `section` of at most [`GROUP_BYTES`] (at least one segment each).
fn groups(section: &[SegmentInfo]) -> Vec<&[SegmentInfo]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, s) in section.iter().enumerate() {
        if i > start && size + s.bytes > GROUP_BYTES {
            out.push(&section[start..i]);
            (start, size) = (i, 0);
        }
        size += s.bytes;
    }
    if start < section.len() {
        out.push(&section[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: Offset, next: Offset, bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo {
            id: (base as u64) << 8,
            base,
            next,
            bytes,
            max_timestamp: ts,
        }
    }

    fn rules(min_lag_ms: u64) -> Compaction {
        Compaction {
            enabled: true,
            delete_retention_ms: 0,
            min_lag_ms,
            dirty_ratio_permille: 500,
        }
    }

    #[test]
    fn the_section_is_closed_committed_and_old_enough() {
        let segs = [
            seg(0, 10, 100, 1000),
            seg(10, 20, 100, 2000),
            seg(20, 30, 100, 3000),
        ];
        let bases = |v: Vec<SegmentInfo>| v.iter().map(|s| s.base).collect::<Vec<_>>();
        assert_eq!(
            bases(cleanable(&segs, &rules(0), 0, 30)),
            vec![0, 10],
            "never the active one"
        );
        assert_eq!(
            bases(cleanable(&segs, &rules(0), 0, 15)),
            vec![0],
            "committed only"
        );
        assert_eq!(
            bases(cleanable(&segs, &rules(1500), 3000, 30)),
            vec![0],
            "old enough only"
        );
    }

    #[test]
    fn a_section_is_rewritten_in_groups_of_bounded_size() {
        let segs: Vec<SegmentInfo> = (0..5)
            .map(|i| seg(i * 10, i * 10 + 10, 30 << 20, 0))
            .collect();
        let sizes: Vec<usize> = groups(&segs).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let big = [seg(0, 10, 100 << 20, 0), seg(10, 20, 1, 0)];
        let sizes: Vec<usize> = groups(&big).iter().map(|g| g.len()).collect();
        assert_eq!(
            sizes,
            vec![1, 1],
            "a segment larger than a group goes alone"
        );
    }

    #[test]
    fn a_clean_waits_for_the_dirty_ratio() {
        let segs = [seg(0, 10, 100, 0), seg(10, 20, 100, 0), seg(20, 30, 100, 0)];
        assert!(dirty_enough(&segs, -1, 500), "never cleaned: all dirty");
        assert!(!dirty_enough(&segs, 30, 500), "nothing new");
        assert!(!dirty_enough(&segs, 20, 500), "a third is dirty");
        assert!(dirty_enough(&segs, 10, 500), "two thirds are");
    }
}
