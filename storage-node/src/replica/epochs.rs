//! The leader-epoch history of a replica and the divergence rule of Kafka's KIP-101/279: a
//! follower asks the leader where its last epoch ends in the leader's log and truncates there,
//! so no divergent tail (e.g. an old leader's unreplicated writes) survives.

use sluice_proto::model::{LeaderEpoch, Offset};

use crate::log::EpochEntry;

/// Epochs and the offsets they began at, oldest first, strictly increasing in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// A history from stored entries.
    pub fn new(entries: Vec<EpochEntry>) -> Self {
        Self { entries }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The epoch of the last batch in the log, or -1 for an empty history.
    pub fn last_epoch(&self) -> LeaderEpoch {
        self.entries.last().map_or(-1, |e| e.epoch)
    }

    /// Start offset of `epoch`, if it is the last epoch with data.
    pub fn start_of(&self, epoch: LeaderEpoch) -> Option<Offset> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// Records that a batch of `epoch` was appended at `base_offset`; returns whether the
    /// history changed (a new epoch began).
    pub fn on_append(&mut self, epoch: LeaderEpoch, base_offset: Offset) -> bool {
        if self.entries.last().is_some_and(|l| l.epoch >= epoch) {
            return false;
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: base_offset,
        });
        true
    }

    /// Forgets epochs that began at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: Offset) {
        self.entries.retain(|e| e.start_offset < offset);
    }

    /// Forgets epochs above `epoch` (the leader never had them).
    pub fn forget_above(&mut self, epoch: LeaderEpoch) {
        self.entries.retain(|e| e.epoch <= epoch);
    }

    /// The leader's answer to "where does `epoch` end?" (KIP-279): the largest epoch it has
    /// that is `<= epoch`, and the offset where the next epoch began (or `log_end` when that
    /// epoch is its last). `(-1, -1)` when it has no such epoch.
    ///
    /// | leader history | log_end | asked | answer |
    /// |---|---|---|---|
    /// | (0,0) (2,10) | 15 | 0 | (0, 10) |
    /// | (0,0) (2,10) | 15 | 1 | (0, 10) — epoch 1 unknown: end of epoch 0 |
    /// | (0,0) (2,10) | 15 | 2 | (2, 15) |
    /// | (0,0) (2,10) | 15 | 3 | (2, 15) |
    /// | (3,5) | 9 | 1 | (-1, -1) — nothing that old |
    /// | empty | 0 | 0 | (-1, -1) |
    pub fn end_offset_for(&self, epoch: LeaderEpoch, log_end: Offset) -> (LeaderEpoch, Offset) {
        let Some(i) = self.entries.iter().rposition(|e| e.epoch <= epoch) else {
            return (-1, -1);
        };
        let end = self
            .entries
            .get(i + 1)
            .map_or(log_end, |next| next.start_offset);
        (self.entries[i].epoch, end)
    }
}

/// Where a follower whose log ends at `follower_end`, last written in `follower_epoch`, must
/// truncate to agree with the leader, or `None` when its log is a prefix of the leader's.
/// `leader_answer` is [`EpochHistory::end_offset_for`] on the leader for `follower_epoch`.
///
/// | follower (epoch, end) | leader answer | result |
/// |---|---|---|
/// | (-1, 0) empty | any | None |
/// | (2, 12) | (2, 15) | None: a prefix |
/// | (1, 14) | (0, 10) | Some((0, 10)): epoch 1 never reached the leader |
/// | (2, 20) | (2, 15) | Some((2, 15)): a tail beyond the leader's end of epoch 2 |
/// | (3, 8) | (-1, -1) | Some((-1, 0)): nothing in common |
pub fn divergence(
    follower_epoch: LeaderEpoch,
    follower_end: Offset,
    leader_answer: (LeaderEpoch, Offset),
) -> Option<(LeaderEpoch, Offset)> {
    if follower_end == 0 {
        return None;
    }
    let (epoch, end) = leader_answer;
    if epoch < 0 {
        return Some((-1, 0));
    }
    if epoch == follower_epoch && end >= follower_end {
        return None;
    }
    Some((epoch, end.min(follower_end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(e: &[(i32, i64)]) -> EpochHistory {
        EpochHistory::new(
            e.iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
    }

    #[test]
    fn end_offset_for_follows_the_table() {
        let h = history(&[(0, 0), (2, 10)]);
        assert_eq!(h.end_offset_for(0, 15), (0, 10));
        assert_eq!(h.end_offset_for(1, 15), (0, 10));
        assert_eq!(h.end_offset_for(2, 15), (2, 15));
        assert_eq!(h.end_offset_for(3, 15), (2, 15));
        assert_eq!(history(&[(3, 5)]).end_offset_for(1, 9), (-1, -1));
        assert_eq!(history(&[]).end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn divergence_follows_the_table() {
        assert_eq!(divergence(-1, 0, (2, 15)), None);
        assert_eq!(divergence(2, 12, (2, 15)), None);
        assert_eq!(divergence(1, 14, (0, 10)), Some((0, 10)));
        assert_eq!(divergence(2, 20, (2, 15)), Some((2, 15)));
        assert_eq!(divergence(3, 8, (-1, -1)), Some((-1, 0)));
    }

    #[test]
    fn an_old_leaders_unreplicated_tail_is_truncated_away() {
        // Old leader wrote epoch 0 up to 20; the new leader had only 0..10, then epoch 1.
        let old = history(&[(0, 0)]);
        let new = history(&[(0, 0), (1, 10)]);
        let answer = new.end_offset_for(old.last_epoch(), 25);
        assert_eq!(divergence(old.last_epoch(), 20, answer), Some((0, 10)));
        let mut old = old;
        old.truncate_from(10);
        assert_eq!(old.entries().len(), 1, "epoch 0 began before 10 and stays");
    }

    #[test]
    fn appends_open_an_epoch_only_when_it_grows() {
        let mut h = history(&[]);
        assert!(h.on_append(0, 0));
        assert!(!h.on_append(0, 5));
        assert!(h.on_append(2, 9));
        assert_eq!(h.start_of(2), Some(9));
        h.forget_above(1);
        assert_eq!(h.last_epoch(), 0);
    }
}
