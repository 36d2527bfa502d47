//! Leadership watches, so a request in flight to a deposed leader is abandoned the moment the
//! cache learns of the new one (from a watch message, a refresh, or another request's
//! `NOT_LEADER` hint) rather than at its deadline.
//!
//! Why: a leader that hangs without closing its connections (a paused process, a node cut off
//! while its sockets stay open) answers nothing until the request timeout, and with one produce
//! in flight per partition nothing else of that partition moves meanwhile. The controller
//! replaces such a leader within about a second; following it at once turns a failover into a
//! pause of that second instead of a whole request timeout.
//!
//! A request waits on a `tokio::sync::watch` of its partition's leader next to its answer (no
//! polling). Watches exist only while a request holds one: each change of the cache updates the
//! watched partitions and drops the watches nobody holds any more.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::snapshot::{PartitionInfo, Snapshot};
use super::{Leader, Metadata};
use crate::error::{ClientError, Result};

/// The partition's leader as last seen by the cache; `None` while the topic is not cached.
type Watched = Option<PartitionInfo>;

/// One watch per partition that has a request in flight.
#[derive(Debug, Default)]
pub(super) struct Leadership {
    senders: Mutex<HashMap<(String, i32), watch::Sender<Watched>>>,
}

impl Leadership {
    /// A receiver of the partition's leader, starting from what `read` says now.
    fn subscribe(
        &self,
        topic: &str,
        partition: i32,
        read: impl FnOnce() -> Arc<Snapshot>,
    ) -> watch::Receiver<Watched> {
        let mut senders = self.senders.lock().unwrap();
        if let Some(tx) = senders.get(&(topic.to_string(), partition)) {
            // Kept current by `publish`, which runs after every change of the cache.
            return tx.subscribe();
        }
        // Read under the lock, so a change installed meanwhile is either seen here or published
        // to this watch afterwards.
        let (tx, rx) = watch::channel(read().partition(topic, partition));
        senders.insert((topic.to_string(), partition), tx);
        rx
    }

    /// After the cache changed: tells every watched partition its leader as `read` says now, and
    /// forgets partitions nobody watches. Reading under the lock means concurrent publishes
    /// cannot leave an older view behind.
    pub(super) fn publish(&self, read: impl FnOnce() -> Arc<Snapshot>) {
        let mut senders = self.senders.lock().unwrap();
        if senders.is_empty() {
            return;
        }
        let snap = read();
        senders.retain(|(topic, partition), tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            let now = snap.partition(topic, *partition);
            tx.send_if_modified(|seen| {
                let changed = *seen != now;
                *seen = now;
                changed
            });
            true
        });
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.senders.lock().unwrap().len()
    }
}

/// Whether `now` is a leader that replaced `sent_to`: a node leads, at an epoch not older, and it
/// is another node or a newer epoch. A partition without a leader does not count: abandoning
/// the request would leave nowhere to resend it.
///
/// | `now` (node, epoch) vs sent to (1, 5) | moved |
/// |---------------------------------------|-------|
/// | (1, 5)                                | no    |
/// | (2, 5) (a hint naming another node)   | yes   |
/// | (2, 6)                                | yes   |
/// | (1, 6) (re-elected itself)            | yes   |
/// | (-1, 6) (no leader yet)               | no    |
/// | (2, 4) (older than the request)       | no    |
pub(super) fn supersedes(now: PartitionInfo, sent_to: &Leader) -> bool {
    now.leader >= 0
        && now.epoch >= sent_to.epoch
        && (now.leader != sent_to.node_id || now.epoch > sent_to.epoch)
}

impl Metadata {
    /// Runs `request`, sent to the partition's leader `sent_to`, unless the cache learns of a
    /// newer leader first: then the request is dropped (cancelled) and the result is
    /// [`ClientError::LeaderMoved`], which is retriable and leaves the outcome unknown (the old
    /// leader may have appended a produce before it stalled). An answer that is ready wins over
    /// a move noticed at the same moment.
    pub(crate) async fn unless_leader_moves<T>(
        &self,
        topic: &str,
        partition: i32,
        sent_to: &Leader,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.unless_any_leader_moves(&[(topic, partition, sent_to)], request)
            .await
    }

    /// [`Metadata::unless_leader_moves`] for a request that carries several partitions (a
    /// `ProduceMany`): a move of any of them abandons it, since the node it went to is likely
    /// hung or deposed for all of them.
    pub(crate) async fn unless_any_leader_moves<T>(
        &self,
        sent: &[(&str, i32, &Leader)],
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if sent.is_empty() {
            return request.await;
        }
        let watches = sent.iter().map(|&(topic, partition, sent_to)| {
            let mut rx = self
                .leadership
                .subscribe(topic, partition, || self.snapshot());
            let (topic, sent_to) = (topic.to_string(), sent_to.clone());
            Box::pin(async move {
                let now = rx
                    .wait_for(|now| now.is_some_and(|now| supersedes(now, &sent_to)))
                    .await
                    .map(|now| now.expect("checked by wait_for"));
                match now {
                    Ok(now) => format!(
                        "abandoned a request to node {} (epoch {}) for {topic}-{partition}: node {} \
                         leads it now (epoch {})",
                        sent_to.node_id, sent_to.epoch, now.leader, now.epoch
                    ),
                    // The sender lives while a receiver does; should it go, keep waiting on the
                    // answer.
                    Err(_) => std::future::pending().await,
                }
            })
        });
        let moved = futures::future::select_all(watches);
        tokio::select! {
            biased;
            answer = request => answer,
            (why, _, _) = moved => Err(ClientError::LeaderMoved(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use sluice_proto::pb::LeaderHint;

    use super::*;
    use crate::config::ClientConfig;
    use crate::metadata::snapshot::{build_snapshot, tests::response};

    fn leader(node_id: i32, epoch: i32) -> Leader {
        Leader {
            node_id,
            address: format!("127.0.0.{node_id}:1"),
            epoch,
            topic_id: Bytes::new(),
        }
    }

    #[test]
    fn only_a_leading_node_at_a_newer_epoch_or_another_node_supersedes() {
        let sent_to = leader(1, 5);
        let info = |leader, epoch| PartitionInfo { leader, epoch };
        assert!(!supersedes(info(1, 5), &sent_to));
        assert!(supersedes(info(2, 5), &sent_to));
        assert!(supersedes(info(2, 6), &sent_to));
        assert!(supersedes(info(1, 6), &sent_to));
        assert!(!supersedes(info(-1, 6), &sent_to));
        assert!(!supersedes(info(2, 4), &sent_to));
    }

    /// Metadata with topic "a": partition 1 led by node 1 at epoch 3.
    fn cached() -> Arc<Metadata> {
        let meta = Metadata::new(&ClientConfig::default()).unwrap();
        *meta.state.write().unwrap() = Arc::new(build_snapshot(1, &["a".into()], response()));
        meta
    }

    #[tokio::test]
    async fn a_hint_naming_a_new_leader_abandons_the_request_in_flight_to_the_old_one() {
        let meta = cached();
        let sent_to = meta.leader("a", 1).await.unwrap();
        let pending = {
            let meta = meta.clone();
            tokio::spawn(async move {
                meta.unless_leader_moves("a", 1, &sent_to, std::future::pending::<Result<()>>())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pending.is_finished(), "no change, no abandonment");
        // A change to another partition leaves it waiting.
        meta.publish_leadership();
        assert_eq!(meta.leadership.watched(), 1);
        let hint = LeaderHint {
            node_id: 2,
            address: "127.0.0.2:1".into(),
            leader_epoch: 4,
        };
        assert!(meta.apply_hint("a", 1, &hint));
        let err = tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .expect("abandoned at once")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ClientError::LeaderMoved(_)), "{err:?}");
        assert!(err.is_retriable() && err.may_have_been_written());
        assert!(!err.needs_metadata_refresh(), "the cache named the move");
        // The watch is dropped with its last request.
        meta.publish_leadership();
        assert_eq!(meta.leadership.watched(), 0);
    }

    #[tokio::test]
    async fn a_request_sent_after_the_move_is_abandoned_at_once_and_an_answer_wins_a_tie() {
        let meta = cached();
        let stale = meta.leader("a", 1).await.unwrap();
        // A refresh says node 2 leads partition 1 (listed first in the answer) at epoch 4.
        let mut moved = response();
        moved.topics[0].partitions[0].leader = 2;
        moved.topics[0].partitions[0].leader_epoch = 4;
        moved.nodes.push(sluice_proto::pb::NodeInfo {
            node_id: 2,
            address: "127.0.0.2:1".into(),
            ..Default::default()
        });
        meta.install(&["a".into()], moved);
        assert_eq!(meta.leader("a", 1).await.unwrap().node_id, 2);
        let err = meta
            .unless_leader_moves("a", 1, &stale, std::future::pending::<Result<()>>())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::LeaderMoved(_)));
        let answer = meta
            .unless_leader_moves("a", 1, &stale, async { Ok(7) })
            .await;
        assert_eq!(answer.unwrap(), 7);
    }
}
