//! The balancer's planner, a pure function: the replica lists that even out replicas and
//! preferred leaders (first replicas) over the eligible nodes, with as few replica moves as it
//! finds. Replicas: while the most loaded node holds two more than the least loaded, one replica
//! moves from the first to the second, in a partition where that keeps as many racks as before,
//! preferring one where the moved replica is a follower, so preferred leaders stay put.
//! Leaders: while one node is the preferred leader of two more partitions than another that
//! holds a replica of one of them, the two swap places in its list (no data moves); this does
//! not always reach leaders within one of the mean. Planning again on the result gives
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use sluice_proto::model::NodeId;

/// Moves at most, so a plan stays bounded on any input.
const MAX_STEPS: usize = 100_000;

fn racks(list: &[NodeId], nodes: &BTreeMap<NodeId, String>) -> usize {
    list.iter()
        .filter_map(|n| nodes.get(n))
        .collect::<BTreeSet<_>>()
        .len()
}

/// The new replica list of each partition (by index) that changes. `nodes` holds the eligible
/// nodes with their racks; replicas on other nodes stay where they are.
pub fn plan(
    partitions: &[Vec<NodeId>],
    nodes: &BTreeMap<NodeId, String>,
) -> Vec<(usize, Vec<NodeId>)> {
    let mut lists: Vec<Vec<NodeId>> = partitions.to_vec();
    if nodes.len() < 2 {
        return Vec::new();
    }
    let count = |lists: &[Vec<NodeId>], first_only: bool| -> BTreeMap<NodeId, usize> {
        let mut c: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
        for l in lists {
            let picked: Vec<NodeId> = if first_only {
                l.first().copied().into_iter().collect()
            } else {
                l.clone()
            };
            for n in picked {
                if let Some(v) = c.get_mut(&n) {
                    *v += 1;
                }
            }
        }
        c
    };
    for _ in 0..MAX_STEPS {
        let c = count(&lists, false);
        let (&hi, &hi_n) = c
            .iter()
            .max_by_key(|(n, v)| (**v, std::cmp::Reverse(**n)))
            .expect("nodes");
        let mut moved = false;
        let mut lows: Vec<(&NodeId, &usize)> = c.iter().filter(|(_, v)| **v + 1 < hi_n).collect();
        lows.sort_by_key(|(n, v)| (**v, **n));
        for (&lo, _) in lows {
            let pick = lists
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(&hi) && !l.contains(&lo))
                .map(|(i, l)| {
                    let swapped: Vec<NodeId> =
                        l.iter().map(|n| if *n == hi { lo } else { *n }).collect();
                    let gain = racks(&swapped, nodes) as isize - racks(l, nodes) as isize;
                    // Moving a follower leaves the preferred leaders as they are.
                    let follower = l.first() != Some(&hi);
                    (i, (gain, follower), swapped)
                })
                .filter(|(_, (gain, _), _)| *gain >= 0)
                .max_by_key(|(i, key, _)| (*key, std::cmp::Reverse(*i)));
            if let Some((i, _, swapped)) = pick {
                lists[i] = swapped;
                moved = true;
                break;
            }
        }
        if !moved {
            break;
        }
    }
    for _ in 0..MAX_STEPS {
        let c = count(&lists, true);
        let mut swapped = false;
        let mut order: Vec<(NodeId, usize)> = c.iter().map(|(n, v)| (*n, *v)).collect();
        order.sort_by_key(|(n, v)| (std::cmp::Reverse(*v), *n));
        'outer: for &(hi, hi_n) in &order {
            for &(lo, lo_n) in order.iter().rev() {
                if lo_n + 1 >= hi_n {
                    continue;
                }
                if let Some(l) = lists
                    .iter_mut()
                    .find(|l| l.first() == Some(&hi) && l.contains(&lo))
                {
                    let at = l.iter().position(|n| *n == lo).expect("contains");
                    l.swap(0, at);
                    swapped = true;
                    break 'outer;
                }
            }
        }
        if !swapped {
            break;
        }
    }
    lists
        .into_iter()
        .enumerate()
        .filter(|(i, l)| *l != partitions[*i])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(partitions: &[Vec<NodeId>], plan: &[(usize, Vec<NodeId>)]) -> Vec<Vec<NodeId>> {
        let mut out = partitions.to_vec();
        for (i, l) in plan {
            out[*i] = l.clone();
        }
        out
    }

    fn spread(lists: &[Vec<NodeId>], nodes: &BTreeMap<NodeId, String>, first: bool) -> usize {
        let mut c: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
        for l in lists {
            let picked: Vec<NodeId> = if first { l[..1].to_vec() } else { l.clone() };
            for n in picked {
                *c.get_mut(&n).unwrap() += 1;
            }
        }
        c.values().max().unwrap() - c.values().min().unwrap()
    }

    /// A cluster: node count, rack count, and partitions placed on random distinct nodes.
    fn cluster() -> impl Strategy<Value = (BTreeMap<NodeId, String>, Vec<Vec<NodeId>>)> {
        (3usize..9, 1usize..4, 1usize..40).prop_flat_map(|(n, r, p)| {
            let nodes: BTreeMap<NodeId, String> = (0..n as NodeId)
                .map(|i| (i, format!("rack-{}", i as usize % r)))
                .collect();
            let rf = 3.min(n);
            let part = Just((0..n as NodeId).collect::<Vec<_>>())
                .prop_shuffle()
                .prop_map(move |v| v[..rf].to_vec());
            (Just(nodes), proptest::collection::vec(part, p))
        })
    }

    proptest! {
        #[test]
        fn plans_balance_keep_lists_valid_and_racks_and_are_idempotent((nodes, parts) in cluster()) {
            let plan = plan(&parts, &nodes);
            let after = apply(&parts, &plan);
            for (before, l) in parts.iter().zip(&after) {
                let unique: BTreeSet<_> = l.iter().collect();
                prop_assert_eq!(unique.len(), l.len(), "distinct nodes: {:?}", l);
                prop_assert_eq!(l.len(), before.len());
                prop_assert!(racks(l, &nodes) >= racks(before, &nodes), "racks kept: {:?} -> {:?}", before, l);
            }
            let one_rack = nodes.values().collect::<BTreeSet<_>>().len() == 1;
            if one_rack {
                prop_assert!(spread(&after, &nodes, false) <= 1, "replicas even: {:?}", after);
            }
            prop_assert!(spread(&after, &nodes, false) <= spread(&parts, &nodes, false).max(1));
            // Preferred leaders are not guaranteed to end within one of the mean (nor never less
            // even: a replica move can shift a leadership the swaps cannot make up); the
            // join test below checks the common case.
            prop_assert!(super::plan(&after, &nodes).is_empty(), "planning again gives nothing");
        }
    }

    #[test]
    fn a_new_node_receives_replicas_and_leaders_until_even() {
        let nodes: BTreeMap<NodeId, String> = (0..4).map(|i| (i, String::new())).collect();
        let parts: Vec<Vec<NodeId>> = (0..24)
            .map(|i| {
                let a = i % 3;
                vec![a, (a + 1) % 3, (a + 2) % 3]
            })
            .collect();
        let plan = plan(&parts, &nodes);
        let after = apply(&parts, &plan);
        assert!(spread(&after, &nodes, false) <= 1);
        assert!(spread(&after, &nodes, true) <= 1, "{after:?}");
        let moved: usize = parts
            .iter()
            .zip(&after)
            .map(|(b, a)| a.iter().filter(|n| !b.contains(n)).count())
            .sum();
        assert_eq!(
            moved, 18,
            "72 replicas over 4 nodes: node 3 receives 18, no more move"
        );
    }
}
