//! Server-side assignors: pure, deterministic functions from a group's members and topics to a
//! target assignment.
//!
//! Every assignor guarantees, for any input (including a `previous` assignment that names
//! departed members, deleted partitions or the same partition twice):
//!
//! | Rule | Meaning |
//! |---|---|
//! | Completeness | every partition of a topic that at least one member subscribes to (and that exists in [`AssignmentProblem::topics`]) is assigned |
//! | Exclusivity | no partition is assigned to two members |
//! | Eligibility | a member only gets partitions of topics it subscribes to |
//! | Membership | the result has one entry per member of the problem (possibly empty), and no others |
//! | Determinism | the same input gives the same output: no randomness, only ordered maps |
//!
//! The assignors differ in balance and in how much they look at `previous`:
//!
//! | Assignor | Balance | Uses `previous` | Order of members |
//! |---|---|---|---|
//! | [`uniform`] | total counts of members with the same subscription differ by at most 1 | no | member id |
//! | [`range`] | per topic, counts of its subscribers differ by at most 1 (the first members of each topic get the extra partitions) | no | instance id if set, then member id |
//! | [`sticky`] | as `uniform` | yes: keeps every valid previous ownership it can, moves the minimum | member id |
//!
//! [`Assignment::check`] states the common rules as code; property tests run every assignor
//! against it.

mod balance;
pub mod range;
pub mod sticky;
pub mod uniform;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod test_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::{Partitions, TopicPartition, TopicPartitionCounts};

pub use range::RangeAssignor;
pub use sticky::StickyAssignor;
pub use uniform::UniformAssignor;

/// A server-side assignment strategy. Implementations are pure: the group calls them when its
/// epoch bumps and persists the result, so they must not depend on anything but the arguments.
pub trait Assignor {
    /// Stable name, as chosen in group configuration (`"uniform"`, `"range"`, `"sticky"`).
    fn name(&self) -> &'static str;

    /// Computes the target assignment. `previous` is the last target assignment of the group
    /// (empty for a new group); assignors that value stability start from it.
    fn assign(&self, problem: &AssignmentProblem, previous: &Assignment) -> Assignment;
}

/// Names accepted by [`by_name`], in the order the CLI lists them.
pub const ASSIGNOR_NAMES: [&str; 3] = ["uniform", "range", "sticky"];

/// Looks an assignor up by its configured name, so configuration stays a plain string.
pub fn by_name(name: &str) -> Option<Arc<dyn Assignor + Send + Sync>> {
    match name {
        "uniform" => Some(Arc::new(UniformAssignor)),
        "range" => Some(Arc::new(RangeAssignor)),
        "sticky" => Some(Arc::new(StickyAssignor)),
        _ => None,
    }
}

/// What one member asks for: the input of an assignor for that member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSubscription {
    /// `group.instance.id` of a static member; `range` orders static members by it so that a
    /// restarted static member (new member id) lands on the same ranges.
    pub instance_id: Option<String>,
    /// Topics the member consumes.
    pub topics: BTreeSet<String>,
}

/// Everything an assignor may look at besides the previous assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentProblem {
    /// Members by member id.
    pub members: BTreeMap<String, MemberSubscription>,
    /// Partition count of each topic; subscribed topics missing here have no partitions yet.
    pub topics: TopicPartitionCounts,
}

impl AssignmentProblem {
    /// The partitions of `topic` that exist (none if the topic is unknown).
    pub fn partitions_of<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = TopicPartition> + 'a {
        let count = self.topics.get(topic).copied().unwrap_or(0).max(0);
        (0..count).map(move |p| TopicPartition::new(topic, p))
    }

    /// Members subscribed to `topic`, in member-id order.
    pub fn subscribers<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.members
            .iter()
            .filter(move |(_, m)| m.topics.contains(topic))
            .map(|(id, _)| id.as_str())
    }

    /// Whether `partition` exists and `member` may own it.
    pub fn is_eligible(&self, member: &str, partition: &TopicPartition) -> bool {
        let exists = partition.partition >= 0
            && partition.partition < self.topics.get(&partition.topic).copied().unwrap_or(0);
        exists
            && self
                .members
                .get(member)
                .is_some_and(|m| m.topics.contains(&partition.topic))
    }

    /// Topics that exist and have at least one subscriber: exactly these must be assigned.
    pub fn assignable_topics(&self) -> impl Iterator<Item = &str> + '_ {
        self.topics
            .keys()
            .filter(|t| self.members.values().any(|m| m.topics.contains(*t)))
            .map(String::as_str)
    }
}

/// A target assignment: the partitions each member should own once the group converges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Partitions by member id.
    pub members: BTreeMap<String, Partitions>,
}

static NO_PARTITIONS: Partitions = Partitions::new();

impl Assignment {
    /// The partitions of `member` (empty if it has none or is unknown).
    pub fn partitions(&self, member: &str) -> &Partitions {
        self.members.get(member).unwrap_or(&NO_PARTITIONS)
    }

    /// Owner of every assigned partition. If the assignment is malformed and names a partition
    /// twice, the first member in id order wins, so callers get a deterministic answer.
    pub fn owners(&self) -> BTreeMap<&TopicPartition, &str> {
        let mut owners = BTreeMap::new();
        for (member, partitions) in &self.members {
            for p in partitions {
                owners.entry(p).or_insert(member.as_str());
            }
        }
        owners
    }

    /// Number of partitions whose owner in `previous` still owns nothing of them here, i.e. the
    /// partitions that must be revoked from someone to reach `self`.
    pub fn moved_from(&self, previous: &Assignment) -> usize {
        let now = self.owners();
        previous
            .owners()
            .into_iter()
            .filter(|(p, old)| now.get(p).is_some_and(|new| new != old))
            .count()
    }

    /// Checks the rules every assignor guarantees (see the module table); returns the first
    /// violation. The group asserts it in debug builds and the property tests everywhere.
    pub fn check(&self, problem: &AssignmentProblem) -> Result<(), String> {
        for member in self.members.keys() {
            if !problem.members.contains_key(member) {
                return Err(format!("member {member} is not in the problem"));
            }
        }
        for member in problem.members.keys() {
            if !self.members.contains_key(member) {
                return Err(format!("member {member} has no entry"));
            }
        }
        let mut seen = BTreeSet::new();
        for (member, partitions) in &self.members {
            for p in partitions {
                if !problem.is_eligible(member, p) {
                    return Err(format!("{p} given to {member}, which may not own it"));
                }
                if !seen.insert(p) {
                    return Err(format!("{p} is assigned twice"));
                }
            }
        }
        for topic in problem.assignable_topics() {
            for p in problem.partitions_of(topic) {
                if !seen.contains(&p) {
                    return Err(format!("{p} is not assigned"));
                }
            }
        }
        Ok(())
    }
}
