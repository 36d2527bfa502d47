//! Storage nodes whose registration vanished but that may still be alive. A lease can lapse
//! without its node dying: an etcd pause of a few seconds expires every lease at once, and a
//! node cut from etcd alone keeps serving. Taking partitions offline for that would turn a
//! metadata hiccup into a write outage, so a vanished node is first a *suspect*: the controller
//! probes it itself (a gRPC health check) and keeps counting it as live, for the roles it
//! already holds, while it answers. It is gone once a probe fails (refused, timed out, or no
//! gRPC answer) or after [`SuspectTable::new`]'s grace without registering again; a suspect
//! is never newly elected (see [`crate::failover`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_proto::model::NodeId;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::failover::{Live, LiveNode};

/// Time between probes of each suspect.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A probe without an answer in this time counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
struct Suspect {
    address: String,
    node: LiveNode,
    since: Instant,
}

/// The last registration seen of every node, and the suspects among them.
#[derive(Debug)]
pub struct SuspectTable {
    grace: Duration,
    seen: BTreeMap<NodeId, (String, LiveNode)>,
    suspects: BTreeMap<NodeId, Suspect>,
    /// Registrations already known dead (the liveness prober saw their port refuse
    /// connections): when they vanish they are gone at once, not suspects.
    dead: BTreeMap<NodeId, i64>,
}

impl SuspectTable {
    /// An empty table; a suspect that answers probes counts as live for at most `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            seen: BTreeMap::new(),
            suspects: BTreeMap::new(),
            dead: BTreeMap::new(),
        }
    }

    /// Registration `registration` of node `id` is known dead (nothing listens on its port):
    /// when it vanishes it is not probed again.
    pub fn dead(&mut self, id: NodeId, registration: i64) {
        self.dead.insert(id, registration);
    }

    /// Takes a view: registered nodes stop being suspects, nodes seen before and missing now
    /// become suspects (from `now`).
    pub fn observe(&mut self, view: &ClusterView, now: Instant) {
        let registered = crate::reconcile::registered_nodes(view);
        for (id, node) in &registered {
            self.suspects.remove(id);
            if self.dead.get(id).is_some_and(|r| *r != node.registration) {
                self.dead.remove(id);
            }
        }
        let known_dead: Vec<NodeId> = self
            .dead
            .keys()
            .filter(|id| !registered.contains_key(id))
            .copied()
            .collect();
        for id in known_dead {
            self.dead.remove(&id);
            self.seen.remove(&id);
        }
        for (id, (address, node)) in &self.seen {
            if !registered.contains_key(id) && !self.suspects.contains_key(id) {
                tracing::info!(
                    node_id = id,
                    "storage node registration vanished; probing it before moving its roles"
                );
                let node = LiveNode {
                    registered: false,
                    ..node.clone()
                };
                let address = address.clone();
                self.suspects.insert(
                    *id,
                    Suspect {
                        address,
                        node,
                        since: now,
                    },
                );
            }
        }
        for (id, node) in registered {
            let address = view.nodes[&id].address.clone();
            self.seen.insert(id, (address, node));
        }
    }

    /// Suspects still counted as live at `now`.
    pub fn live(&self, now: Instant) -> Live {
        self.suspects
            .iter()
            .filter(|(_, s)| now.duration_since(s.since) < self.grace)
            .map(|(id, s)| (*id, s.node.clone()))
            .collect()
    }

    /// Whether any suspect's grace ends after `now` (the caller re-plans then).
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.suspects
            .values()
            .map(|s| s.since + self.grace)
            .filter(|t| *t > now)
            .min()
    }

    /// A failed probe: the node is gone.
    fn gone(&mut self, id: NodeId, address: &str) {
        if self.suspects.get(&id).is_some_and(|s| s.address == address) {
            tracing::warn!(node_id = id, "vanished storage node does not answer: gone");
            self.suspects.remove(&id);
            self.seen.remove(&id);
        }
    }
}

/// The table and the signal that a verdict changed.
#[derive(Clone)]
pub struct Suspects {
    /// The table; the reconcile loop reads it when it plans.
    pub table: Arc<Mutex<SuspectTable>>,
    /// Notified when a suspect is found gone.
    pub changed: Arc<Notify>,
}

impl Suspects {
    /// A table with the given grace.
    pub fn new(grace: Duration) -> Self {
        Self {
            table: Arc::new(Mutex::new(SuspectTable::new(grace))),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Follows the view and probes every suspect, whatever this coordinator's role (so a
    /// coordinator that takes over knows who vanished just before), until `shutdown`.
    pub async fn run(self, cache: Arc<MetadataCache>, mut shutdown: watch::Receiver<bool>) {
        let mut views = cache.subscribe();
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let view = views.borrow_and_update().clone();
                    self.table.lock().expect("poisoned").observe(&view, Instant::now());
                }
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let probes: Vec<(NodeId, String)> = {
                let t = self.table.lock().expect("poisoned");
                t.suspects
                    .iter()
                    .filter(|(_, s)| now.duration_since(s.since) < t.grace)
                    .map(|(id, s)| (*id, s.address.clone()))
                    .collect()
            };
            if probes.is_empty() {
                continue;
            }
            let answers = futures::future::join_all(
                probes
                    .into_iter()
                    .map(|(id, addr)| async move { (id, answers(&addr).await, addr) }),
            )
            .await;
            let mut any_gone = false;
            let mut t = self.table.lock().expect("poisoned");
            for (id, alive, addr) in answers {
                if !alive {
                    t.gone(id, &addr);
                    any_gone = true;
                }
            }
            drop(t);
            if any_gone {
                self.changed.notify_one();
            }
        }
    }
}

/// Whether the node at `address` answers a gRPC health check in time (any answer from its
/// server counts: the process is alive and reachable).
pub async fn answers(address: &str) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let probe = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect_timeout(PROBE_TIMEOUT)
            .connect()
            .await
            .ok()?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        match answer {
            Ok(_) => Some(()),
            Err(s) if s.code() == tonic::Code::NotFound => Some(()),
            Err(_) => None,
        }
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::pb::NodeRecord;

    fn view(ids: &[NodeId]) -> ClusterView {
        let mut v = ClusterView::default();
        for id in ids {
            v.nodes.insert(
                *id,
                NodeRecord {
                    node_id: *id,
                    address: format!("127.0.0.1:{}", 1000 + id),
                    incarnation: format!("dir-{id}"),
                    ..Default::default()
                },
            );
            v.node_registrations.insert(*id, 7);
        }
        v
    }

    #[test]
    fn a_vanished_node_is_live_until_its_grace_ends_or_a_probe_fails() {
        let mut t = SuspectTable::new(Duration::from_secs(3));
        let t0 = Instant::now();
        t.observe(&view(&[0, 1]), t0);
        assert!(t.live(t0).is_empty(), "registered nodes are not suspects");
        t.observe(&view(&[0]), t0);
        let live = t.live(t0 + Duration::from_secs(1));
        assert_eq!(live.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(!live[&1].registered);
        assert_eq!(live[&1].incarnation, "dir-1");
        assert!(t.live(t0 + Duration::from_secs(3)).is_empty(), "grace over");
        assert_eq!(t.next_expiry(t0), Some(t0 + Duration::from_secs(3)));
        t.gone(1, "127.0.0.1:1001");
        assert!(t.live(t0).is_empty(), "a failed probe ends it at once");
        t.observe(&view(&[0]), t0);
        assert!(t.live(t0).is_empty(), "and for good");
    }

    #[test]
    fn a_node_known_dead_is_never_a_suspect() {
        let mut t = SuspectTable::new(Duration::from_secs(3));
        let t0 = Instant::now();
        t.observe(&view(&[0, 1]), t0);
        t.dead(1, 7);
        t.observe(&view(&[0]), t0);
        assert!(t.live(t0).is_empty());
        let mut again = view(&[0, 1]);
        again.node_registrations.insert(1, 9);
        t.observe(&again, t0);
        t.observe(&view(&[0]), t0);
        assert_eq!(t.live(t0).len(), 1, "a new registration is probed again");
    }

    #[test]
    fn a_node_that_registers_again_is_no_longer_a_suspect() {
        let mut t = SuspectTable::new(Duration::from_secs(3));
        let t0 = Instant::now();
        t.observe(&view(&[0, 1]), t0);
        t.observe(&view(&[0]), t0);
        t.observe(&view(&[0, 1]), t0);
        assert!(t.live(t0).is_empty());
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_does_not_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(!answers(&addr).await);
    }
}
