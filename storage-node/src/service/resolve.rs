//! Resolves a request's topic and partition to a local replica this node leads, or to the
//! precise error a client acts on (unknown topic, unknown partition, not leader with a hint).

use std::sync::Arc;

use sluice_metadata::cache::ClusterView;
use sluice_proto::error::ApiError;
use sluice_proto::model::{LeaderEpoch, NodeId, TopicId};
use sluice_proto::pb::{ErrorCode, LeaderHint};

use crate::log::PartitionKey;
use crate::partitions::Partitions;
use crate::replica::Replica;

/// What a data-plane request names.
pub struct Target<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// Topic id the client resolved, or empty.
    pub topic_id: &'a [u8],
    /// Leader epoch the client believes current, or -1.
    pub leader_epoch: LeaderEpoch,
}

/// Where the leader of `r`'s partition is, from what this node knows: the replica's own
/// leadership when it is newer than the view (a follower told it), else the view's.
pub fn leader_hint(view: &ClusterView, r: &Replica) -> Option<LeaderHint> {
    let local = r.leadership();
    let stored = view
        .partitions
        .get(&(r.topic_id(), r.partition()))
        .map(|s| (s.record.leader, s.record.leader_epoch));
    let (leader, leader_epoch) = match stored {
        Some((leader, epoch)) if epoch >= local.epoch => (leader, epoch),
        _ => (local.leader, local.epoch),
    };
    view.nodes.get(&leader).map(|n| LeaderHint {
        node_id: leader,
        address: n.address.clone(),
        leader_epoch,
    })
}

/// Finds the leader replica for `t` on this node.
pub fn leader_replica(
    view: &ClusterView,
    partitions: &Partitions,
    node_id: NodeId,
    t: &Target<'_>,
) -> Result<Arc<Replica>, ApiError> {
    let Some(topic) = view.topics.get(t.topic) else {
        return Err(ApiError::new(
            ErrorCode::UnknownTopic,
            format!(
                "topic '{}' does not exist; create it first (sluice topic create {})",
                t.topic, t.topic
            ),
        ));
    };
    let topic_id = TopicId::from_slice(&topic.record.topic_id)?;
    if !t.topic_id.is_empty() && t.topic_id != topic_id.0 {
        return Err(ApiError::new(
            ErrorCode::UnknownTopicId,
            format!(
                "topic '{}' was deleted and re-created since the client looked it up; refresh metadata",
                t.topic
            ),
        ));
    }
    let count = topic.record.partition_count;
    if t.partition < 0 || t.partition >= count {
        return Err(ApiError::new(
            ErrorCode::UnknownPartition,
            format!(
                "topic '{}' has {count} partitions (0..={}); partition {} does not exist",
                t.topic,
                count - 1,
                t.partition
            ),
        ));
    }
    let key = PartitionKey {
        topic_id,
        partition: t.partition,
    };
    let state = view
        .partitions
        .get(&(topic_id, t.partition))
        .map(|s| &s.record);
    let local = partitions.get(&key);
    let hint = match &local {
        Some(r) => leader_hint(view, r),
        None => state.and_then(|s| {
            view.nodes.get(&s.leader).map(|n| LeaderHint {
                node_id: s.leader,
                address: n.address.clone(),
                leader_epoch: s.leader_epoch,
            })
        }),
    };
    // A follower told this replica of a newer epoch than the view shows.
    let deposed = local
        .as_ref()
        .is_some_and(|r| state.is_some_and(|s| r.leadership().epoch > s.leader_epoch));
    let replica = local.filter(|r| r.leadership().leader == node_id);
    let Some(replica) = replica else {
        if state.is_some_and(|s| s.leader == node_id) && !deposed {
            return Err(ApiError::new(
                ErrorCode::LeaderNotAvailable,
                format!(
                    "partition {}-{} is assigned to this node but still opening; retry shortly",
                    t.topic, t.partition
                ),
            ));
        }
        if state.is_some_and(|s| s.leader < 0) {
            return Err(ApiError::new(
                ErrorCode::PartitionOffline,
                format!(
                    "partition {}-{} has no leader right now; retry shortly",
                    t.topic, t.partition
                ),
            ));
        }
        return Err(ApiError::not_leader(
            format!(
                "node {node_id} does not lead partition {}-{}; send to the leader",
                t.topic, t.partition
            ),
            hint,
        ));
    };
    let epoch = replica.leadership().epoch;
    if t.leader_epoch >= 0 && t.leader_epoch < epoch {
        return Err(ApiError::new(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {} is older than the current {epoch}; refresh metadata",
                t.leader_epoch
            ),
        ));
    }
    if t.leader_epoch > epoch {
        return Err(ApiError::not_leader(
            format!(
                "this node has not yet seen leader epoch {} (it is at {epoch}); retry",
                t.leader_epoch
            ),
            hint,
        ));
    }
    Ok(replica)
}
