//! `range`: Kafka's RangeAssignor, topic by topic. Each topic's subscribers, in order, get
//! consecutive ranges of its partitions; the first `partitions % subscribers` get one extra.
//! Members with the same subscription therefore get the same partition numbers of every
//! topic, which is what co-partitioned joins need.
//!
//! Order of subscribers: static members (with an instance id) first, by instance id, then
//! dynamic members by member id — as Kafka does, so a restarted static member, which comes back
//! with a new member id, gets the same ranges.
//!
//! | Subscribers of `t` | Partitions of `t` | Result |
//! |---|---|---|
//! | a, b, c | 12 | a 0–3, b 4–7, c 8–11 |
//! | a, b, c | 7 | a 0–2, b 3–4, c 5–6 |
//! | a, b (each on `t` and `u`) | t: 3, u: 3 | a gets `t` 0–1 and `u` 0–1, b gets `t-2`, `u-2`: per topic balanced, in total 4 vs 2 |
//! | b (instance `i1`), a (no instance) | 2 | b 0, a 1 |

use std::collections::BTreeMap;

use super::{Assignment, AssignmentProblem, Assignor};
use crate::{PartitionId, Partitions, TopicPartition};

/// Assigns contiguous partition ranges of each topic to its subscribers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(&self, problem: &AssignmentProblem, _previous: &Assignment) -> Assignment {
        let mut members: BTreeMap<String, Partitions> = problem
            .members
            .keys()
            .map(|m| (m.clone(), Partitions::new()))
            .collect();
        for (topic, &count) in &problem.topics {
            let mut subscribers: Vec<(Option<&str>, &str)> = problem
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(topic))
                .map(|(id, m)| (m.instance_id.as_deref(), id.as_str()))
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            // Static members (`Some`) first, then by instance id, then by member id.
            subscribers.sort_by(|(ia, ma), (ib, mb)| {
                ib.is_some()
                    .cmp(&ia.is_some())
                    .then(ia.cmp(ib))
                    .then(ma.cmp(mb))
            });
            let n = PartitionId::try_from(subscribers.len()).unwrap_or(PartitionId::MAX);
            let (per_member, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, (_, member)) in (0..).zip(subscribers) {
                let len = per_member + PartitionId::from(i < extra);
                let range = members.get_mut(member).expect("subscriber is a member");
                range.extend((next..next + len).map(|p| TopicPartition::new(topic, p)));
                next += len;
            }
        }
        Assignment { members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignor::test_support::{parts, problem};

    #[test]
    fn twelve_partitions_over_three_members_are_three_ranges() {
        let p = problem(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])], &[("t", 12)]);
        let a = RangeAssignor.assign(&p, &Assignment::default());
        assert_eq!(a.partitions("a"), &parts("t", &[0, 1, 2, 3]));
        assert_eq!(a.partitions("b"), &parts("t", &[4, 5, 6, 7]));
        assert_eq!(a.partitions("c"), &parts("t", &[8, 9, 10, 11]));
    }

    #[test]
    fn first_members_get_the_extra_partition_of_every_topic() {
        let p = problem(
            &[("a", &["t", "u"]), ("b", &["t", "u"])],
            &[("t", 3), ("u", 3)],
        );
        let a = RangeAssignor.assign(&p, &Assignment::default());
        let mut expected = parts("t", &[0, 1]);
        expected.extend(parts("u", &[0, 1]));
        assert_eq!(a.partitions("a"), &expected);
        let mut expected = parts("t", &[2]);
        expected.extend(parts("u", &[2]));
        assert_eq!(a.partitions("b"), &expected);
    }

    #[test]
    fn static_members_come_first_by_instance_id() {
        let mut p = problem(&[("a", &["t"]), ("b", &["t"])], &[("t", 2)]);
        p.members.get_mut("b").unwrap().instance_id = Some("i1".into());
        let a = RangeAssignor.assign(&p, &Assignment::default());
        assert_eq!(a.partitions("b"), &parts("t", &[0]));
        assert_eq!(a.partitions("a"), &parts("t", &[1]));
    }

    #[test]
    fn restarted_static_member_with_new_id_keeps_its_range() {
        let mut before = problem(&[("m1", &["t"]), ("z9", &["t"])], &[("t", 4)]);
        before.members.get_mut("z9").unwrap().instance_id = Some("i0".into());
        before.members.get_mut("m1").unwrap().instance_id = Some("i1".into());
        let first = RangeAssignor.assign(&before, &Assignment::default());
        let mut after = before.clone();
        let sub = after.members.remove("z9").unwrap();
        after.members.insert("a0".into(), sub);
        let second = RangeAssignor.assign(&after, &first);
        assert_eq!(first.partitions("z9"), second.partitions("a0"));
        assert_eq!(first.partitions("m1"), second.partitions("m1"));
    }
}
