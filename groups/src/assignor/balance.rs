//! The balancing procedure shared by `uniform` (from nothing) and `sticky` (from what members
//! keep of the previous assignment).
//!
//! 1. Start from `kept`: partitions already placed (valid for their member, each once).
//! 2. Place every other assignable partition on the eligible member with the fewest partitions
//!    (ties: lowest member id). Topics with fewer subscribers go first, so that constrained
//!    partitions are placed while their few candidates are still light.
//! 3. While some member holds at least two more partitions than a member that could take one
//!    of them, move one (heaviest source first, lightest destination first; the source's
//!    highest eligible partition). Each move lowers the sum of squared counts by at least 2,
//!    so the loop ends.
//!
//! After step 3 two members with the same subscription differ by at most one partition, since
//! either could take any partition of the other. When all members share one subscription, step 2
//! never lifts a member above the lightest plus one, so step 3 only takes from members that were
//! over-full in `kept`: that is what keeps `sticky` minimal (checked by a property test against
//! the lower bound).

use std::collections::BTreeMap;

use super::{Assignment, AssignmentProblem};
use crate::{Partitions, TopicPartition};

/// Completes and balances `kept` into a full assignment of `problem`.
pub(super) fn balance(
    problem: &AssignmentProblem,
    mut kept: BTreeMap<String, Partitions>,
) -> Assignment {
    for member in problem.members.keys() {
        kept.entry(member.clone()).or_default();
    }
    let mut assignment = Assignment { members: kept };
    place_unassigned(problem, &mut assignment);
    while move_one(problem, &mut assignment) {}
    debug_assert_eq!(assignment.check(problem), Ok(()));
    assignment
}

fn place_unassigned(problem: &AssignmentProblem, assignment: &mut Assignment) {
    let placed: Partitions = assignment.members.values().flatten().cloned().collect();
    let mut topics: Vec<(usize, &str)> = problem
        .assignable_topics()
        .map(|t| (problem.subscribers(t).count(), t))
        .collect();
    topics.sort();
    for (_, topic) in topics {
        let candidates: Vec<&str> = problem.subscribers(topic).collect();
        for p in problem.partitions_of(topic) {
            if placed.contains(&p) {
                continue;
            }
            // `min_by_key` returns the first minimum, and candidates are in id order.
            let lightest = candidates
                .iter()
                .min_by_key(|m| assignment.partitions(m).len())
                .expect("an assignable topic has a subscriber");
            assignment
                .members
                .get_mut(*lightest)
                .expect("every member has an entry")
                .insert(p);
        }
    }
}

/// Performs one balancing move if one is possible; returns whether it did.
fn move_one(problem: &AssignmentProblem, assignment: &mut Assignment) -> bool {
    let mut by_count: Vec<(usize, &str)> = assignment
        .members
        .iter()
        .map(|(m, ps)| (ps.len(), m.as_str()))
        .collect();
    by_count.sort();
    let mut found: Option<(String, String, TopicPartition)> = None;
    'search: for &(heavy_count, heavy) in by_count.iter().rev() {
        for &(light_count, light) in &by_count {
            if light_count + 1 >= heavy_count {
                break;
            }
            let movable = assignment
                .partitions(heavy)
                .iter()
                .rev()
                .find(|p| problem.is_eligible(light, p));
            if let Some(p) = movable {
                found = Some((heavy.to_string(), light.to_string(), p.clone()));
                break 'search;
            }
        }
    }
    let Some((heavy, light, p)) = found else {
        return false;
    };
    assignment
        .members
        .get_mut(&heavy)
        .expect("source exists")
        .remove(&p);
    assignment
        .members
        .get_mut(&light)
        .expect("destination exists")
        .insert(p);
    true
}
