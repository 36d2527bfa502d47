//! The high watermark: the offset below which every record is on every in-sync replica, hence
//! committed and visible to consumers.

use sluice_proto::model::Offset;

/// The new high watermark of a leader.
///
/// `isr_follower_ends` holds, for each in-sync follower (the leader excluded), its log end as
/// last reported, or `None` when it has not reported since this leadership began.
///
/// | current | leader end | in-sync followers' ends | result | why |
/// |---|---|---|---|---|
/// | 0 | 10 | (none: ISR is the leader) | 10 | a lone leader commits what it appends |
/// | 0 | 10 | 10, 10 | 10 | everyone has everything |
/// | 0 | 10 | 7, 10 | 7 | the slowest in-sync replica bounds it |
/// | 5 | 10 | unknown | 5 | unknown followers block progress, not regress |
/// | 8 | 10 | 6 | 8 | it never moves back |
/// | 0 | 10 | 12 | 10 | capped at the leader's own end |
pub fn compute_high_watermark(
    current: Offset,
    leader_end: Offset,
    isr_follower_ends: impl IntoIterator<Item = Option<Offset>>,
) -> Offset {
    let mut candidate = leader_end;
    for end in isr_follower_ends {
        match end {
            Some(e) => candidate = candidate.min(e),
            None => return current,
        }
    }
    current.max(candidate)
}

#[cfg(test)]
mod tests {
    use super::compute_high_watermark as hw;

    #[test]
    fn lone_leader_commits_what_it_appends() {
        assert_eq!(hw(0, 10, []), 10);
    }

    #[test]
    fn caught_up_followers_commit_everything() {
        assert_eq!(hw(0, 10, [Some(10), Some(10)]), 10);
    }

    #[test]
    fn slowest_in_sync_follower_bounds_it() {
        assert_eq!(hw(0, 10, [Some(7), Some(10)]), 7);
    }

    #[test]
    fn unknown_follower_blocks_progress_without_regress() {
        assert_eq!(hw(5, 10, [None]), 5);
    }

    #[test]
    fn never_moves_back() {
        assert_eq!(hw(8, 10, [Some(6)]), 8);
    }

    #[test]
    fn capped_at_the_leaders_end() {
        assert_eq!(hw(0, 10, [Some(12)]), 10);
    }
}
