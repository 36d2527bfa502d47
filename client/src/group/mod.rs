//! Consumer groups, client side (KIP-848 style: the coordinator assigns partitions; members only
//! heartbeat, reconcile and commit).
//!
//! A [`GroupConsumer`] joins a group, reads the partitions the coordinator assigns it with the
//! same per-partition fetch tasks as [`crate::Consumer`], and commits its positions to the
//! group's coordinator (the storage node leading the group's partition of `__sluice_offsets`).
//!
//! * A background task heartbeats ([`heartbeat`]) and publishes each assignment.
//! * `next()` applies a new assignment before handing out more records, revoking before it
//!   assigns ([`reconcile`]): revoked partitions stop fetching, their positions are committed
//!   (with auto-commit), and only then are they reported as no longer owned; newly assigned
//!   ones start at the committed offset, or per `auto_offset_reset` without one.
//! * Losing the membership (`UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`) drops every partition
//!   without committing and rejoins with epoch 0.
//!
//! Reconciling happens inside `next()`, so an application that stops calling it also stops
//! releasing partitions; the coordinator then removes it after the rebalance timeout.

mod admin;
mod config;
mod coordinator;
mod heartbeat;
mod lag;
mod reconcile;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sluice_proto::pb;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use admin::{GroupDescription, OffsetResetPlan, PartitionLag};
pub use config::{GroupConsumerConfig, OffsetReset};
pub use lag::{lag, reset_target};

use crate::consumer::{Consumer, ConsumerRecord, SeekTo};
use crate::error::{ClientError, Result};
use coordinator::GroupCoordinator;
use heartbeat::Shared;
use reconcile::{Tp, reconcile};

/// A change of the partitions a [`GroupConsumer`] owns, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// These partitions are now owned and being read.
    Assigned(Vec<(String, i32)>),
    /// These partitions were released after their positions were committed (with auto-commit)
    /// and are no longer owned.
    Revoked(Vec<(String, i32)>),
    /// The membership was lost (fenced or removed): these partitions were dropped without a
    /// commit, and another member may already own them.
    Lost(Vec<(String, i32)>),
}

/// A member of a consumer group: reads the partitions the coordinator assigns it, commits its
/// positions, and follows rebalances.
///
/// ```no_run
/// # async fn demo() -> sluice_client::Result<()> {
/// use sluice_client::{ClientConfig, GroupConsumer, GroupConsumerConfig};
/// let mut consumer = GroupConsumer::new(GroupConsumerConfig {
///     client: ClientConfig::new(["127.0.0.1:9092"]),
///     group_id: "billing".into(),
///     topics: vec!["orders".into()],
///     ..Default::default()
/// })
/// .await?;
/// while let Some(record) = consumer.next().await {
///     let record = record?;
///     println!("{}-{}@{}", record.topic, record.partition, record.offset);
/// }
/// consumer.close().await
/// # }
/// ```
pub struct GroupConsumer {
    cfg: Arc<GroupConsumerConfig>,
    consumer: Consumer,
    coord: Arc<GroupCoordinator>,
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    /// Partitions owned after the last reconciliation (read or, with reset `none`, waiting).
    owned: BTreeSet<Tp>,
    /// A revocation begun but not yet reported: kept here so that a `next()` cancelled while
    /// it commits (e.g. by a timeout around `next()`) finishes it on the next call.
    revoking: Option<Revoking>,
    seen_version: u64,
    seen_lost: u64,
    pending: Vec<ClientError>,
    /// Positions last committed, so auto-commit skips partitions that did not move.
    committed: HashMap<Tp, i64>,
    next_auto_commit: Instant,
    events: broadcast::Sender<GroupEvent>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.cfg.group_id)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl GroupConsumer {
    /// Checks the config and starts joining the group in the background; partitions arrive
    /// through `next()` once the coordinator has assigned them.
    pub async fn new(cfg: GroupConsumerConfig) -> Result<Self> {
        cfg.validate()?;
        let consumer = Consumer::new(cfg.fetch_config()).await?;
        let cfg = Arc::new(cfg);
        let coord = Arc::new(GroupCoordinator::new(
            cfg.group_id.clone(),
            consumer.metadata().clone(),
            cfg.client.request_timeout,
        ));
        let shared = Shared::new();
        let heartbeat = tokio::spawn(heartbeat::run(cfg.clone(), coord.clone(), shared.clone()));
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            next_auto_commit: Instant::now() + cfg.auto_commit_interval,
            cfg,
            consumer,
            coord,
            shared,
            heartbeat,
            owned: BTreeSet::new(),
            revoking: None,
            seen_version: 0,
            seen_lost: 0,
            pending: Vec::new(),
            committed: HashMap::new(),
            events,
        })
    }

    /// The partitions this member owns, sorted.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.owned.iter().cloned().collect()
    }

    /// The member id the coordinator gave this member (empty until joined).
    pub fn member_id(&self) -> String {
        self.shared.state.lock().unwrap().member_id.clone()
    }

    /// The member's current epoch (0 until joined).
    pub fn member_epoch(&self) -> i32 {
        self.shared.state.lock().unwrap().epoch
    }

    /// Assignment changes from now on: [`GroupEvent::Revoked`] is sent after the partitions
    /// stopped and were committed, [`GroupEvent::Assigned`] before their first record. Events are
    /// produced while `next()` runs; a receiver more than 1024 events behind loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<GroupEvent> {
        self.events.subscribe()
    }

    /// The offset of the next record `next()` returns for an owned partition.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.consumer.position(topic, partition)
    }

    /// Moves an owned partition's position (e.g. to resume after `OFFSET_OUT_OF_RANGE`), or
    /// starts an owned partition left unread for want of a committed offset under
    /// [`OffsetReset::None`]; the next commit stores the new position.
    pub async fn seek(&mut self, topic: &str, partition: i32, to: SeekTo) -> Result<()> {
        let owned = self.owned.contains(&(topic.to_string(), partition));
        if owned && self.consumer.position(topic, partition).is_none() {
            let offset = self.consumer.resolve_start(topic, partition, to).await?;
            self.consumer
                .add_partition(topic.to_string(), partition, offset);
            return Ok(());
        }
        self.consumer.seek(topic, partition, to).await
    }

    /// The next record of any owned partition, after applying any assignment change. Waits
    /// while nothing is assigned. Errors: a partition without a committed offset under
    /// [`OffsetReset::None`], a fetch that stopped (e.g. `OFFSET_OUT_OF_RANGE`), a commit or
    /// offset lookup that failed, a heartbeat the coordinator refused for good. Never `None`
    /// before `close()`.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord>> {
        loop {
            if let Some(e) = self.take_error() {
                return Some(Err(e));
            }
            if let Err(e) = self.reconcile().await {
                return Some(Err(e));
            }
            if self.cfg.auto_commit && Instant::now() >= self.next_auto_commit {
                self.next_auto_commit = Instant::now() + self.cfg.auto_commit_interval;
                drop(self.commit_async());
            }
            let reading = !self.consumer.assignment().is_empty();
            let tick = self.next_auto_commit;
            tokio::select! {
                biased;
                _ = self.shared.changed.notified() => continue,
                item = self.consumer.next(), if reading => match item {
                    Some(item) => return Some(item),
                    None => continue,
                },
                _ = tokio::time::sleep_until(tick), if self.cfg.auto_commit => continue,
            }
        }
    }

    /// Commits the positions of every owned partition (the offset after the last record
    /// `next()` returned) and waits for the coordinator to store them.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_with_metadata("").await
    }

    /// Like [`GroupConsumer::commit`], storing `metadata` with every committed offset (Kafka's
    /// commit metadata: e.g. which process committed, or an application checkpoint); read it back
    /// with `FetchOffsets` or `sluice group describe`.
    pub async fn commit_with_metadata(&mut self, metadata: &str) -> Result<()> {
        if self.membership_lost() {
            return Err(lost_commit());
        }
        let offsets = self.positions();
        let (member_id, epoch) = self.member();
        let mut commits = to_commits(&offsets);
        for c in &mut commits {
            c.metadata = metadata.to_string();
        }
        self.coord.commit(&member_id, epoch, commits).await?;
        self.committed.extend(offsets);
        Ok(())
    }

    /// Starts committing the current positions of every owned partition in the background; the
    /// handle tells how it went (failures are also logged).
    pub fn commit_async(&mut self) -> JoinHandle<Result<()>> {
        if self.membership_lost() {
            return tokio::spawn(async { Err(lost_commit()) });
        }
        let offsets: Vec<(Tp, i64)> = self
            .positions()
            .into_iter()
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect();
        // Counted as committed at once so the next tick does not send the same again; a failed
        // commit is retried by the commit at revocation or close, which send everything.
        self.committed.extend(offsets.iter().cloned());
        let (member_id, epoch) = self.member();
        let coord = self.coord.clone();
        tokio::spawn(async move {
            let result = coord.commit(&member_id, epoch, to_commits(&offsets)).await;
            if let Err(e) = &result {
                tracing::warn!(group = %coord.group_id(), error = %e, "asynchronous commit failed");
            }
            result
        })
    }

    /// Leaves the group: stops heartbeating, commits the positions (with auto-commit), and
    /// tells the coordinator (epoch -1, or -2 for a static member, whose partitions wait for it
    /// for the session timeout), so the partitions move at once.
    pub async fn close(mut self) -> Result<()> {
        self.heartbeat.abort();
        if let Some(commit) = self.revoking.take().and_then(|r| r.commit) {
            // Let the commit of partitions being revoked land before leaving (failures are
            // logged as in `next()`: their next owner re-reads from the last commit).
            if let Ok(Err(e)) = commit.await {
                tracing::warn!(group = %self.cfg.group_id, error = %e, "commit of revoked partitions failed");
            }
        }
        let commit = if self.cfg.auto_commit && !self.owned.is_empty() {
            self.commit().await
        } else {
            Ok(())
        };
        if let Err(e) = &commit {
            tracing::warn!(group = %self.cfg.group_id, error = %e, "commit on close failed");
        }
        self.consumer.clear();
        let leave_epoch = if self.cfg.instance_id.is_some() {
            -2
        } else {
            -1
        };
        let req = {
            let mut m = self.shared.state.lock().unwrap();
            if m.member_id.is_empty() {
                return commit; // never joined
            }
            m.owned.clear();
            heartbeat::heartbeat_request(&self.cfg, &m, leave_epoch)
        };
        let left = self
            .coord
            .call("Heartbeat", |mut c, t| {
                let req = req.clone();
                async move { c.heartbeat(crate::connection::request(req, t)).await }
            })
            .await;
        if let Err(e) = &left {
            tracing::warn!(group = %self.cfg.group_id, error = %e, "leaving the group failed; the coordinator removes the member after the session timeout");
        }
        commit.and(left.map(|_| ()))
    }

    /// Whether the heartbeat task lost the membership (fenced or expired) since `next()` last
    /// applied the assignment: the partitions this member still lists may belong to another
    /// member now, so their positions must not be committed under the new membership.
    fn membership_lost(&self) -> bool {
        self.shared.state.lock().unwrap().lost != self.seen_lost
    }

    fn member(&self) -> (String, i32) {
        let m = self.shared.state.lock().unwrap();
        (m.member_id.clone(), m.epoch)
    }

    fn take_error(&mut self) -> Option<ClientError> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        let mut m = self.shared.state.lock().unwrap();
        if m.errors.is_empty() {
            None
        } else {
            Some(m.errors.remove(0))
        }
    }

    /// Positions of the owned partitions being read.
    fn positions(&self) -> Vec<(Tp, i64)> {
        self.owned
            .iter()
            .filter_map(|(t, p)| Some(((t.clone(), *p), self.consumer.position(t, *p)?)))
            .collect()
    }

    /// Applies a lost membership or a new assignment, revoking before assigning.
    ///
    /// Cancel-safe: every await either leaves the state untouched (looking up start offsets)
    /// or is recorded in `revoking` first (the commit of revoked partitions runs as its own
    /// task), so a cancelled call is resumed by the next one. Otherwise partitions taken out
    /// of `owned` before a cancelled commit would never be reported released: the heartbeat
    /// would keep reporting them, and the coordinator would keep them from their next owner.
    async fn reconcile(&mut self) -> Result<()> {
        let (target, version, lost) = {
            let m = self.shared.state.lock().unwrap();
            (m.target.clone(), m.target_version, m.lost)
        };
        if lost != self.seen_lost {
            self.seen_lost = lost;
            self.consumer.clear();
            self.committed.clear();
            let mut dropped: Vec<Tp> = std::mem::take(&mut self.owned).into_iter().collect();
            if let Some(r) = self.revoking.take() {
                // Released but never reported: dropped like the rest, uncommitted.
                if let Some(commit) = r.commit {
                    commit.abort();
                }
                dropped.extend(r.partitions);
                dropped.sort();
            }
            if !dropped.is_empty() {
                let _ = self.events.send(GroupEvent::Lost(dropped));
            }
        }
        // A revocation a cancelled call left half done comes first: the new plan, computed
        // from `owned`, no longer contains its partitions.
        self.finish_revocation(lost).await;
        if version == self.seen_version {
            return Ok(());
        }
        let plan = reconcile(&self.owned, &target);
        if plan.is_empty() {
            self.seen_version = version;
            return Ok(());
        }
        if !plan.revoke.is_empty() {
            self.start_revocation(plan.revoke.clone());
            self.finish_revocation(lost).await;
        }
        if !plan.assign.is_empty() {
            let starts = self.start_positions(&plan.assign).await?;
            for (tp, start) in plan.assign.iter().zip(starts) {
                match start {
                    Some(offset) => self.consumer.add_partition(tp.0.clone(), tp.1, offset),
                    None => self.pending.push(ClientError::api(
                        sluice_proto::pb::ErrorCode::OffsetOutOfRange,
                        format!(
                            "group '{}' has no committed offset for {}-{} and auto_offset_reset is none; the partition stays owned but unread",
                            self.cfg.group_id, tp.0, tp.1
                        ),
                    )),
                }
                self.owned.insert(tp.clone());
            }
            self.publish_owned(lost);
            tracing::info!(group = %self.cfg.group_id, assigned = ?plan.assign, "partitions assigned");
            let _ = self.events.send(GroupEvent::Assigned(plan.assign.clone()));
        }
        self.seen_version = version;
        Ok(())
    }

    /// Stops reading `revoke` and starts committing its positions (with auto-commit), all
    /// without awaiting; the heartbeat still reports the partitions until
    /// [`Self::finish_revocation`].
    fn start_revocation(&mut self, revoke: Vec<Tp>) {
        let mut offsets = Vec::new();
        for (t, p) in &revoke {
            if let Some(pos) = self.consumer.remove_partition(t, *p) {
                offsets.push(((t.clone(), *p), pos));
            }
            self.owned.remove(&(t.clone(), *p));
            self.committed.remove(&(t.clone(), *p));
        }
        let commit = (self.cfg.auto_commit && !offsets.is_empty()).then(|| {
            let (member_id, epoch) = self.member();
            let coord = self.coord.clone();
            tokio::spawn(async move { coord.commit(&member_id, epoch, to_commits(&offsets)).await })
        });
        self.revoking = Some(Revoking {
            partitions: revoke,
            commit,
        });
    }

    /// Waits for the commit of the revocation in progress, if any, then reports its partitions
    /// released. Cancel-safe: a cancelled wait leaves the revocation for the next call.
    async fn finish_revocation(&mut self, lost: u64) {
        let Some(r) = self.revoking.as_mut() else {
            return;
        };
        if let Some(commit) = r.commit.as_mut() {
            let result = commit.await;
            // Finished: must not be polled again.
            r.commit = None;
            match result {
                Ok(Ok(())) => {}
                // The partitions are released regardless: holding them would stall the
                // rebalance, and their next owner re-reads from the last commit.
                Ok(Err(e)) => {
                    tracing::warn!(group = %self.cfg.group_id, error = %e, "commit of revoked partitions failed")
                }
                Err(e) => {
                    tracing::warn!(group = %self.cfg.group_id, error = %e, "commit of revoked partitions did not finish")
                }
            }
        }
        let r = self.revoking.take().expect("checked above");
        self.publish_owned(lost);
        tracing::info!(group = %self.cfg.group_id, revoked = ?r.partitions, "partitions revoked");
        let _ = self.events.send(GroupEvent::Revoked(r.partitions));
    }

    /// Tells the heartbeat task what is owned now, unless the membership was lost meanwhile
    /// (then nothing is owned until the next reconciliation).
    fn publish_owned(&self, lost: u64) {
        let mut m = self.shared.state.lock().unwrap();
        if m.lost == lost {
            m.owned = self.owned.clone();
            drop(m);
            self.shared.wake.notify_one();
        }
    }

    /// Where each newly assigned partition starts: its committed offset, else per
    /// `auto_offset_reset` (`None` for reset `none`).
    async fn start_positions(&self, tps: &[Tp]) -> Result<Vec<Option<i64>>> {
        let committed: HashMap<Tp, i64> = self
            .coord
            .fetch_offsets(coordinator::by_topic(tps))
            .await?
            .into_iter()
            .filter(|c| c.offset >= 0)
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect();
        let mut out = Vec::with_capacity(tps.len());
        for tp in tps {
            let start = match (committed.get(tp), self.cfg.auto_offset_reset) {
                (Some(&o), _) => Some(o),
                (None, OffsetReset::None) => None,
                (None, OffsetReset::Earliest) => Some(
                    self.consumer
                        .resolve_start(&tp.0, tp.1, SeekTo::Earliest)
                        .await?,
                ),
                (None, OffsetReset::Latest) => Some(
                    self.consumer
                        .resolve_start(&tp.0, tp.1, SeekTo::Latest)
                        .await?,
                ),
            };
            out.push(start);
        }
        Ok(out)
    }
}

/// Partitions being revoked: no longer read nor in `owned`, but still reported to the
/// coordinator until their positions are committed.
#[derive(Debug)]
struct Revoking {
    partitions: Vec<Tp>,
    /// The commit of their positions (with auto-commit and something to commit).
    commit: Option<JoinHandle<Result<()>>>,
}

/// The refusal of a commit after the membership was lost.
fn lost_commit() -> ClientError {
    ClientError::Api(sluice_proto::error::ApiError::new(
        sluice_proto::pb::ErrorCode::FencedMemberEpoch,
        "this member lost its partitions (fenced or expired) before the commit; call next() to rejoin",
    ))
}

fn to_commits(offsets: &[(Tp, i64)]) -> Vec<pb::OffsetCommit> {
    offsets
        .iter()
        .map(|((topic, partition), offset)| pb::OffsetCommit {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
            metadata: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ClientConfig;

    fn tps(ps: &[i32]) -> BTreeSet<Tp> {
        ps.iter().map(|p| ("t".to_string(), *p)).collect()
    }

    /// A `next()` cancelled while the commit of revoked partitions is in flight (as a timeout
    /// around `next()` does) must not lose the revocation: the next call reports the
    /// partitions released to the heartbeat and sends `Revoked`. Were it lost, the partitions
    /// would already have left `owned`, the next plan would be empty and the heartbeat would
    /// keep reporting them, so the coordinator would never give them to anyone else (the
    /// rebalance would stall).
    #[tokio::test]
    async fn revocation_interrupted_by_a_cancelled_next_is_finished_by_the_next_call() {
        let mut client = ClientConfig::new(["127.0.0.1:1"]);
        client.request_timeout = Duration::from_millis(300);
        let mut c = GroupConsumer::new(GroupConsumerConfig {
            client,
            group_id: "g".into(),
            topics: vec!["t".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        c.heartbeat.abort();
        let mut events = c.events();
        for p in [0, 1, 2] {
            c.consumer.add_partition("t".into(), p, 5);
        }
        c.owned = tps(&[0, 1, 2]);
        c.seen_version = 1;
        {
            let mut m = c.shared.state.lock().unwrap();
            m.member_id = "m".into();
            m.epoch = 3;
            m.owned = tps(&[0, 1, 2]);
            m.target = tps(&[0]);
            m.target_version = 2;
        }
        // The commit of 1 and 2 cannot reach the (absent) coordinator within 20 ms.
        let cancelled = tokio::time::timeout(Duration::from_millis(20), c.reconcile()).await;
        assert!(cancelled.is_err(), "the commit should still be in flight");
        assert_eq!(c.owned, tps(&[0]));
        c.reconcile().await.unwrap();
        assert_eq!(
            c.shared.state.lock().unwrap().owned,
            tps(&[0]),
            "released partitions reported"
        );
        assert_eq!(
            events.try_recv().unwrap(),
            GroupEvent::Revoked(vec![("t".into(), 1), ("t".into(), 2)])
        );
        assert!(c.revoking.is_none());
    }
}
