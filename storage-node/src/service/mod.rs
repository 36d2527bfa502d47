//! gRPC adapters of the storage node: [`LogService`] holds what every handler needs; `log`
//! adapts it to the `Log` trait, and the handlers (`produce`, `fetch`, `streams`,
//! `replicate*`) take it, so no handler depends on the adapter.

pub mod codec;
pub mod delete_records;
pub mod describe_replicas;
pub mod fetch;
pub mod log;
pub mod produce;
pub mod replicate;
pub mod replicate_many;
pub mod resolve;
pub mod streams;

use std::sync::Arc;

use sluice_metadata::cache::MetadataCache;
use sluice_proto::model::NodeId;

use crate::faults::Faults;
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::writer::Writer;

/// Serves `Log` for one storage node; clones share everything (subscriptions run as tasks).
#[derive(Clone)]
pub struct LogService {
    /// This node's id.
    pub node_id: NodeId,
    /// Watch-fed cluster view.
    pub cache: Arc<MetadataCache>,
    /// Hosted replicas.
    pub partitions: Arc<Partitions>,
    /// Group-commit writer.
    pub writer: Writer,
    /// The log store, for reads.
    pub log: Arc<dyn LogStore>,
    /// Test fault switches.
    pub faults: Faults,
    /// Turns true once the node has drained and is about to stop serving: subscriptions end
    /// then (a graceful shutdown waits for every open stream).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Free space on the data volume: a full one refuses produce requests.
    pub disk: Arc<crate::disk::DiskSpace>,
    /// Caps catch-up traffic to replicas a reassignment is adding.
    pub throttle: Arc<crate::throttle::Throttle>,
}

impl LogService {
    /// The replica of `topic`/`partition` this node leads, for requests that name neither a
    /// topic id nor a leader epoch (the error names the leader otherwise).
    pub fn leader_by_name(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<crate::replica::Replica>, sluice_proto::error::ApiError> {
        let target = resolve::Target {
            topic,
            partition,
            topic_id: &[],
            leader_epoch: -1,
        };
        resolve::leader_replica(&self.cache.view(), &self.partitions, self.node_id, &target)
    }

    /// Resolves once the node has drained and long-lived streams should end (a graceful
    /// shutdown waits for every open stream).
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.clone();
        async move { drop(closing.wait_for(|c| *c).await) }
    }
}
