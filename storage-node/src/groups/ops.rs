//! The operations of a shard: heartbeat, commit, fetch, describe, list, delete, and the
//! session timer. Each change follows one shape: lock the shard, let the core decide, persist
//! its records as one batch (waiting for the in-sync replicas), then answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_groups::{
    GroupDescription, GroupState, HeartbeatRequest, HeartbeatResponse, Partitions, TopicPartition,
};
use sluice_proto::error::ApiError;
use sluice_proto::pb::ErrorCode;

use super::codec::{self, Committed, kind};
use super::errors::group_error;
use super::shard::{DEFAULT_ASSIGNOR, GroupEntry, Shard, new_group};
use crate::replica::now_ms;

/// Every topic of the cluster with its partition count, from the cluster view.
pub type TopicCatalog = BTreeMap<String, i32>;

/// Longest the session timer sleeps without re-checking deadlines.
const MAX_TIMER_SLEEP_MS: u64 = 1_000;
/// Pause of the timer after a failed expiry (the shard reloads meanwhile).
const TIMER_RETRY: Duration = Duration::from_millis(200);

/// What a member subscribes to: topic names and/or a regular expression over topic names
/// (matched against the whole name; internal `__` topics never match). Topics that do not
/// exist yet are kept in the subscription and get partitions once they are created.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// Topics named explicitly.
    pub topics: BTreeSet<String>,
    /// Pattern over topic names, compiled as `^(?:pattern)$`.
    pub pattern: Option<regex::Regex>,
}

impl Subscription {
    /// Topic names plus the catalog's topics the pattern matches.
    pub fn resolve(&self, catalog: &TopicCatalog) -> BTreeSet<String> {
        let mut topics = self.topics.clone();
        if let Some(re) = &self.pattern {
            topics.extend(
                catalog
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned(),
            );
        }
        topics
    }

    fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.pattern.is_none()
    }
}

/// A heartbeat as the shard takes it.
#[derive(Debug, Clone)]
pub struct HeartbeatInput {
    /// Group id.
    pub group_id: String,
    /// Assignor for a new group (ignored for an existing one).
    pub assignor: String,
    /// The core's request; `subscribed_topics` is filled in from `subscription`.
    pub request: HeartbeatRequest,
    /// The member's subscription. Empty on a heartbeat with epoch > 0 means unchanged.
    pub subscription: Subscription,
}

/// One group as `ListGroups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Overall state.
    pub state: GroupState,
    /// Number of members.
    pub members: usize,
}

fn group_not_found(group_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::GroupIdNotFound,
        format!("group '{group_id}' does not exist (no members and no committed offsets)"),
    )
}

impl Shard {
    /// Handles one member heartbeat (join, stay, reconcile, leave).
    pub async fn heartbeat(
        self: &Arc<Self>,
        input: HeartbeatInput,
        catalog: &TopicCatalog,
    ) -> Result<HeartbeatResponse, ApiError> {
        let HeartbeatInput {
            group_id,
            assignor,
            mut request,
            subscription,
        } = input;
        let mut guard = self.lock().await?;
        let state = guard.as_mut().expect("lock() checked the shard is loaded");
        let created = !state.groups.contains_key(&group_id);
        let entry = state
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| GroupEntry::new(&group_id, &assignor, self.config()));
        if !entry.persisted && entry.group.is_empty() && entry.group.group_epoch() == 0 {
            // Known only from admin commits: the first member chooses the assignor.
            entry.group = new_group(&group_id, &assignor, self.config());
            entry.assignor = assignor;
        }
        request.subscribed_topics = if request.member_epoch > 0 && subscription.is_empty() {
            entry
                .group
                .describe()
                .members
                .into_iter()
                .find(|m| m.member_id == request.member_id)
                .map(|m| m.subscribed_topics)
                .unwrap_or_default()
        } else {
            subscription.resolve(catalog)
        };
        // Every topic's count: the core takes the counts of every member's subscription from it,
        // so a partial map (this member's topics only) would make members with different
        // subscriptions undo each other's target at every heartbeat.
        let outcome = match entry.group.heartbeat(now_ms(), request, catalog) {
            Ok(o) => o,
            Err(e) => {
                if created {
                    state.groups.remove(&group_id);
                }
                return Err(group_error(e));
            }
        };
        let mut kvs = Vec::new();
        if !entry.persisted && !outcome.records.is_empty() {
            kvs.push(codec::encode_group(&group_id, Some(&entry.assignor)));
            entry.persisted = true;
        }
        for r in &outcome.records {
            kvs.extend(codec::encode_record(&group_id, r));
        }
        self.persist(&mut guard, kvs).await?;
        self.changed.notify_one();
        Ok(outcome.response)
    }

    /// Commits offsets for a member at its current epoch, or as an admin (empty member id,
    /// negative epoch) while the group has no members.
    pub async fn commit(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(TopicPartition, Committed)>,
    ) -> Result<(), ApiError> {
        let mut guard = self.lock().await?;
        let state = guard.as_ref().expect("lock() checked the shard is loaded");
        match state.groups.get(group_id) {
            Some(e) => e
                .group
                .validate_commit(member_id, member_epoch)
                .and_then(|()| {
                    e.group
                        .validate_commit_partitions(member_id, offsets.iter().map(|(tp, _)| tp))
                }),
            None => new_group(group_id, DEFAULT_ASSIGNOR, self.config())
                .validate_commit(member_id, member_epoch),
        }
        .map_err(group_error)?;
        let now = now_ms() as i64;
        let kvs = offsets
            .iter()
            .map(|(p, c)| codec::encode_offset(group_id, p, Some(c), now))
            .collect();
        self.persist(&mut guard, kvs).await?;
        if offsets.is_empty() {
            return Ok(());
        }
        let state = guard.as_mut().expect("persisted, so still loaded");
        let entry = state
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| GroupEntry::new(group_id, DEFAULT_ASSIGNOR, self.config()));
        entry.offsets.extend(offsets);
        Ok(())
    }

    /// Committed offsets of a group: of every committed partition (`None`), or of the given
    /// ones, `None` standing for "nothing committed".
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Partitions>,
    ) -> Result<Vec<(TopicPartition, Option<Committed>)>, ApiError> {
        let guard = self.lock().await?;
        let state = guard.as_ref().expect("lock() checked the shard is loaded");
        let offsets = state.groups.get(group_id).map(|e| &e.offsets);
        Ok(match partitions {
            None => offsets
                .into_iter()
                .flatten()
                .map(|(p, c)| (p.clone(), Some(c.clone())))
                .collect(),
            Some(wanted) => wanted
                .into_iter()
                .map(|p| {
                    let c = offsets.and_then(|o| o.get(&p)).cloned();
                    (p, c)
                })
                .collect(),
        })
    }

    /// A group's members, assignments and committed offsets.
    pub async fn describe(
        &self,
        group_id: &str,
    ) -> Result<(GroupDescription, BTreeMap<TopicPartition, Committed>), ApiError> {
        let guard = self.lock().await?;
        let state = guard.as_ref().expect("lock() checked the shard is loaded");
        let e = state
            .groups
            .get(group_id)
            .ok_or_else(|| group_not_found(group_id))?;
        Ok((e.group.describe(), e.offsets.clone()))
    }

    /// Every group of the shard.
    pub async fn list(&self) -> Result<Vec<GroupListing>, ApiError> {
        let guard = self.lock().await?;
        let state = guard.as_ref().expect("lock() checked the shard is loaded");
        Ok(state
            .groups
            .iter()
            .map(|(id, e)| {
                let d = e.group.describe();
                GroupListing {
                    group_id: id.clone(),
                    state: d.state,
                    members: d.members.len(),
                }
            })
            .collect())
    }

    /// Deletes a group without members: tombstones for its offsets and state, then for the
    /// group itself (replay drops everything of a group before its tombstone).
    pub async fn delete(self: &Arc<Self>, group_id: &str) -> Result<(), ApiError> {
        let mut guard = self.lock().await?;
        let state = guard.as_ref().expect("lock() checked the shard is loaded");
        let e = state
            .groups
            .get(group_id)
            .ok_or_else(|| group_not_found(group_id))?;
        if !e.group.is_empty() {
            return Err(ApiError::new(
                ErrorCode::GroupNotEmpty,
                format!(
                    "group '{group_id}' still has {} members; stop its consumers (or wait for their sessions to expire) and retry",
                    e.group.describe().members.len()
                ),
            ));
        }
        let now = now_ms() as i64;
        let mut kvs: Vec<_> = e
            .offsets
            .keys()
            .map(|p| codec::encode_offset(group_id, p, None, now))
            .collect();
        kvs.push(codec::tombstone(group_id, kind::EPOCH, ""));
        kvs.push(codec::tombstone(group_id, kind::TARGET, ""));
        kvs.push(codec::encode_group(group_id, None));
        self.persist(&mut guard, kvs).await?;
        if let Some(state) = guard.as_mut() {
            state.groups.remove(group_id);
        }
        Ok(())
    }

    /// Earliest session or rebalance deadline of any group (None while loading or idle).
    pub async fn next_deadline_ms(&self) -> Option<u64> {
        let guard = self.state_lock().await;
        guard
            .as_ref()?
            .groups
            .values()
            .filter_map(|e| e.group.next_deadline_ms())
            .min()
    }

    /// Removes the members whose deadlines passed, in every group, as one batch.
    pub async fn expire_due(self: &Arc<Self>, now_ms: u64) -> Result<(), ApiError> {
        let mut guard = self.lock().await?;
        let state = guard.as_mut().expect("lock() checked the shard is loaded");
        let mut kvs = Vec::new();
        for (id, e) in &mut state.groups {
            if e.group.next_deadline_ms().is_some_and(|d| d <= now_ms) {
                let records = e.group.expire(now_ms);
                if !records.is_empty() {
                    tracing::info!(group_id = %id, group_epoch = e.group.group_epoch(), "members expired");
                }
                for r in &records {
                    kvs.extend(codec::encode_record(id, r));
                }
            }
        }
        self.persist(&mut guard, kvs).await
    }
}

/// Expires members at their deadlines until the task is aborted (the shard is dropped).
pub async fn run_timer(shard: Arc<Shard>) {
    loop {
        let now = now_ms();
        let wait = shard
            .next_deadline_ms()
            .await
            .map_or(MAX_TIMER_SLEEP_MS, |d| d.saturating_sub(now))
            .min(MAX_TIMER_SLEEP_MS);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shard.changed.notified() => continue,
        }
        if let Err(error) = shard.expire_due(now_ms()).await {
            if error.code != ErrorCode::CoordinatorLoadInProgress {
                tracing::warn!(%error, partition = shard.replica.partition(), "expiring group members failed");
            }
            tokio::time::sleep(TIMER_RETRY).await;
        }
    }
}
