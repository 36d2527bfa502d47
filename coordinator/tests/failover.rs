//! The failover loop against the in-memory metadata store: storage nodes register with leases,
//! a revoked lease stands for a dead node, and the loop must move leadership within the ISR,
//! shrink ISRs, leave partitions without an in-sync replica leaderless, and elect a returning
//! in-sync replica. Real etcd runs come from the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use sluice_coordinator::controller::Controller;
use sluice_coordinator::election::Role;
use sluice_coordinator::reconcile::Reconciler;
use sluice_coordinator::suspects::Suspects;
use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, LeaseId, MetaStore, Op, Txn};
use sluice_proto::model::{NodeId, TopicId};
use sluice_proto::pb::{self, PartitionStateRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node every test kills.
const X: NodeId = 1;
/// How long the loop may take to react; the target is ~100 ms.
const WITHIN: Duration = Duration::from_secs(1);

struct Cluster {
    store: Arc<dyn MetaStore>,
    keys: Keys,
    cache: Arc<MetadataCache>,
    fence: i64,
    leases: BTreeMap<NodeId, LeaseId>,
}

async fn register(store: &Arc<dyn MetaStore>, keys: &Keys, id: NodeId) -> LeaseId {
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let rec = pb::NodeRecord {
        node_id: id,
        address: format!("127.0.0.1:{}", 9000 + id),
        ..Default::default()
    };
    store
        .txn(Txn::new().then(Op::Put {
            key: keys.node(id),
            value: rec.encode_to_vec().into(),
            lease,
        }))
        .await
        .unwrap();
    lease
}

/// Nodes 0, 1, 2 alive; a controller key (the fence); an RF 3 topic `orders` with enough
/// partitions to need several transactions; an RF 3 topic `solo` whose only in-sync replica
/// (as if its leader had shrunk the ISR) is X.
async fn cluster() -> Cluster {
    let store: Arc<dyn MetaStore> = EmbeddedStore::in_memory();
    let keys = Keys::for_cluster("t");
    let mut leases = BTreeMap::new();
    for id in 0..3 {
        leases.insert(id, register(&store, &keys, id).await);
    }
    let fence = store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(keys.controller(), 0))
                .then(Op::Put {
                    key: keys.controller(),
                    value: pb::ControllerRecord::default().encode_to_vec().into(),
                    lease: 0,
                }),
        )
        .await
        .unwrap()
        .revision;
    let cache = Arc::new(
        MetadataCache::start(store.clone(), keys.clone())
            .await
            .unwrap(),
    );
    let controller = Controller {
        store: store.clone(),
        keys: keys.clone(),
        cache: cache.clone(),
        default_replication_factor: 3,
    };
    for (name, partitions) in [("orders", 240), ("solo", 1)] {
        controller
            .create_topic(
                fence,
                pb::CreateTopicRequest {
                    name: name.into(),
                    partitions,
                    replication_factor: 3,
                    config: HashMap::new(),
                    validate_only: false,
                },
            )
            .await
            .unwrap();
    }
    let c = Cluster {
        store,
        keys,
        cache,
        fence,
        leases,
    };
    let solo = c.partition("solo", 0);
    let shrunk = PartitionStateRecord {
        leader: X,
        isr: vec![X],
        partition_epoch: solo.record.partition_epoch + 1,
        ..solo.record.clone()
    };
    let key = c.keys.partition(&c.topic_id("solo"), 0);
    let outcome = c
        .store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(key.clone(), solo.mod_revision))
                .then(Op::Put {
                    key,
                    value: shrunk.encode_to_vec().into(),
                    lease: 0,
                }),
        )
        .await
        .unwrap();
    assert!(outcome.succeeded);
    c.cache
        .wait_for_revision(outcome.revision, Duration::from_secs(5))
        .await;
    c
}

impl Cluster {
    fn topic_id(&self, name: &str) -> TopicId {
        TopicId::from_slice(&self.cache.view().topics[name].record.topic_id).unwrap()
    }

    fn partition(
        &self,
        topic: &str,
        p: i32,
    ) -> sluice_metadata::cache::Stored<PartitionStateRecord> {
        self.cache.view().partitions[&(self.topic_id(topic), p)].clone()
    }

    fn states(&self, topic: &str) -> Vec<PartitionStateRecord> {
        let view = self.cache.view();
        view.partitions_of(&self.topic_id(topic))
            .map(|p| p.record.clone())
            .collect()
    }

    /// Starts the failover loop with the given role; returns the role sender, the shutdown
    /// sender and the task.
    fn reconcile(&self, role: Role) -> (watch::Sender<Role>, watch::Sender<bool>, JoinHandle<()>) {
        let (role_tx, role_rx) = watch::channel(role);
        let (stop_tx, stop_rx) = watch::channel(false);
        // Killed nodes' addresses refuse connections, so the prober finds them gone at once.
        let suspects = Suspects::new(Duration::from_secs(3));
        tokio::spawn(suspects.clone().run(self.cache.clone(), stop_rx.clone()));
        let task = tokio::spawn(
            Reconciler {
                store: self.store.clone(),
                keys: self.keys.clone(),
                cache: self.cache.clone(),
                suspects,
            }
            .run(role_rx, stop_rx),
        );
        (role_tx, stop_tx, task)
    }

    async fn kill(&self, id: NodeId) {
        self.store.revoke_lease(self.leases[&id]).await.unwrap();
    }

    /// Waits until `f` holds for the view; panics with `what` after `within`.
    async fn eventually(
        &self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&ClusterView) -> bool,
    ) -> Arc<ClusterView> {
        let mut rx = self.cache.subscribe();
        match tokio::time::timeout(within, rx.wait_for(|v| f(v))).await {
            Ok(Ok(v)) => v.clone(),
            _ => panic!("not within {within:?}: {what}"),
        }
    }
}

/// True when every partition of `orders` moved off X as failover requires, relative to `before`.
fn moved_off_x(c: &Cluster, view: &ClusterView, before: &[PartitionStateRecord]) -> bool {
    let id = c.topic_id("orders");
    before.iter().all(|b| {
        let Some(now) = view.partitions.get(&(id, b.partition)) else {
            return false;
        };
        let now = &now.record;
        let leader_ok = if b.leader == X {
            now.leader != X && b.isr.contains(&now.leader) && now.leader_epoch == b.leader_epoch + 1
        } else {
            now.leader == b.leader && now.leader_epoch == b.leader_epoch
        };
        leader_ok && !now.isr.contains(&X) && now.partition_epoch == b.partition_epoch + 1
    })
}

#[tokio::test]
async fn partitions_led_by_a_dead_node_get_an_in_sync_leader_and_a_new_epoch() {
    let c = cluster().await;
    let before = c.states("orders");
    assert!(
        before.iter().filter(|p| p.leader == X).count() >= 70,
        "X leads its share"
    );
    let (_role, _stop, _task) = c.reconcile(Role::Active { fence: c.fence });
    let killed = Instant::now();
    c.kill(X).await;
    c.eventually(WITHIN, "every partition moves off X", |v| {
        moved_off_x(&c, v, &before)
    })
    .await;
    eprintln!("failover of 240 partitions took {:?}", killed.elapsed());
}

#[tokio::test]
async fn a_partition_whose_only_in_sync_replica_dies_goes_leaderless_until_it_returns() {
    let c = cluster().await;
    let solo = c.partition("solo", 0).record;
    let (_role, _stop, _task) = c.reconcile(Role::Active { fence: c.fence });
    c.kill(X).await;
    let id = c.topic_id("solo");
    let view = c
        .eventually(WITHIN, "solo goes leaderless", |v| {
            v.partitions[&(id, 0)].record.leader == -1
        })
        .await;
    let offline = &view.partitions[&(id, 0)].record;
    assert_eq!(offline.leader_epoch, solo.leader_epoch + 1);
    assert_eq!(offline.isr, vec![X], "nobody else is eligible");
    let orders_before = c.states("orders");

    register(&c.store, &c.keys, X).await;
    let view = c
        .eventually(WITHIN, "solo elects X again", |v| {
            v.partitions[&(id, 0)].record.leader == X
        })
        .await;
    let back = &view.partitions[&(id, 0)].record;
    assert_eq!(back.leader_epoch, solo.leader_epoch + 2);
    assert_eq!(back.isr, vec![X]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        c.states("orders"),
        orders_before,
        "the controller never adds a returning node to an ISR (its leader does, once caught up)"
    );
}

#[tokio::test]
async fn a_standby_writes_nothing_and_a_new_controller_reconciles_at_takeover() {
    let c = cluster().await;
    let before = c.states("orders");
    let (role, _stop, _task) = c.reconcile(Role::Standby);
    c.kill(X).await;
    c.eventually(WITHIN, "X's key is gone", |v| !v.nodes.contains_key(&X))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.states("orders"), before, "a standby does not write");
    role.send_replace(Role::Active { fence: c.fence });
    c.eventually(WITHIN, "the takeover pass moves partitions off X", |v| {
        moved_off_x(&c, v, &before)
    })
    .await;
}

#[tokio::test]
async fn a_deposed_controller_cannot_move_leaders_and_the_loop_stops_on_shutdown() {
    let c = cluster().await;
    let before = c.states("orders");
    // A fence from a controller key that was since re-created by another coordinator.
    let (_role, stop, task) = c.reconcile(Role::Active { fence: c.fence - 1 });
    c.kill(X).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.states("orders"), before, "fenced writes are refused");
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
}
