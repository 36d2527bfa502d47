//! The replicas this node hosts, reconciled with the cluster view: a replica opens when the
//! metadata assigns the partition to this node, follows its leader (a follower task) or leads,
//! and is deleted (data included) when its topic is deleted or the partition moves away.
//!
//! A leadership counts only once confirmed for this process: the partition state naming this
//! node leader must have been written after the process first registered (its boot revision).
//! Until then the replica has no leader (it serves nothing and follows nobody), because that
//! leadership was granted to an earlier process with this node id, perhaps over a data
//! directory that no longer exists; the controller confirms it with a new leader epoch, or
//! moves it, as soon as it sees the registration.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use sluice_metadata::cache::ClusterView;
use sluice_proto::model::{NodeId, TopicId};
use sluice_proto::topic_config::TopicConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::follower::{self, FollowerContext};
use crate::log::{LogError, LogStore, PartitionKey};
use crate::replica::{Assignment, Leadership, Replica, ReplicaConfig};
use crate::writer::{self, Writer};

/// The replicas hosted here, by partition.
pub struct Partitions {
    node_id: NodeId,
    log: Arc<dyn LogStore>,
    writer: Writer,
    replicas: RwLock<HashMap<PartitionKey, Arc<Replica>>>,
    followers: Mutex<HashMap<PartitionKey, JoinHandle<()>>>,
    follower_ctx: Arc<FollowerContext>,
    runtime: tokio::runtime::Handle,
    boot: watch::Receiver<Option<i64>>,
}

/// What the view asks of one local replica.
struct Desired {
    topic: String,
    assignment: Assignment,
    config: ReplicaConfig,
}

/// What a replica applies of its topic's config (read again at every view, so a change takes
/// effect without a restart).
fn config_of(topic: &str, overrides: &std::collections::HashMap<String, String>) -> ReplicaConfig {
    ReplicaConfig::of(&TopicConfig::from_stored(topic, overrides))
}

impl Partitions {
    /// No replicas yet; call [`Partitions::reconcile`] with the first view. Must be created
    /// inside a tokio runtime (follower tasks are spawned on it). `boot` turns to the create
    /// revision of this process's first registration.
    pub fn new(
        node_id: NodeId,
        log: Arc<dyn LogStore>,
        writer: Writer,
        follower_ctx: Arc<FollowerContext>,
        boot: watch::Receiver<Option<i64>>,
    ) -> Self {
        Self {
            node_id,
            log,
            writer,
            replicas: RwLock::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            follower_ctx,
            runtime: tokio::runtime::Handle::current(),
            boot,
        }
    }

    /// The local replica of a partition, if hosted here.
    pub fn get(&self, key: &PartitionKey) -> Option<Arc<Replica>> {
        self.replicas.read().expect("poisoned").get(key).cloned()
    }

    /// The replicas whose ISR decision may have changed since the ISR manager last looked.
    pub fn needing_isr_check(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .expect("poisoned")
            .values()
            .filter(|r| r.needs_isr_check())
            .cloned()
            .collect()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .expect("poisoned")
            .values()
            .cloned()
            .collect()
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
        let boot = *self.boot.borrow();
        let mut out = BTreeMap::new();
        for t in view.topics.values() {
            let Ok(topic_id) = TopicId::from_slice(&t.record.topic_id) else {
                continue;
            };
            let config = config_of(&t.record.name, &t.record.config);
            for p in view.partitions_of(&topic_id) {
                let s = &p.record;
                if s.partition >= t.record.partition_count || !s.replicas.contains(&self.node_id) {
                    continue;
                }
                let confirmed = boot.is_some_and(|b| p.mod_revision > b);
                let leader = if s.leader == self.node_id && !confirmed {
                    -1
                } else {
                    s.leader
                };
                out.insert(
                    PartitionKey {
                        topic_id,
                        partition: s.partition,
                    },
                    Desired {
                        topic: t.record.name.clone(),
                        assignment: Assignment {
                            leadership: Leadership {
                                leader,
                                epoch: s.leader_epoch,
                            },
                            replicas: s.replicas.clone(),
                            isr: s.isr.clone(),
                            partition_epoch: s.partition_epoch,
                            isr_incarnations: s.isr_incarnations.clone(),
                            adding: s.adding_replicas.clone(),
                        },
                        config,
                    },
                );
            }
        }
        out
    }

    /// Opens, updates and deletes replicas so the node hosts exactly what `view` assigns it,
    /// and starts a follower task for every replica another node leads. Blocking (it opens
    /// logs); run it off the async executor.
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
                if let Some(h) = self.followers.lock().expect("poisoned").remove(&key) {
                    h.abort();
                }
                // Through the writer, so no append queued before the delete lands after it.
                if self.writer.delete_blocking(key).is_err() {
                    tracing::warn!(topic = %r.topic, partition = key.partition, "writer stopped; log of removed replica kept");
                }
                tracing::info!(topic = %r.topic, partition = key.partition, "replica removed");
            }
        }
        for (key, d) in desired {
            let replica = match self.get(&key) {
                Some(r) => {
                    r.set_config(d.config);
                    r.assign(d.assignment);
                    r
                }
                None => {
                    let opened = self.log.open(key)?;
                    let producers = writer::rebuild_producers(
                        self.log.as_ref(),
                        opened.uid,
                        opened.log_start,
                        opened.log_end,
                    )?;
                    let log_end = opened.log_end;
                    let r =
                        Replica::new(self.node_id, d.topic, key, opened, d.assignment, d.config);
                    *r.producers.lock().expect("poisoned") = producers;
                    let l = r.leadership();
                    tracing::info!(
                        topic = %r.topic, partition = key.partition, epoch = l.epoch,
                        leader = l.leader, log_end, "replica opened"
                    );
                    self.replicas
                        .write()
                        .expect("poisoned")
                        .insert(key, r.clone());
                    r
                }
            };
            self.log.set_segment_policy(replica.uid, d.config.segment);
            self.ensure_follower_task(key, &replica);
        }
        Ok(())
    }

    /// A replica led elsewhere needs a running follower task (it exits when this node becomes
    /// the leader or the replica is removed).
    fn ensure_follower_task(&self, key: PartitionKey, r: &Arc<Replica>) {
        let l = r.leadership();
        if l.leader == self.node_id || l.leader < 0 {
            return;
        }
        let mut tasks = self.followers.lock().expect("poisoned");
        if tasks.get(&key).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let (ctx, r) = (self.follower_ctx.clone(), r.clone());
        tasks.insert(key, self.runtime.spawn(follower::run_follower(ctx, r)));
    }

    /// Deletes the logs on disk that the view does not assign here: their topic was deleted,
    /// or the replica moved, while this node was down. Safe because the data directory is
    /// bound to this cluster's id (a node pointed at another cluster's store does not start).
    pub fn remove_strays(&self, view: &ClusterView) {
        let desired = self.desired(view);
        let Ok(on_disk) = self.log.list() else {
            return;
        };
        for (key, uid) in on_disk {
            if desired.contains_key(&key) {
                continue;
            }
            let topic = view
                .topics
                .values()
                .find(|t| t.record.topic_id.as_ref() == key.topic_id.0)
                .map(|t| t.record.name.clone());
            match self.log.delete(key) {
                Ok(()) => {
                    tracing::info!(topic_id = %key.topic_id, partition = key.partition, uid, topic = ?topic, "removed the data of a replica not assigned to this node (its topic was deleted or it moved while the node was down)")
                }
                Err(error) => {
                    tracing::error!(topic_id = %key.topic_id, partition = key.partition, %error, "removing a stray replica's data failed")
                }
            }
        }
    }

    /// Stops every follower task (shutdown).
    pub fn stop_followers(&self) {
        for (_, h) in self.followers.lock().expect("poisoned").drain() {
            h.abort();
        }
    }
}
