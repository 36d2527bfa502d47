//! The arithmetic of `group describe` and `group reset`, pure so each case is tested.

use crate::consumer::SeekTo;

/// How far a group is behind on a partition: `log_end - committed`, never negative (a commit
/// can be ahead of a high watermark that a new leader has not advanced yet). `None` without a
/// committed offset or a known log end.
///
/// | committed | log end | lag  |
/// |-----------|---------|------|
/// | 40        | 100     | 60   |
/// | 100       | 100     | 0    |
/// | 120       | 100     | 0    |
/// | none      | 100     | none |
pub fn lag(committed: Option<i64>, log_end: Option<i64>) -> Option<i64> {
    Some((log_end? - committed?).max(0))
}

/// The offset a reset moves a partition's commit to, given the log's bounds (`log_start`, the
/// earliest retained offset, and `log_end`, the high watermark) and, for
/// [`SeekTo::Timestamp`], the offset the leader found for the time (`None`: no record that
/// late). Offsets outside the log are clamped into it, as Kafka's reset tool does, so the group
/// neither skips to a future offset nor fails with `OFFSET_OUT_OF_RANGE`.
pub fn reset_target(
    to: SeekTo,
    log_start: i64,
    log_end: i64,
    timestamp_offset: Option<i64>,
) -> i64 {
    let raw = match to {
        SeekTo::Earliest => log_start,
        SeekTo::Latest => log_end,
        SeekTo::Offset(o) => o,
        SeekTo::Timestamp(_) => timestamp_offset.unwrap_or(log_end),
    };
    raw.clamp(log_start, log_end.max(log_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_log_end_minus_commit_and_never_negative() {
        assert_eq!(lag(Some(40), Some(100)), Some(60));
        assert_eq!(lag(Some(100), Some(100)), Some(0));
        assert_eq!(lag(Some(120), Some(100)), Some(0));
        assert_eq!(lag(None, Some(100)), None);
        assert_eq!(lag(Some(5), None), None);
    }

    #[test]
    fn reset_targets_follow_the_spec_and_clamp_into_the_log() {
        assert_eq!(reset_target(SeekTo::Earliest, 10, 100, None), 10);
        assert_eq!(reset_target(SeekTo::Latest, 10, 100, None), 100);
        assert_eq!(reset_target(SeekTo::Offset(50), 10, 100, None), 50);
        assert_eq!(reset_target(SeekTo::Offset(5), 10, 100, None), 10);
        assert_eq!(reset_target(SeekTo::Offset(500), 10, 100, None), 100);
        assert_eq!(reset_target(SeekTo::Timestamp(7), 10, 100, Some(42)), 42);
        // No record at or after the time: the end, so only newer records are read.
        assert_eq!(reset_target(SeekTo::Timestamp(7), 10, 100, None), 100);
        // An empty log after retention: start and end agree.
        assert_eq!(reset_target(SeekTo::Offset(0), 100, 100, None), 100);
    }
}
