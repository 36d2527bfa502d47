//! Leader failover: a pure function from a partition's stored state and the set of live storage
//! nodes to the state the controller must write (or nothing).
//!
//! `eligible` below is ISR ∩ live ∩ replicas, in `replicas` order. "Dead" means "not in `live`".
//!
//! | case | leader | ISR members | unclean | result |
//! |---|---|---|---|---|
//! | (a) | alive | all alive | any | `None` |
//! | (b) | alive | some dead | any | ISR := ISR ∩ live; partition epoch + 1; leader and leader epoch kept |
//! | (c) | dead or -1 | `eligible` not empty | any | leader := first of `eligible`; leader epoch + 1; ISR := ISR ∩ live; partition epoch + 1 |
//! | (d) | dead | `eligible` empty | false | leader := -1; leader epoch + 1; ISR kept; partition epoch + 1 |
//! | (d') | -1 | `eligible` empty | false | `None` (already leaderless) |
//! | (e) | dead or -1 | `eligible` empty, some replica alive | true | leader := first live replica; ISR := [leader]; leader epoch + 1; partition epoch + 1 |
//! | (e') | dead or -1 | no replica alive | true | as (d) / (d') |
//!
//! Why (d) keeps the ISR: the last in-sync members are the only replicas known to hold every
//! acknowledged record, so they stay the only ones eligible; when one of them registers again,
//! case (c) elects it. The controller only ever shrinks the ISR (growing it back is the
//! leader's job, once a follower has caught up), so a replica lacking acknowledged data can
//! never be elected outside the unclean path. Leaders come only from `replicas`.

use std::collections::BTreeSet;

use sluice_proto::model::NodeId;
use sluice_proto::pb::PartitionStateRecord;

/// The `leader` value of a partition without a leader.
pub const NO_LEADER: NodeId = -1;

/// The state the controller should write for `state` given the `live` nodes, or `None` when
/// nothing changes. `unclean` is the topic's `unclean.leader.election` setting. Applying the
/// result and calling again with the same `live` set gives `None`.
pub fn decide(
    state: &PartitionStateRecord,
    live: &BTreeSet<NodeId>,
    unclean: bool,
) -> Option<PartitionStateRecord> {
    let leader_alive = state.leader != NO_LEADER && live.contains(&state.leader);
    let live_isr: Vec<NodeId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| live.contains(r))
        .collect();
    if leader_alive {
        if live_isr.len() == state.isr.len() {
            return None; // (a)
        }
        return Some(PartitionStateRecord {
            isr: live_isr,
            partition_epoch: bump(state.partition_epoch),
            ..state.clone()
        }); // (b)
    }
    let eligible = state.replicas.iter().find(|r| live_isr.contains(r));
    if let Some(&leader) = eligible {
        return Some(PartitionStateRecord {
            leader,
            leader_epoch: bump(state.leader_epoch),
            isr: live_isr,
            partition_epoch: bump(state.partition_epoch),
            ..state.clone()
        }); // (c)
    }
    if unclean && let Some(&leader) = state.replicas.iter().find(|r| live.contains(r)) {
        return Some(PartitionStateRecord {
            leader,
            leader_epoch: bump(state.leader_epoch),
            isr: vec![leader],
            partition_epoch: bump(state.partition_epoch),
            ..state.clone()
        }); // (e)
    }
    if state.leader == NO_LEADER {
        return None; // (d')
    }
    Some(PartitionStateRecord {
        leader: NO_LEADER,
        leader_epoch: bump(state.leader_epoch),
        partition_epoch: bump(state.partition_epoch),
        ..state.clone()
    }) // (d)
}

/// Epochs only grow; saturating keeps a corrupt record at `i32::MAX` from panicking the
/// controller (such a partition can no longer fence, which the storage node reports).
fn bump(epoch: i32) -> i32 {
    epoch.saturating_add(1)
}

/// Controlled shutdown: when the leader is draining (shutting down on SIGTERM) and another
/// in-sync replica is live and not draining, hand leadership to the first such replica in
/// `replicas` order, bumping the leader epoch; otherwise `None` (the leader stays until it stops,
/// then [`decide`] handles it as a failure). The draining node stays in the ISR while it still
/// replicates; its lease ends that when it stops.
///
/// | leader draining | other live, non-draining ISR member | result |
/// |---|---|---|
/// | no | - | `None` |
/// | yes | none | `None` (nowhere safe to move) |
/// | yes | some | leader := first of them; leader epoch + 1; partition epoch + 1 |
pub fn move_off_draining(
    state: &PartitionStateRecord,
    live: &BTreeSet<NodeId>,
    draining: &BTreeSet<NodeId>,
) -> Option<PartitionStateRecord> {
    if state.leader == NO_LEADER || !draining.contains(&state.leader) {
        return None;
    }
    let target = state.replicas.iter().copied().find(|r| {
        *r != state.leader && state.isr.contains(r) && live.contains(r) && !draining.contains(r)
    })?;
    Some(PartitionStateRecord {
        leader: target,
        leader_epoch: bump(state.leader_epoch),
        partition_epoch: bump(state.partition_epoch),
        ..state.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(replicas: &[NodeId], leader: NodeId, isr: &[NodeId]) -> PartitionStateRecord {
        PartitionStateRecord {
            topic_id: vec![1; 16].into(),
            partition: 0,
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 4,
            isr: isr.to_vec(),
            partition_epoch: 9,
        }
    }

    fn live(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_live_leader_with_a_live_isr_changes_nothing() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        assert_eq!(decide(&s, &live(&[0, 1, 2]), false), None);
        assert_eq!(decide(&s, &live(&[0, 1, 2, 5]), true), None);
    }

    #[test]
    fn a_live_leader_drops_dead_followers_from_the_isr_without_a_new_epoch() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let d = decide(&s, &live(&[0, 2]), false).unwrap();
        assert_eq!(d.leader, 0);
        assert_eq!(d.leader_epoch, 4);
        assert_eq!(d.isr, vec![0, 2]);
        assert_eq!(d.partition_epoch, 10);
    }

    #[test]
    fn a_dead_leader_is_replaced_by_the_first_live_isr_member_in_replica_order() {
        let s = state(&[0, 1, 2], 0, &[0, 2, 1]);
        let d = decide(&s, &live(&[1, 2]), false).unwrap();
        assert_eq!(d.leader, 1, "replica order, not ISR order");
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.isr, vec![2, 1]);
        assert_eq!(d.partition_epoch, 10);
    }

    #[test]
    fn a_leaderless_partition_elects_a_returning_isr_member() {
        let s = state(&[0, 1, 2], NO_LEADER, &[1]);
        let d = decide(&s, &live(&[1]), false).unwrap();
        assert_eq!(d.leader, 1);
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.isr, vec![1]);
    }

    #[test]
    fn a_dead_leader_without_a_live_isr_member_leaves_the_partition_leaderless() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, &live(&[1, 2]), false).unwrap();
        assert_eq!(d.leader, NO_LEADER);
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(
            d.isr,
            vec![0],
            "the last in-sync member stays the only eligible one"
        );
        assert_eq!(d.partition_epoch, 10);
    }

    #[test]
    fn an_already_leaderless_partition_without_a_live_isr_member_changes_nothing() {
        let s = state(&[0, 1, 2], NO_LEADER, &[0]);
        assert_eq!(decide(&s, &live(&[1, 2]), false), None);
    }

    #[test]
    fn unclean_election_picks_the_first_live_replica_and_resets_the_isr() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, &live(&[2, 1]), true).unwrap();
        assert_eq!(d.leader, 1);
        assert_eq!(d.isr, vec![1]);
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.partition_epoch, 10);
        let leaderless = state(&[0, 1, 2], NO_LEADER, &[0]);
        assert_eq!(decide(&leaderless, &live(&[2]), true).unwrap().leader, 2);
    }

    #[test]
    fn unclean_election_with_no_live_replica_behaves_like_clean() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, &live(&[7]), true).unwrap();
        assert_eq!(d.leader, NO_LEADER);
        assert_eq!(d.isr, vec![0]);
        assert_eq!(decide(&d, &live(&[7]), true), None);
    }

    #[test]
    fn live_nodes_outside_the_replicas_are_never_elected() {
        let s = state(&[0, 1], 0, &[0, 9]);
        let d = decide(&s, &live(&[9, 8]), true).unwrap();
        assert_eq!(d.leader, NO_LEADER);
    }

    /// A valid stored state: distinct replicas from 0..6, ISR a non-empty subset of them in any
    /// order (leaders append members as they catch up), and a leader in the ISR or -1.
    fn arb_state() -> impl Strategy<Value = PartitionStateRecord> {
        (
            proptest::sample::subsequence((0..6).collect::<Vec<NodeId>>(), 1..=5),
            proptest::collection::vec(any::<bool>(), 5),
            any::<proptest::sample::Index>(),
            any::<bool>(),
            0i32..100,
            0i32..100,
        )
            .prop_flat_map(|(replicas, keep, pick, leaderless, le, pe)| {
                let mut isr: Vec<NodeId> = replicas
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(r, _)| *r)
                    .collect();
                if isr.is_empty() {
                    isr.push(replicas[0]);
                }
                let leader = if leaderless {
                    NO_LEADER
                } else {
                    *pick.get(&isr)
                };
                Just(isr)
                    .prop_shuffle()
                    .prop_map(move |isr| PartitionStateRecord {
                        topic_id: vec![1; 16].into(),
                        partition: 0,
                        replicas: replicas.clone(),
                        leader,
                        leader_epoch: le,
                        isr,
                        partition_epoch: pe,
                    })
            })
    }

    proptest! {
        #[test]
        fn decisions_keep_the_failover_invariants(
            s in arb_state(),
            live in proptest::collection::btree_set(0i32..8, 0..8),
            unclean in any::<bool>(),
        ) {
            let Some(d) = decide(&s, &live, unclean) else {
                // Nothing to do only when the leader is healthy with a live ISR, or the
                // partition is leaderless with nobody eligible.
                let isr_live = s.isr.iter().all(|r| live.contains(r));
                let leader_ok = s.leader != NO_LEADER && live.contains(&s.leader);
                let nobody = s.leader == NO_LEADER
                    && !s.replicas.iter().any(|r| s.isr.contains(r) && live.contains(r))
                    && !(unclean && s.replicas.iter().any(|r| live.contains(r)));
                prop_assert!((leader_ok && isr_live) || nobody);
                return Ok(());
            };
            let unclean_path = !s.replicas.iter().any(|r| s.isr.contains(r) && live.contains(r))
                && s.leader != d.leader && d.leader != NO_LEADER;
            prop_assert!(unclean || !unclean_path);
            if d.leader != NO_LEADER {
                prop_assert!(live.contains(&d.leader));
                prop_assert!(s.replicas.contains(&d.leader));
                prop_assert!(d.isr.contains(&d.leader));
                if !unclean_path {
                    prop_assert!(s.isr.contains(&d.leader), "elected outside the ISR");
                }
            } else {
                prop_assert!(!s.replicas.iter().any(|r| s.isr.contains(r) && live.contains(r)));
            }
            if !unclean_path {
                prop_assert!(d.isr.iter().all(|r| s.isr.contains(r)), "the ISR never grows");
            }
            prop_assert!(d.leader_epoch >= s.leader_epoch);
            prop_assert_eq!(d.leader_epoch > s.leader_epoch, d.leader != s.leader);
            prop_assert!(d.partition_epoch > s.partition_epoch);
            prop_assert_eq!(&d.replicas, &s.replicas);
            prop_assert_eq!(decide(&d, &live, unclean), None, "decide is idempotent");
        }
    }

    #[test]
    fn a_draining_leader_hands_over_to_the_first_live_in_sync_replica() {
        let state = PartitionStateRecord {
            replicas: vec![0, 1, 2],
            leader: 0,
            leader_epoch: 4,
            isr: vec![0, 2],
            partition_epoch: 9,
            ..Default::default()
        };
        let live: BTreeSet<NodeId> = [0, 1, 2].into();
        assert_eq!(move_off_draining(&state, &live, &BTreeSet::new()), None);
        let moved = move_off_draining(&state, &live, &[0].into()).unwrap();
        assert_eq!(
            (
                moved.leader,
                moved.leader_epoch,
                moved.partition_epoch,
                moved.isr.clone()
            ),
            (2, 5, 10, vec![0, 2])
        );
        assert_eq!(
            move_off_draining(&state, &live, &[0, 2].into()),
            None,
            "no safe target: stay"
        );
        assert_eq!(
            move_off_draining(&moved, &live, &[0].into()),
            None,
            "idempotent"
        );
    }
}
