//! The heartbeat: the one request a member sends to join, stay, reconcile and leave.

use std::collections::BTreeSet;

use super::member::{Member, STATIC_LEFT};
use super::{Group, GroupError, GroupRecord, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use crate::{Partitions, TopicPartitionCounts};

/// What a member sends, as in KIP-848's `ConsumerGroupHeartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The member's id; empty to join and get one generated.
    pub member_id: String,
    /// `group.instance.id` for static membership; only looked at when joining.
    pub instance_id: Option<String>,
    /// The member's epoch: 0 to (re)join, -1 to leave, -2 for a static member's leave.
    pub member_epoch: i32,
    /// Topics the member consumes, in full on every heartbeat (the adapter resolves a pattern
    /// subscription and fills in an omitted, unchanged field before calling).
    pub subscribed_topics: BTreeSet<String>,
    /// Partitions the member holds right now, in full: how it acknowledges revocations.
    pub owned_partitions: Partitions,
    /// Time it may take to release revoked partitions (0: group default).
    pub rebalance_timeout_ms: u32,
    /// Time without heartbeat after which it is removed (0: group default).
    pub session_timeout_ms: u32,
}

/// What the member is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// Its id (generated on a join without one).
    pub member_id: String,
    /// Its epoch, to send with the next heartbeat and with commits.
    pub member_epoch: i32,
    /// The partitions it may own now; anything else it holds it must release.
    pub assignment: Partitions,
    /// When to heartbeat next.
    pub heartbeat_interval_ms: u32,
}

/// A heartbeat's answer plus the records to persist before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The answer for the member.
    pub response: HeartbeatResponse,
    /// The group's changes, in order.
    pub records: Vec<GroupRecord>,
}

impl Group {
    /// Handles one heartbeat at `now_ms`. `topics` gives the current partition count of (at
    /// least) the topics members subscribe to; a change of those counts bumps the epoch. A
    /// leave (-1) recomputes the target against the metadata the group already has.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        request: HeartbeatRequest,
        topics: &TopicPartitionCounts,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if request.member_epoch != JOIN_EPOCH && request.member_id.is_empty() {
            return Err(GroupError::InvalidRequest(format!(
                "member epoch {} needs a member id; join with epoch 0 first",
                request.member_epoch
            )));
        }
        match request.member_epoch {
            LEAVE_EPOCH => return self.leave(now_ms, &request.member_id, false),
            STATIC_LEAVE_EPOCH => return self.leave(now_ms, &request.member_id, true),
            _ => {}
        }
        let (session_timeout_ms, rebalance_timeout_ms) = self.timeouts(&request)?;
        let mut records = Vec::new();
        let before = self.members.get(&request.member_id).map(Member::current);
        let (member_id, is_new) = match request.member_epoch {
            JOIN_EPOCH => self.join(&request, &mut records)?,
            epoch if epoch > 0 => {
                self.check_epoch(&request)?;
                (request.member_id.clone(), false)
            }
            epoch => {
                return Err(GroupError::InvalidRequest(format!(
                    "member epoch {epoch} is not valid; use 0 to join, -1 or -2 to leave"
                )));
            }
        };

        let m = self.members.get_mut(&member_id).expect("joined or checked");
        let subscription_changed = m.subscribed_topics != request.subscribed_topics;
        if is_new
            || before.is_none()
            || subscription_changed
            || m.session_timeout_ms != session_timeout_ms
            || m.rebalance_timeout_ms != rebalance_timeout_ms
        {
            m.subscribed_topics = request.subscribed_topics;
            m.session_timeout_ms = session_timeout_ms;
            m.rebalance_timeout_ms = rebalance_timeout_ms;
            records.push(GroupRecord::MemberJoined {
                member_id: member_id.clone(),
                instance_id: m.instance_id.clone(),
                subscribed_topics: m.subscribed_topics.clone(),
                rebalance_timeout_ms,
                session_timeout_ms,
            });
        }
        let counts = self.subscribed_topic_counts(topics);
        if is_new || subscription_changed || counts != self.topics {
            self.bump(counts, &mut records);
        }

        let held_by_others: Partitions = self
            .members
            .values()
            .filter(|o| o.id != member_id)
            .flat_map(Member::held)
            .cloned()
            .collect();
        let target = self.target.partitions(&member_id).clone();
        let m = self.members.get_mut(&member_id).expect("still there");
        m.reconcile(
            &request.owned_partitions,
            &target,
            self.target_epoch,
            &held_by_others,
            now_ms,
        );
        m.session_deadline_ms = now_ms.saturating_add(u64::from(m.session_timeout_ms));
        let current = m.current();
        if before.as_ref() != Some(&current) || is_new {
            records.push(current_assignment_record(m));
        }
        let response = HeartbeatResponse {
            member_id,
            member_epoch: current.member_epoch,
            assignment: current.assigned,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
        };
        Ok(HeartbeatOutcome { response, records })
    }

    fn timeouts(&self, request: &HeartbeatRequest) -> Result<(u32, u32), GroupError> {
        let c = &self.config;
        let session = match request.session_timeout_ms {
            0 => c.default_session_timeout_ms,
            s if (c.min_session_timeout_ms..=c.max_session_timeout_ms).contains(&s) => s,
            s => {
                return Err(GroupError::InvalidRequest(format!(
                    "session timeout {s} ms is outside the group's bounds {}..={} ms",
                    c.min_session_timeout_ms, c.max_session_timeout_ms
                )));
            }
        };
        let rebalance = match request.rebalance_timeout_ms {
            0 => c.default_rebalance_timeout_ms,
            r => r,
        };
        Ok((session, rebalance))
    }

    /// Accepts the member's epoch, or the previous one when the member evidently missed the
    /// response that advanced it (it holds nothing beyond what it is assigned now).
    fn check_epoch(&self, request: &HeartbeatRequest) -> Result<(), GroupError> {
        let m =
            self.members
                .get(&request.member_id)
                .ok_or_else(|| GroupError::UnknownMemberId {
                    member_id: request.member_id.clone(),
                })?;
        let lost_response = request.member_epoch == m.previous_member_epoch
            && request.owned_partitions.is_subset(&m.assigned);
        if m.member_epoch == STATIC_LEFT
            || (request.member_epoch != m.member_epoch && !lost_response)
        {
            return Err(GroupError::FencedMemberEpoch {
                member_id: request.member_id.clone(),
                received: request.member_epoch,
                current: m.member_epoch,
            });
        }
        Ok(())
    }

    /// Handles epoch 0; returns the member id and whether the member is new to the group.
    fn join(
        &mut self,
        request: &HeartbeatRequest,
        records: &mut Vec<GroupRecord>,
    ) -> Result<(String, bool), GroupError> {
        if let Some(instance) = &request.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != request.member_id);
            if let Some(holder) = holder {
                let holder = holder.id.clone();
                return self
                    .take_over(&holder, request, records)
                    .map(|id| (id, false));
            }
        }
        if let Some(m) = self.members.get_mut(&request.member_id) {
            if m.instance_id != request.instance_id {
                return Err(GroupError::InvalidRequest(format!(
                    "member '{}' rejoined with another instance id",
                    m.id
                )));
            }
            if m.member_epoch == STATIC_LEFT {
                // The static member comes back under its own id: like a successor, it resumes.
                m.member_epoch = m.previous_member_epoch;
                return Ok((m.id.clone(), false));
            }
            // A fenced member rejoins having released what it held; keep only what it still
            // reports, which nobody else can have been given.
            let held: Partitions = m.held().cloned().collect();
            m.assigned = held
                .intersection(&request.owned_partitions)
                .cloned()
                .collect();
            m.pending_revocation.clear();
            m.revocation_deadline_ms = None;
            m.member_epoch = JOIN_EPOCH;
            m.previous_member_epoch = JOIN_EPOCH;
            return Ok((m.id.clone(), false));
        }
        let id = if request.member_id.is_empty() {
            self.fresh_member_id()
        } else {
            // A client-chosen id (KIP-1082): a retried join cannot create a ghost member.
            request.member_id.clone()
        };
        let mut m = Member::new(id.clone());
        m.instance_id = request.instance_id.clone();
        self.members.insert(id.clone(), m);
        Ok((id, true))
    }

    /// A static member's successor takes over its epoch, assignment and target, unless the
    /// old member is still active.
    fn take_over(
        &mut self,
        old_id: &str,
        request: &HeartbeatRequest,
        records: &mut Vec<GroupRecord>,
    ) -> Result<String, GroupError> {
        let old = &self.members[old_id];
        if old.member_epoch != STATIC_LEFT {
            return Err(GroupError::UnreleasedInstanceId {
                instance_id: old.instance_id.clone().unwrap_or_default(),
                member_id: old_id.to_string(),
            });
        }
        let new_id = if request.member_id.is_empty() {
            self.fresh_member_id()
        } else if self.members.contains_key(&request.member_id) {
            return Err(GroupError::InvalidRequest(format!(
                "member id '{}' is already used by another instance",
                request.member_id
            )));
        } else {
            request.member_id.clone()
        };
        let mut m = self.members.remove(old_id).expect("holder exists");
        records.push(GroupRecord::MemberLeft {
            member_id: old_id.to_string(),
            member_epoch: STATIC_LEFT,
        });
        m.id = new_id.clone();
        m.member_epoch = m.previous_member_epoch;
        if let Some(target) = self.target.members.remove(old_id) {
            self.target.members.insert(new_id.clone(), target);
        }
        records.push(GroupRecord::TargetAssignment {
            assignment_epoch: self.target_epoch,
            assignment: self.target.clone(),
        });
        self.members.insert(new_id.clone(), m);
        Ok(new_id)
    }

    /// Epoch -1 removes the member (rebalance); epoch -2 from a static member keeps it, with
    /// its partitions reserved, until its session expires or a successor takes over.
    fn leave(
        &mut self,
        now_ms: u64,
        member_id: &str,
        is_static: bool,
    ) -> Result<HeartbeatOutcome, GroupError> {
        let m = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| GroupError::UnknownMemberId {
                member_id: member_id.to_string(),
            })?;
        let mut records = Vec::new();
        let member_epoch = if is_static && m.instance_id.is_some() {
            if m.member_epoch != STATIC_LEFT {
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = STATIC_LEFT;
            }
            // The leaving process released everything it held.
            m.pending_revocation.clear();
            m.revocation_deadline_ms = None;
            m.session_deadline_ms = now_ms.saturating_add(u64::from(m.session_timeout_ms));
            records.push(current_assignment_record(m));
            STATIC_LEAVE_EPOCH
        } else {
            self.remove_member(member_id, &mut records);
            // Metadata is refreshed by members that stay, not by one on its way out.
            let counts = self.subscribed_topic_counts(&self.topics);
            self.bump(counts, &mut records);
            LEAVE_EPOCH
        };
        let response = HeartbeatResponse {
            member_id: member_id.to_string(),
            member_epoch,
            assignment: Partitions::new(),
            heartbeat_interval_ms: 0,
        };
        Ok(HeartbeatOutcome { response, records })
    }
}

fn current_assignment_record(m: &Member) -> GroupRecord {
    GroupRecord::CurrentAssignment {
        member_id: m.id.clone(),
        member_epoch: m.member_epoch,
        previous_member_epoch: m.previous_member_epoch,
        assigned: m.assigned.clone(),
        pending_revocation: m.pending_revocation.clone(),
    }
}
