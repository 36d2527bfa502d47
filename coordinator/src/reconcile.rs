//! The active controller's failover loop: it compares every partition's stored state (intent)
//! with the storage nodes whose leases are alive (observation) and writes what
//! [`failover::decide`] asks for — new leaders, shrunk ISRs, leaderless partitions.
//!
//! It runs at takeover and after every change of the cluster view (bursts coalesced), while this
//! coordinator is the active controller. Writes are batched, fenced transactions: each compares
//! the controller key's create revision and every written partition's mod revision, so neither
//! a deposed controller nor a stale view (a leader's concurrent ISR change) can overwrite newer
//! state. A lost compare is resolved by re-reading, never by guessing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, StoreError, Txn};
use sluice_proto::model::{NodeId, TopicId};
use sluice_proto::pb::PartitionStateRecord;
use sluice_proto::topic_config::TopicConfig;
use tokio::sync::watch;

use crate::controller::MAX_OPS_PER_TXN;
use crate::election::Role;
use crate::failover::{self, Live, LiveNode, NO_LEADER};
use crate::suspects::Suspects;
use crate::{decommission, reassign};

/// Wait after a view change before deciding, so a burst (several leases lapsing together, a
/// topic's partitions arriving) becomes one pass and few transactions.
const COALESCE: Duration = Duration::from_millis(20);
/// First wait after a failed pass; doubles up to [`MAX_BACKOFF`] while passes keep failing.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a pass that lost a compare waits for the view to show the write it lost to.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1);

/// One partition state the controller must write.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Topic name, for logs.
    pub topic: String,
    /// The partition's topic id (part of its key).
    pub topic_id: TopicId,
    /// Mod revision of the state the decision was made from; the write compares it.
    pub mod_revision: i64,
    /// The stored state.
    pub old: PartitionStateRecord,
    /// The state to write.
    pub new: PartitionStateRecord,
    /// For a newly elected (or confirmed) leader, the create revision of its registration as
    /// the decision saw it: the write compares it, so a node that registered again meanwhile
    /// (perhaps with a wiped data directory) is not elected on the strength of its old self.
    pub leader_registration: Option<i64>,
    /// Why the partition has no leader after the change, if it has none.
    pub offline_reason: Option<String>,
}

/// The registered storage nodes of `view`, as the failover decision sees them.
pub fn registered_nodes(view: &ClusterView) -> Live {
    view.nodes
        .iter()
        .map(|(id, n)| {
            let registration = view.node_registrations.get(id).copied().unwrap_or(0);
            let boot_revision = if n.boot_revision > 0 {
                n.boot_revision
            } else {
                registration
            };
            let node = LiveNode {
                incarnation: n.incarnation.clone(),
                registration,
                boot_revision,
                registered: true,
            };
            (*id, node)
        })
        .collect()
}

/// The storage nodes that are shutting down (their leaderships move away).
pub fn draining(view: &ClusterView) -> BTreeSet<NodeId> {
    view.nodes
        .values()
        .filter(|n| n.draining)
        .map(|n| n.node_id)
        .collect()
}

/// The nodes new replicas may go to (registered, not draining, not decommissioned), with their
/// racks.
pub fn eligible(view: &ClusterView) -> std::collections::BTreeMap<NodeId, String> {
    view.nodes
        .values()
        .filter(|n| !n.draining && !view.decommissioned.contains(&n.node_id))
        .map(|n| (n.node_id, n.rack.clone()))
        .collect()
}

/// Every change [`failover::decide`] asks for in `view`: partitions below their topic's
/// partition count, live nodes from the view plus `suspects` (vanished nodes that still answer
/// probes), unclean election from each topic's config.
pub fn plan(view: &ClusterView, suspects: Live) -> Vec<Change> {
    let mut live = suspects;
    live.extend(registered_nodes(view));
    let draining = draining(view);
    let mut changes = Vec::new();
    let mut all: Vec<(
        &str,
        TopicId,
        &sluice_metadata::cache::Stored<PartitionStateRecord>,
    )> = Vec::new();
    for t in view.topics.values() {
        let Ok(topic_id) = TopicId::from_slice(&t.record.topic_id) else {
            continue;
        };
        let unclean =
            TopicConfig::from_stored(&t.record.name, &t.record.config).unclean_leader_election;
        for p in view.partitions_of(&topic_id) {
            if p.record.partition >= t.record.partition_count {
                continue;
            }
            all.push((t.record.name.as_str(), topic_id, p));
            let new = failover::decide(&p.record, p.mod_revision, &live, unclean)
                .or_else(|| failover::move_off_draining(&p.record, &live, &draining))
                .or_else(|| reassign::step(&p.record, &live, &draining));
            if let Some(new) = new {
                let elected = new.leader != NO_LEADER && new.leader_epoch != p.record.leader_epoch;
                let leader_registration = elected
                    .then(|| live.get(&new.leader).map(|n| n.registration))
                    .flatten();
                let offline_reason = failover::offline_reason(&new, &live);
                changes.push(Change {
                    offline_reason,
                    topic: t.record.name.clone(),
                    topic_id,
                    mod_revision: p.mod_revision,
                    old: p.record.clone(),
                    new,
                    leader_registration,
                });
            }
        }
    }
    changes.extend(decommission_moves(view, &all, &changes));
    changes
}

/// Moves that empty decommissioned nodes ([`decommission::plan`]), for partitions this pass
/// leaves alone otherwise.
fn decommission_moves(
    view: &ClusterView,
    all: &[(
        &str,
        TopicId,
        &sluice_metadata::cache::Stored<PartitionStateRecord>,
    )],
    changes: &[Change],
) -> Vec<Change> {
    let eligible = eligible(view);
    let records: Vec<&PartitionStateRecord> = all.iter().map(|(_, _, p)| &p.record).collect();
    let mut out = Vec::new();
    for (i, target) in decommission::plan(&records, &eligible, &view.decommissioned) {
        let (topic, topic_id, p) = all[i];
        let busy = changes
            .iter()
            .any(|c| c.topic_id == topic_id && c.new.partition == p.record.partition);
        let Some(new) = (!busy)
            .then(|| reassign::start(&p.record, &target))
            .flatten()
        else {
            continue;
        };
        out.push(Change {
            topic: topic.to_string(),
            topic_id,
            mod_revision: p.mod_revision,
            old: p.record.clone(),
            new,
            leader_registration: None,
            offline_reason: None,
        });
    }
    out
}

/// What writing a plan achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Every change was written.
    Done,
    /// At least one transaction lost a compare; the store was at `revision` then.
    Conflict { revision: i64 },
}

/// The failover loop's handle on the store and the view.
#[derive(Clone)]
pub struct Reconciler {
    /// The metadata store.
    pub store: Arc<dyn MetaStore>,
    /// Key layout of this cluster.
    pub keys: Keys,
    /// The watch-fed view the decisions are made from.
    pub cache: Arc<MetadataCache>,
    /// Vanished nodes still answering probes.
    pub suspects: Suspects,
}

impl Reconciler {
    /// Reconciles while `role` is [`Role::Active`], idles while standby, and returns when
    /// `shutdown` flips to true (or its sender is gone).
    pub async fn run(self, mut role: watch::Receiver<Role>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let active = async {
                role.wait_for(|r| matches!(r, Role::Active { .. }))
                    .await
                    .map(|r| *r)
            };
            let fence = tokio::select! {
                r = active => match r {
                    Ok(Role::Active { fence }) => fence,
                    _ => return,
                },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            tracing::info!(fence, "failover loop running");
            let deposed = async {
                role.wait_for(|r| *r != Role::Active { fence })
                    .await
                    .is_ok()
            };
            tokio::select! {
                () = self.while_active(fence) => return,
                still_running = deposed => if !still_running { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tracing::info!(
                fence,
                "failover loop paused: no longer the active controller"
            );
        }
    }

    /// One pass at once, then one per (coalesced) view change; returns only when the cache is
    /// gone.
    async fn while_active(&self, fence: i64) {
        let mut views = self.cache.subscribe();
        let mut backoff = RETRY_BACKOFF;
        loop {
            let view = views.borrow_and_update().clone();
            let now = tokio::time::Instant::now();
            let (suspects, expiry) = {
                let mut table = self.suspects.table.lock().expect("poisoned");
                table.observe(&view, now);
                (table.live(now), table.next_expiry(now))
            };
            let changes = plan(&view, suspects);
            let pass = if changes.is_empty() {
                Ok(Pass::Done)
            } else {
                self.write(fence, &changes).await
            };
            match pass {
                Ok(Pass::Done) => {
                    backoff = RETRY_BACKOFF;
                    // Plan again when the view changes, a suspect is found gone, or a
                    // suspect's grace ends.
                    let grace_over = async {
                        match expiry {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = views.changed() => if changed.is_err() { return },
                        _ = self.suspects.changed.notified() => {}
                        _ = grace_over => {}
                    }
                    tokio::time::sleep(COALESCE).await;
                    continue;
                }
                Ok(Pass::Conflict { revision }) => {
                    tracing::debug!(
                        revision,
                        "partition state changed under the controller; re-reading"
                    );
                    self.cache
                        .wait_for_revision(revision, CATCH_UP_TIMEOUT)
                        .await;
                }
                Err(error) => {
                    let retry_in_ms = backoff.as_millis() as u64;
                    tracing::warn!(%error, retry_in_ms, "cannot write partition states");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn write(&self, fence: i64, changes: &[Change]) -> Result<Pass, StoreError> {
        write_changes(self.store.as_ref(), &self.keys, fence, changes).await
    }
}

/// Writes `changes` in fenced transactions of at most [`MAX_OPS_PER_TXN`] compares (one per
/// partition, two for an election). A transaction that loses a compare does not stop the
/// others: they hold other partitions.
pub(crate) async fn write_changes(
    store: &dyn MetaStore,
    keys: &Keys,
    fence: i64,
    changes: &[Change],
) -> Result<Pass, StoreError> {
    let mut pass = Pass::Done;
    for chunk in txn_chunks(changes) {
        let mut txn = Txn::new().when(Compare::CreateRevision(keys.controller(), fence));
        for c in chunk {
            let key = keys.partition(&c.topic_id, c.new.partition);
            txn = txn.when(Compare::ModRevision(key.clone(), c.mod_revision));
            if let Some(registration) = c.leader_registration {
                txn = txn.when(Compare::CreateRevision(
                    keys.node(c.new.leader),
                    registration,
                ));
            }
            txn = txn.then(Op::Put {
                key,
                value: c.new.encode_to_vec().into(),
                lease: 0,
            });
        }
        let outcome = store.txn(txn).await?;
        if outcome.succeeded {
            chunk.iter().for_each(log_change);
        } else {
            pass = Pass::Conflict {
                revision: outcome.revision,
            };
        }
    }
    Ok(pass)
}

/// `changes` split so no transaction has more than [`MAX_OPS_PER_TXN`] compares.
fn txn_chunks(changes: &[Change]) -> Vec<&[Change]> {
    let mut chunks = Vec::new();
    let (mut start, mut compares) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        let cost = 1 + usize::from(c.leader_registration.is_some());
        if compares + cost > MAX_OPS_PER_TXN {
            chunks.push(&changes[start..i]);
            (start, compares) = (i, 0);
        }
        compares += cost;
    }
    if start < changes.len() {
        chunks.push(&changes[start..]);
    }
    chunks
}

/// One log line per written change, at a level that matches its consequence.
fn log_change(c: &Change) {
    let (topic, partition) = (c.topic.as_str(), c.new.partition);
    let (old_leader, new_leader) = (c.old.leader, c.new.leader);
    let (leader_epoch, isr) = (c.new.leader_epoch, &c.new.isr);
    if c.old.replicas != c.new.replicas || c.old.target_replicas != c.new.target_replicas {
        let (replicas, target) = (&c.new.replicas, &c.new.target_replicas);
        tracing::info!(
            topic,
            partition,
            ?replicas,
            ?target,
            leader = new_leader,
            "reassignment step"
        );
        return;
    }
    if old_leader == new_leader {
        tracing::info!(
            topic,
            partition,
            leader = new_leader,
            leader_epoch,
            ?isr,
            "ISR shrunk to live replicas"
        );
    } else if new_leader == NO_LEADER {
        let why = c.offline_reason.as_deref().unwrap_or_default();
        tracing::warn!(
            topic,
            partition,
            old_leader,
            leader_epoch,
            ?isr,
            "partition offline: no live in-sync replica with its data; {why}"
        );
    } else if !c.old.isr.contains(&new_leader)
        || c.old.isr_incarnations.get(&new_leader) != c.new.isr_incarnations.get(&new_leader)
    {
        tracing::warn!(
            topic,
            partition,
            old_leader,
            new_leader,
            leader_epoch,
            "unclean leader election: acknowledged records may be lost"
        );
    } else {
        tracing::info!(
            topic,
            partition,
            old_leader,
            new_leader,
            leader_epoch,
            ?isr,
            "partition leader changed"
        );
        metrics::counter!("sluice_leader_changes_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sluice_metadata::cache::Stored;
    use sluice_proto::pb::{NodeRecord, TopicRecord};

    use super::*;

    fn stored<T>(record: T, mod_revision: i64) -> Stored<T> {
        Stored {
            record,
            create_revision: 1,
            mod_revision,
        }
    }

    fn view(live: &[NodeId], partitions: i32, count: i32, unclean: bool) -> ClusterView {
        let topic_id = TopicId([3; 16]);
        let mut v = ClusterView::default();
        for id in live {
            v.nodes.insert(
                *id,
                NodeRecord {
                    node_id: *id,
                    ..Default::default()
                },
            );
        }
        let mut config = HashMap::new();
        if unclean {
            config.insert("unclean.leader.election".to_string(), "true".to_string());
        }
        v.topics.insert(
            "t".into(),
            stored(
                TopicRecord {
                    name: "t".into(),
                    topic_id: topic_id.0.to_vec().into(),
                    partition_count: count,
                    replication_factor: 2,
                    config,
                    ..Default::default()
                },
                1,
            ),
        );
        for p in 0..partitions {
            v.partitions.insert(
                (topic_id, p),
                stored(
                    PartitionStateRecord {
                        topic_id: topic_id.0.to_vec().into(),
                        partition: p,
                        replicas: vec![0, 1],
                        leader: 0,
                        leader_epoch: 0,
                        isr: vec![0],
                        partition_epoch: 0,
                        ..Default::default()
                    },
                    10 + i64::from(p),
                ),
            );
        }
        v
    }

    #[test]
    fn a_healthy_cluster_needs_no_writes() {
        assert!(plan(&view(&[0, 1], 3, 3, false), Live::new()).is_empty());
    }

    #[test]
    fn plan_covers_visible_partitions_and_compares_their_revisions() {
        // Partition 2 exists in the store but is beyond the partition count (an unfinished
        // CreatePartitions): it is not the controller's to elect yet.
        let changes = plan(&view(&[1], 3, 2, false), Live::new());
        assert_eq!(changes.len(), 2);
        for (p, c) in changes.iter().enumerate() {
            assert_eq!(c.new.partition, p as i32);
            assert_eq!(c.mod_revision, 10 + p as i64);
            assert_eq!(c.new.leader, NO_LEADER, "1 is not in the ISR");
        }
    }

    #[test]
    fn a_suspect_keeps_its_leadership_and_a_new_election_is_fenced_on_the_registration() {
        let v = view(&[1], 1, 1, false);
        let suspect = LiveNode {
            registered: false,
            ..Default::default()
        };
        assert!(plan(&v, [(0, suspect)].into()).is_empty());
        let mut v = view(&[0, 1], 1, 1, false);
        v.node_registrations.insert(0, 30);
        let changes = plan(&v, Live::new());
        assert_eq!(
            changes.len(),
            1,
            "node 0 registered after the state was written"
        );
        assert_eq!((changes[0].new.leader, changes[0].new.leader_epoch), (0, 1));
        assert_eq!(changes[0].leader_registration, Some(30));
    }

    #[test]
    fn elections_cost_two_compares_and_no_transaction_has_more_than_the_limit() {
        let v = view(&[0, 1], 250, 250, false);
        let mut changes = plan(&v, Live::new());
        assert!(changes.is_empty());
        let mut v = view(&[0, 1], 250, 250, false);
        v.node_registrations.insert(0, 300);
        changes = plan(&v, Live::new());
        assert_eq!(changes.len(), 250);
        changes[0].leader_registration = None;
        let chunks = txn_chunks(&changes);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 250);
        for c in &chunks {
            let compares: usize = c
                .iter()
                .map(|c| 1 + usize::from(c.leader_registration.is_some()))
                .sum();
            assert!(compares <= MAX_OPS_PER_TXN, "{compares}");
        }
        assert_eq!(chunks[0].len(), 50, "one single compare, then 49 elections");
    }

    #[test]
    fn plan_reads_unclean_election_from_the_topic_config() {
        let changes = plan(&view(&[1], 1, 1, true), Live::new());
        assert_eq!(changes[0].new.leader, 1);
        assert_eq!(changes[0].new.isr, vec![1]);
    }
}
