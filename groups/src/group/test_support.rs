//! A model client and checks shared by the group's unit and property tests.

use std::collections::BTreeSet;

use super::*;
use crate::assignor::by_name;
use crate::{Partitions, TopicPartitionCounts};

pub(super) const SESSION_MS: u32 = 1_000;
pub(super) const REBALANCE_MS: u32 = 3_000;

/// A group with sequential member ids `m1`, `m2`, … and short timeouts.
pub(super) fn group(assignor: &str) -> Group {
    let mut next = 0;
    let ids: MemberIdSource = Box::new(move || {
        next += 1;
        format!("m{next}")
    });
    let config = GroupConfig {
        heartbeat_interval_ms: 100,
        default_session_timeout_ms: SESSION_MS,
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 10_000,
        default_rebalance_timeout_ms: REBALANCE_MS,
    };
    Group::new("g", config, by_name(assignor).expect("known assignor"), ids)
}

/// A fresh group replaying `records` at `now_ms`.
pub(super) fn replayed(assignor: &str, now_ms: u64, records: &[GroupRecord]) -> Group {
    group(assignor).replay(now_ms, records.iter().cloned())
}

pub(super) fn topics(counts: &[(&str, i32)]) -> TopicPartitionCounts {
    counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// A well-behaved consumer: it owns exactly what it was last told, reports it, releases
/// everything when fenced, and rejoins with epoch 0.
#[derive(Debug, Clone, Default)]
pub(super) struct Client {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub epoch: i32,
    pub owned: Partitions,
    pub topics: BTreeSet<String>,
}

impl Client {
    pub fn new(topics: &[&str]) -> Self {
        Self {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Self::default()
        }
    }

    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance_id = Some(instance.to_string());
        self
    }

    pub fn request(&self, epoch: i32) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: self.member_id.clone(),
            instance_id: self.instance_id.clone(),
            member_epoch: epoch,
            subscribed_topics: self.topics.clone(),
            owned_partitions: self.owned.clone(),
            rebalance_timeout_ms: REBALANCE_MS,
            session_timeout_ms: SESSION_MS,
        }
    }

    /// Heartbeats; `deliver` false simulates a lost response. Returns the records.
    pub fn heartbeat(
        &mut self,
        g: &mut Group,
        now_ms: u64,
        counts: &TopicPartitionCounts,
        deliver: bool,
    ) -> Result<Vec<GroupRecord>, GroupError> {
        match g.heartbeat(now_ms, self.request(self.epoch), counts) {
            Ok(outcome) => {
                if deliver {
                    self.member_id = outcome.response.member_id;
                    self.epoch = outcome.response.member_epoch;
                    self.owned = outcome.response.assignment;
                }
                Ok(outcome.records)
            }
            Err(e) => {
                if deliver {
                    self.on_error(&e);
                }
                Err(e)
            }
        }
    }

    fn on_error(&mut self, e: &GroupError) {
        match e {
            GroupError::FencedMemberEpoch { .. } => {
                self.owned.clear();
                self.epoch = JOIN_EPOCH;
            }
            GroupError::UnknownMemberId { .. } => {
                self.owned.clear();
                self.epoch = JOIN_EPOCH;
                self.member_id.clear();
            }
            GroupError::UnreleasedInstanceId { .. } | GroupError::InvalidRequest(_) => {}
        }
    }

    /// Leaves (statically if it has an instance id and `is_static`) and forgets its id.
    pub fn leave(&mut self, g: &mut Group, now_ms: u64, is_static: bool) -> Vec<GroupRecord> {
        let epoch = if is_static {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        let records = if self.member_id.is_empty() {
            Vec::new()
        } else {
            // A leave does not look at metadata.
            g.heartbeat(now_ms, self.request(epoch), &TopicPartitionCounts::new())
                .map(|o| o.records)
                .unwrap_or_default()
        };
        self.member_id.clear();
        self.owned.clear();
        self.epoch = JOIN_EPOCH;
        records
    }
}

/// The coordinator's invariant: what members may hold (assigned or pending revocation) never
/// overlaps, and a client holds nothing its member is not charged with.
pub(super) fn assert_no_double_ownership(g: &Group, clients: &[Client]) {
    let d = g.describe();
    let mut held = Partitions::new();
    for m in &d.members {
        for p in m.assigned.iter().chain(&m.pending_revocation) {
            assert!(held.insert(p.clone()), "{p} held by two members: {d:#?}");
        }
    }
    let mut owned = Partitions::new();
    for c in clients {
        let Some(m) = d.members.iter().find(|m| m.member_id == c.member_id) else {
            continue; // not (or no longer) a member: a zombie at most, fenced on its next call
        };
        if m.state == MemberState::LeftStatically {
            continue;
        }
        for p in &c.owned {
            assert!(
                m.assigned.contains(p) || m.pending_revocation.contains(p),
                "{} owns {p} without the group knowing: {d:#?}",
                c.member_id
            );
            assert!(
                owned.insert(p.clone()),
                "{p} owned by two clients: {clients:#?}"
            );
        }
    }
}

/// Heartbeats every client in order until a whole round changes nothing, checking the
/// invariant after each heartbeat. Returns all records.
pub(super) fn converge(
    g: &mut Group,
    clients: &mut [Client],
    now_ms: u64,
    counts: &TopicPartitionCounts,
) -> Vec<GroupRecord> {
    let mut all = Vec::new();
    for _ in 0..20 {
        let mut changed = false;
        for i in 0..clients.len() {
            let before = clients[i].owned.clone();
            let records = clients[i]
                .heartbeat(g, now_ms, counts, true)
                .unwrap_or_default();
            changed |= !records.is_empty() || before != clients[i].owned;
            all.extend(records);
            assert_no_double_ownership(g, clients);
        }
        if !changed {
            let d = g.describe();
            for c in clients.iter() {
                let m = d.members.iter().find(|m| m.member_id == c.member_id);
                assert_eq!(m.map(|m| m.state), Some(MemberState::Stable), "{d:#?}");
            }
            return all;
        }
    }
    panic!("group did not converge: {g:#?}");
}

/// Partition counts of each client.
pub(super) fn sizes(clients: &[Client]) -> Vec<usize> {
    clients.iter().map(|c| c.owned.len()).collect()
}
