//! Idempotent-producer state of one partition: per producer id, its epoch and its last few
//! batches' sequence ranges, so a retried batch is recognised and answered with its original
//! offset instead of being appended twice, and a gap in sequences is refused.
//!
//! The state follows the log: it is updated for every appended batch, on leaders and
//! followers alike, so a new leader already has it; on restart it is rebuilt from the batch
//! headers of the log's tail.

use std::collections::{HashMap, VecDeque};

use sluice_proto::batch::BatchHeader;
use sluice_proto::model::Offset;

/// How many recent batches per producer are remembered (Kafka's max in-flight for idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqRange {
    first: i32,
    last: i32,
    base_offset: Offset,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<SeqRange>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New and in order (or not idempotent): append it.
    Append,
    /// Already appended at this base offset: answer with it, append nothing.
    Duplicate(Offset),
    /// The producer's epoch is older than one already seen (a zombie).
    StaleEpoch,
    /// A gap or reordering: the expected next sequence is given.
    OutOfOrder {
        /// The sequence the partition expects next.
        expected: i32,
    },
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_sequence(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX, as in Kafka.
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1))
        as i32
}

fn next_after(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerState {
    /// Checks a batch against the state (does not change it).
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return SequenceCheck::Append;
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return SequenceCheck::Append;
        };
        if h.producer_epoch < p.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if h.producer_epoch > p.epoch {
            // A new epoch starts its sequence over.
            return if h.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: 0 }
            };
        }
        let last = last_sequence(h);
        if let Some(r) = p
            .recent
            .iter()
            .find(|r| r.first == h.base_sequence && r.last == last)
        {
            return SequenceCheck::Duplicate(r.base_offset);
        }
        match p.recent.back() {
            Some(prev) if h.base_sequence != next_after(prev.last) => SequenceCheck::OutOfOrder {
                expected: next_after(prev.last),
            },
            _ => SequenceCheck::Append,
        }
    }

    /// Records an appended batch (with its assigned base offset).
    pub fn record(&mut self, h: &BatchHeader, base_offset: Offset) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let p = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        p.recent.push_back(SeqRange {
            first: h.base_sequence,
            last: last_sequence(h),
            base_offset,
        });
        while p.recent.len() > REMEMBERED_BATCHES {
            p.recent.pop_front();
        }
    }

    /// Forgets everything (after a truncation the tail is rebuilt from the log).
    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        let mut b = sluice_proto::batch::BatchBuilder::new(sluice_proto::batch::Compression::None)
            .with_producer(pid, epoch, seq);
        for _ in 0..count {
            b.push(&sluice_proto::batch::Record::default());
        }
        BatchHeader::parse(&b.finish(0).unwrap()).unwrap()
    }

    #[test]
    fn retried_batch_is_a_duplicate_with_its_original_offset() {
        let mut s = ProducerState::default();
        let b = header(7, 0, 0, 3);
        assert_eq!(s.check(&b), SequenceCheck::Append);
        s.record(&b, 40);
        assert_eq!(s.check(&b), SequenceCheck::Duplicate(40));
        let next = header(7, 0, 3, 2);
        assert_eq!(s.check(&next), SequenceCheck::Append);
    }

    #[test]
    fn a_gap_is_refused_with_the_expected_sequence() {
        let mut s = ProducerState::default();
        s.record(&header(7, 0, 0, 3), 0);
        assert_eq!(
            s.check(&header(7, 0, 5, 1)),
            SequenceCheck::OutOfOrder { expected: 3 }
        );
    }

    #[test]
    fn older_epochs_are_fenced_and_newer_ones_restart_at_zero() {
        let mut s = ProducerState::default();
        s.record(&header(7, 2, 0, 1), 0);
        assert_eq!(s.check(&header(7, 1, 1, 1)), SequenceCheck::StaleEpoch);
        assert_eq!(s.check(&header(7, 3, 0, 1)), SequenceCheck::Append);
        assert_eq!(
            s.check(&header(7, 3, 4, 1)),
            SequenceCheck::OutOfOrder { expected: 0 }
        );
    }

    #[test]
    fn non_idempotent_batches_are_always_appended() {
        let s = ProducerState::default();
        assert_eq!(s.check(&header(-1, -1, -1, 2)), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1), i64::from(i));
        }
        assert_eq!(s.check(&header(1, 0, 6, 1)), SequenceCheck::Duplicate(6));
        assert_eq!(
            s.check(&header(1, 0, 0, 1)),
            SequenceCheck::OutOfOrder { expected: 7 }
        );
    }
}
