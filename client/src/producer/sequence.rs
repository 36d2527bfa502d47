//! Sequence numbers of the idempotent producer. Pure: the accumulator calls it under its lock.
//!
//! The leader of a partition remembers, per producer id, the sequence its last batch ended at;
//! it appends a batch whose base sequence follows, answers a resend of the last batch with the
//! original offset (de-duplication), and refuses a gap with `OUT_OF_ORDER_SEQUENCE`.
//!
//! Invariants that make the client side simple: a batch is stamped when it is first sent, and
//! keeps its stamp (its bytes) for every retry; a partition has at most one stamped batch that
//! is not yet resolved, since only one is in flight and a retry goes back to the queue's front.
//! So when that batch finally fails, no later batch has a sequence yet, and:
//!
//! | how it failed                                       | partition's next sequence          |
//! |-----------------------------------------------------|------------------------------------|
//! | never written (refused before the append)           | rolled back to the batch's base    |
//! | maybe written (timeout, lost answer, ...)           | unknown: wait for a new identity   |
//! | refused for its sequence or epoch                   | unknown: wait for a new identity   |
//!
//! A new identity is a fresh producer id from the coordinator; under it the partition starts
//! again at 0. Other partitions keep their identity and sequences.

/// What the coordinator handed out (`InitProducerId`), numbered locally so a partition can tell
/// whether the identity changed since it last numbered a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) generation: u64,
}

/// The producer fields a batch carries, fixed before its first send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) identity: Identity,
    pub(crate) base_sequence: i32,
}

/// How a stamped batch ended up failing, which decides its partition's next sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Every attempt was refused before the append: the leader never saw the sequence.
    NotWritten,
    /// Some attempt may have been appended; the leader's next expected sequence is unknown.
    MaybeWritten,
    /// The leader refused the sequence or the epoch itself.
    SequenceRejected,
}

/// One partition's numbering.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionSequence {
    /// Generation of the identity `next` counts under; `None` before the first batch.
    generation: Option<u64>,
    next: i32,
    /// Set after a failure left the sequence unknown: the partition waits for an identity of a
    /// later generation than this.
    stuck_at: Option<u64>,
}

impl PartitionSequence {
    /// Whether the partition must wait for a newer identity than `current` before numbering.
    pub(crate) fn waiting(&self, current: &Identity) -> bool {
        self.stuck_at.is_some_and(|g| current.generation <= g)
    }

    /// The stamp for the partition's next batch of `records`, or `None` while it waits for a
    /// newer identity. A new identity starts the partition at sequence 0.
    pub(crate) fn stamp(&mut self, current: &Identity, records: usize) -> Option<Stamp> {
        if self.waiting(current) {
            return None;
        }
        self.stuck_at = None;
        if self.generation != Some(current.generation) {
            self.generation = Some(current.generation);
            self.next = 0;
        }
        let base_sequence = self.next;
        self.next = increment(base_sequence, records);
        Some(Stamp {
            identity: *current,
            base_sequence,
        })
    }

    /// A batch stamped with `stamp` failed for good. Returns whether the partition now waits for
    /// a new identity (the caller asks the coordinator for one).
    pub(crate) fn failed(&mut self, stamp: &Stamp, how: Failure) -> bool {
        if self.generation != Some(stamp.identity.generation) {
            // Numbered under an identity this partition has already left behind.
            return false;
        }
        match how {
            Failure::NotWritten => {
                self.next = stamp.base_sequence;
                false
            }
            Failure::MaybeWritten | Failure::SequenceRejected => {
                self.stuck_at = Some(stamp.identity.generation);
                true
            }
        }
    }
}

impl PartitionSequence {
    /// The partition's in-flight batch was lost without a trace (its send task panicked): treat
    /// it as maybe written. Returns whether the partition now waits for a new identity.
    pub(crate) fn abandon(&mut self) -> bool {
        self.stuck_at = self.generation;
        self.stuck_at.is_some()
    }
}

/// `sequence + records`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub(crate) fn increment(sequence: i32, records: usize) -> i32 {
    const MODULUS: i64 = i32::MAX as i64 + 1;
    let records = (records as u64 % MODULUS as u64) as i64;
    ((i64::from(sequence) + records) % MODULUS) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(generation: u64) -> Identity {
        Identity {
            producer_id: 100 + generation as i64,
            epoch: 0,
            generation,
        }
    }

    #[test]
    fn sequences_follow_record_counts_and_wrap_at_i32_max() {
        assert_eq!(increment(0, 5), 5);
        assert_eq!(increment(i32::MAX - 2, 2), i32::MAX);
        assert_eq!(increment(i32::MAX, 1), 0);
        assert_eq!(increment(i32::MAX - 1, 5), 3);
        let id = identity(1);
        let mut seq = PartitionSequence::default();
        let bases: Vec<i32> = [3, 1, 4]
            .iter()
            .map(|&n| seq.stamp(&id, n).unwrap().base_sequence)
            .collect();
        assert_eq!(bases, vec![0, 3, 4]);
    }

    #[test]
    fn a_batch_never_written_gives_its_sequence_to_the_next_one() {
        let id = identity(1);
        let mut seq = PartitionSequence::default();
        seq.stamp(&id, 2).unwrap();
        let failed = seq.stamp(&id, 3).unwrap();
        assert!(!seq.failed(&failed, Failure::NotWritten));
        assert_eq!(seq.stamp(&id, 1).unwrap().base_sequence, 2);
    }

    #[test]
    fn an_unknown_outcome_waits_for_a_new_identity_and_restarts_at_zero() {
        for how in [Failure::MaybeWritten, Failure::SequenceRejected] {
            let old = identity(1);
            let mut seq = PartitionSequence::default();
            seq.stamp(&old, 2).unwrap();
            let failed = seq.stamp(&old, 3).unwrap();
            assert!(seq.failed(&failed, how), "{how:?}");
            assert!(seq.waiting(&old));
            assert_eq!(seq.stamp(&old, 1), None, "no number under the old identity");
            let new = identity(2);
            assert!(!seq.waiting(&new));
            let stamp = seq.stamp(&new, 1).unwrap();
            assert_eq!((stamp.identity, stamp.base_sequence), (new, 0));
            assert_eq!(seq.stamp(&new, 1).unwrap().base_sequence, 1);
        }
    }

    #[test]
    fn a_partition_follows_a_newer_identity_taken_for_another_one() {
        let mut seq = PartitionSequence::default();
        let first = seq.stamp(&identity(1), 4).unwrap();
        // Another partition's failure brought generation 2; this one follows at its next batch.
        let second = seq.stamp(&identity(2), 1).unwrap();
        assert_eq!(second.base_sequence, 0);
        // A failure report about a batch numbered under the identity left behind changes
        // nothing (defensive: one unresolved stamped batch per partition rules it out).
        assert!(!seq.failed(&first, Failure::MaybeWritten));
        assert_eq!(seq.stamp(&identity(2), 1).unwrap().base_sequence, 1);
    }

    #[test]
    fn a_lost_batch_leaves_the_sequence_unknown() {
        let mut seq = PartitionSequence::default();
        assert!(!seq.abandon(), "nothing numbered yet, nothing to lose");
        seq.stamp(&identity(1), 1).unwrap();
        assert!(seq.abandon());
        assert!(seq.waiting(&identity(1)) && !seq.waiting(&identity(2)));
    }
}
