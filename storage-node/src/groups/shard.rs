//! One partition of `__sluice_offsets` led by this node: the groups it coordinates and their
//! committed offsets, rebuilt by replaying the partition's log when leadership begins, and
//! changed only by appending one batch and waiting until it is committed (acks=all) before
//! answering. Changes are serialised by one async mutex per shard, held across the write, so
//! the log order is the order in which the state changed.
//!
//! If a write or its replication fails, the in-memory state may be ahead of the log: the shard
//! drops it and reloads from the log (the log is the truth; see STYLE.md rule 5).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_groups::assignor::by_name;
use sluice_groups::{Group, GroupConfig, GroupRecord, TopicPartition};
use sluice_proto::batch::{self, BatchBuilder, BatchHeader, Compression, Record};
use sluice_proto::error::ApiError;
use sluice_proto::model::{LeaderEpoch, Offset};
use sluice_proto::pb::ErrorCode;
use tokio::sync::{Mutex, MutexGuard, Notify};

use super::codec::{self, Committed, KeyValue, LogEntry};
use super::errors::{append_error, commit_wait_error};
use crate::log::{LogError, LogStore};
use crate::replica::commit::wait_committed;
use crate::replica::{Replica, now_ms};
use crate::writer::Writer;

/// Assignor of a group whose first heartbeat names none.
pub const DEFAULT_ASSIGNOR: &str = "uniform";
/// Longest a change waits for the in-sync replicas before the request fails (retriable).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the log per step while loading.
const LOAD_READ_BYTES: usize = 8 << 20;
/// Pause between attempts to load a shard whose log cannot be read.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// One group of a shard: its coordination state and committed offsets.
pub struct GroupEntry {
    /// The group's state machine.
    pub group: Group,
    /// Name of its assignor, fixed when the group is created.
    pub assignor: String,
    /// Whether the `group` record (its assignor) is in the log yet.
    pub persisted: bool,
    /// Committed offsets by partition.
    pub offsets: BTreeMap<TopicPartition, Committed>,
}

/// The groups of one loaded shard.
#[derive(Default)]
pub struct ShardState {
    /// Groups by id.
    pub groups: BTreeMap<String, GroupEntry>,
}

/// The coordinator of the groups that hash to one `__sluice_offsets` partition.
pub struct Shard {
    /// The offsets partition's replica (led by this node).
    pub replica: Arc<Replica>,
    /// The leader epoch this shard was loaded for; a new epoch means a new shard.
    pub epoch: LeaderEpoch,
    writer: Writer,
    log: Arc<dyn LogStore>,
    config: GroupConfig,
    /// `None` while loading (or reloading after a failed write).
    state: Mutex<Option<ShardState>>,
    /// Pinged when deadlines may have moved, so the timer recomputes its sleep.
    pub(super) changed: Notify,
}

/// A fresh group with UUID member ids.
pub fn new_group(group_id: &str, assignor: &str, config: &GroupConfig) -> Group {
    let assignor = by_name(assignor)
        .or_else(|| by_name(DEFAULT_ASSIGNOR))
        .expect("the default assignor exists");
    Group::new(
        group_id,
        config.clone(),
        assignor,
        Box::new(|| uuid::Uuid::new_v4().to_string()),
    )
}

impl GroupEntry {
    /// A group not yet in the log.
    pub fn new(group_id: &str, assignor: &str, config: &GroupConfig) -> Self {
        Self {
            group: new_group(group_id, assignor, config),
            assignor: assignor.to_string(),
            persisted: false,
            offsets: BTreeMap::new(),
        }
    }
}

/// What replay accumulates for one group before the core rebuilds it.
#[derive(Default)]
struct Replayed {
    assignor: Option<String>,
    records: Vec<GroupRecord>,
    offsets: BTreeMap<TopicPartition, Committed>,
}

/// Rebuilds a shard's groups from its log entries, in log order: the last write of each key
/// wins, a `group` tombstone deletes everything of the group before it.
pub fn replay(
    entries: impl IntoIterator<Item = LogEntry>,
    config: &GroupConfig,
    now_ms: u64,
) -> ShardState {
    let mut groups: BTreeMap<String, Replayed> = BTreeMap::new();
    for e in entries {
        match e {
            LogEntry::Offset {
                group_id,
                partition,
                commit,
            } => {
                let g = groups.entry(group_id).or_default();
                match commit {
                    Some(c) => g.offsets.insert(partition, c),
                    None => g.offsets.remove(&partition),
                };
            }
            LogEntry::Group {
                group_id,
                assignor: Some(a),
            } => groups.entry(group_id).or_default().assignor = Some(a),
            LogEntry::Group {
                group_id,
                assignor: None,
            } => {
                groups.remove(&group_id);
            }
            LogEntry::Record { group_id, record } => {
                groups.entry(group_id).or_default().records.push(record)
            }
            LogEntry::Ignored => {}
        }
    }
    let groups = groups
        .into_iter()
        .filter(|(_, r)| r.assignor.is_some() || !r.offsets.is_empty())
        .map(|(id, r)| {
            let assignor = r.assignor.clone().unwrap_or(DEFAULT_ASSIGNOR.to_string());
            let group = new_group(&id, &assignor, config).replay(now_ms, r.records);
            let entry = GroupEntry {
                group,
                assignor,
                persisted: r.assignor.is_some(),
                offsets: r.offsets,
            };
            (id, entry)
        })
        .collect();
    ShardState { groups }
}

/// Decodes every group record of a log from `start` to `end`. Unreadable records are logged
/// and skipped: one bad record must not keep every group of the partition offline.
pub fn read_entries(
    log: &dyn LogStore,
    uid: u64,
    start: Offset,
    end: Offset,
) -> Result<Vec<LogEntry>, LogError> {
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let batches = log.read(uid, from, end, LOAD_READ_BYTES)?;
        let Some(last) = batches.last() else { break };
        let next = BatchHeader::parse(last)
            .map(|h| h.next_offset())
            .map_err(|e| LogError(e.to_string()))?;
        for b in &batches {
            let records = batch::decode_records(b).map_err(|e| LogError(e.to_string()))?;
            for r in records.into_iter().filter(|r| r.offset >= from) {
                match codec::decode(r.key.as_ref(), r.value.as_ref()) {
                    Ok(e) => out.push(e),
                    Err(error) => {
                        tracing::warn!(%error, offset = r.offset, "skipping unreadable group record")
                    }
                }
            }
        }
        from = next;
    }
    Ok(out)
}

fn build_batch(kvs: Vec<KeyValue>, now: i64) -> Result<(BytesMut, BatchHeader), ApiError> {
    let mut b = BatchBuilder::new(Compression::None);
    for (key, value) in kvs {
        b.push(&Record {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp_ms: now,
        });
    }
    let bytes = b
        .finish(0)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let header = BatchHeader::parse(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((BytesMut::from(&bytes[..]), header))
}

impl Shard {
    /// A shard that answers `COORDINATOR_LOAD_IN_PROGRESS` until [`Shard::load`] completes.
    pub fn new(
        replica: Arc<Replica>,
        writer: Writer,
        log: Arc<dyn LogStore>,
        config: GroupConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            epoch: replica.leadership().epoch,
            replica,
            writer,
            log,
            config,
            state: Mutex::new(None),
            changed: Notify::new(),
        })
    }

    /// Group settings of this shard's groups.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The state, locked without the leadership and loading checks (for the timer).
    pub(super) async fn state_lock(&self) -> MutexGuard<'_, Option<ShardState>> {
        self.state.lock().await
    }

    /// Whether this node still leads the partition at the shard's epoch.
    pub fn is_current(&self) -> bool {
        let l = self.replica.leadership();
        l.leader == self.replica.node_id && l.epoch == self.epoch && !self.replica.is_deleted()
    }

    /// Replays the partition's log into memory, retrying while the log cannot be read and
    /// this node still leads at the shard's epoch. The log is read without the state lock, so
    /// requests meanwhile get `COORDINATOR_LOAD_IN_PROGRESS` at once; nothing writes to the
    /// partition while the state is unloaded (every change needs it).
    pub async fn load(self: &Arc<Self>) {
        while self.is_current() {
            let started = std::time::Instant::now();
            let (log, uid) = (self.log.clone(), self.replica.uid);
            let (start, end) = (self.replica.log_start(), self.replica.log_end());
            let read =
                tokio::task::spawn_blocking(move || read_entries(log.as_ref(), uid, start, end))
                    .await;
            match read {
                Ok(Ok(entries)) => {
                    let records = entries.len();
                    let loaded = replay(entries, &self.config, now_ms());
                    let took = started.elapsed();
                    metrics::histogram!("sluice_group_shard_load_seconds")
                        .record(took.as_secs_f64());
                    tracing::info!(
                        partition = self.replica.partition(),
                        epoch = self.epoch,
                        groups = loaded.groups.len(),
                        log_start = start,
                        log_end = end,
                        records,
                        took_ms = took.as_millis() as u64,
                        "group coordinator shard loaded"
                    );
                    *self.state.lock().await = Some(loaded);
                    self.changed.notify_one();
                    return;
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, partition = self.replica.partition(), "loading group shard failed; retrying")
                }
                Err(error) => {
                    tracing::error!(%error, partition = self.replica.partition(), "loading group shard panicked; retrying")
                }
            }
            tokio::time::sleep(LOAD_RETRY).await;
        }
    }

    /// The loaded state, locked for a read or a change; the refusal a client retries on
    /// otherwise.
    pub async fn lock(&self) -> Result<MutexGuard<'_, Option<ShardState>>, ApiError> {
        let guard = self.state.lock().await;
        if !self.is_current() {
            return Err(not_coordinator_here(self));
        }
        if guard.is_none() {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "the group coordinator is loading partition {} of __sluice_offsets; retry shortly",
                    self.replica.partition()
                ),
            ));
        }
        Ok(guard)
    }

    /// Appends `kvs` as one batch and waits until the in-sync replicas have it. On failure the
    /// state is dropped (it may be ahead of the log) and reloaded in the background.
    pub async fn persist(
        self: &Arc<Self>,
        state: &mut Option<ShardState>,
        kvs: Vec<KeyValue>,
    ) -> Result<(), ApiError> {
        if kvs.is_empty() {
            return Ok(());
        }
        let result = self.append(kvs).await;
        if let Err(error) = &result {
            tracing::warn!(%error, partition = self.replica.partition(), "group change not persisted; reloading the shard from its log");
            *state = None;
            let shard = self.clone();
            tokio::spawn(async move { shard.load().await });
        }
        result
    }

    async fn append(&self, kvs: Vec<KeyValue>) -> Result<(), ApiError> {
        let (batch, header) = build_batch(kvs, now_ms() as i64)?;
        let appended = self
            .writer
            .append(self.replica.clone(), batch, header)
            .await
            .map_err(append_error)?;
        wait_committed(
            &self.replica,
            appended.end_offset,
            self.epoch,
            COMMIT_TIMEOUT,
        )
        .await
        .map_err(commit_wait_error)
    }
}

/// `NOT_COORDINATOR` for a shard whose leadership moved.
pub fn not_coordinator_here(shard: &Shard) -> ApiError {
    ApiError::new(
        ErrorCode::NotCoordinator,
        format!(
            "node {} no longer leads partition {} of __sluice_offsets; find the group's coordinator again and retry",
            shard.replica.node_id,
            shard.replica.partition()
        ),
    )
}
