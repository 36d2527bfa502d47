//! Health for orchestrators. The overall gRPC health service ("") answers while the process's
//! event loop runs (liveness). The service `readiness` is SERVING only while the node is
//! registered, not draining, and every replica it follows is in its partition's ISR (caught up).
//! [`wait_drained`] is the controlled-shutdown barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_proto::model::NodeId;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Name of the readiness service in the gRPC health protocol.
pub const READINESS: &str = "readiness";

/// Whether every partition this node replicates has it in its ISR.
fn caught_up(view: &ClusterView, node_id: NodeId) -> bool {
    view.partitions
        .values()
        .filter(|p| p.record.replicas.contains(&node_id) && p.record.leader >= 0)
        .all(|p| p.record.isr.contains(&node_id))
}

/// Keeps the readiness status current until aborted.
pub async fn run_readiness(
    health: HealthReporter,
    node_id: NodeId,
    cache: Arc<MetadataCache>,
    registered: watch::Receiver<bool>,
    draining: watch::Receiver<bool>,
) {
    let (mut registered, mut draining) = (registered, draining);
    let mut views = cache.subscribe();
    let mut last = None;
    loop {
        let ready = *registered.borrow_and_update()
            && !*draining.borrow_and_update()
            && caught_up(&views.borrow_and_update(), node_id);
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(READINESS, status).await;
            last = Some(ready);
        }
        // Looks again only when one of its inputs changed (the view at every metadata change).
        tokio::select! {
            r = views.changed() => if r.is_err() { return },
            r = registered.changed() => if r.is_err() { return },
            r = draining.changed() => if r.is_err() { return },
        }
    }
}

/// Whether some partition led by `node_id` could move to another live, non-draining in-sync
/// replica (so the controller will move it).
fn leads_movable(view: &ClusterView, node_id: NodeId) -> bool {
    view.partitions.values().any(|p| {
        p.record.leader == node_id
            && p.record
                .isr
                .iter()
                .any(|r| *r != node_id && view.nodes.get(r).is_some_and(|n| !n.draining))
    })
}

/// Waits until the view shows this node draining and leading nothing that could move, or
/// until `timeout`.
pub async fn wait_drained(cache: &MetadataCache, node_id: NodeId, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut rx = cache.subscribe();
    loop {
        {
            let view = rx.borrow_and_update();
            let marked = view.nodes.get(&node_id).is_none_or(|n| n.draining);
            if marked && !leads_movable(&view, node_id) {
                tracing::info!(node_id, "drained: no leadership left to hand over");
                return;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                node_id,
                "leaderships did not all move before the drain timeout; stopping anyway"
            );
            return;
        }
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}
