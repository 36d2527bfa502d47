//! The admin side of reassignment: `ReassignPartitions` validates target replica lists and
//! starts each move ([`reassign::start`]); the failover loop carries them out
//! ([`reassign::step`]); `ListReassignments` reports the moves under way.

use std::collections::BTreeSet;

use sluice_proto::error::ApiError;
use sluice_proto::model::TopicId;
use sluice_proto::pb::{self, ErrorCode};

use sluice_metadata::{Compare, Op, Txn};

use crate::controller::{Controller, store_error};
use crate::reconcile::{self, Change, Pass};
use crate::{autobalance, balance, reassign};

/// Plans written at most, when partitions change under the write.
const WRITE_ATTEMPTS: usize = 5;
/// How long a retry waits for the view to show the write that beat it.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

impl Controller {
    /// Starts moving each named partition to its target replica list.
    pub async fn reassign_partitions(
        &self,
        fence: i64,
        req: pb::ReassignPartitionsRequest,
    ) -> Result<pb::ReassignPartitionsResponse, ApiError> {
        // A partition's leader may change its ISR meanwhile: plan again from the newer view.
        for _ in 0..WRITE_ATTEMPTS {
            let changes = self.start_moves(&req)?;
            let written =
                reconcile::write_changes(self.store.as_ref(), &self.keys, fence, &changes)
                    .await
                    .map_err(store_error)?;
            match written {
                Pass::Done => return Ok(pb::ReassignPartitionsResponse {}),
                Pass::Conflict { revision } => {
                    self.cache.wait_for_revision(revision, CATCH_UP).await;
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::ConcurrentModification,
            "the partitions kept changing while their moves were being started; retry",
        ))
    }

    /// The writes that start the requested moves, checked against the current view.
    fn start_moves(&self, req: &pb::ReassignPartitionsRequest) -> Result<Vec<Change>, ApiError> {
        let view = self.cache.view();
        let mut changes = Vec::new();
        for m in &req.reassignments {
            let t = view.topics.get(&m.topic).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownTopic,
                    format!("topic '{}' does not exist", m.topic),
                )
            })?;
            let topic_id = TopicId::from_slice(&t.record.topic_id)?;
            let stored = view
                .partitions_of(&topic_id)
                .find(|p| {
                    p.record.partition == m.partition && m.partition < t.record.partition_count
                })
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UnknownPartition,
                        format!(
                            "topic '{}' has partitions 0 to {}, not {}",
                            m.topic,
                            t.record.partition_count - 1,
                            m.partition
                        ),
                    )
                })?;
            let unique: BTreeSet<_> = m.replicas.iter().collect();
            if m.replicas.is_empty() || unique.len() != m.replicas.len() {
                return Err(invalid(format!(
                    "{}-{}: give one or more distinct node ids, not {:?}",
                    m.topic, m.partition, m.replicas
                )));
            }
            if let Some(n) = m.replicas.iter().find(|n| !view.nodes.contains_key(n)) {
                return Err(invalid(format!(
                    "{}-{}: storage node {n} is not registered; `sluice cluster status` lists the live nodes",
                    m.topic, m.partition
                )));
            }
            if let Some(new) = reassign::start(&stored.record, &m.replicas) {
                changes.push(Change {
                    topic: m.topic.clone(),
                    topic_id,
                    mod_revision: stored.mod_revision,
                    old: stored.record.clone(),
                    new,
                    leader_registration: None,
                    offline_reason: None,
                });
            }
        }
        Ok(changes)
    }

    /// Cancels the named moves (every move under way with `all`): each partition returns to
    /// its replicas before the move ([`reassign::cancel`]), and the automatic balancer counts
    /// the cluster as balanced for its current nodes, so it does not start them again.
    pub async fn cancel_reassignments(
        &self,
        fence: i64,
        req: pb::CancelReassignmentsRequest,
    ) -> Result<pb::CancelReassignmentsResponse, ApiError> {
        if req.all != req.partitions.is_empty() {
            return Err(invalid(
                "name the partitions whose moves to cancel, or ask for all of them (not both)"
                    .to_string(),
            ));
        }
        for _ in 0..WRITE_ATTEMPTS {
            let changes = self.cancel_moves(&req)?;
            let written =
                reconcile::write_changes(self.store.as_ref(), &self.keys, fence, &changes)
                    .await
                    .map_err(store_error)?;
            match written {
                Pass::Done => {
                    let nodes = reconcile::eligible(&self.cache.view());
                    crate::autobalance::record_balanced(self, fence, nodes.keys().copied()).await?;
                    let cancelled = changes
                        .into_iter()
                        .map(|c| pb::PartitionReassignment {
                            topic: c.topic,
                            partition: c.new.partition,
                            replicas: c.new.target_replicas,
                        })
                        .collect();
                    return Ok(pb::CancelReassignmentsResponse { cancelled });
                }
                Pass::Conflict { revision } => {
                    self.cache.wait_for_revision(revision, CATCH_UP).await;
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::ConcurrentModification,
            "the partitions kept changing while their moves were being cancelled; retry",
        ))
    }

    fn cancel_moves(&self, req: &pb::CancelReassignmentsRequest) -> Result<Vec<Change>, ApiError> {
        let view = self.cache.view();
        let mut changes = Vec::new();
        for t in view.topics.values() {
            let topic_id = TopicId::from_slice(&t.record.topic_id)?;
            for p in view.partitions_of(&topic_id) {
                let named = req.all
                    || req
                        .partitions
                        .iter()
                        .any(|r| r.topic == t.record.name && r.partition == p.record.partition);
                let Some(new) = named.then(|| reassign::cancel(&p.record)).flatten() else {
                    continue;
                };
                changes.push(Change {
                    topic: t.record.name.clone(),
                    topic_id,
                    mod_revision: p.mod_revision,
                    old: p.record.clone(),
                    new,
                    leader_registration: None,
                    offline_reason: None,
                });
            }
        }
        if let Some(r) = req
            .partitions
            .iter()
            .find(|r| !view.topics.contains_key(&r.topic))
        {
            return Err(ApiError::new(
                ErrorCode::UnknownTopic,
                format!("topic '{}' does not exist", r.topic),
            ));
        }
        Ok(changes)
    }

    /// Marks storage node `node_id` decommissioned (the failover loop then moves its replicas
    /// away and placement skips it), or clears the mark.
    pub async fn decommission_node(
        &self,
        fence: i64,
        req: pb::DecommissionNodeRequest,
    ) -> Result<pb::DecommissionNodeResponse, ApiError> {
        let view = self.cache.view();
        let known = view.nodes.contains_key(&req.node_id)
            || view.decommissioned.contains(&req.node_id)
            || view
                .partitions
                .values()
                .any(|p| p.record.replicas.contains(&req.node_id));
        if !known {
            return Err(invalid(format!(
                "storage node {} is neither registered nor holding replicas; `sluice cluster status` lists the nodes",
                req.node_id
            )));
        }
        let key = self.keys.decommissioned(req.node_id);
        let op = if req.recommission {
            Op::Delete(key)
        } else {
            Op::Put {
                key,
                value: Default::default(),
                lease: 0,
            }
        };
        let txn = Txn::new()
            .when(Compare::CreateRevision(self.keys.controller(), fence))
            .then(op);
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            return Err(crate::controller::lost_leadership());
        }
        self.cache
            .wait_for_revision(outcome.revision, CATCH_UP)
            .await;
        tracing::info!(
            node_id = req.node_id,
            recommission = req.recommission,
            "node decommission changed"
        );
        Ok(pb::DecommissionNodeResponse {})
    }

    /// Plans a rebalance over the eligible nodes ([`balance::plan`]) of the partitions not
    /// moving now and, unless `dry_run`, starts the moves.
    pub async fn rebalance(
        &self,
        fence: i64,
        req: pb::RebalanceRequest,
    ) -> Result<pb::RebalanceResponse, ApiError> {
        let moves = {
            let view = self.cache.view();
            let all = autobalance::parts(&view);
            let idle: Vec<usize> = (0..all.len())
                .filter(|i| all[*i].state.target_replicas.is_empty())
                .collect();
            let lists: Vec<Vec<i32>> = idle
                .iter()
                .map(|i| all[*i].state.replicas.clone())
                .collect();
            let plan = balance::plan(&lists, &reconcile::eligible(&view))
                .into_iter()
                .map(|(j, replicas)| (idle[j], replicas))
                .collect();
            autobalance::to_reassignments(&all, plan)
        };
        if !req.dry_run && !moves.is_empty() {
            let start = pb::ReassignPartitionsRequest {
                reassignments: moves.clone(),
            };
            self.reassign_partitions(fence, start).await?;
        }
        Ok(pb::RebalanceResponse { moves })
    }

    /// Every move under way, with the replicas still catching up, those that will go, and
    /// the bytes copied so far ([`crate::progress`]).
    pub async fn list_reassignments(&self) -> pb::ListReassignmentsResponse {
        let view = self.cache.view();
        let mut reassignments = Vec::new();
        let mut leaders = Vec::new();
        for t in view.topics.values() {
            let Ok(topic_id) = TopicId::from_slice(&t.record.topic_id) else {
                continue;
            };
            for p in view.partitions_of(&topic_id) {
                if p.record.target_replicas.is_empty() {
                    continue;
                }
                let (adding, removing) = reassign::progress(&p.record);
                reassignments.push(pb::Reassignment {
                    topic: t.record.name.clone(),
                    partition: p.record.partition,
                    replicas: p.record.replicas.clone(),
                    target_replicas: p.record.target_replicas.clone(),
                    adding,
                    removing,
                    ..Default::default()
                });
                leaders.push(p.record.leader);
            }
        }
        crate::progress::with_bytes(&view, &mut reassignments, &leaders).await;
        pb::ListReassignmentsResponse { reassignments }
    }
}
