//! Prometheus metrics of a storage node (exported by the binary's `--metrics-listen`; without
//! an installed recorder every call here is a no-op).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sluice_requests_total`, `sluice_request_duration_seconds` | see [`sluice_proto::server`] | `api`, `code` |
//! | `sluice_produce_bytes_total`, `sluice_fetch_bytes_total` | counter | `topic` |
//! | `sluice_partition_log_end_offset`, `sluice_partition_high_watermark`, `sluice_partition_isr_size` | gauge | `topic`, `partition` (leaders only) |
//! | `sluice_under_replicated_partitions`, `sluice_leader_partitions` | gauge | - |
//! | `sluice_rocksdb_*` | gauge | - |
//! | `sluice_data_volume_free_bytes`, `sluice_data_volume_bytes` | gauge | - (the file system holding the data directory; free as an unprivileged writer sees it) |
//! | `sluice_partition_bytes` | gauge | `topic`, `partition` (every replica; set by each retention pass, see `retention`) |
//! | `sluice_retention_deleted_bytes_total` | counter | `topic` |
//! | `sluice_cleaner_read_bytes_total`, `sluice_cleaner_written_bytes_total`, `sluice_cleaner_passes_total` | counter | - (see `cleaner`) |
//! | `sluice_group_shard_load_seconds` | histogram | - (a group coordinator's replay of an offsets partition at takeover) |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::log::LogStore;
use crate::partitions::Partitions;

/// Publishes per-partition and storage gauges every second until aborted.
pub async fn run_gauges(partitions: Arc<Partitions>, log: Arc<dyn LogStore>, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (mut leaders, mut under) = (0u64, 0u64);
        for r in partitions.all() {
            if !r.is_leader() {
                continue;
            }
            leaders += 1;
            let isr = r.isr().len();
            if isr < r.replica_count() {
                under += 1;
            }
            let labels = [
                ("topic", r.topic.clone()),
                ("partition", r.partition().to_string()),
            ];
            metrics::gauge!("sluice_partition_log_end_offset", &labels).set(r.log_end() as f64);
            metrics::gauge!("sluice_partition_high_watermark", &labels)
                .set(r.high_watermark() as f64);
            metrics::gauge!("sluice_partition_isr_size", &labels).set(isr as f64);
        }
        metrics::gauge!("sluice_leader_partitions").set(leaders as f64);
        metrics::gauge!("sluice_under_replicated_partitions").set(under as f64);
        let (log, dir) = (log.clone(), data_dir.clone());
        let blocking = move || (log.stats(), rustix::fs::statvfs(&dir));
        if let Ok((stats, volume)) = tokio::task::spawn_blocking(blocking).await {
            for (name, value) in stats {
                metrics::gauge!(format!("sluice_rocksdb_{name}")).set(value as f64);
            }
            if let Ok(v) = volume {
                let (free, total) = (v.f_bavail * v.f_frsize, v.f_blocks * v.f_frsize);
                metrics::gauge!("sluice_data_volume_free_bytes").set(free as f64);
                metrics::gauge!("sluice_data_volume_bytes").set(total as f64);
            }
        }
    }
}

/// Publishes `sluice_consumer_group_lag{group, topic, partition}` (high watermark minus the
/// committed offset) and `sluice_consumer_group_lag_total{group}` every five seconds, for the
/// groups this node coordinates and the partitions it holds a replica of (with replication
/// factor 3 on three nodes, all of them). Runs until aborted.
pub async fn run_group_lag(
    coordinator: Arc<crate::groups::GroupCoordinator>,
    partitions: Arc<Partitions>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let replicas = partitions.all();
        for shard in coordinator.shards() {
            let Ok(state) = shard.lock().await else {
                continue;
            };
            let Some(state) = state.as_ref() else {
                continue;
            };
            for (group, entry) in &state.groups {
                let mut total = 0i64;
                for (tp, committed) in &entry.offsets {
                    let Some(r) = replicas
                        .iter()
                        .find(|r| r.topic == tp.topic && r.partition() == tp.partition)
                    else {
                        continue;
                    };
                    let lag = (r.high_watermark() - committed.offset).max(0);
                    total += lag;
                    let labels = [
                        ("group", group.clone()),
                        ("topic", tp.topic.clone()),
                        ("partition", tp.partition.to_string()),
                    ];
                    metrics::gauge!("sluice_consumer_group_lag", &labels).set(lag as f64);
                }
                metrics::gauge!("sluice_consumer_group_lag_total", "group" => group.clone())
                    .set(total as f64);
            }
        }
    }
}
