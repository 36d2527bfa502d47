//! One partition replica hosted by this node: identity, role (leader or follower, at which
//! epoch), log bounds, high watermark, and the leader's view of its followers. The
//! group-commit writer is the only writer of the log end; the decisions (high watermark, ISR,
//! divergence, producer sequences) are pure functions in the submodules.

pub mod commit;
pub mod epochs;
pub mod hw;
pub mod isr;
pub mod producers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_proto::model::{LeaderEpoch, NodeId, Offset, PartitionId, TopicId};
use tokio::sync::watch;

use crate::cleaner::Compaction;
use crate::log::{OpenedLog, PartitionKey, SegmentPolicy, Uid};
use crate::retention::Retention;
use epochs::EpochHistory;
use isr::{FollowerView, IsrInputs};
use producers::ProducerState;
use sluice_proto::topic_config::TopicConfig;

/// Leadership of a replica, from the partition state in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The current leader's node id, or -1.
    pub leader: NodeId,
    /// The current leader epoch.
    pub epoch: LeaderEpoch,
}

/// Per-topic settings a replica enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `max.message.bytes`.
    pub max_batch_bytes: usize,
    /// `min.insync.replicas`.
    pub min_insync: usize,
    /// `replica.lag.time.max.ms`.
    pub max_lag_ms: u64,
    /// `segment.bytes` and `segment.ms`.
    pub segment: SegmentPolicy,
    /// `retention.ms`, `retention.bytes` and whether `cleanup.policy` deletes.
    pub retention: Retention,
    /// Key compaction settings.
    pub compaction: Compaction,
}

impl ReplicaConfig {
    /// What a replica applies of its topic's config.
    pub fn of(cfg: &TopicConfig) -> Self {
        Self {
            max_batch_bytes: cfg.max_message_bytes,
            min_insync: cfg.min_insync_replicas,
            max_lag_ms: cfg.replica_lag_time_max_ms,
            segment: SegmentPolicy {
                bytes: cfg.segment_bytes,
                max_age: std::time::Duration::from_millis(cfg.segment_ms),
            },
            retention: Retention {
                ms: cfg.retention_ms,
                bytes: cfg.retention_bytes,
                delete: cfg.cleanup_policy.delete,
            },
            compaction: Compaction {
                enabled: cfg.cleanup_policy.compact,
                delete_retention_ms: cfg.delete_retention_ms,
                min_lag_ms: cfg.min_compaction_lag_ms,
                dirty_ratio_permille: (cfg.min_cleanable_dirty_ratio * 1000.0).round() as u16,
            },
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self::of(&TopicConfig::default())
    }
}

/// Assignment of a replica, from the partition state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Leadership.
    pub leadership: Leadership,
    /// All replicas in preference order.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Version of the partition state (bumped at every leader or ISR change).
    pub partition_epoch: i32,
    /// The incarnation each ISR member joined with.
    pub isr_incarnations: BTreeMap<NodeId, String>,
    /// Replicas a reassignment under way is adding (their catch-up is throttled).
    pub adding: Vec<NodeId>,
}

/// State that changes with the role, under one lock.
struct RoleState {
    replicas: Vec<NodeId>,
    adding: Vec<NodeId>,
    isr: Vec<NodeId>,
    isr_incarnations: BTreeMap<NodeId, String>,
    partition_epoch: i32,
    followers: BTreeMap<NodeId, FollowerView>,
    /// Log end when this leadership began (where the epoch starts if nothing is written yet).
    leadership_start_end: Offset,
}

/// A partition replica on this node.
pub struct Replica {
    /// This node.
    pub node_id: NodeId,
    /// Topic name (for errors and logs).
    pub topic: String,
    /// Identity of the partition.
    pub key: PartitionKey,
    /// Node-local log uid.
    pub uid: Uid,
    leadership: watch::Sender<Leadership>,
    role: Mutex<RoleState>,
    log_start: watch::Sender<Offset>,
    log_end: watch::Sender<Offset>,
    high_watermark: watch::Sender<Offset>,
    /// Leader-epoch history (the writer updates it with the log).
    pub epochs: Mutex<EpochHistory>,
    /// Idempotent-producer state (the writer updates it with the log).
    pub producers: Mutex<ProducerState>,
    max_batch_bytes: AtomicUsize,
    min_insync: AtomicUsize,
    max_lag_ms: AtomicU64,
    retention: Mutex<(Retention, Compaction)>,
    deleted: AtomicBool,
    /// Something the ISR decision depends on changed since the ISR manager last looked, or the
    /// decision can change with time alone (a member lagging): see [`Replica::isr_change`].
    isr_check: AtomicBool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("replica lock poisoned")
}

impl Replica {
    /// A replica over the log `open` recovered.
    pub fn new(
        node_id: NodeId,
        topic: String,
        key: PartitionKey,
        opened: OpenedLog,
        assignment: Assignment,
        config: ReplicaConfig,
    ) -> Arc<Self> {
        let OpenedLog {
            uid,
            log_start,
            log_end,
            epochs,
            high_watermark,
        } = opened;
        let r = Arc::new(Self {
            node_id,
            topic,
            key,
            uid,
            leadership: watch::Sender::new(Leadership {
                leader: -1,
                epoch: -1,
            }),
            role: Mutex::new(RoleState {
                replicas: Vec::new(),
                adding: Vec::new(),
                isr: Vec::new(),
                isr_incarnations: BTreeMap::new(),
                partition_epoch: -1,
                followers: BTreeMap::new(),
                leadership_start_end: log_end,
            }),
            log_start: watch::Sender::new(log_start),
            log_end: watch::Sender::new(log_end),
            // The last checkpoint: never more than what the ISR had committed. A lone leader
            // moves it to its log end at once; otherwise followers' reports move it on.
            high_watermark: watch::Sender::new(high_watermark.min(log_end)),
            epochs: Mutex::new(EpochHistory::new(epochs)),
            producers: Mutex::new(ProducerState::default()),
            max_batch_bytes: AtomicUsize::new(config.max_batch_bytes),
            min_insync: AtomicUsize::new(config.min_insync),
            max_lag_ms: AtomicU64::new(config.max_lag_ms),
            retention: Mutex::new((config.retention, config.compaction)),
            deleted: AtomicBool::new(false),
            isr_check: AtomicBool::new(true),
        });
        r.assign(assignment);
        r
    }

    /// The topic id.
    pub fn topic_id(&self) -> TopicId {
        self.key.topic_id
    }

    /// The partition index.
    pub fn partition(&self) -> PartitionId {
        self.key.partition
    }

    /// Leadership as last seen.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// Notified at every leadership change (follower tasks and acks=all waits watch it).
    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// Whether this node leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.leadership().leader == self.node_id
    }

    /// Applies the partition state seen in the metadata. Becoming leader (or a new epoch as
    /// leader) resets the view of the followers: nothing is known of them yet. A leadership of
    /// an older epoch than the one this replica knows (a lagging view, after
    /// [`Replica::deposed`]) is ignored: epochs never go back.
    pub fn assign(&self, mut a: Assignment) {
        let was = self.leadership();
        if a.leadership.epoch < was.epoch {
            a.leadership = was;
        }
        {
            let mut role = lock(&self.role);
            let new_term = a.leadership != was && a.leadership.leader == self.node_id;
            if new_term {
                let now = now_ms();
                role.followers = a
                    .replicas
                    .iter()
                    .filter(|r| **r != self.node_id)
                    .map(|r| {
                        (
                            *r,
                            FollowerView {
                                end: None,
                                last_caught_up_ms: now,
                                connected: false,
                                incarnation: None,
                            },
                        )
                    })
                    .collect();
                role.leadership_start_end = self.log_end();
            }
            if !new_term && a.leadership.leader == self.node_id {
                // A reassignment changed the replicas under this leader: new ones start
                // unknown (and out of the ISR); those that left are forgotten.
                let now = now_ms();
                for r in a.replicas.iter().filter(|r| **r != self.node_id) {
                    role.followers.entry(*r).or_insert(FollowerView {
                        end: None,
                        last_caught_up_ms: now,
                        connected: false,
                        incarnation: None,
                    });
                }
                role.followers.retain(|r, _| a.replicas.contains(r));
            }
            role.replicas = a.replicas;
            role.adding = a.adding;
            // A view older than this leader's own ISR write must not undo it.
            if new_term || a.partition_epoch >= role.partition_epoch {
                role.isr = a.isr;
                role.isr_incarnations = a.isr_incarnations;
                role.partition_epoch = a.partition_epoch;
            }
        }
        if a.leadership != was {
            self.leadership.send_replace(a.leadership);
        }
        self.mark_isr_check();
        self.recompute_high_watermark();
    }

    /// A follower follows `leader` at a newer epoch than this replica knows: the partition has
    /// another leader. Stops leading at once, without waiting for this node's view (which may
    /// be cut from the metadata store): pending `acks=all` waits end with NOT_LEADER naming the
    /// new leader, so producers go there at once.
    pub fn deposed(&self, epoch: LeaderEpoch, leader: NodeId) {
        let was = self.leadership();
        if epoch <= was.epoch {
            return;
        }
        let leader = if leader == self.node_id { -1 } else { leader };
        tracing::warn!(topic = %self.topic, partition = self.partition(), old_epoch = was.epoch, epoch, leader, "a follower follows a newer leader epoch: no longer leading");
        self.leadership.send_replace(Leadership { leader, epoch });
        self.mark_isr_check();
    }

    /// The in-sync replicas as last seen or written.
    pub fn isr(&self) -> Vec<NodeId> {
        lock(&self.role).isr.clone()
    }

    /// The partition-state version this replica's ISR comes from.
    pub fn partition_epoch(&self) -> i32 {
        lock(&self.role).partition_epoch
    }

    /// Replaces the ISR, e.g. after this leader's compare-and-swap wrote `partition_epoch`.
    /// Expansions are applied before the write (so the high watermark already waits for the
    /// joining replica) and shrinks after it.
    pub fn set_isr(&self, isr: Vec<NodeId>, partition_epoch: i32) {
        {
            let mut role = lock(&self.role);
            role.isr = isr;
            role.partition_epoch = partition_epoch;
        }
        self.mark_isr_check();
        self.recompute_high_watermark();
    }

    /// First offset in the log.
    pub fn log_start(&self) -> Offset {
        *self.log_start.borrow()
    }

    /// Notified whenever the log start moves (replication senders tell followers).
    pub fn watch_log_start(&self) -> watch::Receiver<Offset> {
        self.log_start.subscribe()
    }

    /// Called by the writer once the log start moved up (retention, DeleteRecords, or the
    /// leader's log start).
    pub fn set_log_start(&self, start: Offset) {
        self.log_start.send_if_modified(|s| {
            let moved = start > *s;
            *s = (*s).max(start);
            moved
        });
    }

    /// One past the last appended offset.
    pub fn log_end(&self) -> Offset {
        *self.log_end.borrow()
    }

    /// Notified at every append (replication senders wait on it).
    pub fn watch_log_end(&self) -> watch::Receiver<Offset> {
        self.log_end.subscribe()
    }

    /// Offsets below it are committed and visible to consumers.
    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// Notified whenever the high watermark moves (long polls and acks=all wait on it).
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    /// Called by the writer after a durable append or truncation.
    pub fn set_log_end(&self, end: Offset) {
        self.log_end.send_replace(end);
        self.mark_isr_check();
        if end < self.high_watermark() {
            // Only a truncation below the commit point (unclean election) gets here.
            self.high_watermark.send_replace(end);
        }
        self.recompute_high_watermark();
    }

    /// As a follower: the leader's high watermark, capped at what this replica has.
    pub fn follow_high_watermark(&self, leader_hw: Offset) {
        let hw = leader_hw.min(self.log_end());
        if hw > self.high_watermark() {
            self.high_watermark.send_replace(hw);
        }
    }

    /// As leader: a follower reported its log end (or its stream opened or closed).
    pub fn update_follower(&self, id: NodeId, end: Option<Offset>, connected: bool) {
        {
            let mut role = lock(&self.role);
            let leader_end = self.log_end();
            if let Some(v) = role.followers.get_mut(&id) {
                // Caught up until now: on an idle partition the last acknowledgement may be long
                // past, and a follower that disconnects gets the same grace as a busy one.
                if v.connected && v.end.is_some_and(|e| e >= leader_end) {
                    v.last_caught_up_ms = now_ms();
                }
                if end.is_some() {
                    v.end = end;
                }
                v.connected = connected;
                if connected && v.end.is_some_and(|e| e >= leader_end) {
                    v.last_caught_up_ms = now_ms();
                }
            }
        }
        self.mark_isr_check();
        self.recompute_high_watermark();
    }

    /// As leader: a follower's stream opened and announced the data directory it replicates
    /// into (an empty one says nothing: such a follower can stay in the ISR but not join it).
    pub fn set_follower_incarnation(&self, id: NodeId, incarnation: String) {
        if incarnation.is_empty() {
            return;
        }
        if let Some(v) = lock(&self.role).followers.get_mut(&id) {
            v.incarnation = Some(incarnation);
        }
        self.mark_isr_check();
    }

    /// The incarnation each ISR member joined with, as last seen.
    pub fn isr_incarnations(&self) -> BTreeMap<NodeId, String> {
        lock(&self.role).isr_incarnations.clone()
    }

    /// Moves the high watermark as far as the ISR allows (leaders only).
    pub fn recompute_high_watermark(&self) {
        if !self.is_leader() {
            return;
        }
        let new = {
            let role = lock(&self.role);
            let ends = role
                .isr
                .iter()
                .filter(|r| **r != self.node_id)
                .map(|r| role.followers.get(r).and_then(|v| v.end));
            hw::compute_high_watermark(self.high_watermark(), self.log_end(), ends)
        };
        if new > self.high_watermark() {
            self.high_watermark.send_replace(new);
        }
    }

    /// The ISR this leader should write now, if it should change; `registered` holds the nodes
    /// the cluster view shows registered, with their incarnation.
    pub fn isr_change(&self, registered: &BTreeMap<NodeId, String>) -> Option<Vec<NodeId>> {
        // Cleared before the state is read: a change after this sets it again.
        self.isr_check.store(false, Ordering::Release);
        if !self.is_leader() {
            return None;
        }
        let epoch = self.leadership().epoch;
        let role = lock(&self.role);
        let epoch_start = lock(&self.epochs)
            .start_of(epoch)
            .unwrap_or(role.leadership_start_end);
        let leader_end = self.log_end();
        let change = isr::isr_change(&IsrInputs {
            leader: self.node_id,
            replicas: &role.replicas,
            isr: &role.isr,
            leader_end,
            high_watermark: self.high_watermark(),
            epoch_start,
            followers: &role.followers,
            now_ms: now_ms(),
            max_lag_ms: self.max_lag_ms.load(Ordering::Relaxed),
            isr_incarnations: &role.isr_incarnations,
            registered,
        });
        // Without an event the decision stays the same unless a member lags (it leaves the
        // ISR with time alone), or a change is about to be written.
        let members_caught_up = role.isr.iter().filter(|id| **id != self.node_id).all(|id| {
            role.followers
                .get(id)
                .is_some_and(|v| v.connected && v.end.is_some_and(|e| e >= leader_end))
        });
        if change.is_some() || !members_caught_up {
            self.mark_isr_check();
        }
        change
    }

    /// Asks the ISR manager to look at this replica at its next tick.
    fn mark_isr_check(&self) {
        self.isr_check.store(true, Ordering::Release);
    }

    /// Whether the ISR manager should look at this replica (see [`Replica::isr_change`]).
    pub fn needs_isr_check(&self) -> bool {
        self.isr_check.load(Ordering::Acquire)
    }

    /// Number of assigned replicas (the replication factor).
    pub fn replica_count(&self) -> usize {
        lock(&self.role).replicas.len()
    }

    /// Whether `id` is a replica a reassignment is adding and that has not joined the ISR yet
    /// (its catch-up counts against the reassignment throttle).
    pub fn is_moving_in(&self, id: NodeId) -> bool {
        let role = lock(&self.role);
        role.adding.contains(&id) && !role.isr.contains(&id)
    }

    /// Whether `id` is an assigned replica.
    pub fn is_replica(&self, id: NodeId) -> bool {
        lock(&self.role).replicas.contains(&id)
    }

    /// Largest batch accepted, from the topic's `max.message.bytes`.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes.load(Ordering::Relaxed)
    }

    /// `min.insync.replicas` of the topic.
    pub fn min_insync(&self) -> usize {
        self.min_insync.load(Ordering::Relaxed)
    }

    /// Applies a topic config change.
    pub fn set_config(&self, c: ReplicaConfig) {
        self.max_batch_bytes
            .store(c.max_batch_bytes, Ordering::Relaxed);
        self.min_insync.store(c.min_insync, Ordering::Relaxed);
        self.max_lag_ms.store(c.max_lag_ms, Ordering::Relaxed);
        *lock(&self.retention) = (c.retention, c.compaction);
        self.mark_isr_check();
    }

    /// The topic's retention rules as last applied.
    pub fn retention(&self) -> Retention {
        lock(&self.retention).0
    }

    /// The topic's compaction settings as last applied.
    pub fn compaction(&self) -> Compaction {
        lock(&self.retention).1
    }

    /// Marks the replica deleted: pending and later requests fail instead of writing.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        // Wake long polls and replication senders so they notice.
        self.high_watermark.send_modify(|_| {});
        self.log_end.send_modify(|_| {});
        self.leadership.send_modify(|_| {});
    }

    /// Whether the replica was deleted (topic deleted or partition moved away).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}
