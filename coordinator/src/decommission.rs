//! Emptying decommissioned storage nodes: a pure planner of replica moves the failover loop
//! starts as reassignments ([`crate::reassign`]), a few at a time. Each partition with a replica
//! on a decommissioned node moves it to the eligible node (registered, not decommissioned, not
//! draining) with the fewest replicas among those not already holding the partition, preferring
//! a node whose rack the partition lacks; its other replicas and their order stay.

use std::collections::{BTreeMap, BTreeSet};

use sluice_proto::model::NodeId;
use sluice_proto::pb::PartitionStateRecord;

/// Partitions moving at once at most (moves a decommission starts count against it, and so do
/// moves under way for any reason).
pub const MAX_MOVES: usize = 8;

/// The target replica list of each partition (by its index in `partitions`) to move now.
/// `nodes` holds the eligible nodes with their racks.
pub fn plan(
    partitions: &[&PartitionStateRecord],
    nodes: &BTreeMap<NodeId, String>,
    decommissioned: &BTreeSet<NodeId>,
) -> Vec<(usize, Vec<NodeId>)> {
    if decommissioned.is_empty() || nodes.is_empty() {
        return Vec::new();
    }
    let moving = partitions
        .iter()
        .filter(|p| !p.target_replicas.is_empty())
        .count();
    let mut load: BTreeMap<NodeId, usize> = nodes.keys().map(|n| (*n, 0)).collect();
    for p in partitions {
        let all: BTreeSet<NodeId> = p
            .replicas
            .iter()
            .chain(&p.target_replicas)
            .copied()
            .collect();
        for n in all {
            if let Some(l) = load.get_mut(&n) {
                *l += 1;
            }
        }
    }
    let mut out = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        if moving + out.len() >= MAX_MOVES {
            break;
        }
        let leaving = p.replicas.iter().any(|r| decommissioned.contains(r));
        if !leaving || !p.target_replicas.is_empty() {
            continue;
        }
        let mut target = p.replicas.clone();
        for slot in 0..target.len() {
            if !decommissioned.contains(&target[slot]) {
                continue;
            }
            let racks: BTreeSet<&str> = target
                .iter()
                .filter_map(|r| nodes.get(r).map(String::as_str))
                .collect();
            let best = load
                .iter()
                .filter(|(n, _)| !target.contains(n))
                .min_by_key(|(n, l)| (racks.contains(nodes[n].as_str()), **l, **n))
                .map(|(n, _)| *n);
            let Some(best) = best else {
                break;
            };
            *load.get_mut(&best).expect("eligible") += 1;
            target[slot] = best;
        }
        if target.iter().all(|r| !decommissioned.contains(r)) {
            out.push((i, target));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(replicas: &[NodeId]) -> PartitionStateRecord {
        PartitionStateRecord {
            replicas: replicas.to_vec(),
            ..Default::default()
        }
    }

    fn nodes(ids: &[(NodeId, &str)]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|(n, r)| (*n, r.to_string())).collect()
    }

    #[test]
    fn replicas_leave_a_decommissioned_node_for_the_least_loaded_others() {
        let parts = [p(&[0, 1, 2]), p(&[1, 0, 3]), p(&[2, 3, 1])];
        let refs: Vec<&PartitionStateRecord> = parts.iter().collect();
        let eligible = nodes(&[(1, ""), (2, ""), (3, "")]);
        let moves = plan(&refs, &eligible, &[0].into());
        assert_eq!(moves, vec![(0, vec![3, 1, 2]), (1, vec![1, 2, 3])]);
    }

    #[test]
    fn a_rack_the_partition_lacks_comes_first_and_moves_are_bounded() {
        let parts = [p(&[0, 1, 2])];
        let refs: Vec<&PartitionStateRecord> = parts.iter().collect();
        let eligible = nodes(&[(1, "a"), (2, "b"), (3, "b"), (4, "c")]);
        assert_eq!(
            plan(&refs, &eligible, &[0].into()),
            vec![(0, vec![4, 1, 2])]
        );
        let many: Vec<PartitionStateRecord> = (0..20).map(|_| p(&[0, 1, 2])).collect();
        let refs: Vec<&PartitionStateRecord> = many.iter().collect();
        assert_eq!(plan(&refs, &eligible, &[0].into()).len(), MAX_MOVES);
    }

    #[test]
    fn nothing_moves_where_no_node_can_take_the_replica() {
        let parts = [p(&[0, 1, 2])];
        let refs: Vec<&PartitionStateRecord> = parts.iter().collect();
        assert!(plan(&refs, &nodes(&[(1, ""), (2, "")]), &[0].into()).is_empty());
    }
}
