//! The active controller's writes: create and delete topics, add partitions. Decisions
//! (validation, placement) are pure; the writes are fenced transactions on the metadata store:
//! each compares the controller key's create revision, so a deposed controller cannot write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, StoreError, Txn};
use sluice_proto::error::ApiError;
use sluice_proto::model::{self, NodeId, TopicId, TopicName};
use sluice_proto::pb::{self, ErrorCode, PartitionStateRecord, TopicRecord};

/// `segment.bytes` of the offsets topic (Kafka's `offsets.topic.segment.bytes` is 100 MiB; a
/// smaller one bounds what a takeover replays before compaction has caught up).
const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;
use sluice_proto::topic_config;

use crate::describe;
use crate::placement::{self, Candidate, Load};

/// etcd refuses transactions with more than 128 operations (or compares) by default; stay
/// well below.
pub(crate) const MAX_OPS_PER_TXN: usize = 100;
/// How long a write waits for the cache to show it before answering.
const READ_YOUR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller's handle on the store. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    /// The metadata store.
    pub store: Arc<dyn MetaStore>,
    /// Key layout of this cluster.
    pub keys: Keys,
    /// The watch-fed view.
    pub cache: Arc<MetadataCache>,
    /// Replication factor used when a request gives 0.
    pub default_replication_factor: i32,
}

/// Maps a store failure to the API error a client sees.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::new(
            ErrorCode::MetadataUnavailable,
            format!("the metadata store is unavailable ({m}); retry shortly"),
        ),
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn fenced(keys: &Keys, fence: i64) -> Txn {
    Txn::new().when(Compare::CreateRevision(keys.controller(), fence))
}

pub(crate) fn lost_leadership() -> ApiError {
    ApiError::new(
        ErrorCode::NotController,
        "this coordinator lost the controller role during the request; retry",
    )
}

/// Replica and leader counts per live node, from every existing partition.
fn current_load(view: &ClusterView) -> BTreeMap<NodeId, Load> {
    let mut load: BTreeMap<NodeId, Load> = BTreeMap::new();
    for p in view.partitions.values() {
        for (i, r) in p.record.replicas.iter().enumerate() {
            let l = load.entry(*r).or_default();
            l.replicas += 1;
            if i == 0 {
                l.leaders += 1;
            }
        }
    }
    load
}

/// The nodes new replicas may go to: registered and not decommissioned.
fn candidates(view: &ClusterView) -> Vec<Candidate> {
    view.nodes
        .values()
        .filter(|n| !view.decommissioned.contains(&n.node_id))
        .map(|n| Candidate {
            id: n.node_id,
            rack: n.rack.clone(),
        })
        .collect()
}

/// New partitions start led by their preferred replica, at leader epoch 0, with every replica
/// in sync (an empty log is trivially caught up), each with the data-directory incarnation it
/// is registered with in `view`.
fn new_partition_states(
    view: &ClusterView,
    topic_id: &TopicId,
    first: i32,
    placed: Vec<Vec<NodeId>>,
) -> Vec<PartitionStateRecord> {
    placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| PartitionStateRecord {
            topic_id: topic_id.0.to_vec().into(),
            partition: first + i as i32,
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            isr_incarnations: replicas
                .iter()
                .filter_map(|r| Some((*r, view.nodes.get(r)?.incarnation.clone())))
                .collect(),
            replicas,
            partition_epoch: 0,
            target_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        })
        .collect()
}

impl Controller {
    /// Validates and creates a topic; answers once the coordinator's own view shows it.
    pub async fn create_topic(
        &self,
        fence: i64,
        req: pb::CreateTopicRequest,
    ) -> Result<pb::TopicDescription, ApiError> {
        self.create(fence, req, false).await
    }

    /// Creates [`model::OFFSETS_TOPIC`] when it does not exist yet (first use of consumer
    /// groups): compacted, `offsets_partitions` partitions, replication factor 3 or the number of
    /// live nodes if smaller. Returns its description.
    pub async fn ensure_offsets_topic(
        &self,
        fence: i64,
        offsets_partitions: i32,
    ) -> Result<pb::TopicDescription, ApiError> {
        if let Ok(t) = describe::topic(&self.cache.view(), model::OFFSETS_TOPIC) {
            return Ok(t);
        }
        let live = self.cache.view().nodes.len() as i32;
        if live == 0 {
            return Err(ApiError::new(
                ErrorCode::LeaderNotAvailable,
                "no storage node is registered yet to host the offsets topic; retry shortly",
            ));
        }
        let rf = live.min(3);
        let config = [
            ("cleanup.policy".to_string(), "compact".to_string()),
            // Small segments, so compaction (closed segments only) keeps the log a group
            // coordinator replays at takeover close to the live groups' state.
            (
                "segment.bytes".to_string(),
                OFFSETS_SEGMENT_BYTES.to_string(),
            ),
            (
                "min.insync.replicas".to_string(),
                if rf >= 3 { "2" } else { "1" }.to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let req = pb::CreateTopicRequest {
            name: model::OFFSETS_TOPIC.to_string(),
            partitions: offsets_partitions,
            replication_factor: rf,
            config,
            validate_only: false,
        };
        match self.create(fence, req, true).await {
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                describe::topic(&self.cache.view(), model::OFFSETS_TOPIC)
            }
            other => other,
        }
    }

    async fn create(
        &self,
        fence: i64,
        req: pb::CreateTopicRequest,
        internal: bool,
    ) -> Result<pb::TopicDescription, ApiError> {
        let name = TopicName::parse(&req.name, internal)?;
        model::validate_partition_count(req.partitions)?;
        let rf = if req.replication_factor == 0 {
            self.default_replication_factor
        } else {
            req.replication_factor
        };
        if rf < 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {rf} is invalid; give 1 or more"),
            ));
        }
        let config = topic_config::validate_overrides(&req.config, rf)?;
        let view = self.cache.view();
        if view.topics.contains_key(name.as_str()) {
            return Err(already_exists(name.as_str()));
        }
        let placed = placement::place(
            &candidates(&view),
            &current_load(&view),
            req.partitions as usize,
            rf as usize,
        )
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("{e}; start more storage nodes or lower the replication factor"),
            )
        })?;
        if req.validate_only {
            let topic_id = TopicId([0; 16]);
            return Ok(pb::TopicDescription {
                name: name.to_string(),
                topic_id: topic_id.0.to_vec().into(),
                replication_factor: rf,
                partitions: new_partition_states(&view, &topic_id, 0, placed)
                    .into_iter()
                    .map(|p| pb::PartitionMetadata {
                        partition: p.partition,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas,
                        isr: p.isr,
                        ..Default::default()
                    })
                    .collect(),
                internal: false,
                ..describe::config_fields(&config.into_iter().collect())
            });
        }
        let topic_id = TopicId(*uuid::Uuid::new_v4().as_bytes());
        let record = TopicRecord {
            name: name.to_string(),
            topic_id: topic_id.0.to_vec().into(),
            partition_count: req.partitions,
            replication_factor: rf,
            config: config.into_iter().collect(),
            created_at_ms: crate::election::now_ms(),
            internal,
        };
        // Partition states first, the topic record last: readers only see partitions of a
        // topic whose record exists, so a crash in between leaves invisible garbage, never a
        // half-created topic.
        let states = new_partition_states(&view, &topic_id, 0, placed);
        self.write_partitions(fence, &topic_id, states.clone())
            .await?;
        let txn = fenced(&self.keys, fence)
            .when(Compare::ModRevision(self.keys.topic(name.as_str()), 0))
            .then(Op::Put {
                key: self.keys.topic(name.as_str()),
                value: record.encode_to_vec().into(),
                lease: 0,
            });
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            // Either someone created the topic concurrently or we were deposed: undo our
            // partitions (best effort) and say which.
            let cleanup = Txn::new().then(Op::DeletePrefix(self.keys.partitions_of(&topic_id)));
            if let Err(error) = self.store.txn(cleanup).await {
                tracing::warn!(%error, topic = %name, "could not remove partitions of a lost create");
            }
            return Err(self
                .explain_conflict(fence, || already_exists(name.as_str()))
                .await);
        }
        tracing::info!(topic = %name, topic_id = %topic_id, partitions = req.partitions, rf, "topic created");
        self.cache
            .wait_for_revision(outcome.revision, READ_YOUR_WRITE_TIMEOUT)
            .await;
        // Described from what was written, so a lagging cache cannot report it missing.
        Ok(describe::written(&record, &states))
    }

    async fn write_partitions(
        &self,
        fence: i64,
        topic_id: &TopicId,
        states: Vec<PartitionStateRecord>,
    ) -> Result<(), ApiError> {
        for chunk in states.chunks(MAX_OPS_PER_TXN) {
            let mut txn = fenced(&self.keys, fence);
            for p in chunk {
                txn = txn.then(Op::Put {
                    key: self.keys.partition(topic_id, p.partition),
                    value: p.encode_to_vec().into(),
                    lease: 0,
                });
            }
            if !self.store.txn(txn).await.map_err(store_error)?.succeeded {
                return Err(lost_leadership());
            }
        }
        Ok(())
    }

    /// A failed fenced txn: deposed controller, or the other compare failed.
    async fn explain_conflict(&self, fence: i64, other: impl FnOnce() -> ApiError) -> ApiError {
        match self.store.get(&self.keys.controller()).await {
            Ok(Some(c)) if c.create_revision == fence => other(),
            Ok(_) => lost_leadership(),
            Err(e) => store_error(e),
        }
    }

    /// Deletes a topic and all its partition states; storage nodes drop the data when they see it.
    pub async fn delete_topic(&self, fence: i64, name: &str) -> Result<(), ApiError> {
        let view = self.cache.view();
        let t = view
            .topics
            .get(name)
            .ok_or_else(|| describe::unknown_topic(name))?;
        if t.record.internal {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("topic '{name}' is internal to Sluice and cannot be deleted"),
            ));
        }
        let topic_id = TopicId::from_slice(&t.record.topic_id)?;
        let txn = fenced(&self.keys, fence)
            .when(Compare::ModRevision(self.keys.topic(name), t.mod_revision))
            .then(Op::Delete(self.keys.topic(name)))
            .then(Op::DeletePrefix(self.keys.partitions_of(&topic_id)));
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            return Err(self
                .explain_conflict(fence, || {
                    ApiError::new(
                        ErrorCode::ConcurrentModification,
                        format!("topic '{name}' changed during the delete; retry"),
                    )
                })
                .await);
        }
        tracing::info!(topic = %name, topic_id = %topic_id, "topic deleted");
        self.cache
            .wait_for_revision(outcome.revision, READ_YOUR_WRITE_TIMEOUT)
            .await;
        Ok(())
    }

    /// Raises a topic's partition count to `total`.
    pub async fn create_partitions(
        &self,
        fence: i64,
        name: &str,
        total: i32,
    ) -> Result<pb::TopicDescription, ApiError> {
        model::validate_partition_count(total)?;
        let view = self.cache.view();
        let t = view
            .topics
            .get(name)
            .ok_or_else(|| describe::unknown_topic(name))?;
        if t.record.internal {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "topic '{name}' is internal to Sluice; its partition count cannot change (groups would lose their state)"
                ),
            ));
        }
        let current = t.record.partition_count;
        if total <= current {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' already has {current} partitions; give a larger total (partitions can only be added)"
                ),
            ));
        }
        let topic_id = TopicId::from_slice(&t.record.topic_id)?;
        let placed = placement::place(
            &candidates(&view),
            &current_load(&view),
            (total - current) as usize,
            t.record.replication_factor as usize,
        )
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("{e}; start more storage nodes"),
            )
        })?;
        self.write_partitions(
            fence,
            &topic_id,
            new_partition_states(&view, &topic_id, current, placed),
        )
        .await?;
        let record = TopicRecord {
            partition_count: total,
            ..t.record.clone()
        };
        self.replace_topic(fence, name, t.mod_revision, &record)
            .await?;
        tracing::info!(topic = %name, from = current, to = total, "partitions added");
        describe::topic(&self.cache.view(), name)
    }

    /// Replaces topic `name`'s record with `record` if it is still at `mod_revision` (and this
    /// controller still holds `fence`), then waits until the local view has it.
    pub(crate) async fn replace_topic(
        &self,
        fence: i64,
        name: &str,
        mod_revision: i64,
        record: &TopicRecord,
    ) -> Result<(), ApiError> {
        let txn = fenced(&self.keys, fence)
            .when(Compare::ModRevision(self.keys.topic(name), mod_revision))
            .then(Op::Put {
                key: self.keys.topic(name),
                value: record.encode_to_vec().into(),
                lease: 0,
            });
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            return Err(self
                .explain_conflict(fence, || {
                    ApiError::new(
                        ErrorCode::ConcurrentModification,
                        format!("topic '{name}' changed concurrently; retry"),
                    )
                })
                .await);
        }
        self.cache
            .wait_for_revision(outcome.revision, READ_YOUR_WRITE_TIMEOUT)
            .await;
        Ok(())
    }
}

fn already_exists(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TopicAlreadyExists,
        format!("topic '{name}' already exists; choose another name or delete it first"),
    )
}
