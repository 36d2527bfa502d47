//! Recovery checkpoints: every interval the node flushes its logs to disk and records each
//! replica's log end as its recovery point (as Kafka's recovery-point checkpoint), so a restart
//! after a crash verifies only the batches written since (see `RocksLog::recover`). A graceful
//! stop records one last checkpoint, and the next start verifies nothing.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::model::Offset;

use crate::log::{LogStore, Uid};
use crate::partitions::Partitions;
use crate::replica::Replica;

/// Kafka's `log.flush.offset.checkpoint.interval.ms` default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Each replica's uid and log end now.
pub fn ends(replicas: &[Arc<Replica>]) -> Vec<(Uid, Offset)> {
    replicas.iter().map(|r| (r.uid, r.log_end())).collect()
}

/// Records a checkpoint every `interval` until aborted.
pub async fn run_checkpoints(
    partitions: Arc<Partitions>,
    log: Arc<dyn LogStore>,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let ends = ends(&partitions.all());
        let log = log.clone();
        let done = tokio::task::spawn_blocking(move || log.checkpoint_recovery(&ends)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "recovery checkpoint failed"),
            Err(error) => tracing::warn!(%error, "recovery checkpoint task failed"),
        }
    }
}
