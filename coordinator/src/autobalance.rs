//! The controller's own balancing, while it is the active controller, as the cluster config
//! (`auto.balance.*`, `auto.leader.rebalance.*`, `leader.*`) allows:
//!
//! - **Replicas** ([`next_step`]): when the eligible storage nodes (registered, not draining,
//!   not decommissioned) differ from those of the last balance (stored under `balancer`, so a
//!   new controller knows; read from the watch-fed view; written only after moves of its
//!   own), the balancer's plan ([`crate::balance::plan`]) is started a few
//!   moves at a time; once it is empty the node set is stored. The replicas of a node gone
//!   longer than `auto.balance.node.unavailable.ms` move to the others first
//!   ([`crate::decommission::plan`]). Nothing starts while a node is gone for less than that
//!   (a restart), while moves are under way, or while a partition lacks an in-sync replica
//!   for any other reason: moving data then would only slow its recovery.
//! - **Leaders** ([`leader_moves`]): every `leader.imbalance.check.interval.ms`, each node whose
//!   share of preferred-led partitions led elsewhere passes
//!   `leader.imbalance.per.node.percentage` gets its leaderships back, where it is an in-sync,
//!   live member, at most `leader.rebalance.moves.per.second`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::ClusterView;
use sluice_metadata::{Op, Txn};
use sluice_proto::cluster_config::ClusterConfig;
use sluice_proto::model::{NodeId, TopicId};
use sluice_proto::pb::{self, BalancerRecord, PartitionStateRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::Controller;
use crate::election::Role;
use crate::failover::{self, NO_LEADER};
use crate::reconcile::{self, Change};
use crate::{balance, decommission};

/// How often the balancer looks.
const TICK: Duration = Duration::from_secs(1);

/// One partition as the balancer sees it.
pub(crate) struct Part<'a> {
    pub(crate) topic: &'a str,
    pub(crate) topic_id: TopicId,
    pub(crate) mod_revision: i64,
    pub(crate) state: &'a PartitionStateRecord,
}

/// Every partition of `view` below its topic's partition count.
pub(crate) fn parts(view: &ClusterView) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    for t in view.topics.values() {
        let Ok(topic_id) = TopicId::from_slice(&t.record.topic_id) else {
            continue;
        };
        for p in view.partitions_of(&topic_id) {
            if p.record.partition < t.record.partition_count {
                out.push(Part {
                    topic: &t.record.name,
                    topic_id,
                    mod_revision: p.mod_revision,
                    state: &p.record,
                });
            }
        }
    }
    out
}

/// What the replica balancer does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do, or not now (the reason, for logs).
    Wait(&'static str),
    /// Start these moves (partition index in the view's order, target list).
    Move(Vec<(usize, Vec<NodeId>)>),
    /// The plan is empty: record that the cluster is balanced for these nodes.
    Balanced(BTreeSet<NodeId>),
}

/// The replica balancer's next step. `gone` holds, for each node that holds replicas but is not
/// registered, whether it has been gone longer than the configured time; `balanced_for` is
/// the stored node set of the last balance.
pub fn next_step(
    view: &ClusterView,
    gone: &BTreeMap<NodeId, bool>,
    balanced_for: Option<&BTreeSet<NodeId>>,
) -> Step {
    let all = parts(view);
    if all.iter().any(|p| !p.state.target_replicas.is_empty()) {
        return Step::Wait("moves under way");
    }
    if gone.values().any(|too_long| !too_long) {
        return Step::Wait("a storage node is gone, not yet for long");
    }
    if view.nodes.values().any(|n| n.draining) {
        return Step::Wait("a storage node is shutting down");
    }
    let nodes = reconcile::eligible(view);
    let dead: BTreeSet<NodeId> = gone.keys().copied().collect();
    if !dead.is_empty() {
        let records: Vec<&PartitionStateRecord> = all.iter().map(|p| p.state).collect();
        let mut moves = decommission::plan(&records, &nodes, &dead);
        // A partition without a leader cannot copy its data anywhere; it waits for its node.
        moves.retain(|(i, _)| all[*i].state.leader != NO_LEADER);
        return if moves.is_empty() {
            Step::Wait("no node can take the replicas of a node gone too long")
        } else {
            Step::Move(moves)
        };
    }
    let unhealthy = all
        .iter()
        .any(|p| p.state.leader == NO_LEADER || p.state.isr.len() < p.state.replicas.len());
    if unhealthy {
        return Step::Wait("a partition lacks an in-sync replica");
    }
    let ids: BTreeSet<NodeId> = nodes.keys().copied().collect();
    if balanced_for == Some(&ids) {
        return Step::Wait("balanced for these nodes");
    }
    let lists: Vec<Vec<NodeId>> = all.iter().map(|p| p.state.replicas.clone()).collect();
    let mut moves = balance::plan(&lists, &nodes);
    if moves.is_empty() {
        return Step::Balanced(ids);
    }
    moves.truncate(decommission::MAX_MOVES);
    Step::Move(moves)
}

/// Leadership moves back to preferred replicas, at most `budget`, for the nodes whose share of
/// preferred-led partitions led elsewhere is above `percentage`.
pub fn leader_moves(view: &ClusterView, percentage: u64, budget: usize) -> Vec<Change> {
    let all = parts(view);
    let live = reconcile::registered_nodes(view);
    let draining = reconcile::draining(view);
    // Per preferred node: partitions it prefers, and those led elsewhere.
    let mut counts: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    for p in &all {
        let Some(&preferred) = p.state.replicas.first() else {
            continue;
        };
        let c = counts.entry(preferred).or_default();
        c.0 += 1;
        if p.state.leader != preferred {
            c.1 += 1;
        }
    }
    let over: BTreeSet<NodeId> = counts
        .iter()
        .filter(|(_, (prefers, elsewhere))| elsewhere * 100 > prefers * percentage)
        .map(|(n, _)| *n)
        .collect();
    all.iter()
        .filter(|p| p.state.target_replicas.is_empty())
        .filter(|p| p.state.replicas.first().is_some_and(|n| over.contains(n)))
        .filter_map(|p| {
            let new = failover::move_to_preferred(p.state, &live, &draining)?;
            Some(Change {
                topic: p.topic.to_string(),
                topic_id: p.topic_id,
                mod_revision: p.mod_revision,
                old: p.state.clone(),
                leader_registration: live.get(&new.leader).map(|n| n.registration),
                new,
                offline_reason: None,
            })
        })
        .take(budget)
        .collect()
}

/// Plan entries (index into `all`, target list) as admin API moves.
pub(crate) fn to_reassignments(
    all: &[Part<'_>],
    moves: Vec<(usize, Vec<NodeId>)>,
) -> Vec<pb::PartitionReassignment> {
    moves
        .into_iter()
        .map(|(i, replicas)| pb::PartitionReassignment {
            topic: all[i].topic.to_string(),
            partition: all[i].state.partition,
            replicas,
        })
        .collect()
}

/// Stores `nodes` as the node set the cluster is balanced for: the replica balancer starts
/// nothing until the eligible nodes differ from it.
pub async fn record_balanced(
    c: &Controller,
    fence: i64,
    nodes: impl Iterator<Item = NodeId>,
) -> Result<(), sluice_proto::error::ApiError> {
    let record = BalancerRecord {
        nodes: nodes.collect(),
    };
    let txn = Txn::new()
        .when(sluice_metadata::Compare::CreateRevision(
            c.keys.controller(),
            fence,
        ))
        .then(Op::Put {
            key: c.keys.balancer(),
            value: record.encode_to_vec().into(),
            lease: 0,
        });
    c.store
        .txn(txn)
        .await
        .map_err(crate::controller::store_error)?;
    Ok(())
}

/// The balancing task of one coordinator.
pub struct AutoBalancer {
    /// The controller's write handle.
    pub controller: Controller,
}

impl AutoBalancer {
    /// Balances while `role` is active; returns when `stop` turns true.
    pub async fn run(self, role: watch::Receiver<Role>, mut stop: watch::Receiver<bool>) {
        let mut gone_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
        let mut last_leader_check: Option<Instant> = None;
        let mut leaders_pending = false;
        let mut was_active = false;
        // The node set a plan last came out empty for without this controller having moved
        // anything: kept here, not written, so a cluster that needs no balancing costs etcd
        // nothing. Once the balancer's own moves are done, the set is written (`balancer`).
        let mut quiet: Option<BTreeSet<NodeId>> = None;
        let mut moved = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Role::Active { fence } = *role.borrow() else {
                was_active = false;
                continue;
            };
            let view = self.controller.cache.view();
            let now = Instant::now();
            if !was_active {
                // A node found gone at takeover is timed from now: how long it was gone
                // before is not known here.
                gone_since.clear();
                (quiet, moved) = (None, false);
                was_active = true;
            }
            let holders: BTreeSet<NodeId> = view
                .partitions
                .values()
                .flat_map(|p| p.record.replicas.iter().copied())
                .collect();
            gone_since.retain(|n, _| holders.contains(n) && !view.nodes.contains_key(n));
            for n in holders.iter().filter(|n| !view.nodes.contains_key(n)) {
                gone_since.entry(*n).or_insert(now);
            }
            let cfg = ClusterConfig::from_stored(&view.cluster_config);
            if cfg.auto_balance {
                let limit = Duration::from_millis(cfg.node_unavailable_ms);
                let gone = gone_since
                    .iter()
                    .map(|(n, since)| (*n, now.duration_since(*since) >= limit))
                    .collect();
                if let Err(error) = self
                    .balance_replicas(fence, &view, &gone, &mut quiet, &mut moved)
                    .await
                {
                    tracing::warn!(%error, "automatic balancing failed; retrying");
                }
            }
            let interval = Duration::from_millis(cfg.leader_imbalance_check_interval_ms);
            let due = last_leader_check.is_none_or(|t| now.duration_since(t) >= interval);
            if cfg.auto_leader_rebalance && (leaders_pending || due) {
                if due {
                    last_leader_check = Some(now);
                }
                let budget = cfg.leader_rebalance_moves_per_second as usize;
                let changes = leader_moves(&view, cfg.leader_imbalance_percentage, budget);
                leaders_pending = changes.len() == budget;
                if !changes.is_empty() {
                    tracing::info!(
                        moves = changes.len(),
                        "moving leaderships back to preferred replicas"
                    );
                    let c = &self.controller;
                    if let Err(error) =
                        reconcile::write_changes(c.store.as_ref(), &c.keys, fence, &changes).await
                    {
                        tracing::warn!(%error, "preferred leader election failed; retrying");
                    }
                }
            }
        }
    }

    async fn balance_replicas(
        &self,
        fence: i64,
        view: &ClusterView,
        gone: &BTreeMap<NodeId, bool>,
        quiet: &mut Option<BTreeSet<NodeId>>,
        moved: &mut bool,
    ) -> Result<(), sluice_proto::error::ApiError> {
        let c = &self.controller;
        let balanced_for = quiet.as_ref().or(view.balanced_nodes.as_ref());
        match next_step(view, gone, balanced_for) {
            Step::Wait(why) => tracing::trace!(why, "automatic balancing waits"),
            Step::Move(moves) => {
                let reassignments = to_reassignments(&parts(view), moves);
                tracing::info!(moves = ?reassignments.iter().map(|m| (&m.topic, m.partition, &m.replicas)).collect::<Vec<_>>(), "automatic balancing starts moves");
                let req = pb::ReassignPartitionsRequest { reassignments };
                c.reassign_partitions(fence, req).await?;
                *moved = true;
            }
            // Nothing was moved to get here: remembered, not written.
            Step::Balanced(nodes) if !*moved => *quiet = Some(nodes),
            Step::Balanced(nodes) => {
                record_balanced(c, fence, nodes.iter().copied()).await?;
                (*quiet, *moved) = (None, false);
                tracing::info!(?nodes, "replicas balanced over the storage nodes");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_metadata::cache::Stored;
    use sluice_proto::pb::{NodeRecord, TopicRecord};

    use super::*;

    /// Nodes `nodes` registered; 24 partitions on nodes 0–2, each led by its first replica.
    fn view(nodes: &[NodeId]) -> ClusterView {
        let topic_id = TopicId([5; 16]);
        let mut v = ClusterView::default();
        for id in nodes {
            let n = NodeRecord {
                node_id: *id,
                ..Default::default()
            };
            v.nodes.insert(*id, n);
        }
        let t = TopicRecord {
            name: "t".into(),
            topic_id: topic_id.0.to_vec().into(),
            partition_count: 24,
            replication_factor: 3,
            ..Default::default()
        };
        v.topics.insert("t".into(), stored(t));
        for p in 0..24 {
            let a = p % 3;
            let replicas = vec![a, (a + 1) % 3, (a + 2) % 3];
            let s = PartitionStateRecord {
                topic_id: topic_id.0.to_vec().into(),
                partition: p,
                leader: a,
                isr: replicas.clone(),
                replicas,
                ..Default::default()
            };
            v.partitions.insert((topic_id, p), stored(s));
        }
        v
    }

    fn stored<T>(record: T) -> Stored<T> {
        Stored {
            record,
            create_revision: 1,
            mod_revision: 2,
        }
    }

    #[test]
    fn a_joined_node_starts_a_bounded_batch_of_moves_and_a_balanced_set_is_recorded() {
        let v = view(&[0, 1, 2, 3]);
        let Step::Move(moves) = next_step(&v, &BTreeMap::new(), None) else {
            panic!("moves expected");
        };
        assert_eq!(moves.len(), decommission::MAX_MOVES);
        assert!(moves.iter().all(|(_, l)| l.contains(&3)));
        let three = view(&[0, 1, 2]);
        assert_eq!(
            next_step(&three, &BTreeMap::new(), None),
            Step::Balanced([0, 1, 2].into())
        );
        let done: BTreeSet<NodeId> = [0, 1, 2].into();
        assert!(matches!(
            next_step(&three, &BTreeMap::new(), Some(&done)),
            Step::Wait(_)
        ));
    }

    #[test]
    fn a_node_gone_briefly_stops_balancing_and_one_gone_too_long_is_emptied() {
        let v = view(&[0, 1, 3]);
        assert!(matches!(
            next_step(&v, &[(2, false)].into(), None),
            Step::Wait(_)
        ));
        let Step::Move(moves) = next_step(&v, &[(2, true)].into(), None) else {
            panic!("moves expected");
        };
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|(_, l)| !l.contains(&2) && l.contains(&3)));
    }

    #[test]
    fn leaderships_go_back_where_the_imbalance_passes_the_threshold_within_the_budget() {
        let mut v = view(&[0, 1, 2]);
        for p in v.partitions.values_mut() {
            if p.record.leader == 0 {
                p.record.leader = 1;
            }
        }
        let moves = leader_moves(&v, 10, 5);
        assert_eq!(moves.len(), 5, "8 partitions prefer node 0; 5 per tick");
        assert!(moves.iter().all(|c| c.new.leader == 0));
        assert!(
            leader_moves(&v, 100, 50).is_empty(),
            "at 100% no imbalance passes"
        );
    }
}
