//! Free space on the data volume. A monitor samples it often; while it is below the threshold
//! (`--min-free-bytes`, or `--min-free-percent` of the volume when that is less), the node
//! refuses produce requests with `STORAGE_FULL` and its followers stop appending replicated
//! data, but reads go on. It resumes by itself once retention, DeleteRecords or an operator
//! frees space. Refusing early keeps the disk from filling: a write that fails with `ENOSPC`
//! loses nothing (the index never names bytes that were not written), but RocksDB stops taking
//! writes after one until restarted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sluice_proto::error::ApiError;
use sluice_proto::pb::ErrorCode;

/// How often free space is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The free space a node keeps on its data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinFree {
    /// Bytes.
    pub bytes: u64,
    /// Percent of the volume.
    pub percent: u8,
}

impl Default for MinFree {
    fn default() -> Self {
        Self {
            bytes: 1 << 30,
            percent: 5,
        }
    }
}

impl MinFree {
    /// The threshold on a volume of `total` bytes: the lesser of the two, so a small volume is
    /// not refused outright and a large one does not keep a needless 5 %.
    pub fn threshold(&self, total: u64) -> u64 {
        self.bytes.min(total / 100 * u64::from(self.percent))
    }
}

/// The data volume's state as last sampled.
#[derive(Debug)]
pub struct DiskSpace {
    min_free: MinFree,
    full: AtomicBool,
    free: AtomicU64,
    threshold: AtomicU64,
}

impl DiskSpace {
    /// Not full until the first sample says otherwise.
    pub fn new(min_free: MinFree) -> Self {
        Self {
            min_free,
            full: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            threshold: AtomicU64::new(0),
        }
    }

    /// Records a sample; logs when the volume turns full or has room again.
    pub fn update(&self, free: u64, total: u64) {
        let threshold = self.min_free.threshold(total);
        self.free.store(free, Ordering::Relaxed);
        self.threshold.store(threshold, Ordering::Relaxed);
        let full = free < threshold;
        if self.full.swap(full, Ordering::AcqRel) != full {
            if full {
                tracing::warn!(
                    free,
                    threshold,
                    "data volume is full: refusing produce and replication appends until space is freed"
                );
            } else {
                tracing::info!(
                    free,
                    threshold,
                    "data volume has room again: accepting writes"
                );
            }
        }
    }

    /// Whether writes are refused now.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// `STORAGE_FULL` when the volume is full.
    pub fn check(&self, node_id: i32) -> Result<(), ApiError> {
        if !self.is_full() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::StorageFull,
            format!(
                "storage node {node_id}'s data volume has {} bytes free, below the {} it keeps free: \
                 lower retention.ms or retention.bytes, delete records, or grow the volume; writes \
                 resume by themselves once there is room",
                self.free.load(Ordering::Relaxed),
                self.threshold.load(Ordering::Relaxed)
            ),
        ))
    }
}

/// Samples the volume holding `dir` until aborted.
pub async fn run_monitor(disk: std::sync::Arc<DiskSpace>, dir: PathBuf) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tick.tick().await;
        match rustix::fs::statvfs(&dir) {
            Ok(v) => disk.update(v.f_bavail * v.f_frsize, v.f_blocks * v.f_frsize),
            Err(error) => tracing::warn!(%error, "sampling the data volume's free space failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_lesser_of_bytes_and_percent_and_refusal_follows_samples() {
        let m = MinFree::default();
        assert_eq!(m.threshold(1 << 40), 1 << 30);
        assert_eq!(m.threshold(10 << 30), (10u64 << 30) / 100 * 5);
        let d = DiskSpace::new(MinFree {
            bytes: 100,
            percent: 50,
        });
        assert!(d.check(1).is_ok(), "not full before a sample");
        d.update(99, 1000);
        let e = d.check(1).unwrap_err();
        assert_eq!(e.code, ErrorCode::StorageFull);
        assert!(e.message.contains("99 bytes free"), "{e}");
        d.update(100, 1000);
        assert!(d.check(1).is_ok());
    }
}
