//! In-sync replica set maintenance by the leader: which followers to drop (lagging too long, or
//! replicating into another data directory than the one that joined) and which to add back
//! (caught up, and registered with the controller with the data directory they replicate into).
//! A pure decision; the leader applies it with a compare-and-swap on the partition state.

use std::collections::BTreeMap;

use sluice_proto::model::{NodeId, Offset};

/// What the leader knows of one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    /// Log end as last reported, if any since this leadership began.
    pub end: Option<Offset>,
    /// Last time (ms) the follower had everything the leader had; starts at the leadership start.
    pub last_caught_up_ms: u64,
    /// Whether its replication stream is open now.
    pub connected: bool,
    /// The data-directory incarnation its stream announced, if one opened in this leadership.
    pub incarnation: Option<String>,
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
    /// The incarnation each ISR member had when it joined (members without one are trusted).
    pub isr_incarnations: &'a BTreeMap<NodeId, String>,
    /// Nodes registered now, with their incarnation, as this leader's view shows them.
    pub registered: &'a BTreeMap<NodeId, String>,
}

/// The ISR the leader should write, or `None` when it stays.
///
/// | follower | in ISR | state | decision |
/// |---|---|---|---|
/// | caught up (connected, end >= leader end) | yes | - | stays |
/// | behind or disconnected, last caught up < max lag ago | yes | - | stays |
/// | behind or disconnected, last caught up >= max lag ago | yes | - | removed |
/// | streams into another incarnation than it joined with | yes | - | removed |
/// | connected, end >= HW and >= epoch start, registered with the incarnation it streams into | no | - | added |
/// | not connected, or end < HW, or end < epoch start, or not registered so (KIP-841) | no | - | stays out |
///
/// The leader itself always stays. A follower the controller does not count as live is never
/// added back, so the leader and the controller cannot add and remove it in turn.
pub fn isr_change(i: &IsrInputs<'_>) -> Option<Vec<NodeId>> {
    let keep = |f: NodeId| -> bool {
        if f == i.leader {
            return true;
        }
        let Some(v) = i.followers.get(&f) else {
            return false;
        };
        let caught_up_now = v.connected && v.end.is_some_and(|e| e >= i.leader_end);
        let same_data = match (&v.incarnation, i.isr_incarnations.get(&f)) {
            (Some(now), Some(joined)) => now == joined,
            _ => true,
        };
        same_data && (caught_up_now || i.now_ms.saturating_sub(v.last_caught_up_ms) < i.max_lag_ms)
    };
    let join = |f: NodeId| -> bool {
        i.followers.get(&f).is_some_and(|v| {
            v.connected
                && v.end
                    .is_some_and(|e| e >= i.high_watermark && e >= i.epoch_start)
                && v.incarnation.is_some()
                && i.registered.get(&f) == v.incarnation.as_ref()
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
            incarnation: Some("same".into()),
        }
    }

    fn decide(isr: &[NodeId], followers: &[(NodeId, FollowerView)]) -> Option<Vec<NodeId>> {
        let registered = (0..3).map(|r| (r, "same".to_string())).collect();
        decide_with(isr, followers, &registered)
    }

    fn decide_with(
        isr: &[NodeId],
        followers: &[(NodeId, FollowerView)],
        registered: &BTreeMap<NodeId, String>,
    ) -> Option<Vec<NodeId>> {
        let followers: BTreeMap<_, _> = followers.iter().cloned().collect();
        let isr_incarnations = isr.iter().map(|r| (*r, "same".to_string())).collect();
        isr_change(&IsrInputs {
            isr_incarnations: &isr_incarnations,
            registered,
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
    fn a_follower_the_controller_does_not_count_as_live_is_not_added_back() {
        let caught_up = [(2, view(Some(100), 0, true))];
        let only_0_and_1 = (0..2).map(|r| (r, "same".to_string())).collect();
        assert_eq!(decide_with(&[0], &caught_up, &only_0_and_1), None);
        let other_dir = (0..3).map(|r| (r, format!("dir-{r}"))).collect();
        assert_eq!(
            decide_with(&[0], &caught_up, &other_dir),
            None,
            "registered with another data directory than it streams into"
        );
    }

    #[test]
    fn a_member_streaming_into_a_new_data_directory_is_removed_at_once() {
        let mut wiped = view(Some(0), 19_999, true);
        wiped.incarnation = Some("new".into());
        assert_eq!(decide(&[0, 1], &[(1, wiped)]), Some(vec![0]));
    }

    #[test]
    fn leader_always_stays() {
        assert_eq!(decide(&[0], &[]), None);
    }
}
