//! Key compaction on every replica of a `compact` topic (leader and followers alike, as
//! retention): a task picks the closed segments that are committed (below the high watermark)
//! and older than `min.compaction.lag.ms`, and once `min.cleanable.dirty.ratio` of their bytes
//! was written since the last clean, rewrites them with [`plan::clean`] and swaps them in
//! (`LogStore::replace_segments`: one atomic index write). Its disk traffic is capped
//! (`--cleaner-io-bytes-per-sec`) so produce latency holds while it works.

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

/// Spends a byte budget at a fixed rate.
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

    async fn spend(&mut self, bytes: usize) {
        self.spent += bytes as u64;
        let due = Duration::from_secs_f64(self.spent as f64 / self.per_sec as f64);
        let at = self.since + due;
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
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
    let mut cleaned_to: HashMap<Uid, Offset> = HashMap::new();
    let mut throttle = Throttle::new(io_bytes_per_sec);
    loop {
        tokio::time::sleep(interval).await;
        for r in partitions.all() {
            let c = r.compaction();
            if !c.enabled || r.is_deleted() {
                continue;
            }
            let done = cleaned_to.get(&r.uid).copied().unwrap_or(-1);
            match clean_one(&r, &log, &c, done, &mut throttle).await {
                Ok(Some(to)) => {
                    cleaned_to.insert(r.uid, to);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(topic = %r.topic, partition = r.partition(), %error, "cleaning failed; retrying later")
                }
            }
        }
    }
}

/// One pass over one replica; the offset its section ended at when it cleaned.
async fn clean_one(
    r: &Arc<Replica>,
    log: &Arc<dyn LogStore>,
    c: &Compaction,
    cleaned: Offset,
    throttle: &mut Throttle,
) -> Result<Option<Offset>, String> {
    let uid = r.uid;
    let segments = blocking(log, move |l| l.segments(uid)).await?;
    let section = cleanable(&segments, c, now_ms() as i64, r.high_watermark());
    if section.is_empty() || !dirty_enough(&section, cleaned, c.dirty_ratio_permille) {
        return Ok(None);
    }
    let (from, to) = (section[0].base, section[section.len() - 1].next);
    let started = Instant::now();
    let mut batches: Vec<Bytes> = Vec::new();
    let mut at = from;
    while at < to {
        let chunk = blocking(log, move |l| l.read(uid, at, to, READ_STEP)).await?;
        let Some(last) = chunk.last() else { break };
        at = sluice_proto::batch::BatchHeader::parse(last)
            .map_err(|e| e.to_string())?
            .next_offset();
        throttle.spend(chunk.iter().map(Bytes::len).sum()).await;
        batches.extend(chunk);
    }
    let rules = plan::Rules {
        delete_retention_ms: c.delete_retention_ms,
        now_ms: now_ms() as i64,
    };
    let read: usize = batches.iter().map(Bytes::len).sum();
    let out = tokio::task::spawn_blocking(move || plan::clean(&batches, &rules))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let written: usize = out.iter().map(Bytes::len).sum();
    throttle.spend(written).await;
    blocking(log, move |l| l.replace_segments(uid, &section, &out)).await?;
    let took = started.elapsed();
    tracing::info!(topic = %r.topic, partition = r.partition(), from, to, read_bytes = read, written_bytes = written, took_ms = took.as_millis() as u64, "compacted");
    metrics::counter!("sluice_cleaner_read_bytes_total").increment(read as u64);
    metrics::counter!("sluice_cleaner_written_bytes_total").increment(written as u64);
    metrics::counter!("sluice_cleaner_passes_total").increment(1);
    Ok(Some(to))
}

async fn blocking<T: Send + 'static>(
    log: &Arc<dyn LogStore>,
    f: impl FnOnce(&dyn LogStore) -> Result<T, crate::log::LogError> + Send + 'static,
) -> Result<T, String> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || f(log.as_ref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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
    fn a_clean_waits_for_the_dirty_ratio() {
        let segs = [seg(0, 10, 100, 0), seg(10, 20, 100, 0), seg(20, 30, 100, 0)];
        assert!(dirty_enough(&segs, -1, 500), "never cleaned: all dirty");
        assert!(!dirty_enough(&segs, 30, 500), "nothing new");
        assert!(!dirty_enough(&segs, 20, 500), "a third is dirty");
        assert!(dirty_enough(&segs, 10, 500), "two thirds are");
    }
}
