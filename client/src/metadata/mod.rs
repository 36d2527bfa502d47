//! The client's view of the cluster: which node leads each partition (and at which epoch), node
//! addresses and topic ids. Three sources feed it: a `WatchMetadata` stream that pushes every
//! change ([`watch`]), `GetMetadata` refreshes when a request fails or the view is old, and the
//! `NOT_LEADER` hints storage nodes return. None of them may move a leader back to an older
//! epoch ([`snapshot::keep_newer_leaders`]). Every change is also published to the requests in
//! flight, which give up on a leader the cache has seen replaced ([`leadership`]).
//!
//! Only topics the client has used are kept. Refreshes are debounced: callers pass the snapshot
//! version they saw fail, and an answer installed since then (refresh or watch message) counts
//! for them, so a burst of errors from many partitions costs one `GetMetadata`.

mod leadership;
mod snapshot;
mod watch;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::pb::{self, ErrorCode, LeaderHint, metadata_client::MetadataClient};
use tokio::task::AbortHandle;

use crate::config::ClientConfig;
use crate::connection::{Coordinators, Pool, request};
use crate::error::{ClientError, Result};
use leadership::Leadership;
pub(crate) use snapshot::TopicInfo;
use snapshot::{PartitionInfo, Snapshot, build_snapshot, hint_is_news, keep_newer_leaders};

/// Where to send a partition's produce, fetch and list-offsets requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader {
    pub(crate) node_id: i32,
    pub(crate) address: String,
    pub(crate) epoch: i32,
    pub(crate) topic_id: Bytes,
}

/// Shared metadata cache; one per producer or consumer.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub(crate) pool: Arc<Pool>,
    pub(crate) coordinators: Coordinators,
    request_timeout: Duration,
    max_age: Duration,
    state: RwLock<Arc<Snapshot>>,
    interest: Mutex<BTreeSet<String>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Refresh attempts finished (successful or not), and the error of the last one.
    attempts: AtomicU64,
    last_error: Mutex<Option<ClientError>>,
    background_refresh: AtomicBool,
    /// The watch task, started with the first topic in use and aborted on drop.
    watch: OnceLock<AbortHandle>,
    /// Leaders of the partitions with requests in flight, so those follow a move at once.
    leadership: Leadership,
}

impl Drop for Metadata {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.get() {
            watch.abort();
        }
    }
}

impl Metadata {
    pub(crate) fn new(cfg: &ClientConfig) -> Result<Arc<Self>> {
        cfg.validate()?;
        let pool = Arc::new(Pool::new(cfg.connect_timeout));
        Ok(Arc::new(Self {
            pool,
            coordinators: Coordinators::new(cfg.bootstrap_uris(), cfg.request_timeout),
            request_timeout: cfg.request_timeout,
            max_age: cfg.metadata_max_age,
            state: RwLock::new(Arc::new(Snapshot::default())),
            interest: Mutex::new(BTreeSet::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_error: Mutex::new(None),
            background_refresh: AtomicBool::new(false),
            watch: OnceLock::new(),
            leadership: Leadership::default(),
        }))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.read().unwrap().clone()
    }

    /// Version to pass to [`Metadata::refresh`] after a request based on the current view fails.
    pub(crate) fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// The topic's partitions and id; fetched on first use, refreshed in the background when
    /// older than `metadata_max_age`.
    pub(crate) async fn topic(self: &Arc<Self>, name: &str) -> Result<Arc<TopicInfo>> {
        let snap = self.snapshot();
        if let Some(t) = snap.topics.get(name) {
            if snap
                .fetched_at
                .is_some_and(|at| at.elapsed() > self.max_age)
            {
                self.spawn_refresh(snap.version);
            }
            return Ok(t.clone());
        }
        self.interest.lock().unwrap().insert(name.to_string());
        let mut seen = snap.version;
        // Twice: a refresh that was already running when the topic was first asked for may not
        // have included it.
        for _ in 0..2 {
            let refreshed = self.refresh(seen).await;
            // From now on changes are pushed; the watch starts at the coordinator that answered.
            self.watch.get_or_init(|| watch::spawn(self));
            refreshed?;
            let snap = self.snapshot();
            if let Some(t) = snap.topics.get(name) {
                return Ok(t.clone());
            }
            if snap.unknown.contains(name) {
                break;
            }
            seen = snap.version;
        }
        Err(unknown_topic(name))
    }

    /// The partition's current leader as far as this client knows.
    pub(crate) async fn leader(self: &Arc<Self>, topic: &str, partition: i32) -> Result<Leader> {
        let info = self.topic(topic).await?;
        self.leader_in(&info, topic, partition)
    }

    /// The partition's leader from the cache alone, without fetching: `None` while the topic is
    /// not cached. The producer groups ready batches by it before sending.
    pub(crate) fn cached_leader(&self, topic: &str, partition: i32) -> Option<Result<Leader>> {
        let info = self.snapshot().topics.get(topic)?.clone();
        Some(self.leader_in(&info, topic, partition))
    }

    fn leader_in(&self, info: &TopicInfo, topic: &str, partition: i32) -> Result<Leader> {
        let snap = self.snapshot();
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| info.partitions.get(i))
            .ok_or_else(|| {
                ClientError::api(
                    ErrorCode::UnknownPartition,
                    format!(
                        "topic '{topic}' has {} partitions, so partition {partition} does not exist",
                        info.partitions.len()
                    ),
                )
            })?;
        if p.leader < 0 {
            return Err(ClientError::api(
                ErrorCode::PartitionOffline,
                format!("partition {topic}-{partition} has no leader at the moment"),
            ));
        }
        let address = snap.nodes.get(&p.leader).ok_or_else(|| {
            ClientError::api(
                ErrorCode::MetadataUnavailable,
                format!(
                    "node {} leads {topic}-{partition} but its address is unknown",
                    p.leader
                ),
            )
        })?;
        Ok(Leader {
            node_id: p.leader,
            address: address.clone(),
            epoch: p.epoch,
            topic_id: info.id.clone(),
        })
    }

    /// Re-reads metadata unless a refresh completed after the caller's view (`seen_version`).
    /// Callers that queued behind an attempt which failed share its error rather than each
    /// waiting out their own timeout against an unreachable coordinator.
    pub(crate) async fn refresh(&self, seen_version: u64) -> Result<()> {
        let attempts_seen = self.attempts.load(Ordering::Acquire);
        let _guard = self.refresh_lock.lock().await;
        if self.version() > seen_version {
            return Ok(());
        }
        if self.attempts.load(Ordering::Acquire) > attempts_seen {
            return match &*self.last_error.lock().unwrap() {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
        let result = self.fetch_and_install().await;
        *self.last_error.lock().unwrap() = result.as_ref().err().cloned();
        self.attempts.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// One `GetMetadata` round (two when an asked topic is unknown) and the new snapshot.
    async fn fetch_and_install(&self) -> Result<()> {
        let asked: Vec<String> = self.interest.lock().unwrap().iter().cloned().collect();
        if asked.is_empty() {
            return Ok(());
        }
        let resp = match self.get_metadata(asked.clone()).await {
            // The coordinator refuses the whole request when one asked topic is unknown; list
            // everything instead to learn which.
            Err(ClientError::Api(e)) if e.code == ErrorCode::UnknownTopic => {
                self.get_metadata(Vec::new()).await?
            }
            other => other?,
        };
        let snap = self.install(&asked, resp);
        if !snap.unknown.is_empty() {
            let mut interest = self.interest.lock().unwrap();
            for name in &snap.unknown {
                interest.remove(name);
            }
        }
        tracing::debug!(
            version = snap.version,
            topics = snap.topics.len(),
            nodes = snap.nodes.len(),
            "metadata refreshed"
        );
        Ok(())
    }

    /// A watch message: the new view of the topics in use.
    fn install_watched(&self, resp: pb::GetMetadataResponse) {
        let asked: Vec<String> = self.interest.lock().unwrap().iter().cloned().collect();
        let snap = self.install(&asked, resp);
        tracing::debug!(
            version = snap.version,
            topics = snap.topics.len(),
            nodes = snap.nodes.len(),
            "metadata watch update"
        );
    }

    /// Replaces the view with `resp` (the `asked` topics of it) under the next version, keeping
    /// any leader the current view knows at a newer epoch.
    fn install(&self, asked: &[String], resp: pb::GetMetadataResponse) -> Arc<Snapshot> {
        let snap = {
            let mut state = self.state.write().unwrap();
            let mut snap = build_snapshot(state.version + 1, asked, resp);
            keep_newer_leaders(&state, &mut snap);
            *state = Arc::new(snap);
            state.clone()
        };
        self.publish_leadership();
        snap
    }

    /// Tells requests in flight about the cache's current leaders (see [`leadership`]). Called
    /// after every change, with the state lock released.
    fn publish_leadership(&self) {
        self.leadership.publish(|| self.snapshot());
    }

    fn spawn_refresh(self: &Arc<Self>, seen_version: u64) {
        if self.background_refresh.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.refresh(seen_version).await {
                tracing::debug!(error = %e, "background metadata refresh failed");
            }
            me.background_refresh.store(false, Ordering::Release);
        });
    }

    async fn get_metadata(&self, topics: Vec<String>) -> Result<pb::GetMetadataResponse> {
        self.coordinators
            .call(&self.pool, "GetMetadata", true, |ch, timeout| {
                let req = pb::GetMetadataRequest {
                    topics: topics.clone(),
                    include_internal: true,
                };
                async move {
                    let resp = MetadataClient::new(ch)
                        .get_metadata(request(req, timeout))
                        .await?;
                    Ok(resp.into_inner())
                }
            })
            .await
    }

    /// Takes a `NOT_LEADER` hint into the cache. Returns whether it names a leader newer than the
    /// cached one, i.e. whether retrying at once can reach a different node.
    pub(crate) fn apply_hint(&self, topic: &str, partition: i32, hint: &LeaderHint) -> bool {
        if hint.node_id < 0 || hint.address.is_empty() {
            return false;
        }
        let mut state = self.state.write().unwrap();
        let Some(current) = state
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?).copied())
        else {
            return false;
        };
        let known_address = state.nodes.get(&hint.node_id).map(String::as_str);
        if !hint_is_news(current, known_address, hint) {
            return false;
        }
        let snap = Arc::make_mut(&mut state);
        snap.nodes.insert(hint.node_id, hint.address.clone());
        if let Some(t) = snap.topics.get_mut(topic) {
            let t = Arc::make_mut(t);
            t.partitions[partition as usize] = PartitionInfo {
                leader: hint.node_id,
                epoch: hint.leader_epoch,
            };
        }
        drop(state);
        self.publish_leadership();
        tracing::debug!(
            topic,
            partition,
            leader = hint.node_id,
            epoch = hint.leader_epoch,
            "leader moved (hint)"
        );
        true
    }

    /// After a failed request to a partition's leader: follow a `NOT_LEADER` hint when it names a
    /// newer leader (returns true: retry at once), else refresh metadata when the error says it
    /// may be stale (returns false: retry after a backoff).
    pub(crate) async fn handle_error(
        &self,
        topic: &str,
        partition: i32,
        err: &ClientError,
        seen_version: u64,
    ) -> bool {
        if let ClientError::Api(e) = err
            && e.code == ErrorCode::NotLeader
            && let Some(hint) = &e.leader
            && self.apply_hint(topic, partition, hint)
        {
            return true;
        }
        if err.needs_metadata_refresh()
            && let Err(e) = self.refresh(seen_version).await
        {
            tracing::debug!(topic, partition, error = %e, "metadata refresh failed");
        }
        false
    }
}

fn unknown_topic(name: &str) -> ClientError {
    ClientError::api(
        ErrorCode::UnknownTopic,
        format!("topic '{name}' does not exist; create it first"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn applied_hint_reroutes_the_partition_leader() {
        let meta = Metadata::new(&ClientConfig::default()).unwrap();
        let resp = snapshot::tests::response();
        *meta.state.write().unwrap() = Arc::new(build_snapshot(1, &["a".into()], resp));
        let hint = LeaderHint {
            node_id: 7,
            address: "127.0.0.7:1".into(),
            leader_epoch: 4,
        };
        assert!(meta.apply_hint("a", 1, &hint));
        let leader = meta.leader("a", 1).await.unwrap();
        assert_eq!((leader.node_id, leader.epoch), (7, 4));
        assert_eq!(leader.address, "127.0.0.7:1");
        // The same hint again is no news: retrying at once would hit the same node.
        assert!(!meta.apply_hint("a", 1, &hint));
        // A hint refresh is not a metadata refresh.
        assert_eq!(meta.version(), 1);
        // A later answer that still names the old leader does not undo the hint.
        meta.install(&["a".into()], snapshot::tests::response());
        assert_eq!(meta.leader("a", 1).await.unwrap().node_id, 7);
        assert_eq!(meta.version(), 2);
        let err = meta.leader("a", 0).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::PartitionOffline));
        let err = meta.leader("a", 9).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
    }
}
