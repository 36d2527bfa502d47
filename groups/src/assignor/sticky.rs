//! `sticky`: the balance of `uniform`, reached by moving as few partitions as possible from the
//! previous assignment.
//!
//! A member keeps every partition it had in `previous` that still exists and that it still
//! subscribes to (a partition named twice stays with the first member in id order). The rest
//! is placed and balanced as described in `balance`: partitions only leave members that hold
//! more than their share.
//!
//! | Change (all members on `t`, 12 partitions) | Before | After | Moved |
//! |---|---|---|---|
//! | nothing | a 4, b 4, c 4 | same | 0 |
//! | d joins | a 4, b 4, c 4 | 3 each | 3, all to d |
//! | c leaves | a 4, b 4, c 4 | a 6, b 6 | only c's 4 |
//! | `t` grows to 15 | a 4, b 4, c 4 | 5 each | 0: the new ones spread |
//! | a unsubscribes | a 4, b 4, c 4 | b 6, c 6 | only a's 4 |

use std::collections::BTreeMap;

use super::{Assignment, AssignmentProblem, Assignor, balance::balance};
use crate::{Partitions, TopicPartition};

/// Balances like `uniform` while keeping previous ownership wherever balance allows.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

impl Assignor for StickyAssignor {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn assign(&self, problem: &AssignmentProblem, previous: &Assignment) -> Assignment {
        let mut taken: Partitions = Partitions::new();
        let mut kept: BTreeMap<String, Partitions> = BTreeMap::new();
        for (member, partitions) in &previous.members {
            if !problem.members.contains_key(member) {
                continue;
            }
            let valid: Vec<&TopicPartition> = partitions
                .iter()
                .filter(|p| problem.is_eligible(member, p) && !taken.contains(*p))
                .collect();
            taken.extend(valid.iter().map(|p| (*p).clone()));
            kept.insert(member.clone(), valid.into_iter().cloned().collect());
        }
        balance(problem, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignor::test_support::problem;

    fn three_on_twelve() -> (AssignmentProblem, Assignment) {
        let p = problem(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])], &[("t", 12)]);
        let a = StickyAssignor.assign(&p, &Assignment::default());
        (p, a)
    }

    #[test]
    fn unchanged_group_moves_nothing() {
        let (p, before) = three_on_twelve();
        assert_eq!(StickyAssignor.assign(&p, &before), before);
    }

    #[test]
    fn joining_member_takes_three_and_nothing_else_moves() {
        let (mut p, before) = three_on_twelve();
        p.members.insert("d".into(), p.members["a"].clone());
        let after = StickyAssignor.assign(&p, &before);
        for m in ["a", "b", "c", "d"] {
            assert_eq!(after.partitions(m).len(), 3, "{m}");
        }
        for m in ["a", "b", "c"] {
            assert!(after.partitions(m).is_subset(before.partitions(m)), "{m}");
        }
        assert_eq!(after.moved_from(&before), 3);
    }

    #[test]
    fn leaving_member_only_its_partitions_move() {
        let (mut p, before) = three_on_twelve();
        p.members.remove("c");
        let after = StickyAssignor.assign(&p, &before);
        for m in ["a", "b"] {
            assert!(after.partitions(m).is_superset(before.partitions(m)), "{m}");
            assert_eq!(after.partitions(m).len(), 6);
        }
    }

    #[test]
    fn new_partitions_spread_without_moving_old_ones() {
        let (mut p, before) = three_on_twelve();
        p.topics.insert("t".into(), 15);
        let after = StickyAssignor.assign(&p, &before);
        assert_eq!(after.moved_from(&before), 0);
        for m in ["a", "b", "c"] {
            assert_eq!(after.partitions(m).len(), 5, "{m}");
        }
    }

    #[test]
    fn partition_named_twice_in_previous_stays_with_lowest_id() {
        let p = problem(&[("a", &["t"]), ("b", &["t"])], &[("t", 2)]);
        let mut previous = Assignment::default();
        let zero = TopicPartition::new("t", 0);
        previous.members.insert("a".into(), [zero.clone()].into());
        previous.members.insert("b".into(), [zero.clone()].into());
        let after = StickyAssignor.assign(&p, &previous);
        assert!(after.partitions("a").contains(&zero));
        assert_eq!(after.partitions("b").len(), 1);
    }
}
