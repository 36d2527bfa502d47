//! The replicas this node hosts, reconciled with the cluster view: a replica opens when the
//! metadata assigns the partition to this node and is deleted (data included) when its topic is
//! deleted or the partition moves away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use sluice_metadata::cache::ClusterView;
use sluice_proto::model::{MAX_MESSAGE_BYTES, NodeId, TopicId};

use crate::log::{LogError, LogStore, PartitionKey};
use crate::replica::{Leadership, Replica};
use crate::writer::Writer;

/// Fallback for `max.message.bytes` when a topic record lacks it.
const DEFAULT_MAX_BATCH_BYTES: usize = 1_048_588;

/// The replicas hosted here, by partition.
pub struct Partitions {
    node_id: NodeId,
    log: Arc<dyn LogStore>,
    writer: Writer,
    replicas: RwLock<HashMap<PartitionKey, Arc<Replica>>>,
}

/// What the view asks of one local replica.
struct Desired {
    topic: String,
    leadership: Leadership,
    max_batch_bytes: usize,
}

impl Partitions {
    /// No replicas yet; call [`Partitions::reconcile`] with the first view.
    pub fn new(node_id: NodeId, log: Arc<dyn LogStore>, writer: Writer) -> Self {
        Self {
            node_id,
            log,
            writer,
            replicas: RwLock::new(HashMap::new()),
        }
    }

    /// The local replica of a partition, if hosted here.
    pub fn get(&self, key: &PartitionKey) -> Option<Arc<Replica>> {
        self.replicas.read().expect("poisoned").get(key).cloned()
    }

    /// Number of hosted replicas.
    pub fn len(&self) -> usize {
        self.replicas.read().expect("poisoned").len()
    }

    /// Whether no replica is hosted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn desired(&self, view: &ClusterView) -> BTreeMap<PartitionKey, Desired> {
        let mut out = BTreeMap::new();
        for t in view.topics.values() {
            let Ok(topic_id) = TopicId::from_slice(&t.record.topic_id) else {
                continue;
            };
            let max_batch_bytes = t
                .record
                .config
                .get(MAX_MESSAGE_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_MAX_BATCH_BYTES);
            for p in view.partitions_of(&topic_id) {
                let s = &p.record;
                if s.partition >= t.record.partition_count || !s.replicas.contains(&self.node_id) {
                    continue;
                }
                out.insert(
                    PartitionKey {
                        topic_id,
                        partition: s.partition,
                    },
                    Desired {
                        topic: t.record.name.clone(),
                        leadership: Leadership {
                            leader: s.leader,
                            epoch: s.leader_epoch,
                        },
                        max_batch_bytes,
                    },
                );
            }
        }
        out
    }

    /// Opens, updates and deletes replicas so the node hosts exactly what `view` assigns it.
    /// Blocking (it opens logs); run it off the async executor.
    pub fn reconcile(&self, view: &ClusterView) -> Result<(), LogError> {
        let desired = self.desired(view);
        let current: Vec<PartitionKey> = self
            .replicas
            .read()
            .expect("poisoned")
            .keys()
            .copied()
            .collect();
        for key in current {
            if desired.contains_key(&key) {
                continue;
            }
            let removed = self.replicas.write().expect("poisoned").remove(&key);
            if let Some(r) = removed {
                r.mark_deleted();
                // Through the writer, so no append queued before the delete lands after it.
                if self.writer.delete_blocking(key).is_err() {
                    tracing::warn!(topic = %r.topic, partition = key.partition, "writer stopped; log of removed replica kept");
                }
                tracing::info!(topic = %r.topic, partition = key.partition, "replica removed");
            }
        }
        for (key, d) in desired {
            if let Some(r) = self.get(&key) {
                r.set_leadership(d.leadership);
                r.set_max_batch_bytes(d.max_batch_bytes);
                continue;
            }
            let opened = self.log.open(key)?;
            let r = Replica::new(
                d.topic,
                key,
                opened.uid,
                opened.log_start,
                opened.log_end,
                d.leadership,
                d.max_batch_bytes,
            );
            tracing::info!(
                topic = %r.topic, partition = key.partition, epoch = d.leadership.epoch,
                leader = d.leadership.leader, log_end = opened.log_end, "replica opened"
            );
            self.replicas.write().expect("poisoned").insert(key, r);
        }
        Ok(())
    }

    /// Logs replicas on disk that the view does not assign here (e.g. their topic was deleted
    /// while this node was down). They are kept, not deleted: a node pointed at the wrong
    /// cluster must not wipe its data.
    pub fn report_strays(&self, view: &ClusterView) {
        let desired = self.desired(view);
        if let Ok(on_disk) = self.log.list() {
            for (key, uid) in on_disk {
                if !desired.contains_key(&key) {
                    tracing::warn!(topic_id = %key.topic_id, partition = key.partition, uid, "log on disk not assigned to this node; kept");
                }
            }
        }
    }
}
