//! The heartbeat task: joins the group, keeps the membership alive on the interval the
//! coordinator asks for, reports the partitions the member owns and publishes each assignment
//! the coordinator answers with. It never touches fetching; the [`super::GroupConsumer`]
//! reconciles on its own task (inside `next()`), as the owner of the positions.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::Notify;

use super::config::{GroupConsumerConfig, millis};
use super::coordinator::{
    BACKOFF, GroupCoordinator, by_topic, coordinator_moved, flatten, membership_lost,
};
use super::reconcile::Tp;
use crate::connection::request;
use crate::error::ClientError;

/// Interval used until the coordinator names one.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);

/// Membership state shared by the heartbeat task and the consumer.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    pub(crate) member_id: String,
    /// 0 until joined (and again after being fenced).
    pub(crate) epoch: i32,
    /// The latest assignment the coordinator sent, and a counter bumped with every change.
    pub(crate) target: BTreeSet<Tp>,
    pub(crate) target_version: u64,
    /// Partitions the consumer has taken over (after reconciling): what heartbeats report.
    pub(crate) owned: BTreeSet<Tp>,
    /// Bumped when the membership was lost: the consumer drops everything without committing.
    pub(crate) lost: u64,
    /// Errors for `next()` to return (a heartbeat refused for a reason retrying cannot fix).
    pub(crate) errors: Vec<ClientError>,
}

/// What the heartbeat task and the consumer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<Membership>,
    /// Wakes the consumer: a new assignment, a lost membership or an error.
    pub(crate) changed: Notify,
    /// Wakes the heartbeat task: owned partitions changed, so tell the coordinator now.
    pub(crate) wake: Notify,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Membership {
                member_id: fresh_member_id(),
                ..Membership::default()
            }),
            changed: Notify::new(),
            wake: Notify::new(),
        })
    }
}

/// The heartbeat request for the current state; `epoch` overrides the member's (to leave).
pub(crate) fn heartbeat_request(
    cfg: &GroupConsumerConfig,
    m: &Membership,
    epoch: i32,
) -> pb::GroupHeartbeatRequest {
    pb::GroupHeartbeatRequest {
        group_id: cfg.group_id.clone(),
        member_id: m.member_id.clone(),
        instance_id: cfg.instance_id.clone().unwrap_or_default(),
        member_epoch: epoch,
        subscribed_topics: cfg.topics.clone(),
        subscribed_regex: cfg.topic_regex.clone().unwrap_or_default(),
        owned: by_topic(&m.owned),
        rebalance_timeout_ms: millis(cfg.rebalance_timeout),
        session_timeout_ms: millis(cfg.session_timeout),
        assignor: cfg.assignor.clone(),
    }
}

/// Heartbeats until aborted (the consumer's `close()` or drop).
pub(crate) async fn run(
    cfg: Arc<GroupConsumerConfig>,
    coord: Arc<GroupCoordinator>,
    shared: Arc<Shared>,
) {
    let mut interval = DEFAULT_INTERVAL;
    let mut failures = 0u32;
    loop {
        let req = {
            let m = shared.state.lock().unwrap();
            heartbeat_request(&cfg, &m, m.epoch)
        };
        let result = coord
            .call_once("Heartbeat", |mut c, t| async move {
                c.heartbeat(request(req, t)).await
            })
            .await;
        let wait = match result {
            Ok(resp) => {
                failures = 0;
                if resp.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(resp.heartbeat_interval_ms as u64);
                }
                apply_response(&shared, resp);
                interval
            }
            Err(e) if membership_lost(&e) => {
                tracing::warn!(group = %coord.group_id(), error = %e, "membership lost; dropping partitions and rejoining");
                lose_membership(&shared, e.code() == Some(ErrorCode::UnknownMemberId));
                failures = 0;
                Duration::ZERO
            }
            Err(e) => {
                failures += 1;
                if coordinator_moved(&e) || e.is_retriable() {
                    tracing::debug!(group = %coord.group_id(), error = %e, "heartbeat failed; finding the coordinator again");
                } else {
                    // Not fixable by retrying (e.g. UNRELEASED_INSTANCE_ID); tell the application
                    // once per run of failures and keep trying at the normal pace.
                    tracing::warn!(group = %coord.group_id(), error = %e, "heartbeat refused");
                    if failures == 1 {
                        shared.state.lock().unwrap().errors.push(e);
                        shared.changed.notify_one();
                    }
                }
                BACKOFF.backoff(failures).min(interval)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.wake.notified() => {}
            }
        }
    }
}

/// Records a heartbeat answer; wakes the consumer when the assignment changed.
pub(crate) fn apply_response(shared: &Shared, resp: pb::GroupHeartbeatResponse) {
    let mut m = shared.state.lock().unwrap();
    if !resp.member_id.is_empty() {
        m.member_id = resp.member_id;
    }
    m.epoch = resp.member_epoch;
    let target = flatten(&resp.assignment);
    // The first answer counts even when empty: the consumer learns it has joined.
    if target != m.target || m.target_version == 0 {
        m.target = target;
        m.target_version += 1;
        drop(m);
        shared.changed.notify_one();
    }
}

/// A member id chosen by the client (KIP-1082): a join whose answer is lost is retried under the
/// same id, so the coordinator never counts the same consumer twice.
pub(crate) fn fresh_member_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Forgets the membership: epoch 0 (and a new member id when the coordinator no longer knows
/// this one), nothing owned or assigned; the consumer drops its partitions without committing.
pub(crate) fn lose_membership(shared: &Shared, forget_id: bool) {
    let mut m = shared.state.lock().unwrap();
    if forget_id {
        m.member_id = fresh_member_id();
    }
    m.epoch = 0;
    m.owned.clear();
    m.target.clear();
    m.target_version += 1;
    m.lost += 1;
    drop(m);
    shared.changed.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(epoch: i32, parts: &[i32]) -> pb::GroupHeartbeatResponse {
        pb::GroupHeartbeatResponse {
            member_id: "m1".into(),
            member_epoch: epoch,
            heartbeat_interval_ms: 100,
            assignment: vec![pb::TopicPartitions {
                topic: "t".into(),
                partitions: parts.to_vec(),
            }],
        }
    }

    #[test]
    fn answers_bump_the_target_version_only_when_the_assignment_changes() {
        let shared = Shared::new();
        apply_response(&shared, response(1, &[0, 1]));
        apply_response(&shared, response(2, &[0, 1]));
        let m = shared.state.lock().unwrap();
        assert_eq!(
            (m.member_id.as_str(), m.epoch, m.target_version),
            ("m1", 2, 1)
        );
        assert_eq!(m.target.len(), 2);
        drop(m);
        apply_response(&shared, response(3, &[1]));
        assert_eq!(shared.state.lock().unwrap().target_version, 2);
    }

    #[test]
    fn lost_membership_rejoins_at_epoch_zero_owning_nothing() {
        let shared = Shared::new();
        apply_response(&shared, response(4, &[0]));
        shared.state.lock().unwrap().owned = [("t".to_string(), 0)].into();
        lose_membership(&shared, false);
        {
            let m = shared.state.lock().unwrap();
            // Fenced: same id (the coordinator knows it), epoch 0, nothing owned.
            assert_eq!((m.member_id.as_str(), m.epoch, m.lost), ("m1", 0, 1));
            assert!(m.owned.is_empty() && m.target.is_empty());
        }
        lose_membership(&shared, true);
        let m = shared.state.lock().unwrap();
        let cfg = GroupConsumerConfig {
            group_id: "g".into(),
            topics: vec!["t".into()],
            instance_id: Some("i".into()),
            ..Default::default()
        };
        let req = heartbeat_request(&cfg, &m, m.epoch);
        // Unknown to the coordinator: rejoin at epoch 0 under a fresh client-chosen id.
        assert_eq!(req.member_epoch, 0);
        assert!(
            req.member_id.len() == 32 && req.member_id != "m1",
            "{}",
            req.member_id
        );
        assert_eq!(req.instance_id, "i");
        assert_eq!(req.session_timeout_ms, 45_000);
        assert!(req.owned.is_empty());
    }
}
