//! Retention on every replica, leader and follower alike: a task deletes each partition's
//! oldest closed segments once they are older than `retention.ms` (by their largest record
//! timestamp) or beyond `retention.bytes`, by moving the log start through the writer (one
//! RocksDB write removes their index entries with the new start; the files go after it).
//! What to delete is [`delete_point`], a pure function of the segments and the rules.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::model::Offset;

use crate::log::{LogStore, SegmentInfo};
use crate::partitions::Partitions;
use crate::replica::{Replica, now_ms};
use crate::writer::Writer;

/// Kafka's `log.retention.check.interval.ms` default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// A topic's deletion rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms` (`None`: forever).
    pub ms: Option<u64>,
    /// `retention.bytes` per partition (`None`: no limit).
    pub bytes: Option<u64>,
    /// `cleanup.policy` includes `delete`.
    pub delete: bool,
}

/// The new log start after deleting what `rules` allow of `segments` (oldest first, the last
/// one active), or `None` when nothing goes. Only whole closed segments ending at or below
/// `upper` (the high watermark: uncommitted data is never deleted) are candidates, from the
/// oldest on: each goes while it is older than `retention.ms` or while the partition without
/// it still holds at least `retention.bytes`.
pub fn delete_point(
    segments: &[SegmentInfo],
    rules: &Retention,
    now_ms: i64,
    upper: Offset,
) -> Option<Offset> {
    if !rules.delete || segments.len() < 2 {
        return None;
    }
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut start = None;
    for (s, next) in segments.iter().zip(&segments[1..]) {
        if s.next > upper {
            break;
        }
        let expired = rules
            .ms
            .is_some_and(|ms| s.max_timestamp < now_ms.saturating_sub(ms as i64));
        let oversize = rules.bytes.is_some_and(|b| total - s.bytes >= b);
        if !(expired || oversize) {
            break;
        }
        total -= s.bytes;
        start = Some(next.base);
    }
    start
}

/// Checks every hosted replica every `interval` until the node stops (the task is aborted).
pub async fn run(
    partitions: Arc<Partitions>,
    log: Arc<dyn LogStore>,
    writer: Writer,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for r in partitions.all() {
            if let Err(error) = enforce(&r, &log, &writer).await {
                tracing::warn!(topic = %r.topic, partition = r.partition(), %error, "retention check failed");
            }
        }
    }
}

/// Applies the replica's rules once; publishes its size.
async fn enforce(r: &Arc<Replica>, log: &Arc<dyn LogStore>, writer: &Writer) -> Result<(), String> {
    if r.is_deleted() {
        return Ok(());
    }
    let segments = {
        let (log, uid) = (log.clone(), r.uid);
        tokio::task::spawn_blocking(move || log.segments(uid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let size: u64 = segments.iter().map(|s| s.bytes).sum();
    let partition = r.partition().to_string();
    let Some(point) = delete_point(
        &segments,
        &r.retention(),
        now_ms() as i64,
        r.high_watermark(),
    )
    .filter(|p| *p > r.log_start()) else {
        metrics::gauge!("sluice_partition_bytes", "topic" => r.topic.clone(), "partition" => partition)
            .set(size as f64);
        return Ok(());
    };
    let freed: u64 = segments
        .iter()
        .take_while(|s| s.next <= point)
        .map(|s| s.bytes)
        .sum();
    let start = writer
        .delete_before(r.clone(), point)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(topic = %r.topic, partition = r.partition(), log_start = start, freed_bytes = freed, "retention deleted old segments");
    metrics::counter!("sluice_retention_deleted_bytes_total", "topic" => r.topic.clone())
        .increment(freed);
    metrics::gauge!("sluice_partition_bytes", "topic" => r.topic.clone(), "partition" => partition)
        .set((size - freed) as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: Offset, next: Offset, bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo {
            id: base as u64,
            base,
            next,
            bytes,
            max_timestamp: ts,
        }
    }

    fn rules(ms: Option<u64>, bytes: Option<u64>) -> Retention {
        Retention {
            ms,
            bytes,
            delete: true,
        }
    }

    /// Four segments of 100 bytes, timestamps 1000, 2000, 3000, 4000; the last is active.
    fn four() -> Vec<SegmentInfo> {
        (0..4)
            .map(|i| seg(i * 10, i * 10 + 10, 100, 1000 * (i + 1)))
            .collect()
    }

    #[test]
    fn time_deletes_the_closed_segments_older_than_retention() {
        let r = rules(Some(1500), None);
        assert_eq!(delete_point(&four(), &r, 3000, 40), Some(10));
        assert_eq!(delete_point(&four(), &r, 4400, 40), Some(20));
        assert_eq!(delete_point(&four(), &r, 2400, 40), None);
        assert_eq!(
            delete_point(&four(), &r, 1_000_000, 40),
            Some(30),
            "never the active segment"
        );
    }

    #[test]
    fn size_deletes_the_oldest_while_the_rest_still_holds_the_limit() {
        assert_eq!(
            delete_point(&four(), &rules(None, Some(250)), 0, 40),
            Some(10)
        );
        assert_eq!(
            delete_point(&four(), &rules(None, Some(200)), 0, 40),
            Some(20)
        );
        assert_eq!(
            delete_point(&four(), &rules(None, Some(0)), 0, 40),
            Some(30)
        );
        assert_eq!(delete_point(&four(), &rules(None, Some(400)), 0, 40), None);
    }

    #[test]
    fn nothing_above_the_high_watermark_and_nothing_without_delete_policy() {
        assert_eq!(
            delete_point(&four(), &rules(None, Some(0)), 0, 15),
            Some(10)
        );
        assert_eq!(delete_point(&four(), &rules(None, Some(0)), 0, 5), None);
        let compact = Retention {
            delete: false,
            ..rules(Some(0), Some(0))
        };
        assert_eq!(delete_point(&four(), &compact, 1_000_000, 40), None);
        assert_eq!(
            delete_point(&four()[..1], &rules(Some(0), Some(0)), 1_000_000, 40),
            None
        );
    }

    #[test]
    fn either_rule_extends_the_deleted_prefix() {
        // Time would delete one segment, size two: two go.
        let r = rules(Some(1500), Some(200));
        assert_eq!(delete_point(&four(), &r, 3000, 40), Some(20));
    }
}
