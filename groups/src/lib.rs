//! Consumer-group coordination core, in the style of Kafka's KIP-848 (server-side assignment).
//!
//! Nothing here does I/O. The storage node that leads a group's `__sluice_offsets` partition
//! drives a [`Group`] with heartbeats, a clock and topic metadata, appends the
//! [`GroupRecord`]s it returns to that partition before answering, and rebuilds the group with
//! [`Group::replay`] when it becomes leader.
//!
//! - [`assignor`]: pure functions from members and topics to a target [`Assignment`]
//!   (`uniform`, `range`, `sticky`).
//! - [`group`]: the state machine of one group — epochs, reconciliation (revoke before assign),
//!   session and rebalance timeouts, static membership, fencing of zombies.

pub mod assignor;
pub mod group;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use assignor::{Assignment, AssignmentProblem, Assignor, MemberSubscription};
pub use group::{
    Group, GroupConfig, GroupDescription, GroupError, GroupRecord, GroupState, HeartbeatOutcome,
    HeartbeatRequest, HeartbeatResponse, MemberDescription, MemberState, RecordKey,
};

/// A partition's index within its topic (same representation as `sluice_proto::model`).
pub type PartitionId = i32;

/// Partition count per topic name: the only topic metadata group coordination needs.
pub type TopicPartitionCounts = BTreeMap<String, i32>;

/// A set of partitions, ordered so that iteration (and thus every decision) is deterministic.
pub type Partitions = BTreeSet<TopicPartition>;

/// One partition of one topic: the unit that is assigned to exactly one member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// Builds a partition reference; a convenience for adapters and tests.
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
