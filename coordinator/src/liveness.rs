//! Fast detection of crashed storage nodes. A node's lease lapses only after its TTL (at least
//! a second in etcd, two with etcd's default timing); a SIGKILLed process is visible sooner:
//! its port refuses connections. While active, the controller probes every registered node
//! ([`crate::probe`]); after [`REFUSALS`] refused connections in a row it revokes the node's lease, which deletes
//! its registration and lets the reconcile loop move its leaderships at once.
//!
//! Only a refusal counts (the host answered that nothing listens there), never a timeout: a
//! paused or partitioned node keeps its lease until the TTL says otherwise. A false positive is
//! safe: a live node whose lease was revoked registers again, and epochs fence its old role.
//! A node revoked so is also marked dead in the [`crate::suspects`] table, so its leaderships
//! move as soon as its registration vanishes, without another probe.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_metadata::MetaStore;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_proto::model::NodeId;
use tokio::sync::watch;

use crate::election::Role;
use crate::probe::{PROBE_INTERVAL, REFUSALS, refused};

/// Probes registered nodes while this coordinator is active, until `shutdown`.
pub async fn run_liveness(
    store: Arc<dyn MetaStore>,
    keys: Keys,
    cache: Arc<MetadataCache>,
    suspects: crate::suspects::Suspects,
    role: watch::Receiver<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut strikes: HashMap<NodeId, u32> = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if !matches!(*role.borrow(), Role::Active { .. }) {
            strikes.clear();
            continue;
        }
        let nodes: Vec<(NodeId, String)> = cache
            .view()
            .nodes
            .values()
            .map(|n| (n.node_id, n.address.clone()))
            .collect();
        strikes.retain(|id, _| nodes.iter().any(|(n, _)| n == id));
        let probes = nodes
            .iter()
            .map(|(id, addr)| async move { (*id, refused(addr).await) });
        for (id, was_refused) in futures::future::join_all(probes).await {
            if !was_refused {
                strikes.remove(&id);
                continue;
            }
            let s = strikes.entry(id).or_default();
            *s += 1;
            if *s >= REFUSALS {
                strikes.remove(&id);
                if let Some(registration) = cache.view().node_registrations.get(&id) {
                    suspects
                        .table
                        .lock()
                        .expect("poisoned")
                        .dead(id, *registration);
                }
                revoke(store.as_ref(), &keys, id).await;
            }
        }
    }
}

async fn revoke(store: &dyn MetaStore, keys: &Keys, id: NodeId) {
    match store.get(&keys.node(id)).await {
        Ok(Some(v)) if v.lease != 0 => match store.revoke_lease(v.lease).await {
            Ok(()) => tracing::warn!(
                node_id = id,
                "storage node refuses connections; revoked its registration"
            ),
            Err(error) => {
                tracing::debug!(node_id = id, %error, "revoking a dead node's lease failed")
            }
        },
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(node_id = id, %error, "reading a dead node's registration failed")
        }
    }
}
