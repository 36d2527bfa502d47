//! The state machine of one consumer group (KIP-848 rules), driven by heartbeats and a clock.
//!
//! | Event | Effect |
//! |---|---|
//! | member joins (epoch 0), leaves (-1) or changes its subscription; subscribed topic changes its partition count; a session or rebalance timeout expires | group epoch + 1, target assignment recomputed by the assignor from the previous target |
//! | member heartbeats | it moves towards its target: revoke first, epoch advance, then partitions nobody else holds (see `member`) |
//! | heartbeat or commit with a stale member epoch | [`GroupError::FencedMemberEpoch`] |
//! | heartbeat or commit naming a member not in the group | [`GroupError::UnknownMemberId`] |
//! | static member leaves with epoch -2 | it stays in the group, its partitions reserved, until its session expires |
//! | a new member joins with the instance id of a member that left with -2 | it takes over that member's epoch and assignment: no rebalance |
//! | a new member joins with the instance id of a member still active | [`GroupError::UnreleasedInstanceId`] |
//!
//! Every change is returned as [`GroupRecord`]s for the caller to persist; [`Group::replay`]
//! rebuilds the same state from them.

mod describe;
mod error;
mod heartbeat;
mod member;
mod records;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::{
    Assignment, AssignmentProblem, Assignor, MemberSubscription, TopicPartition,
    TopicPartitionCounts,
};
use member::{Member, STATIC_LEFT};

pub use describe::{GroupDescription, GroupState, MemberDescription, MemberState};
pub use error::GroupError;
pub use heartbeat::{HeartbeatOutcome, HeartbeatRequest, HeartbeatResponse};
pub use records::{GroupRecord, RecordKey, compact};

/// Member epoch of a heartbeat that joins (or rejoins after being fenced).
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a heartbeat that leaves the group for good.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member's leave: its assignment is kept for its successor.
pub const STATIC_LEAVE_EPOCH: i32 = STATIC_LEFT;

/// Source of ids for members that join without one (the storage node passes UUIDs). It must
/// return non-empty ids that are not in use; the group retries a few times on a collision.
pub type MemberIdSource = Box<dyn FnMut() -> String + Send>;

/// Group-wide settings: defaults and bounds for what members ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// How often members should heartbeat; returned in every response.
    pub heartbeat_interval_ms: u32,
    /// Session timeout for a member that asks for none (0).
    pub default_session_timeout_ms: u32,
    /// Smallest session timeout accepted: protects the group from churn.
    pub min_session_timeout_ms: u32,
    /// Largest session timeout accepted: bounds how long a dead member blocks partitions.
    pub max_session_timeout_ms: u32,
    /// Rebalance timeout for a member that asks for none (0).
    pub default_rebalance_timeout_ms: u32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 3_000,
            default_session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            default_rebalance_timeout_ms: 300_000,
        }
    }
}

/// One consumer group's coordination state. Not persisted by itself: every change is also
/// returned as records (see [`GroupRecord`]).
pub struct Group {
    group_id: String,
    config: GroupConfig,
    assignor: Arc<dyn Assignor + Send + Sync>,
    new_member_id: MemberIdSource,
    group_epoch: i32,
    /// Partition counts of the subscribed topics that the target was computed against.
    topics: TopicPartitionCounts,
    target_epoch: i32,
    target: Assignment,
    members: BTreeMap<String, Member>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("group_id", &self.group_id)
            .field("assignor", &self.assignor.name())
            .field("group_epoch", &self.group_epoch)
            .field("target_epoch", &self.target_epoch)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// An empty group at epoch 0; call [`Group::replay`] on it to restore a persisted one.
    pub fn new(
        group_id: impl Into<String>,
        config: GroupConfig,
        assignor: Arc<dyn Assignor + Send + Sync>,
        new_member_id: MemberIdSource,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            config,
            assignor,
            new_member_id,
            group_epoch: 0,
            topics: TopicPartitionCounts::new(),
            target_epoch: 0,
            target: Assignment::default(),
            members: BTreeMap::new(),
        }
    }

    /// The group's id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Current group epoch.
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    /// Whether the group has no members (commits without a member are then allowed).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Checks that an offset commit comes from the member as it is now, so that a zombie (a
    /// member removed or moved on to a newer epoch) cannot commit. A commit with an empty
    /// member id and a negative epoch is an admin or standalone commit, allowed only while the
    /// group has no members (as in Kafka). Offsets themselves are stored by the caller.
    pub fn validate_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        if member_id.is_empty() && member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or_else(|| GroupError::UnknownMemberId {
                member_id: member_id.to_string(),
            })?;
        if m.member_epoch == STATIC_LEFT || m.member_epoch != member_epoch {
            return Err(GroupError::FencedMemberEpoch {
                member_id: member_id.to_string(),
                received: member_epoch,
                current: m.member_epoch,
            });
        }
        Ok(())
    }

    /// Checks that a member commits only partitions it holds: assigned, or given up but not yet
    /// reported released (it commits those before releasing them). A zombie that rejoined under
    /// a new epoch cannot overwrite the progress of a partition's new owner. Administrative
    /// commits (empty member id) are not checked here.
    pub fn validate_commit_partitions<'a>(
        &self,
        member_id: &str,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or_else(|| GroupError::UnknownMemberId {
                member_id: member_id.to_string(),
            })?;
        for tp in partitions {
            if !m.assigned.contains(tp) && !m.pending_revocation.contains(tp) {
                return Err(GroupError::InvalidRequest(format!(
                    "member {member_id} does not own {tp}; commit only partitions assigned to this member"
                )));
            }
        }
        Ok(())
    }

    /// Removes members whose session or rebalance (revocation) deadline is at or before
    /// `now_ms`, bumping the epoch and recomputing the target if any went. The caller runs it
    /// at [`Group::next_deadline_ms`].
    pub fn expire(&mut self, now_ms: u64) -> Vec<GroupRecord> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        let mut records = Vec::new();
        if expired.is_empty() {
            return records;
        }
        for id in &expired {
            self.remove_member(id, &mut records);
        }
        let topics = self.subscribed_topic_counts(&self.topics);
        self.bump(topics, &mut records);
        records
    }

    /// Earliest instant at which [`Group::expire`] would remove someone.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.revocation_deadline_ms])
            .flatten()
            .min()
    }

    fn remove_member(&mut self, id: &str, records: &mut Vec<GroupRecord>) {
        if let Some(m) = self.members.remove(id) {
            records.push(GroupRecord::MemberLeft {
                member_id: m.id,
                member_epoch: m.member_epoch,
            });
        }
    }

    /// Partition counts, taken from `source`, of the topics some member subscribes to.
    fn subscribed_topic_counts(&self, source: &TopicPartitionCounts) -> TopicPartitionCounts {
        self.members
            .values()
            .flat_map(|m| &m.subscribed_topics)
            .filter_map(|t| source.get(t).filter(|n| **n > 0).map(|n| (t.clone(), *n)))
            .collect()
    }

    /// Advances the group epoch and recomputes the target from the previous one.
    fn bump(&mut self, topics: TopicPartitionCounts, records: &mut Vec<GroupRecord>) {
        self.group_epoch += 1;
        self.topics = topics;
        records.push(GroupRecord::GroupEpoch {
            group_epoch: self.group_epoch,
            topics: self.topics.clone(),
        });
        let problem = AssignmentProblem {
            members: self
                .members
                .values()
                .map(|m| {
                    let sub = MemberSubscription {
                        instance_id: m.instance_id.clone(),
                        topics: m.subscribed_topics.clone(),
                    };
                    (m.id.clone(), sub)
                })
                .collect(),
            topics: self.topics.clone(),
        };
        let target = self.assignor.assign(&problem, &self.target);
        debug_assert_eq!(target.check(&problem), Ok(()), "{}", self.assignor.name());
        self.target = target;
        self.target_epoch = self.group_epoch;
        records.push(GroupRecord::TargetAssignment {
            assignment_epoch: self.target_epoch,
            assignment: self.target.clone(),
        });
    }

    fn fresh_member_id(&mut self) -> String {
        for _ in 0..16 {
            let id = (self.new_member_id)();
            if !id.is_empty() && !self.members.contains_key(&id) {
                return id;
            }
        }
        panic!("the member id source keeps returning empty or used ids");
    }
}
