//! Builders shared by the assignor and group tests.

use super::{AssignmentProblem, MemberSubscription};
use crate::{Partitions, TopicPartition};

/// A problem from `(member, topics)` and `(topic, partition count)` pairs.
pub(crate) fn problem(members: &[(&str, &[&str])], topics: &[(&str, i32)]) -> AssignmentProblem {
    AssignmentProblem {
        members: members
            .iter()
            .map(|(id, ts)| {
                let sub = MemberSubscription {
                    instance_id: None,
                    topics: ts.iter().map(|t| t.to_string()).collect(),
                };
                (id.to_string(), sub)
            })
            .collect(),
        topics: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
    }
}

/// The given partitions of one topic.
pub(crate) fn parts(topic: &str, ps: &[i32]) -> Partitions {
    ps.iter().map(|p| TopicPartition::new(topic, *p)).collect()
}
