//! The group coordinator (KIP-848 style) of this storage node: one [`Shard`] per partition of
//! `__sluice_offsets` this node leads. Group `g` belongs to partition
//! `group_partition(g, n)`; any other node answers `NOT_COORDINATOR`, so the client finds the
//! coordinator again. The coordination decisions are the pure `sluice-groups` core; this
//! module routes requests, persists the core's records and replays them on failover.
//!
//! - [`codec`]: group records and offset commits as records of the offsets log.
//! - [`shard`]: one partition's groups — load by replay, persist, reload on failure.
//! - [`ops`]: heartbeat, commit, fetch, describe, list, delete, and the session timer.
//! - [`service`]: the `Groups` gRPC adapters.

pub mod codec;
pub mod errors;
pub mod ops;
pub mod service;
pub mod shard;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_groups::GroupConfig;
use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_proto::error::ApiError;
use sluice_proto::model::{NodeId, OFFSETS_TOPIC, TopicId, group_partition};
use sluice_proto::pb::ErrorCode;
use tokio::task::JoinHandle;

use crate::log::{LogStore, PartitionKey};
use crate::partitions::Partitions;
use crate::writer::Writer;
pub use ops::{GroupListing, HeartbeatInput, Subscription, TopicCatalog};
pub use shard::Shard;

/// How often the coordinator compares the offsets partitions it leads with its shards.
const LEADERSHIP_POLL: Duration = Duration::from_millis(200);

/// A loaded (or loading) shard and its background tasks, aborted when it is dropped.
struct ShardHandle {
    shard: Arc<Shard>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The groups coordinated by this node.
pub struct GroupCoordinator {
    node_id: NodeId,
    cache: Arc<MetadataCache>,
    partitions: Arc<Partitions>,
    writer: Writer,
    log: Arc<dyn LogStore>,
    config: GroupConfig,
    shards: Mutex<BTreeMap<PartitionKey, ShardHandle>>,
}

/// Every topic's partition count, as the assignors see it.
pub fn catalog(view: &ClusterView) -> TopicCatalog {
    view.topics
        .iter()
        .map(|(name, t)| (name.clone(), t.record.partition_count))
        .collect()
}

impl GroupCoordinator {
    /// A coordinator without shards; [`GroupCoordinator::run`] creates them.
    pub fn new(
        node_id: NodeId,
        cache: Arc<MetadataCache>,
        partitions: Arc<Partitions>,
        writer: Writer,
        log: Arc<dyn LogStore>,
        config: GroupConfig,
    ) -> Self {
        Self {
            node_id,
            cache,
            partitions,
            writer,
            log,
            config,
            shards: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keeps one shard per led offsets partition until aborted: a shard is created (and loads)
    /// when this node becomes leader, and dropped when it stops leading or the epoch changes.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LEADERSHIP_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reconcile_shards();
        }
    }

    /// Drops every shard and stops its tasks (shutdown, before the writer drains).
    pub async fn stop(&self) {
        let handles: Vec<ShardHandle> = {
            let mut shards = self.shards.lock().expect("poisoned");
            std::mem::take(&mut *shards).into_values().collect()
        };
        for mut h in handles {
            for t in std::mem::take(&mut h.tasks) {
                t.abort();
                let _ = t.await;
            }
        }
    }

    fn offsets_topic(view: &ClusterView) -> Option<(TopicId, i32)> {
        let t = view.topics.get(OFFSETS_TOPIC)?;
        let id = TopicId::from_slice(&t.record.topic_id).ok()?;
        Some((id, t.record.partition_count))
    }

    fn reconcile_shards(&self) {
        let view = self.cache.view();
        let mut led = BTreeMap::new();
        if let Some((topic_id, n)) = Self::offsets_topic(&view) {
            for partition in 0..n {
                let key = PartitionKey {
                    topic_id,
                    partition,
                };
                if let Some(r) = self.partitions.get(&key).filter(|r| r.is_leader()) {
                    led.insert(key, r);
                }
            }
        }
        let mut shards = self.shards.lock().expect("poisoned");
        shards.retain(|key, h| {
            let keep = led.contains_key(key) && h.shard.is_current();
            if !keep {
                tracing::info!(
                    partition = key.partition,
                    epoch = h.shard.epoch,
                    "group coordinator shard unloaded"
                );
            }
            keep
        });
        for (key, replica) in led {
            if shards.contains_key(&key) {
                continue;
            }
            let shard = Shard::new(
                replica,
                self.writer.clone(),
                self.log.clone(),
                self.config.clone(),
            );
            let loader = {
                let s = shard.clone();
                tokio::spawn(async move { s.load().await })
            };
            let timer = tokio::spawn(ops::run_timer(shard.clone()));
            shards.insert(
                key,
                ShardHandle {
                    shard,
                    tasks: vec![loader, timer],
                },
            );
        }
    }

    /// The shard coordinating `group_id`, or the error that sends the client elsewhere.
    pub fn route(&self, group_id: &str) -> Result<Arc<Shard>, ApiError> {
        let view = self.cache.view();
        let Some((topic_id, n)) = Self::offsets_topic(&view) else {
            return Err(ApiError::new(
                ErrorCode::NotCoordinator,
                format!(
                    "{OFFSETS_TOPIC} does not exist yet; ask FindCoordinator (which creates it) and retry"
                ),
            ));
        };
        let key = PartitionKey {
            topic_id,
            partition: group_partition(group_id, n),
        };
        if let Some(h) = self.shards.lock().expect("poisoned").get(&key) {
            return Ok(h.shard.clone());
        }
        let leader = view
            .partitions
            .get(&(topic_id, key.partition))
            .map_or(-1, |s| s.record.leader);
        // Led here by the metadata or the replica, but the shard is not serving yet (loading,
        // or the leadership not yet confirmed since this node started).
        if leader == self.node_id || self.partitions.get(&key).is_some_and(|r| r.is_leader()) {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "node {} is starting to coordinate partition {} of {OFFSETS_TOPIC}; retry shortly",
                    self.node_id, key.partition
                ),
            ));
        }
        Err(ApiError::new(
            ErrorCode::NotCoordinator,
            format!(
                "node {} does not coordinate group '{group_id}' (partition {} of {OFFSETS_TOPIC} is led by node {leader}); find the coordinator again and retry",
                self.node_id, key.partition
            ),
        ))
    }

    /// Every shard this node leads now.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .lock()
            .expect("poisoned")
            .values()
            .map(|h| h.shard.clone())
            .collect()
    }

    /// Every topic with its partition count, from the current cluster view.
    pub fn catalog(&self) -> TopicCatalog {
        catalog(&self.cache.view())
    }
}
