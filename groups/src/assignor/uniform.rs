//! `uniform`: balance only. The result is a function of the members and topics alone, so it is
//! easy to predict, but a membership change may move many partitions (use `sticky` to avoid
//! that).
//!
//! | Members (same subscription) | Partitions | Result |
//! |---|---|---|
//! | a, b, c | t: 12 | 4 each; `t-0`→a, `t-1`→b, `t-2`→c, `t-3`→a, … (round robin in id order) |
//! | a, b, c | t: 7 | a 3, b 2, c 2 (the extra goes to the lowest ids) |
//! | a {t, u}, b {t} | t: 2, u: 2 | `u` (one subscriber) is placed first: a gets `u-0`, `u-1`; then `t` goes to b, and balancing cannot move `u` |

use super::{Assignment, AssignmentProblem, Assignor, balance::balance};

/// Balances partitions over their subscribers without regard to the previous assignment.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformAssignor;

impl Assignor for UniformAssignor {
    fn name(&self) -> &'static str {
        "uniform"
    }

    fn assign(&self, problem: &AssignmentProblem, _previous: &Assignment) -> Assignment {
        balance(problem, Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignor::test_support::{parts, problem};

    #[test]
    fn twelve_partitions_over_three_members_is_round_robin() {
        let p = problem(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])], &[("t", 12)]);
        let a = UniformAssignor.assign(&p, &Assignment::default());
        assert_eq!(a.partitions("a"), &parts("t", &[0, 3, 6, 9]));
        assert_eq!(a.partitions("b"), &parts("t", &[1, 4, 7, 10]));
        assert_eq!(a.partitions("c"), &parts("t", &[2, 5, 8, 11]));
    }

    #[test]
    fn extra_partitions_go_to_lowest_member_ids() {
        let p = problem(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])], &[("t", 7)]);
        let a = UniformAssignor.assign(&p, &Assignment::default());
        let counts: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|m| a.partitions(m).len())
            .collect();
        assert_eq!(counts, [3, 2, 2]);
    }

    #[test]
    fn single_subscriber_topics_are_placed_first() {
        let p = problem(&[("a", &["t", "u"]), ("b", &["t"])], &[("t", 2), ("u", 2)]);
        let a = UniformAssignor.assign(&p, &Assignment::default());
        assert_eq!(a.partitions("a"), &parts("u", &[0, 1]));
        assert_eq!(a.partitions("b"), &parts("t", &[0, 1]));
    }

    #[test]
    fn members_without_subscribed_partitions_get_an_empty_entry() {
        let p = problem(&[("a", &["t"]), ("b", &["missing"])], &[("t", 2)]);
        let a = UniformAssignor.assign(&p, &Assignment::default());
        assert_eq!(a.partitions("a").len(), 2);
        assert!(a.members.contains_key("b") && a.partitions("b").is_empty());
    }
}
