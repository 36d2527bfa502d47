//! Replica placement: a pure function from the live nodes and their current load to the
//! replica lists of new partitions.
//!
//! Rules, each checked by the property tests below:
//! - a partition's replicas are distinct nodes;
//! - replicas, and leaders (first replica) separately, spread evenly: after placing, the
//!   per-node counts differ by at most one more than they did before;
//! - when racks are set, a partition's replicas cover as many racks as possible;
//! - the same input always gives the same output (no randomness, no clock).

use std::collections::BTreeMap;

use sluice_proto::model::NodeId;

/// A node that can hold replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node id.
    pub id: NodeId,
    /// Rack label; empty when unset.
    pub rack: String,
}

/// Replicas and leaderships a node already holds, so new partitions even out the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Replicas of any role.
    pub replicas: u32,
    /// Partitions whose preferred leader (first replica) is this node.
    pub leaders: u32,
}

/// Why placement is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer live nodes than the replication factor.
    #[error("replication factor {wanted} exceeds the {live} live storage nodes")]
    NotEnoughNodes {
        /// The replication factor asked for.
        wanted: usize,
        /// Live nodes available.
        live: usize,
    },
}

/// Places `count` new partitions with `replication_factor` replicas each. `load` is what the
/// nodes already hold (missing nodes count as empty). Returns one replica list per partition,
/// preferred leader first.
pub fn place(
    nodes: &[Candidate],
    load: &BTreeMap<NodeId, Load>,
    count: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if replication_factor == 0 || replication_factor > nodes.len() {
        return Err(PlacementError::NotEnoughNodes {
            wanted: replication_factor,
            live: nodes.len(),
        });
    }
    let mut nodes: Vec<Candidate> = nodes.to_vec();
    nodes.sort_by_key(|n| n.id);
    let mut load: BTreeMap<NodeId, Load> = nodes
        .iter()
        .map(|n| (n.id, load.get(&n.id).copied().unwrap_or_default()))
        .collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut replicas: Vec<NodeId> = Vec::with_capacity(replication_factor);
        // Leader: fewest leaderships, then fewest replicas, then lowest id.
        let leader = nodes
            .iter()
            .min_by_key(|n| (load[&n.id].leaders, load[&n.id].replicas, n.id))
            .map(|n| n.id)
            .expect("nodes is not empty");
        replicas.push(leader);
        while replicas.len() < replication_factor {
            let used_racks: Vec<&str> = replicas
                .iter()
                .filter_map(|r| nodes.iter().find(|n| n.id == *r))
                .map(|n| n.rack.as_str())
                .collect();
            // Follower: a new rack first, then fewest replicas; ties broken by distance from the
            // leader's id so that followers of successive partitions rotate.
            let next = nodes
                .iter()
                .filter(|n| !replicas.contains(&n.id))
                .min_by_key(|n| {
                    let rack_reused = !n.rack.is_empty() && used_racks.contains(&n.rack.as_str());
                    let rotation = (n.id - leader).rem_euclid(i32::MAX);
                    (rack_reused, load[&n.id].replicas, rotation)
                })
                .map(|n| n.id)
                .expect("replication_factor <= nodes");
            replicas.push(next);
        }
        for (i, r) in replicas.iter().enumerate() {
            let l = load.get_mut(r).expect("placed on a known node");
            l.replicas += 1;
            if i == 0 {
                l.leaders += 1;
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: i32, racks: i32) -> Vec<Candidate> {
        (0..n)
            .map(|id| Candidate {
                id: id * 3 + 1,
                rack: if racks > 0 {
                    format!("r{}", id % racks)
                } else {
                    String::new()
                },
            })
            .collect()
    }

    fn counts(placed: &[Vec<NodeId>]) -> (BTreeMap<NodeId, u32>, BTreeMap<NodeId, u32>) {
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for p in placed {
            for r in p {
                *replicas.entry(*r).or_default() += 1;
            }
            *leaders.entry(p[0]).or_default() += 1;
        }
        (replicas, leaders)
    }

    #[test]
    fn six_partitions_on_three_nodes_spread_two_each() {
        let placed = place(&nodes(3, 0), &BTreeMap::new(), 6, 1).unwrap();
        let (replicas, _) = counts(&placed);
        assert_eq!(
            replicas.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    #[test]
    fn replication_factor_above_live_nodes_is_refused() {
        assert_eq!(
            place(&nodes(2, 0), &BTreeMap::new(), 1, 3),
            Err(PlacementError::NotEnoughNodes { wanted: 3, live: 2 })
        );
    }

    #[test]
    fn replicas_cover_every_rack_when_possible() {
        let placed = place(&nodes(6, 3), &BTreeMap::new(), 12, 3).unwrap();
        let ns = nodes(6, 3);
        for p in placed {
            let mut racks: Vec<_> = p
                .iter()
                .map(|r| ns.iter().find(|n| n.id == *r).unwrap().rack.clone())
                .collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3);
        }
    }

    #[test]
    fn new_partitions_fill_the_least_loaded_node_first() {
        let mut load = BTreeMap::new();
        load.insert(
            1,
            Load {
                replicas: 5,
                leaders: 5,
            },
        );
        load.insert(
            4,
            Load {
                replicas: 5,
                leaders: 5,
            },
        );
        let placed = place(&nodes(3, 0), &load, 5, 1).unwrap();
        assert!(placed.iter().all(|p| p[0] == 7));
    }

    proptest! {
        #[test]
        fn placement_is_distinct_even_and_deterministic(
            n in 1i32..9, racks in 0i32..4, count in 1usize..60, rf_seed in 0usize..8,
        ) {
            let ns = nodes(n, racks);
            let rf = rf_seed % ns.len() + 1;
            let a = place(&ns, &BTreeMap::new(), count, rf).unwrap();
            let b = place(&ns, &BTreeMap::new(), count, rf).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), count);
            for p in &a {
                let mut d = p.clone();
                d.sort();
                d.dedup();
                prop_assert_eq!(d.len(), rf);
            }
            let (replicas, leaders) = counts(&a);
            let spread = |m: &BTreeMap<NodeId, u32>| {
                let max = ns.iter().map(|x| m.get(&x.id).copied().unwrap_or(0)).max().unwrap();
                let min = ns.iter().map(|x| m.get(&x.id).copied().unwrap_or(0)).min().unwrap();
                max - min
            };
            prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
            if racks <= 1 {
                prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
            } else {
                // With racks, diversity comes first (as in Kafka): every partition spans as many
                // racks as it can, even when racks hold unequal numbers of nodes.
                let rack_count = (racks.min(n)) as usize;
                for p in &a {
                    let mut rs: Vec<_> = p.iter()
                        .map(|r| ns.iter().find(|x| x.id == *r).unwrap().rack.clone())
                        .collect();
                    rs.sort();
                    rs.dedup();
                    prop_assert_eq!(rs.len(), rf.min(rack_count));
                }
            }
        }
    }
}
