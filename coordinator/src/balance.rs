//! The balancer's planner, a pure function: the replica lists that even out replicas and
//! preferred leaders (first replicas) over the eligible nodes, with as few replica moves as it
//! finds. Replicas on other nodes stay where they are.
//!
//! - Replicas: while a node holds two more than another, one replica moves from the most loaded
//!   such node that can give one to the least loaded node it can go to, in a partition where
//!   that loses no rack, preferring one where the moved replica is a follower (preferred
//!   leaders stay put).
//!   Counts and each node's partitions are kept up to date as replicas move, so a plan costs
//!   about (moves × partitions per node).
//! - Preferred leaders: no data moves, only the order of a list. While a node is the preferred
//!   leader of two more partitions than some node reachable from it — through a partition it
//!   prefers where that node is a replica, and so on (an alternating path) — the path's
//!   preferences shift by one (one pass of direct shifts first, for speed). With no such path left the largest count is as small as the
//!   replica lists allow (a load-balancing semi-matching without a cost-reducing path is
//!   optimal), which is within one of the mean whenever the lists permit it.
//!
//! Planning again on the result gives nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sluice_proto::model::NodeId;

/// Steps at most per phase, so a plan stays bounded on any input.
const MAX_STEPS: usize = 100_000;

/// Partitions (by index) per eligible node: those it holds a replica of, or those it is the
/// preferred leader of.
type Index = BTreeMap<NodeId, BTreeSet<usize>>;

/// The new replica list of each partition (by index) that changes. `nodes` holds the eligible
/// nodes with their racks.
pub fn plan(
    partitions: &[Vec<NodeId>],
    nodes: &BTreeMap<NodeId, String>,
) -> Vec<(usize, Vec<NodeId>)> {
    if nodes.len() < 2 {
        return Vec::new();
    }
    let mut lists: Vec<Vec<NodeId>> = partitions.to_vec();
    spread_replicas(&mut lists, nodes);
    spread_leaders(&mut lists, nodes);
    lists
        .into_iter()
        .enumerate()
        .filter(|(i, l)| *l != partitions[*i])
        .collect()
}

fn index(lists: &[Vec<NodeId>], nodes: &BTreeMap<NodeId, String>, first_only: bool) -> Index {
    let mut at: Index = nodes.keys().map(|n| (*n, BTreeSet::new())).collect();
    for (i, l) in lists.iter().enumerate() {
        let picked = if first_only { &l[..l.len().min(1)] } else { l };
        for n in picked {
            if let Some(s) = at.get_mut(n) {
                s.insert(i);
            }
        }
    }
    at
}

/// Racks gained by replacing `hi` with `lo` in `list` (-1, 0 or 1); nodes without a known
/// rack count for none.
fn rack_gain(list: &[NodeId], hi: NodeId, lo: NodeId, nodes: &BTreeMap<NodeId, String>) -> i8 {
    let has = |rack: &String| {
        list.iter()
            .filter(|n| **n != hi)
            .any(|n| nodes.get(n) == Some(rack))
    };
    i8::from(!has(&nodes[&lo])) - i8::from(!has(&nodes[&hi]))
}

fn spread_replicas(lists: &mut [Vec<NodeId>], nodes: &BTreeMap<NodeId, String>) {
    // Each node's partitions where it is the preferred leader, and where it is a follower.
    let mut leads = index(lists, nodes, true);
    let mut follows = index(lists, nodes, false);
    for (n, led) in &leads {
        follows
            .get_mut(n)
            .expect("eligible")
            .retain(|i| !led.contains(i));
    }
    // Pairs (giver, taker) known to have no possible move. A move of partition i adds one
    // option at most to a pair: giving i, by a node that holds it afterwards; a pair that gains
    // it is forgotten.
    let mut blocked: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();
    for _ in 0..MAX_STEPS {
        let mut order: Vec<(usize, NodeId)> = leads
            .iter()
            .map(|(n, s)| (s.len() + follows[n].len(), *n))
            .collect();
        order.sort_by_key(|(c, n)| (std::cmp::Reverse(*c), *n));
        // The most loaded node that can give a replica to a node with two fewer, to the least
        // loaded such node; a follower replica if it has one that can go.
        let mut found = None;
        'search: for &(most, hi) in &order {
            for &(_, lo) in order.iter().rev().take_while(|(c, _)| c + 1 < most) {
                if blocked.contains(&(hi, lo)) {
                    continue;
                }
                let can = |held: &BTreeSet<usize>| {
                    held.iter().copied().find(|&i| {
                        let l = &lists[i];
                        !l.contains(&lo) && rack_gain(l, hi, lo, nodes) >= 0
                    })
                };
                match can(&follows[&hi]).or_else(|| can(&leads[&hi])) {
                    Some(i) => {
                        found = Some((i, hi, lo));
                        break 'search;
                    }
                    None => {
                        blocked.insert((hi, lo));
                    }
                }
            }
        }
        let Some((i, hi, lo)) = found else { break };
        let set = if lists[i][0] == hi {
            &mut leads
        } else {
            &mut follows
        };
        set.get_mut(&hi).expect("eligible").remove(&i);
        set.get_mut(&lo).expect("eligible").insert(i);
        for n in lists[i].iter_mut().filter(|n| **n == hi) {
            *n = lo;
        }
        let l = &lists[i];
        blocked.retain(|&(giver, taker)| {
            !(l.contains(&giver) && !l.contains(&taker) && rack_gain(l, giver, taker, nodes) >= 0)
        });
    }
}

fn spread_leaders(lists: &mut [Vec<NodeId>], nodes: &BTreeMap<NodeId, String>) {
    let mut leads = index(lists, nodes, true);
    // Direct shifts first (one partition, no path), which settle most of the imbalance in one
    // pass over the partitions.
    for (i, list) in lists.iter_mut().enumerate() {
        let Some(from) = list.first().copied().filter(|n| leads.contains_key(n)) else {
            continue;
        };
        let least = list[1..]
            .iter()
            .filter_map(|n| leads.get(n).map(|s| (s.len(), *n)))
            .min();
        if let Some((count, to)) = least
            && count + 2 <= leads[&from].len()
        {
            let at = list.iter().position(|n| *n == to).expect("a replica");
            list.swap(0, at);
            leads.get_mut(&from).expect("eligible").remove(&i);
            leads.get_mut(&to).expect("eligible").insert(i);
        }
    }
    for _ in 0..MAX_STEPS {
        let mut order: Vec<(usize, NodeId)> = leads.iter().map(|(n, s)| (s.len(), *n)).collect();
        order.sort_by_key(|(c, n)| (std::cmp::Reverse(*c), *n));
        let least = order.last().map_or(0, |(c, _)| *c);
        let path = order
            .iter()
            .take_while(|(c, _)| *c >= least + 2)
            .find_map(|(_, hi)| reducing_path(lists, &leads, *hi));
        let Some(path) = path else { break };
        for (i, to) in path {
            let at = lists[i].iter().position(|n| *n == to).expect("a replica");
            let from = lists[i][0];
            lists[i].swap(0, at);
            leads.get_mut(&from).expect("eligible").remove(&i);
            leads.get_mut(&to).expect("eligible").insert(i);
        }
    }
}

/// The shortest alternating path from `hi` to the least loaded node it reaches whose count is
/// at least two below `hi`'s: the partitions whose preference moves, each with its new
/// preferred replica.
fn reducing_path(lists: &[Vec<NodeId>], leads: &Index, hi: NodeId) -> Option<Vec<(usize, NodeId)>> {
    let top = leads[&hi].len();
    let mut came_from: BTreeMap<NodeId, (NodeId, usize)> = BTreeMap::new();
    let mut queue = VecDeque::from([hi]);
    let mut best: Option<(usize, NodeId)> = None;
    while let Some(a) = queue.pop_front() {
        for &i in &leads[&a] {
            for &b in &lists[i][1..] {
                let Some(count) = leads.get(&b).map(BTreeSet::len) else {
                    continue;
                };
                if b == hi || came_from.contains_key(&b) {
                    continue;
                }
                came_from.insert(b, (a, i));
                queue.push_back(b);
                if count + 2 <= top && best.is_none_or(|(c, _)| count < c) {
                    best = Some((count, b));
                }
            }
        }
    }
    let (_, mut b) = best?;
    let mut path = Vec::new();
    while b != hi {
        let (a, i) = came_from[&b];
        path.push((i, b));
        b = a;
    }
    Some(path)
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

    fn racks(list: &[NodeId], nodes: &BTreeMap<NodeId, String>) -> usize {
        list.iter()
            .filter_map(|n| nodes.get(n))
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn most_leaders(lists: &[Vec<NodeId>], nodes: &BTreeMap<NodeId, String>) -> usize {
        let mut c: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
        for l in lists {
            *c.get_mut(&l[0]).unwrap() += 1;
        }
        *c.values().max().unwrap()
    }

    /// The smallest largest preferred-leader count any order of these lists allows: the
    /// partitions held only by a node set must be led inside it, so some member leads at least
    /// their share (and that bound is reached).
    fn least_possible_most(lists: &[Vec<NodeId>], nodes: &BTreeMap<NodeId, String>) -> usize {
        let ids: Vec<NodeId> = nodes.keys().copied().collect();
        (1u32..1 << ids.len())
            .map(|mask| {
                let set: BTreeSet<NodeId> = ids
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| mask & (1 << b) != 0)
                    .map(|(_, n)| *n)
                    .collect();
                let inside = lists
                    .iter()
                    .filter(|l| l.iter().all(|n| set.contains(n)))
                    .count();
                inside.div_ceil(set.len())
            })
            .max()
            .unwrap()
    }

    fn moved(before: &[Vec<NodeId>], after: &[Vec<NodeId>]) -> usize {
        before
            .iter()
            .zip(after)
            .map(|(b, a)| a.iter().filter(|n| !b.contains(n)).count())
            .sum()
    }

    /// Replica moves needed to bring every node within one of the mean: the r most loaded
    /// nodes may keep q + 1 replicas (r = total mod n, q = total / n), the others q.
    fn fewest_moves(lists: &[Vec<NodeId>], nodes: &BTreeMap<NodeId, String>) -> usize {
        let mut c: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
        for n in lists.iter().flatten() {
            *c.get_mut(n).unwrap() += 1;
        }
        let mut counts: Vec<usize> = c.into_values().collect();
        counts.sort_by(|a, b| b.cmp(a));
        let total: usize = counts.iter().sum();
        let (q, r) = (total / counts.len(), total % counts.len());
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(if i < r { q + 1 } else { q }))
            .sum()
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
            prop_assert_eq!(most_leaders(&after, &nodes), least_possible_most(&after, &nodes), "leaders as even as the lists allow: {:?}", after);
            if one_rack {
                prop_assert_eq!(moved(&parts, &after), fewest_moves(&parts, &nodes), "as few replica moves as evening out needs");
            }
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
        assert_eq!(
            moved(&parts, &after),
            18,
            "72 replicas over 4 nodes: node 3 receives 18, no more move"
        );
    }
}
