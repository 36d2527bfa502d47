//! Leader failover: a pure function from a partition's stored state and the storage nodes that
//! count as live to the state the controller must write (or nothing).
//!
//! A replica is **current** when its node is live and registered with the data-directory
//! incarnation the partition recorded for it when it joined the ISR (or has no record). A node
//! that came back with another incarnation lost its data: it is not in sync, whatever the ISR
//! says. `in_sync` below is ISR ∩ current; `eligible` is `in_sync` ∩ registered, in `replicas`
//! order (a node that lost its lease but still answers the controller's probes keeps what it
//! holds, but is never newly elected). The leader is **confirmed** when it is current and the
//! partition state was written after its process first registered (`mod_revision >
//! boot_revision`): a leadership granted to an earlier process of that node id is never served
//! as is.
//!
//! | case | leader | in-sync members | unclean | result |
//! |---|---|---|---|---|
//! | (a) | confirmed | every ISR member in sync | any | `None` |
//! | (b) | confirmed | some ISR member dead or of another incarnation | any | ISR := `in_sync`; partition epoch + 1; leader and leader epoch kept |
//! | (c) | dead, -1, unconfirmed or of another incarnation | `eligible` not empty | any | leader := first of `eligible` (a restarted leader may be re-elected); leader epoch + 1; ISR := `in_sync`; partition epoch + 1 |
//! | (d) | as (c) | `eligible` empty | false | leader := -1; leader epoch + 1; ISR kept; partition epoch + 1 |
//! | (d') | -1 | `eligible` empty | false | `None` (already leaderless) |
//! | (e) | as (c) | `eligible` empty, some replica registered | true | leader := first registered replica; ISR := [leader]; leader epoch + 1; partition epoch + 1 |
//! | (e') | as (c) | no replica registered | true | as (d) / (d') |
//!
//! Why (d) keeps the ISR: the last in-sync members are the only replicas known to hold every
//! acknowledged record, so they stay the only ones eligible; when one of them registers again
//! with its data, case (c) elects it. If it comes back with a new incarnation the partition
//! stays offline (its data is gone) unless the topic allows unclean election. The controller
//! only ever shrinks the ISR (growing it back is the leader's job, once a follower has caught
//! up), so a replica lacking acknowledged data can never be elected outside the unclean path.
//! Leaders come only from `replicas`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_proto::model::NodeId;
use sluice_proto::pb::PartitionStateRecord;

/// The `leader` value of a partition without a leader.
pub const NO_LEADER: NodeId = -1;

/// A storage node the controller counts as live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveNode {
    /// Its data directory's incarnation.
    pub incarnation: String,
    /// Create revision of its current registration (the controller fences elections on it).
    pub registration: i64,
    /// Create revision of its process's first registration.
    pub boot_revision: i64,
    /// Registered now; `false` for a node whose lease lapsed but that still answers probes.
    pub registered: bool,
}

/// Live storage nodes by id.
pub type Live = BTreeMap<NodeId, LiveNode>;

/// Whether replica `r` is live with the data it had when it joined the ISR.
pub(crate) fn current(state: &PartitionStateRecord, live: &Live, r: NodeId) -> bool {
    live.get(&r).is_some_and(|n| {
        state
            .isr_incarnations
            .get(&r)
            .is_none_or(|i| *i == n.incarnation)
    })
}

/// The ISR's incarnation records restricted to `isr`.
fn incarnations_of(state: &PartitionStateRecord, isr: &[NodeId]) -> BTreeMap<NodeId, String> {
    state
        .isr_incarnations
        .iter()
        .filter(|(r, _)| isr.contains(r))
        .map(|(r, i)| (*r, i.clone()))
        .collect()
}

/// The state the controller should write for `state` (last written at `mod_revision`) given
/// the `live` nodes, or `None` when nothing changes. `unclean` is the topic's
/// `unclean.leader.election` setting. Applying the result and calling again (with a newer
/// `mod_revision`) and the same `live` nodes gives `None`.
pub fn decide(
    state: &PartitionStateRecord,
    mod_revision: i64,
    live: &Live,
    unclean: bool,
) -> Option<PartitionStateRecord> {
    let in_sync: Vec<NodeId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| current(state, live, *r))
        .collect();
    let leader_confirmed = state.leader != NO_LEADER
        && current(state, live, state.leader)
        && live
            .get(&state.leader)
            .is_some_and(|n| mod_revision > n.boot_revision);
    if leader_confirmed {
        if in_sync.len() == state.isr.len() {
            return None; // (a)
        }
        return Some(PartitionStateRecord {
            isr_incarnations: incarnations_of(state, &in_sync),
            isr: in_sync,
            partition_epoch: bump(state.partition_epoch),
            ..state.clone()
        }); // (b)
    }
    let registered = |r: &NodeId| live.get(r).is_some_and(|n| n.registered);
    let eligible = state
        .replicas
        .iter()
        .find(|r| in_sync.contains(r) && registered(r));
    if let Some(&leader) = eligible {
        return Some(PartitionStateRecord {
            leader,
            leader_epoch: bump(state.leader_epoch),
            isr_incarnations: incarnations_of(state, &in_sync),
            isr: in_sync,
            partition_epoch: bump(state.partition_epoch),
            ..state.clone()
        }); // (c)
    }
    if unclean && let Some(&leader) = state.replicas.iter().find(|r| registered(r)) {
        let incarnation = live[&leader].incarnation.clone();
        return Some(PartitionStateRecord {
            leader,
            leader_epoch: bump(state.leader_epoch),
            isr: vec![leader],
            isr_incarnations: [(leader, incarnation)].into(),
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

/// Why a partition without a leader stays offline, for `topic describe` and the logs; `None`
/// while it has a leader. Reads the same inputs as [`decide`].
pub fn offline_reason(state: &PartitionStateRecord, live: &Live) -> Option<String> {
    if state.leader != NO_LEADER {
        return None;
    }
    let wiped: Vec<String> = state
        .isr
        .iter()
        .filter_map(|r| {
            let now = &live.get(r)?.incarnation;
            let had = state.isr_incarnations.get(r)?;
            (now != had).then(|| format!("node {r} (data directory {had}, now {now})"))
        })
        .collect();
    if !wiped.is_empty() {
        return Some(format!(
            "the last in-sync replica(s) came back without their data: {}; acknowledged records \
             may exist nowhere else. Restore that data directory, or set \
             unclean.leader.election=true on the topic to elect a live replica and accept the loss",
            wiped.join(", ")
        ));
    }
    Some(format!(
        "waiting for an in-sync replica to return (ISR {:?}); set unclean.leader.election=true \
         on the topic to elect another replica and accept losing acknowledged records",
        state.isr
    ))
}

/// Epochs only grow; saturating keeps a corrupt record at `i32::MAX` from panicking the
/// controller (such a partition can no longer fence, which the storage node reports).
pub(crate) fn bump(epoch: i32) -> i32 {
    epoch.saturating_add(1)
}

/// Controlled shutdown: when the leader is draining (shutting down on SIGTERM) and another
/// in-sync replica is registered, current and not draining, hand leadership to the first such
/// replica in `replicas` order, bumping the leader epoch; otherwise `None` (the leader stays
/// until it stops, then [`decide`] handles it as a failure). The draining node stays in the
/// ISR while it still replicates; its lease ends that when it stops.
///
/// | leader draining | other registered, current, non-draining ISR member | result |
/// |---|---|---|
/// | no | - | `None` |
/// | yes | none | `None` (nowhere safe to move) |
/// | yes | some | leader := first of them; leader epoch + 1; partition epoch + 1 |
pub fn move_off_draining(
    state: &PartitionStateRecord,
    live: &Live,
    draining: &BTreeSet<NodeId>,
) -> Option<PartitionStateRecord> {
    if state.leader == NO_LEADER || !draining.contains(&state.leader) {
        return None;
    }
    let target = state.replicas.iter().copied().find(|r| {
        *r != state.leader
            && state.isr.contains(r)
            && current(state, live, *r)
            && live[r].registered
            && !draining.contains(r)
    })?;
    Some(PartitionStateRecord {
        leader: target,
        leader_epoch: bump(state.leader_epoch),
        partition_epoch: bump(state.partition_epoch),
        ..state.clone()
    })
}

/// Preferred-leader election: leadership goes back to the first replica when it is an in-sync
/// member that is current, registered and not draining (as Kafka's preferred election).
///
/// | leader | preferred replica | result |
/// |---|---|---|
/// | the preferred one, or none | - | `None` |
/// | another | in the ISR, current, registered, not draining | leader := preferred; leader epoch + 1; partition epoch + 1 |
/// | another | otherwise | `None` (it would lead without every acknowledged record) |
pub fn move_to_preferred(
    state: &PartitionStateRecord,
    live: &Live,
    draining: &BTreeSet<NodeId>,
) -> Option<PartitionStateRecord> {
    let preferred = *state.replicas.first()?;
    if state.leader == NO_LEADER || state.leader == preferred {
        return None;
    }
    let ready = state.isr.contains(&preferred)
        && current(state, live, preferred)
        && live[&preferred].registered
        && !draining.contains(&preferred);
    ready.then(|| PartitionStateRecord {
        leader: preferred,
        leader_epoch: bump(state.leader_epoch),
        partition_epoch: bump(state.partition_epoch),
        ..state.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leadership_goes_back_to_the_preferred_replica_only_when_it_is_in_sync_and_live() {
        let s = state(&[0, 1, 2], 1, &[0, 1, 2]);
        let moved = move_to_preferred(&s, &live(&[0, 1, 2]), &BTreeSet::new()).unwrap();
        assert_eq!(
            (moved.leader, moved.leader_epoch, moved.partition_epoch),
            (0, 5, 10)
        );
        assert_eq!(
            move_to_preferred(&moved, &live(&[0, 1, 2]), &BTreeSet::new()),
            None
        );
        let out_of_sync = state(&[0, 1, 2], 1, &[1, 2]);
        assert_eq!(
            move_to_preferred(&out_of_sync, &live(&[0, 1, 2]), &BTreeSet::new()),
            None
        );
        assert_eq!(
            move_to_preferred(&s, &live(&[1, 2]), &BTreeSet::new()),
            None,
            "dead"
        );
        assert_eq!(
            move_to_preferred(&s, &live(&[0, 1, 2]), &[0].into()),
            None,
            "draining"
        );
        let leaderless = state(&[0, 1, 2], NO_LEADER, &[0, 1, 2]);
        assert_eq!(
            move_to_preferred(&leaderless, &live(&[0, 1, 2]), &BTreeSet::new()),
            None
        );
    }

    fn state(replicas: &[NodeId], leader: NodeId, isr: &[NodeId]) -> PartitionStateRecord {
        PartitionStateRecord {
            topic_id: vec![1; 16].into(),
            partition: 0,
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 4,
            isr: isr.to_vec(),
            partition_epoch: 9,
            isr_incarnations: isr.iter().map(|r| (*r, format!("dir-{r}"))).collect(),
            target_replicas: vec![],
            adding_replicas: vec![],
        }
    }

    /// A registered node with the incarnation [`state`] records for it, first registered at
    /// revision 5.
    fn node(r: NodeId) -> LiveNode {
        LiveNode {
            incarnation: format!("dir-{r}"),
            registration: 5,
            boot_revision: 5,
            registered: true,
        }
    }

    fn live(ids: &[NodeId]) -> Live {
        ids.iter().map(|r| (*r, node(*r))).collect()
    }

    /// Revision of the partition states in these tests: after every node's first registration.
    const REV: i64 = 10;

    #[test]
    fn a_live_leader_with_a_live_isr_changes_nothing() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        assert_eq!(decide(&s, REV, &live(&[0, 1, 2]), false), None);
        assert_eq!(decide(&s, REV, &live(&[0, 1, 2, 5]), true), None);
    }

    #[test]
    fn a_live_leader_drops_dead_followers_from_the_isr_without_a_new_epoch() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let d = decide(&s, REV, &live(&[0, 2]), false).unwrap();
        assert_eq!(d.leader, 0);
        assert_eq!(d.leader_epoch, 4);
        assert_eq!(d.isr, vec![0, 2]);
        assert_eq!(d.partition_epoch, 10);
    }

    #[test]
    fn a_dead_leader_is_replaced_by_the_first_live_isr_member_in_replica_order() {
        let s = state(&[0, 1, 2], 0, &[0, 2, 1]);
        let d = decide(&s, REV, &live(&[1, 2]), false).unwrap();
        assert_eq!(d.leader, 1, "replica order, not ISR order");
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.isr, vec![2, 1]);
        assert_eq!(d.partition_epoch, 10);
    }

    #[test]
    fn a_leaderless_partition_elects_a_returning_isr_member() {
        let s = state(&[0, 1, 2], NO_LEADER, &[1]);
        let d = decide(&s, REV, &live(&[1]), false).unwrap();
        assert_eq!(d.leader, 1);
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.isr, vec![1]);
    }

    #[test]
    fn a_dead_leader_without_a_live_isr_member_leaves_the_partition_leaderless() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, REV, &live(&[1, 2]), false).unwrap();
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
        assert_eq!(decide(&s, REV, &live(&[1, 2]), false), None);
    }

    #[test]
    fn unclean_election_picks_the_first_live_replica_and_resets_the_isr() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, REV, &live(&[2, 1]), true).unwrap();
        assert_eq!(d.leader, 1);
        assert_eq!(d.isr, vec![1]);
        assert_eq!(d.leader_epoch, 5);
        assert_eq!(d.partition_epoch, 10);
        let leaderless = state(&[0, 1, 2], NO_LEADER, &[0]);
        assert_eq!(
            decide(&leaderless, REV, &live(&[2]), true).unwrap().leader,
            2
        );
    }

    #[test]
    fn unclean_election_with_no_live_replica_behaves_like_clean() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let d = decide(&s, REV, &live(&[7]), true).unwrap();
        assert_eq!(d.leader, NO_LEADER);
        assert_eq!(d.isr, vec![0]);
        assert_eq!(decide(&d, REV, &live(&[7]), true), None);
    }

    #[test]
    fn live_nodes_outside_the_replicas_are_never_elected() {
        let s = state(&[0, 1], 0, &[0, 9]);
        let d = decide(&s, REV, &live(&[9, 8]), true).unwrap();
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
                        isr_incarnations: isr.iter().map(|r| (*r, format!("dir-{r}"))).collect(),
                        isr,
                        partition_epoch: pe,
                        target_replicas: vec![],
                        adding_replicas: vec![],
                    })
            })
    }

    /// Live nodes from 0..8: each registered or only answering probes, with the incarnation
    /// the partition knows or a new one (a wiped data directory), first registered at 0..20.
    fn arb_live() -> impl Strategy<Value = Live> {
        proptest::collection::btree_map(0i32..8, (any::<bool>(), any::<bool>(), 0i64..20), 0..8)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(r, (wiped, registered, boot))| {
                        let incarnation = if wiped {
                            "new".into()
                        } else {
                            format!("dir-{r}")
                        };
                        let n = LiveNode {
                            incarnation,
                            registration: boot,
                            boot_revision: boot,
                            registered,
                        };
                        (r, n)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn decisions_keep_the_failover_invariants(
            s in arb_state(),
            live in arb_live(),
            mod_revision in 0i64..20,
            unclean in any::<bool>(),
        ) {
            let current = |r: &NodeId| live.get(r).is_some_and(|n| n.incarnation == format!("dir-{r}"));
            let electable = |r: &NodeId| s.isr.contains(r) && current(r) && live[r].registered;
            let Some(d) = decide(&s, mod_revision, &live, unclean) else {
                // Nothing to do only when the leader is confirmed with a current ISR, or the
                // partition is leaderless with nobody eligible.
                let isr_current = s.isr.iter().all(current);
                let leader_ok = s.leader != NO_LEADER
                    && current(&s.leader)
                    && mod_revision > live[&s.leader].boot_revision;
                let nobody = s.leader == NO_LEADER
                    && !s.replicas.iter().any(electable)
                    && !(unclean && s.replicas.iter().any(|r| live.get(r).is_some_and(|n| n.registered)));
                prop_assert!((leader_ok && isr_current) || nobody);
                return Ok(());
            };
            let unclean_path = !s.replicas.iter().any(electable)
                && d.leader != NO_LEADER
                && d.leader_epoch > s.leader_epoch;
            prop_assert!(unclean || !unclean_path);
            if d.leader != NO_LEADER {
                prop_assert!(live.contains_key(&d.leader));
                prop_assert!(s.replicas.contains(&d.leader));
                prop_assert!(d.isr.contains(&d.leader));
                if d.leader_epoch > s.leader_epoch {
                    prop_assert!(live[&d.leader].registered, "only registered nodes are elected");
                }
                if !unclean_path {
                    prop_assert!(s.isr.contains(&d.leader), "elected outside the ISR");
                    prop_assert!(current(&d.leader), "elected a replica that lost its data");
                    prop_assert!(d.isr.iter().all(current), "a wiped or dead member stays in sync");
                }
            } else {
                prop_assert!(!s.replicas.iter().any(electable));
            }
            if !unclean_path {
                prop_assert!(d.isr.iter().all(|r| s.isr.contains(r)), "the ISR never grows");
            }
            prop_assert!(d.isr.iter().all(|r| d.isr_incarnations.contains_key(r)));
            prop_assert!(d.isr_incarnations.keys().all(|r| d.isr.contains(r)));
            prop_assert!(d.leader_epoch >= s.leader_epoch);
            prop_assert!(d.leader == s.leader || d.leader_epoch > s.leader_epoch);
            prop_assert!(d.partition_epoch > s.partition_epoch);
            prop_assert_eq!(&d.replicas, &s.replicas);
            prop_assert_eq!(decide(&d, i64::MAX, &live, unclean), None, "decide is idempotent");
        }
    }

    #[test]
    fn a_member_back_with_a_new_data_directory_leaves_the_isr() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let mut l = live(&[0, 1, 2]);
        l.get_mut(&1).unwrap().incarnation = "wiped".into();
        let d = decide(&s, REV, &l, false).unwrap();
        assert_eq!(
            (d.leader, d.leader_epoch, d.isr.clone()),
            (0, 4, vec![0, 2])
        );
        assert!(!d.isr_incarnations.contains_key(&1));
    }

    #[test]
    fn a_leader_back_with_a_new_data_directory_loses_leadership_to_an_in_sync_replica() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let mut l = live(&[0, 1, 2]);
        l.get_mut(&0).unwrap().incarnation = "wiped".into();
        let d = decide(&s, REV, &l, false).unwrap();
        assert_eq!(
            (d.leader, d.leader_epoch, d.isr.clone()),
            (1, 5, vec![1, 2])
        );
    }

    #[test]
    fn the_last_in_sync_replica_back_without_its_data_leaves_the_partition_offline() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let mut l = live(&[0, 1, 2]);
        l.get_mut(&0).unwrap().incarnation = "wiped".into();
        let d = decide(&s, REV, &l, false).unwrap();
        assert_eq!((d.leader, d.isr.clone()), (NO_LEADER, vec![0]));
        assert_eq!(
            d.isr_incarnations[&0], "dir-0",
            "the record of who had the data stays"
        );
        let why = offline_reason(&d, &l).unwrap();
        assert!(
            why.contains("node 0") && why.contains("unclean.leader.election"),
            "{why}"
        );
        assert_eq!(decide(&d, REV + 1, &l, false), None);
        let unclean = decide(&d, REV + 1, &l, true).unwrap();
        assert_eq!((unclean.leader, unclean.isr.clone()), (0, vec![0]));
        assert_eq!(unclean.isr_incarnations[&0], "wiped");
    }

    #[test]
    fn a_restarted_leader_is_confirmed_with_a_new_epoch_before_it_serves() {
        let s = state(&[0, 1, 2], 0, &[0]);
        let mut l = live(&[0, 1, 2]);
        l.get_mut(&0).unwrap().boot_revision = REV + 3;
        let d = decide(&s, REV, &l, false).unwrap();
        assert_eq!((d.leader, d.leader_epoch, d.isr.clone()), (0, 5, vec![0]));
        assert_eq!(decide(&d, REV + 4, &l, false), None);
    }

    #[test]
    fn a_node_that_only_answers_probes_keeps_its_roles_but_is_not_elected() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let mut l = live(&[0, 1, 2]);
        l.get_mut(&0).unwrap().registered = false;
        l.get_mut(&2).unwrap().registered = false;
        assert_eq!(
            decide(&s, REV, &l, false),
            None,
            "no leader change, no ISR shrink"
        );
        let leaderless = state(&[0, 1, 2], NO_LEADER, &[0]);
        assert_eq!(decide(&leaderless, REV, &l, false), None);
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
        let live = live(&[0, 1, 2]);
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
