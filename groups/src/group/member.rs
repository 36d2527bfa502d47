//! One member's state and its reconciliation towards the target assignment.
//!
//! The group tracks, per member, `assigned` (what the member was last told it may own) and
//! `pending_revocation` (what it was told to give up but has not yet reported released).
//! Invariant: these sets, over all members, are pairwise disjoint; a partition enters a
//! member's `assigned` only when it is in no other member's sets. As long as members report
//! truthfully, no partition is ever owned by two live members.
//!
//! | Member's situation | On its heartbeat (reporting `owned`) |
//! |---|---|
//! | has `pending_revocation` | drop from it what `owned` no longer contains; if still non-empty, wait (epoch unchanged) |
//! | epoch behind the target epoch, owns partitions outside its target | those move to `pending_revocation`, `assigned` shrinks to the target; epoch unchanged; rebalance deadline starts |
//! | epoch behind, nothing to revoke | epoch := target epoch (previous epoch remembered for a lost response) |
//! | at the target epoch | every target partition that no other member holds is added to `assigned` |

use std::collections::BTreeSet;

use crate::Partitions;

/// Member epoch of a member that left statically (`-2`) and whose instance id is reserved.
pub(super) const STATIC_LEFT: i32 = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub subscribed_topics: BTreeSet<String>,
    pub rebalance_timeout_ms: u32,
    pub session_timeout_ms: u32,
    pub member_epoch: i32,
    /// Epoch before the last advance: a heartbeat carrying it is accepted once, so that a lost
    /// response does not fence a healthy member.
    pub previous_member_epoch: i32,
    pub assigned: Partitions,
    pub pending_revocation: Partitions,
    pub session_deadline_ms: u64,
    pub revocation_deadline_ms: Option<u64>,
}

/// The persisted part of a member's reconciliation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Partitions,
    pub pending_revocation: Partitions,
}

impl Member {
    pub fn new(id: String) -> Self {
        Self {
            id,
            instance_id: None,
            subscribed_topics: BTreeSet::new(),
            rebalance_timeout_ms: 0,
            session_timeout_ms: 0,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Partitions::new(),
            pending_revocation: Partitions::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
        }
    }

    pub fn current(&self) -> CurrentAssignment {
        CurrentAssignment {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            assigned: self.assigned.clone(),
            pending_revocation: self.pending_revocation.clone(),
        }
    }

    /// Every partition this member may still hold: nobody else may be given these.
    pub fn held(&self) -> impl Iterator<Item = &crate::TopicPartition> {
        self.assigned.iter().chain(&self.pending_revocation)
    }

    /// Moves the member one step towards `target` (see the module table). `owned` is what the
    /// member reports holding; `held_by_others` is every partition other members may hold.
    pub fn reconcile(
        &mut self,
        owned: &Partitions,
        target: &Partitions,
        target_epoch: i32,
        held_by_others: &Partitions,
        now_ms: u64,
    ) {
        self.pending_revocation.retain(|p| owned.contains(p));
        if !self.pending_revocation.is_empty() {
            return;
        }
        self.revocation_deadline_ms = None;
        if self.member_epoch < target_epoch {
            // Partitions the member does not report are not held (it never got them, e.g. a
            // lost response), so they are dropped at once rather than awaited.
            let revoked: Partitions = self
                .assigned
                .iter()
                .filter(|p| !target.contains(*p) && owned.contains(*p))
                .cloned()
                .collect();
            self.assigned.retain(|p| target.contains(p));
            if !revoked.is_empty() {
                self.pending_revocation = revoked;
                self.revocation_deadline_ms =
                    Some(now_ms.saturating_add(u64::from(self.rebalance_timeout_ms)));
                return;
            }
            self.previous_member_epoch = self.member_epoch;
            self.member_epoch = target_epoch;
        }
        for p in target {
            if !held_by_others.contains(p) {
                self.assigned.insert(p.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignor::test_support::parts;

    fn member(epoch: i32, assigned: &[i32]) -> Member {
        let mut m = Member::new("m".into());
        m.member_epoch = epoch;
        m.assigned = parts("t", assigned);
        m.rebalance_timeout_ms = 100;
        m
    }

    #[test]
    fn owned_partition_leaving_the_target_is_revoked_before_the_epoch_advances() {
        let mut m = member(1, &[0, 1]);
        m.reconcile(
            &parts("t", &[0, 1]),
            &parts("t", &[0]),
            2,
            &Partitions::new(),
            10,
        );
        assert_eq!((m.member_epoch, m.assigned.clone()), (1, parts("t", &[0])));
        assert_eq!(m.pending_revocation, parts("t", &[1]));
        assert_eq!(m.revocation_deadline_ms, Some(110));
        m.reconcile(
            &parts("t", &[0]),
            &parts("t", &[0]),
            2,
            &Partitions::new(),
            20,
        );
        assert_eq!((m.member_epoch, m.previous_member_epoch), (2, 1));
        assert!(m.pending_revocation.is_empty() && m.revocation_deadline_ms.is_none());
    }

    #[test]
    fn partition_never_received_is_dropped_without_waiting() {
        let mut m = member(1, &[0, 1]);
        m.reconcile(
            &parts("t", &[0]),
            &parts("t", &[0]),
            2,
            &Partitions::new(),
            10,
        );
        assert_eq!(m.member_epoch, 2);
        assert!(m.pending_revocation.is_empty());
    }

    #[test]
    fn partition_held_by_another_member_is_not_given_yet() {
        let mut m = member(1, &[]);
        m.reconcile(
            &Partitions::new(),
            &parts("t", &[0, 1]),
            2,
            &parts("t", &[1]),
            10,
        );
        assert_eq!((m.member_epoch, m.assigned.clone()), (2, parts("t", &[0])));
        m.reconcile(
            &parts("t", &[0]),
            &parts("t", &[0, 1]),
            2,
            &Partitions::new(),
            20,
        );
        assert_eq!(m.assigned, parts("t", &[0, 1]));
    }
}
