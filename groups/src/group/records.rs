//! The records a group emits for persistence, and the replay that rebuilds a group from them.
//!
//! The storage node appends the records of one call as one batch to the group's
//! `__sluice_offsets` partition before answering the member. That partition is compacted, so
//! replay must give the same group from the full log and from its compacted form (the last
//! record of each [`RecordKey`], in log order):
//!
//! | Record | Key | Replay |
//! |---|---|---|
//! | `MemberJoined` | `Member(id)` | creates or updates the member's subscription and timeouts |
//! | `MemberLeft` | `Member(id)` (a tombstone) | removes the member |
//! | `GroupEpoch` | `GroupEpoch` | sets the group epoch and subscribed-topic metadata |
//! | `TargetAssignment` | `TargetAssignment` | sets the target assignment and its epoch |
//! | `CurrentAssignment` | `MemberAssignment(id)` | sets the member's epochs, assigned and pending partitions |
//!
//! A `CurrentAssignment` whose member has no `MemberJoined` left at the end of the log belongs
//! to a member that left (its tombstone was compacted away) and is ignored. Timers are not
//! persisted: replay restarts every session (and pending revocation) at `now_ms`, as Kafka's
//! coordinator does after failover.

use std::collections::{BTreeMap, BTreeSet};

use super::Group;
use super::member::Member;
use crate::{Assignment, Partitions, TopicPartitionCounts};

/// A decision of the group, to persist in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// A member joined or changed its subscription or timeouts.
    MemberJoined {
        /// Member id.
        member_id: String,
        /// Static membership id, if any.
        instance_id: Option<String>,
        /// Topics it subscribes to.
        subscribed_topics: BTreeSet<String>,
        /// Time it has to release revoked partitions.
        rebalance_timeout_ms: u32,
        /// Time without heartbeat after which it is removed.
        session_timeout_ms: u32,
    },
    /// A member left, was expired or fenced for good, or was replaced by a static successor.
    MemberLeft {
        /// Member id.
        member_id: String,
        /// Its member epoch when it left.
        member_epoch: i32,
    },
    /// The group epoch advanced (membership, subscriptions or topic metadata changed).
    GroupEpoch {
        /// New group epoch.
        group_epoch: i32,
        /// Partition counts of the subscribed topics at this epoch.
        topics: TopicPartitionCounts,
    },
    /// The target assignment computed for an epoch (or renamed for a static successor).
    TargetAssignment {
        /// Group epoch it was computed for.
        assignment_epoch: i32,
        /// The whole target.
        assignment: Assignment,
    },
    /// A member's reconciliation state changed.
    CurrentAssignment {
        /// Member id.
        member_id: String,
        /// Its member epoch (`-2` after a static leave).
        member_epoch: i32,
        /// Its epoch before the last advance.
        previous_member_epoch: i32,
        /// Partitions it may own now.
        assigned: Partitions,
        /// Partitions it was asked to release and has not yet reported released.
        pending_revocation: Partitions,
    },
}

/// Compaction key of a record within its group: the last record of each key is enough.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    /// The group epoch record.
    GroupEpoch,
    /// The target assignment record.
    TargetAssignment,
    /// A member's subscription; `MemberLeft` is its tombstone.
    Member(String),
    /// A member's current assignment.
    MemberAssignment(String),
}

impl GroupRecord {
    /// The key under which the storage node writes this record.
    pub fn key(&self) -> RecordKey {
        match self {
            Self::MemberJoined { member_id, .. } | Self::MemberLeft { member_id, .. } => {
                RecordKey::Member(member_id.clone())
            }
            Self::GroupEpoch { .. } => RecordKey::GroupEpoch,
            Self::TargetAssignment { .. } => RecordKey::TargetAssignment,
            Self::CurrentAssignment { member_id, .. } => {
                RecordKey::MemberAssignment(member_id.clone())
            }
        }
    }

    /// Whether the record deletes its key (the storage node writes it as a tombstone).
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Self::MemberLeft { .. })
    }
}

impl Group {
    /// Rebuilds a group from its persisted records (full or compacted), so that a new
    /// coordinator carries on with the same epochs and assignments. `self` must be fresh.
    pub fn replay(mut self, now_ms: u64, records: impl IntoIterator<Item = GroupRecord>) -> Self {
        let mut joined: BTreeSet<String> = BTreeSet::new();
        for record in records {
            self.apply(record, &mut joined);
        }
        self.members.retain(|id, _| joined.contains(id));
        for m in self.members.values_mut() {
            m.session_deadline_ms = now_ms.saturating_add(u64::from(m.session_timeout_ms));
            m.revocation_deadline_ms = (!m.pending_revocation.is_empty())
                .then(|| now_ms.saturating_add(u64::from(m.rebalance_timeout_ms)));
        }
        self
    }

    fn apply(&mut self, record: GroupRecord, joined: &mut BTreeSet<String>) {
        match record {
            GroupRecord::MemberJoined {
                member_id,
                instance_id,
                subscribed_topics,
                rebalance_timeout_ms,
                session_timeout_ms,
            } => {
                let m = self
                    .members
                    .entry(member_id.clone())
                    .or_insert_with(|| Member::new(member_id.clone()));
                m.instance_id = instance_id;
                m.subscribed_topics = subscribed_topics;
                m.rebalance_timeout_ms = rebalance_timeout_ms;
                m.session_timeout_ms = session_timeout_ms;
                joined.insert(member_id);
            }
            GroupRecord::MemberLeft { member_id, .. } => {
                self.members.remove(&member_id);
                joined.remove(&member_id);
            }
            GroupRecord::GroupEpoch {
                group_epoch,
                topics,
            } => {
                self.group_epoch = group_epoch;
                self.topics = topics;
            }
            GroupRecord::TargetAssignment {
                assignment_epoch,
                assignment,
            } => {
                self.target_epoch = assignment_epoch;
                self.target = assignment;
            }
            GroupRecord::CurrentAssignment {
                member_id,
                member_epoch,
                previous_member_epoch,
                assigned,
                pending_revocation,
            } => {
                let m = self
                    .members
                    .entry(member_id.clone())
                    .or_insert_with(|| Member::new(member_id));
                m.member_epoch = member_epoch;
                m.previous_member_epoch = previous_member_epoch;
                m.assigned = assigned;
                m.pending_revocation = pending_revocation;
            }
        }
    }
}

/// Keeps the last record of each key, in log order, dropping tombstones: what compaction of
/// the offsets partition eventually leaves.
pub fn compact(records: &[GroupRecord]) -> Vec<GroupRecord> {
    let mut last: BTreeMap<RecordKey, usize> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        last.insert(r.key(), i);
    }
    let mut keep: Vec<usize> = last
        .into_values()
        .filter(|&i| !records[i].is_tombstone())
        .collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| records[i].clone()).collect()
}
