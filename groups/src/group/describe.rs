//! A read-only view of a group, for `DescribeGroup`, the CLI and tests (replay must reproduce
//! it exactly). Timers are left out: they are not persisted and restart on failover.

use std::collections::BTreeSet;

use super::Group;
use super::member::{Member, STATIC_LEFT};
use crate::{Partitions, TopicPartitionCounts};

/// Where a group stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Some member has not reached its target yet.
    Reconciling,
    /// Every member owns exactly its target at the group epoch.
    Stable,
}

/// Where one member stands in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Owns exactly its target at the group's assignment epoch.
    Stable,
    /// The target changed and the member has not heartbeated since.
    Reconciling,
    /// Must report releasing some partitions before it advances.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
    /// A static member that left with epoch -2; its partitions wait for its successor.
    LeftStatically,
}

/// One member as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Current member epoch.
    pub member_epoch: i32,
    /// Epoch before its last advance (accepted once after a lost response).
    pub previous_member_epoch: i32,
    /// Reconciliation state.
    pub state: MemberState,
    /// Topics it subscribes to.
    pub subscribed_topics: BTreeSet<String>,
    /// Partitions it may own now.
    pub assigned: Partitions,
    /// Partitions it must still report released.
    pub pending_revocation: Partitions,
    /// Partitions the target assignment gives it.
    pub target: Partitions,
    /// Its rebalance timeout.
    pub rebalance_timeout_ms: u32,
    /// Its session timeout.
    pub session_timeout_ms: u32,
}

/// A whole group as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// Overall state.
    pub state: GroupState,
    /// Group epoch.
    pub group_epoch: i32,
    /// Epoch the target assignment was computed for.
    pub assignment_epoch: i32,
    /// Name of the assignor in use.
    pub assignor: &'static str,
    /// Partition counts of the subscribed topics at the group epoch.
    pub topics: TopicPartitionCounts,
    /// Members in id order.
    pub members: Vec<MemberDescription>,
}

impl Group {
    /// Describes the group and each member.
    pub fn describe(&self) -> GroupDescription {
        let members: Vec<MemberDescription> = self
            .members
            .values()
            .map(|m| self.describe_member(m))
            .collect();
        let state = if members.is_empty() {
            GroupState::Empty
        } else if members.iter().all(|m| m.state == MemberState::Stable) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        };
        GroupDescription {
            group_id: self.group_id.clone(),
            state,
            group_epoch: self.group_epoch,
            assignment_epoch: self.target_epoch,
            assignor: self.assignor.name(),
            topics: self.topics.clone(),
            members,
        }
    }

    fn describe_member(&self, m: &Member) -> MemberDescription {
        let target = self.target.partitions(&m.id).clone();
        let state = if m.member_epoch == STATIC_LEFT {
            MemberState::LeftStatically
        } else if !m.pending_revocation.is_empty() {
            MemberState::UnrevokedPartitions
        } else if m.member_epoch < self.target_epoch {
            MemberState::Reconciling
        } else if m.assigned != target {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        MemberDescription {
            member_id: m.id.clone(),
            instance_id: m.instance_id.clone(),
            member_epoch: m.member_epoch,
            previous_member_epoch: m.previous_member_epoch,
            state,
            subscribed_topics: m.subscribed_topics.clone(),
            assigned: m.assigned.clone(),
            pending_revocation: m.pending_revocation.clone(),
            target,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            session_timeout_ms: m.session_timeout_ms,
        }
    }
}
