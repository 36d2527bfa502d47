//! In-sync replica set maintenance by the leader: which followers to drop (lagging too long)
//! and which to add back (caught up). A pure decision; the leader applies it with a
//! compare-and-swap on the partition state.

use std::collections::BTreeMap;

use sluice_proto::model::{NodeId, Offset};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerView {
    /// Log end as last reported, if any since this leadership began.
    pub end: Option<Offset>,
    /// Last time (ms) the follower had everything the leader had; starts at the leadership start.
    pub last_caught_up_ms: u64,
    /// Whether its replication stream is open now.
    pub connected: bool,
}

/// Inputs of the ISR decision.
#[derive(Debug, Clone)]
pub struct IsrInputs<'a> {
    /// This leader.
    pub leader: NodeId,
    /// All assigned replicas, in preference order.
    pub replicas: &'a [NodeId],
    /// The current ISR (contains the leader).
    pub isr: &'a [NodeId],
    /// The leader's log end.
    pub leader_end: Offset,
    /// The leader's high watermark.
    pub high_watermark: Offset,
    /// Where the leader's current epoch began (a follower must have reached it to rejoin).
    pub epoch_start: Offset,
    /// Per follower.
    pub followers: &'a BTreeMap<NodeId, FollowerView>,
    /// Now, in ms.
    pub now_ms: u64,
    /// `replica.lag.time.max.ms` of the topic.
    pub max_lag_ms: u64,
}

/// The ISR the leader should write, or `None` when it stays.
///
/// | follower | in ISR | state | decision |
/// |---|---|---|---|
/// | caught up (connected, end >= leader end) | yes | - | stays |
/// | behind or disconnected, last caught up < max lag ago | yes | - | stays |
/// | behind or disconnected, last caught up >= max lag ago | yes | - | removed |
/// | connected, end >= HW and >= epoch start | no | - | added |
/// | not connected, or end < HW, or end < epoch start | no | - | stays out |
///
/// The leader itself always stays.
pub fn isr_change(i: &IsrInputs<'_>) -> Option<Vec<NodeId>> {
    let keep = |f: NodeId| -> bool {
        if f == i.leader {
            return true;
        }
        let Some(v) = i.followers.get(&f) else {
            return false;
        };
        let caught_up_now = v.connected && v.end.is_some_and(|e| e >= i.leader_end);
        caught_up_now || i.now_ms.saturating_sub(v.last_caught_up_ms) < i.max_lag_ms
    };
    let join = |f: NodeId| -> bool {
        i.followers.get(&f).is_some_and(|v| {
            v.connected
                && v.end
                    .is_some_and(|e| e >= i.high_watermark && e >= i.epoch_start)
        })
    };
    let new: Vec<NodeId> = i
        .replicas
        .iter()
        .copied()
        .filter(|r| {
            if i.isr.contains(r) {
                keep(*r)
            } else {
                join(*r)
            }
        })
        .collect();
    let mut old: Vec<NodeId> = i.isr.to_vec();
    old.sort_unstable();
    let mut sorted = new.clone();
    sorted.sort_unstable();
    (sorted != old).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(end: Option<Offset>, last: u64, connected: bool) -> FollowerView {
        FollowerView {
            end,
            last_caught_up_ms: last,
            connected,
        }
    }

    fn decide(isr: &[NodeId], followers: &[(NodeId, FollowerView)]) -> Option<Vec<NodeId>> {
        let followers: BTreeMap<_, _> = followers.iter().copied().collect();
        isr_change(&IsrInputs {
            leader: 0,
            replicas: &[0, 1, 2],
            isr,
            leader_end: 100,
            high_watermark: 90,
            epoch_start: 50,
            followers: &followers,
            now_ms: 20_000,
            max_lag_ms: 10_000,
        })
    }

    #[test]
    fn caught_up_follower_stays() {
        assert_eq!(decide(&[0, 1], &[(1, view(Some(100), 0, true))]), None);
    }

    #[test]
    fn recently_caught_up_laggard_stays() {
        assert_eq!(decide(&[0, 1], &[(1, view(Some(80), 15_000, true))]), None);
    }

    #[test]
    fn laggard_past_max_lag_is_removed() {
        assert_eq!(
            decide(&[0, 1], &[(1, view(Some(80), 5_000, true))]),
            Some(vec![0])
        );
        assert_eq!(
            decide(&[0, 1], &[(1, view(Some(100), 5_000, false))]),
            Some(vec![0]),
            "disconnected counts as behind"
        );
    }

    #[test]
    fn caught_up_outsider_is_added_in_replica_order() {
        assert_eq!(
            decide(
                &[0, 1],
                &[(1, view(Some(100), 0, true)), (2, view(Some(95), 0, true))]
            ),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn outsider_below_hw_or_epoch_start_or_disconnected_stays_out() {
        assert_eq!(decide(&[0], &[(2, view(Some(85), 0, true))]), None);
        assert_eq!(decide(&[0], &[(2, view(Some(95), 0, false))]), None);
        assert_eq!(decide(&[0], &[(2, view(None, 0, true))]), None);
    }

    #[test]
    fn leader_always_stays() {
        assert_eq!(decide(&[0], &[]), None);
    }
}
