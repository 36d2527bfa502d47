//! A watch-fed, read-only view of the cluster's metadata. Coordinators answer metadata reads from
//! it and storage nodes learn their assignments from it; nothing on the produce/fetch path reads
//! the store itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sluice_proto::model::{NodeId, PartitionId, TopicId};
use sluice_proto::pb::{
    BalancerRecord, ClusterConfigRecord, ControllerRecord, NodeRecord, PartitionStateRecord,
    TopicRecord,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::keys::{KeyKind, Keys};
use crate::store::{MetaStore, StoreError, Versioned, WatchEvent};

/// A stored record with the revision that last wrote it (for compare-and-swap).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    /// The decoded record.
    pub record: T,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the last write of the key.
    pub mod_revision: i64,
}

/// The whole cluster's metadata at one store revision.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Store revision this view reflects.
    pub revision: i64,
    /// The active controller, if any.
    pub controller: Option<Stored<ControllerRecord>>,
    /// Registered coordinators by id.
    pub coordinators: BTreeMap<String, ControllerRecord>,
    /// Live storage nodes (their lease is alive) by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Create revision of each live node's registration: a new one means a new lease (a
    /// restarted process, or one that lost its lease and registered again).
    pub node_registrations: BTreeMap<NodeId, i64>,
    /// Topics by name.
    pub topics: BTreeMap<String, Stored<TopicRecord>>,
    /// Partition states by topic id and partition.
    pub partitions: BTreeMap<(TopicId, PartitionId), Stored<PartitionStateRecord>>,
    /// Storage nodes being emptied (decommissioned), registered or not.
    pub decommissioned: std::collections::BTreeSet<NodeId>,
    /// The cluster-wide settings an operator set (defaults are not stored).
    pub cluster_config: BTreeMap<String, String>,
    /// The storage nodes the automatic balancer last balanced for, once it has.
    pub balanced_nodes: Option<std::collections::BTreeSet<NodeId>>,
}

impl ClusterView {
    /// The topic record for a topic id, if the topic exists.
    pub fn topic_by_id(&self, id: &TopicId) -> Option<&Stored<TopicRecord>> {
        self.topics
            .values()
            .find(|t| t.record.topic_id.as_ref() == id.0)
    }

    /// Partition states of a topic, in partition order.
    pub fn partitions_of(
        &self,
        id: &TopicId,
    ) -> impl Iterator<Item = &Stored<PartitionStateRecord>> + '_ {
        let id = *id;
        self.partitions
            .range((id, PartitionId::MIN)..=(id, PartitionId::MAX))
            .map(|(_, p)| p)
    }

    fn apply(&mut self, keys: &Keys, event: WatchEvent) {
        match event {
            WatchEvent::Put(v) => self.put(keys, v),
            WatchEvent::Delete { key, mod_revision } => {
                self.revision = self.revision.max(mod_revision);
                match keys.parse(&key) {
                    Some(KeyKind::Controller) => self.controller = None,
                    Some(KeyKind::Coordinator(id)) => {
                        self.coordinators.remove(&id);
                    }
                    Some(KeyKind::Node(id)) => {
                        self.nodes.remove(&id);
                        self.node_registrations.remove(&id);
                    }
                    Some(KeyKind::Topic(name)) => {
                        self.topics.remove(&name);
                    }
                    Some(KeyKind::Partition(t, p)) => {
                        self.partitions.remove(&(t, p));
                    }
                    Some(KeyKind::Decommissioned(id)) => {
                        self.decommissioned.remove(&id);
                    }
                    Some(KeyKind::ClusterConfig) => self.cluster_config.clear(),
                    Some(KeyKind::Balancer) => self.balanced_nodes = None,
                    None => {}
                }
            }
        }
    }

    fn put(&mut self, keys: &Keys, v: Versioned) {
        self.revision = self.revision.max(v.mod_revision);
        fn stored<T: Message + Default>(v: &Versioned) -> Option<Stored<T>> {
            match T::decode(v.value.clone()) {
                Ok(record) => Some(Stored {
                    record,
                    create_revision: v.create_revision,
                    mod_revision: v.mod_revision,
                }),
                Err(error) => {
                    tracing::warn!(key = %v.key, %error, "undecodable metadata record ignored");
                    None
                }
            }
        }
        match keys.parse(&v.key) {
            Some(KeyKind::Controller) => self.controller = stored(&v),
            Some(KeyKind::Coordinator(id)) => {
                if let Some(s) = stored::<ControllerRecord>(&v) {
                    self.coordinators.insert(id, s.record);
                }
            }
            Some(KeyKind::Node(id)) => {
                if let Some(s) = stored::<NodeRecord>(&v) {
                    self.nodes.insert(id, s.record);
                    self.node_registrations.insert(id, s.create_revision);
                }
            }
            Some(KeyKind::Topic(name)) => {
                if let Some(s) = stored(&v) {
                    self.topics.insert(name, s);
                }
            }
            Some(KeyKind::Partition(t, p)) => {
                if let Some(s) = stored(&v) {
                    self.partitions.insert((t, p), s);
                }
            }
            Some(KeyKind::Decommissioned(id)) => {
                self.decommissioned.insert(id);
            }
            Some(KeyKind::ClusterConfig) => {
                if let Some(s) = stored::<ClusterConfigRecord>(&v) {
                    self.cluster_config = s.record.config.into_iter().collect();
                }
            }
            Some(KeyKind::Balancer) => {
                if let Some(s) = stored::<BalancerRecord>(&v) {
                    self.balanced_nodes = Some(s.record.nodes.into_iter().collect());
                }
            }
            None => {}
        }
    }
}

/// Keeps a [`ClusterView`] current by watching the cluster prefix; re-lists and reconciles when
/// the watch breaks.
pub struct MetadataCache {
    view: watch::Receiver<Arc<ClusterView>>,
    task: JoinHandle<()>,
}

impl MetadataCache {
    /// Loads the first snapshot (so the view is complete when this returns) and starts watching.
    pub async fn start(store: Arc<dyn MetaStore>, keys: Keys) -> Result<Self, StoreError> {
        let first = store.watch_prefix(keys.root()).await?;
        let (tx, rx) = watch::channel(Arc::new(Self::snapshot_view(
            &keys,
            &first.snapshot,
            first.revision,
        )));
        let task = tokio::spawn(Self::follow(store, keys, tx, Some(first)));
        Ok(Self { view: rx, task })
    }

    fn snapshot_view(keys: &Keys, snapshot: &[Versioned], revision: i64) -> ClusterView {
        let mut view = ClusterView::default();
        for v in snapshot {
            view.put(keys, v.clone());
        }
        view.revision = revision;
        view
    }

    async fn follow(
        store: Arc<dyn MetaStore>,
        keys: Keys,
        tx: watch::Sender<Arc<ClusterView>>,
        mut current: Option<crate::store::PrefixWatch>,
    ) {
        loop {
            let watch = match current.take() {
                Some(w) => w,
                None => match store.watch_prefix(keys.root()).await {
                    Ok(w) => {
                        let view = Self::snapshot_view(&keys, &w.snapshot, w.revision);
                        tx.send_replace(Arc::new(view));
                        w
                    }
                    Err(error) => {
                        tracing::warn!(%error, "metadata watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            let mut events = watch.events;
            while let Some(batch) = events.next().await {
                match batch {
                    Ok(batch) => {
                        let mut view = (**tx.borrow()).clone();
                        for e in batch {
                            view.apply(&keys, e);
                        }
                        tx.send_replace(Arc::new(view));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "metadata watch broke; re-listing");
                        break;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The current view (cheap: an `Arc` clone).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver that is notified at every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// Waits until the view has caught up with `revision` (read-your-writes after a txn).
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.revision >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for MetadataCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}
