//! Property tests of the rules in the module table, for every assignor, on random problems and
//! arbitrary (even malformed) previous assignments.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const TOPICS: [&str; 4] = ["t0", "t1", "t2", "missing"];

fn all() -> [Arc<dyn Assignor + Send + Sync>; 3] {
    ASSIGNOR_NAMES.map(|n| by_name(n).expect("known assignor"))
}

/// Members with random ids, optional instance ids and non-empty subscriptions; topics t0..t2
/// with 0..=12 partitions ("missing" never exists).
fn problems(max_members: usize) -> impl Strategy<Value = AssignmentProblem> {
    let member = (
        "[a-z]{1,3}",
        proptest::option::of("[a-z]{1,2}"),
        proptest::sample::subsequence(TOPICS.to_vec(), 1..=TOPICS.len()),
    );
    let members = proptest::collection::vec(member, 0..=max_members);
    let topics = proptest::collection::vec(0..=12i32, 3);
    (members, topics).prop_map(|(members, counts)| AssignmentProblem {
        members: members
            .into_iter()
            .map(|(id, instance_id, topics)| {
                let topics = topics.into_iter().map(String::from).collect();
                (
                    id,
                    MemberSubscription {
                        instance_id,
                        topics,
                    },
                )
            })
            .collect(),
        topics: TOPICS[..3]
            .iter()
            .zip(counts)
            .map(|(t, n)| (t.to_string(), n))
            .collect(),
    })
}

/// Problems where every member subscribes to the same topics.
fn homogeneous_problems(max_members: usize) -> impl Strategy<Value = AssignmentProblem> {
    (
        problems(max_members),
        proptest::sample::subsequence(TOPICS.to_vec(), 1..=4),
    )
        .prop_map(|(mut p, topics)| {
            for m in p.members.values_mut() {
                m.topics = topics.iter().map(|t| t.to_string()).collect();
            }
            p
        })
}

/// Arbitrary previous assignments: random owners (members or not), partitions in or out of
/// range, possibly the same partition under two owners.
fn previous() -> impl Strategy<Value = Assignment> {
    let entry = (
        "[a-z]{1,3}",
        proptest::sample::select(TOPICS.to_vec()),
        0..15i32,
    );
    proptest::collection::vec(entry, 0..40).prop_map(|entries| {
        let mut members: BTreeMap<String, Partitions> = BTreeMap::new();
        for (m, t, p) in entries {
            members
                .entry(m)
                .or_default()
                .insert(TopicPartition::new(t, p));
        }
        Assignment { members }
    })
}

fn counts_differ_by_at_most_one(counts: impl IntoIterator<Item = usize>) -> bool {
    let counts: Vec<usize> = counts.into_iter().collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// Fewest partitions `sticky` must move when all members share one subscription: members keep
/// their valid previous partitions, final counts are `floor` or `ceil` of the average, and the
/// `ceil` slots best go to the members that kept the most.
fn minimal_moves(problem: &AssignmentProblem, previous: &Assignment) -> usize {
    let total: usize = problem
        .assignable_topics()
        .map(|t| problem.partitions_of(t).count())
        .sum();
    let n = problem.members.len();
    if n == 0 {
        return 0;
    }
    let mut taken = Partitions::new();
    let mut kept_counts: Vec<usize> = previous
        .members
        .iter()
        .filter(|(m, _)| problem.members.contains_key(*m))
        .map(|(m, ps)| {
            ps.iter()
                .filter(|p| problem.is_eligible(m, p) && taken.insert((*p).clone()))
                .count()
        })
        .collect();
    kept_counts.sort_unstable_by(|a, b| b.cmp(a));
    let (floor, extra) = (total / n, total % n);
    kept_counts
        .iter()
        .enumerate()
        .map(|(i, k)| k.saturating_sub(floor + usize::from(i < extra)))
        .sum()
}

proptest! {
    #[test]
    fn every_assignor_is_complete_exclusive_and_eligible(p in problems(7), prev in previous()) {
        for assignor in all() {
            let a = assignor.assign(&p, &prev);
            prop_assert_eq!(a.check(&p), Ok(()), "{}", assignor.name());
        }
    }

    #[test]
    fn every_assignor_is_deterministic(p in problems(7), prev in previous()) {
        for assignor in all() {
            prop_assert_eq!(assignor.assign(&p, &prev), assignor.assign(&p.clone(), &prev.clone()), "{}", assignor.name());
        }
    }

    #[test]
    fn uniform_and_sticky_balance_members_with_the_same_subscription(p in problems(7), prev in previous()) {
        for assignor in [&UniformAssignor as &dyn Assignor, &StickyAssignor] {
            let a = assignor.assign(&p, &prev);
            let mut by_subscription: BTreeMap<&BTreeSet<String>, Vec<usize>> = BTreeMap::new();
            for (m, sub) in &p.members {
                by_subscription.entry(&sub.topics).or_default().push(a.partitions(m).len());
            }
            for counts in by_subscription.values() {
                prop_assert!(counts_differ_by_at_most_one(counts.iter().copied()), "{} {:?}", assignor.name(), a);
            }
        }
    }

    #[test]
    fn range_balances_each_topic_over_its_subscribers(p in problems(7)) {
        let a = RangeAssignor.assign(&p, &Assignment::default());
        for topic in p.topics.keys() {
            let counts = p.subscribers(topic).map(|m| a.partitions(m).iter().filter(|tp| &tp.topic == topic).count());
            prop_assert!(counts_differ_by_at_most_one(counts));
        }
    }

    #[test]
    fn sticky_moves_nothing_when_nothing_changes(p in problems(7), prev in previous()) {
        let first = StickyAssignor.assign(&p, &prev);
        prop_assert_eq!(StickyAssignor.assign(&p, &first), first);
    }

    #[test]
    fn sticky_moves_the_minimum_in_homogeneous_groups(p in homogeneous_problems(7), prev in previous()) {
        let a = StickyAssignor.assign(&p, &prev);
        // Moves away from a member that could have kept the partition.
        let kept_prev = Assignment { members: prev.members.iter()
            .filter(|(m, _)| p.members.contains_key(*m))
            .map(|(m, ps)| (m.clone(), ps.iter().filter(|tp| p.is_eligible(m, tp)).cloned().collect()))
            .collect() };
        prop_assert_eq!(a.moved_from(&kept_prev), minimal_moves(&p, &prev));
    }

    #[test]
    fn sticky_join_only_moves_partitions_to_the_new_member(p in homogeneous_problems(6), id in "[a-z]{1,3}") {
        prop_assume!(!p.members.contains_key(&id));
        let before = StickyAssignor.assign(&p, &Assignment::default());
        let mut joined = p.clone();
        let sub = p.members.values().next().cloned().unwrap_or_default();
        joined.members.insert(id.clone(), sub);
        let after = StickyAssignor.assign(&joined, &before);
        for m in p.members.keys() {
            prop_assert!(after.partitions(m).is_subset(before.partitions(m)));
        }
        let total: usize = after.members.values().map(BTreeSet::len).sum();
        prop_assert_eq!(after.partitions(&id).len(), total / joined.members.len());
    }

    #[test]
    fn sticky_leave_only_moves_the_leavers_partitions(p in homogeneous_problems(7), pick in any::<prop::sample::Index>()) {
        prop_assume!(!p.members.is_empty());
        let before = StickyAssignor.assign(&p, &Assignment::default());
        let leaver = pick.get(&p.members.keys().cloned().collect::<Vec<_>>()).clone();
        let mut left = p.clone();
        left.members.remove(&leaver);
        let after = StickyAssignor.assign(&left, &before);
        for m in left.members.keys() {
            prop_assert!(after.partitions(m).is_superset(before.partitions(m)));
        }
    }
}
