//! Reconciling the partitions a member owns with the assignment the coordinator sent. Pure, so
//! the order of a rebalance is tested without a server.
//!
//! The member revokes first — stops fetching, commits, reports the partitions as no longer owned
//! — and only then starts the newly assigned ones. The coordinator never assigns a partition to
//! a member before its previous owner has reported it released, so, with revocations applied
//! first, no partition is owned by two members at any instant.

use std::collections::BTreeSet;

/// A topic-partition.
pub(crate) type Tp = (String, i32);

/// What to do to go from the owned set to the assigned one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Owned but no longer assigned: stop, commit, release — before anything is added.
    pub(crate) revoke: Vec<Tp>,
    /// Assigned but not owned yet: start reading from the committed offset.
    pub(crate) assign: Vec<Tp>,
}

impl Reconciliation {
    /// Nothing to change.
    pub(crate) fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.assign.is_empty()
    }
}

/// The steps from `owned` to `assigned`; partitions in both stay untouched (their position and
/// fetch task are kept).
pub(crate) fn reconcile(owned: &BTreeSet<Tp>, assigned: &BTreeSet<Tp>) -> Reconciliation {
    Reconciliation {
        revoke: owned.difference(assigned).cloned().collect(),
        assign: assigned.difference(owned).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(&str, i32)]) -> BTreeSet<Tp> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn kept_partitions_are_untouched_and_only_differences_move() {
        let owned = set(&[("a", 0), ("a", 1), ("b", 0)]);
        let assigned = set(&[("a", 1), ("b", 0), ("b", 1)]);
        let r = reconcile(&owned, &assigned);
        assert_eq!(r.revoke, vec![("a".to_string(), 0)]);
        assert_eq!(r.assign, vec![("b".to_string(), 1)]);
    }

    #[test]
    fn same_sets_need_nothing_and_empty_assignment_revokes_everything() {
        let owned = set(&[("a", 0), ("a", 1)]);
        assert!(reconcile(&owned, &owned).is_empty());
        let r = reconcile(&owned, &BTreeSet::new());
        assert_eq!(r.revoke.len(), 2);
        assert!(r.assign.is_empty());
    }

    #[test]
    fn applying_revocations_first_never_holds_more_than_both_sets_share_plus_old() {
        // After the revoke step the member holds only partitions that are in both sets, so a
        // partition moving to it from elsewhere is never held alongside one leaving it.
        let owned = set(&[("a", 0), ("a", 1), ("a", 2)]);
        let assigned = set(&[("a", 2), ("a", 3)]);
        let r = reconcile(&owned, &assigned);
        let mut held = owned.clone();
        for tp in &r.revoke {
            held.remove(tp);
        }
        assert_eq!(held, owned.intersection(&assigned).cloned().collect());
        held.extend(r.assign.iter().cloned());
        assert_eq!(held, assigned);
    }
}
