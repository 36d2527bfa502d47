//! Partition reassignment as a pure state machine over the stored partition state, so a
//! controller that takes over mid-move (its state is all in etcd) carries on from where it is.
//!
//! A move to target list `T` from replicas `R`:
//!
//! | step | state | the controller writes |
//! |---|---|---|
//! | start ([`start`]) | `target_replicas` empty | `target_replicas := T`; `replicas := R ∪ T` (new ones last, out of the ISR); partition epoch + 1 |
//! | catch up | some of `T` not in the ISR | nothing: each new replica fetches from the leader's log start and its leader adds it to the ISR once caught up (never counted towards `min.insync.replicas` before) |
//! | lead | all of `T` in the ISR, leader ∉ `T` | leader := first of `T` that is in sync, current, registered, not draining; leader epoch + 1; partition epoch + 1 |
//! | finish | all of `T` in the ISR, leader ∈ `T` | `replicas := T`; ISR := ISR ∩ `T`; `target_replicas := []`; partition epoch + 1 |
//!
//! The ISR never loses a member before every target replica is in it, so a move never leaves
//! fewer in-sync replicas than there were; the replicas that leave delete their data once the
//! finished state reaches them. ISR membership carries the data-directory incarnation, so a new
//! replica counts as in sync only for the directory that really holds the data. Failover
//! ([`crate::failover`]) keeps working through a move: it elects only from the ISR.

use std::collections::BTreeSet;

use sluice_proto::model::NodeId;
use sluice_proto::pb::PartitionStateRecord;

use crate::failover::{Live, NO_LEADER, bump, current};

/// The state that starts moving `s` to `target` (`None` when it already has those replicas, or
/// is already moving to them).
pub fn start(s: &PartitionStateRecord, target: &[NodeId]) -> Option<PartitionStateRecord> {
    let unchanged = s.replicas == target && s.target_replicas.is_empty();
    if unchanged || s.target_replicas == target {
        return None;
    }
    // A move that replaces one under way drops the replicas the earlier move added and that
    // never caught up; the replicas from before any move stay until this one finishes, so a
    // cancel can always return to them.
    let before = original(s);
    let mut replicas: Vec<NodeId> = s
        .replicas
        .iter()
        .copied()
        .filter(|r| before.contains(r) || s.isr.contains(r) || target.contains(r))
        .collect();
    for t in target {
        if !replicas.contains(t) {
            replicas.push(*t);
        }
    }
    let adding_replicas = replicas
        .iter()
        .copied()
        .filter(|r| !before.contains(r))
        .collect();
    Some(PartitionStateRecord {
        replicas,
        target_replicas: target.to_vec(),
        adding_replicas,
        partition_epoch: bump(s.partition_epoch),
        ..s.clone()
    })
}

/// The replica list the partition had before its move (its list when it is not moving).
pub fn original(s: &PartitionStateRecord) -> Vec<NodeId> {
    s.replicas
        .iter()
        .copied()
        .filter(|r| !s.adding_replicas.contains(r))
        .collect()
}

/// The state that cancels the move under way (back to [`original`]); `None` when none is.
pub fn cancel(s: &PartitionStateRecord) -> Option<PartitionStateRecord> {
    if s.target_replicas.is_empty() {
        return None;
    }
    start(s, &original(s))
}

/// The next write of a move under way, if its time has come.
pub fn step(
    s: &PartitionStateRecord,
    live: &Live,
    draining: &BTreeSet<NodeId>,
) -> Option<PartitionStateRecord> {
    let target = &s.target_replicas;
    if target.is_empty() || s.leader == NO_LEADER {
        return None;
    }
    if !target.iter().all(|t| s.isr.contains(t)) {
        return None;
    }
    if !target.contains(&s.leader) {
        let next = target
            .iter()
            .copied()
            .find(|t| current(s, live, *t) && live[t].registered && !draining.contains(t))?;
        return Some(PartitionStateRecord {
            leader: next,
            leader_epoch: bump(s.leader_epoch),
            partition_epoch: bump(s.partition_epoch),
            ..s.clone()
        });
    }
    Some(PartitionStateRecord {
        replicas: target.clone(),
        isr: s
            .isr
            .iter()
            .copied()
            .filter(|r| target.contains(r))
            .collect(),
        isr_incarnations: s
            .isr_incarnations
            .iter()
            .filter(|(r, _)| target.contains(r))
            .map(|(r, i)| (*r, i.clone()))
            .collect(),
        target_replicas: Vec::new(),
        adding_replicas: Vec::new(),
        partition_epoch: bump(s.partition_epoch),
        ..s.clone()
    })
}

/// New replicas still catching up, and replicas that go at the end.
pub fn progress(s: &PartitionStateRecord) -> (Vec<NodeId>, Vec<NodeId>) {
    let adding = s
        .target_replicas
        .iter()
        .copied()
        .filter(|t| !s.isr.contains(t))
        .collect();
    let removing = s
        .replicas
        .iter()
        .copied()
        .filter(|r| !s.target_replicas.is_empty() && !s.target_replicas.contains(r))
        .collect();
    (adding, removing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::LiveNode;

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

    fn live(ids: &[NodeId]) -> Live {
        ids.iter()
            .map(|r| {
                let n = LiveNode {
                    incarnation: format!("dir-{r}"),
                    registration: 5,
                    boot_revision: 5,
                    registered: true,
                };
                (*r, n)
            })
            .collect()
    }

    /// The ISR as the leader grows it once a new replica caught up.
    fn joined(s: &PartitionStateRecord, r: NodeId) -> PartitionStateRecord {
        let mut n = s.clone();
        n.isr.push(r);
        n.isr_incarnations.insert(r, format!("dir-{r}"));
        n
    }

    #[test]
    fn a_move_adds_waits_moves_leadership_then_drops_the_old_replicas() {
        let all = live(&[0, 1, 2, 3]);
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let started = start(&s, &[1, 2, 3]).unwrap();
        assert_eq!(started.replicas, vec![0, 1, 2, 3]);
        assert_eq!(
            started.isr,
            vec![0, 1, 2],
            "the new replica is not in sync yet"
        );
        assert_eq!(progress(&started), (vec![3], vec![0]));
        assert_eq!(step(&started, &all, &BTreeSet::new()), None, "catching up");
        let caught_up = joined(&started, 3);
        let led = step(&caught_up, &all, &BTreeSet::new()).unwrap();
        assert_eq!(
            (led.leader, led.leader_epoch),
            (1, 5),
            "leadership leaves node 0 first"
        );
        assert_eq!(led.replicas, vec![0, 1, 2, 3], "nothing dropped yet");
        let done = step(&led, &all, &BTreeSet::new()).unwrap();
        assert_eq!(done.replicas, vec![1, 2, 3]);
        assert_eq!(done.isr, vec![1, 2, 3]);
        assert!(!done.isr_incarnations.contains_key(&0));
        assert!(done.target_replicas.is_empty());
        assert_eq!(step(&done, &all, &BTreeSet::new()), None);
    }

    #[test]
    fn a_move_never_shrinks_the_isr_before_every_target_is_in_sync_and_waits_for_a_leader() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let started = start(&s, &[3, 4, 5]).unwrap();
        let two_of_three = joined(&joined(&started, 3), 4);
        assert_eq!(
            step(&two_of_three, &live(&[0, 1, 2, 3, 4, 5]), &BTreeSet::new()),
            None
        );
        let all_in = joined(&two_of_three, 5);
        let leaderless = PartitionStateRecord {
            leader: NO_LEADER,
            ..all_in.clone()
        };
        assert_eq!(step(&leaderless, &live(&[3, 4, 5]), &BTreeSet::new()), None);
        // No target replica may lead (all draining): wait.
        assert_eq!(
            step(&all_in, &live(&[0, 1, 2, 3, 4, 5]), &[3, 4, 5].into()),
            None
        );
    }

    #[test]
    fn a_new_target_replaces_a_move_under_way_and_a_no_op_is_none() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        assert_eq!(start(&s, &[0, 1, 2]), None);
        let started = start(&s, &[1, 2, 3]).unwrap();
        // Node 3 never caught up; moving to [1, 2, 4] drops it (not in sync) and adds 4.
        let again = start(&started, &[1, 2, 4]).unwrap();
        assert_eq!(again.replicas, vec![0, 1, 2, 4]);
        assert_eq!(again.target_replicas, vec![1, 2, 4]);
        assert_eq!(again.adding_replicas, vec![4], "node 3 is gone");
        // Cancelling returns to the list before the first move.
        let back = cancel(&again).unwrap();
        assert_eq!(back.target_replicas, vec![0, 1, 2]);
        assert_eq!(
            back.replicas,
            vec![0, 1, 2],
            "4 never caught up: dropped at once"
        );
        let done = step(&back, &live(&[0, 1, 2]), &BTreeSet::new()).unwrap();
        assert_eq!(done.replicas, vec![0, 1, 2]);
        assert!(done.adding_replicas.is_empty() && done.target_replicas.is_empty());
        assert_eq!(cancel(&done), None, "nothing to cancel");
    }

    #[test]
    fn a_second_move_keeps_every_replica_from_before_the_first_so_a_cancel_loses_none() {
        // Node 2 is out of sync and not in the second target; it stays, as the way back.
        let s = state(&[0, 1, 2], 0, &[0, 1]);
        let first = start(&s, &[1, 2, 3]).unwrap();
        let second = start(&first, &[1, 3, 4]).unwrap();
        assert_eq!(second.replicas, vec![0, 1, 2, 3, 4]);
        assert_eq!(original(&second), vec![0, 1, 2]);
        let back = cancel(&second).unwrap();
        assert_eq!(back.target_replicas, vec![0, 1, 2]);
    }

    #[test]
    fn cancelling_keeps_a_caught_up_replica_until_the_old_list_is_in_sync() {
        let s = state(&[0, 1, 2], 0, &[0, 1, 2]);
        let started = joined(&start(&s, &[1, 2, 3]).unwrap(), 3);
        let back = cancel(&started).unwrap();
        assert_eq!(back.replicas, vec![0, 1, 2, 3]);
        assert_eq!(back.adding_replicas, vec![3]);
        let done = step(&back, &live(&[0, 1, 2, 3]), &BTreeSet::new()).unwrap();
        assert_eq!((done.replicas, done.isr), (vec![0, 1, 2], vec![0, 1, 2]));
    }
}
