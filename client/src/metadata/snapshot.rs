//! The cached view itself and the pure rules for changing it: building a snapshot from a
//! metadata answer, never letting an older answer undo a newer leader, and judging hints.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_proto::pb::{self, LeaderHint};

/// A topic as last read: its id (requests carry it so a re-created topic is noticed) and its
/// partitions indexed by partition id.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub(crate) id: Bytes,
    pub(crate) partitions: Vec<PartitionInfo>,
}

/// Who leads one partition; `leader` is -1 when nobody does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    pub(crate) leader: i32,
    pub(crate) epoch: i32,
}

/// One immutable view of the cluster; replaced whole, so readers never see half an update.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    /// Bumped by each installed answer (refresh or watch message, not hints), for debouncing.
    pub(super) version: u64,
    pub(super) fetched_at: Option<Instant>,
    pub(super) nodes: HashMap<i32, String>,
    pub(super) topics: HashMap<String, Arc<TopicInfo>>,
    /// Topics the last answer lacked although they were asked for.
    pub(super) unknown: HashSet<String>,
}

impl Snapshot {
    /// Who leads the partition, if the topic and partition are cached.
    pub(super) fn partition(&self, topic: &str, partition: i32) -> Option<PartitionInfo> {
        let i = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(i).copied()
    }
}

/// The new cache from a metadata answer: only the topics asked for (a full listing is
/// filtered), partitions laid out by id.
pub(super) fn build_snapshot(
    version: u64,
    asked: &[String],
    resp: pb::GetMetadataResponse,
) -> Snapshot {
    let asked: HashSet<&str> = asked.iter().map(String::as_str).collect();
    let nodes = resp
        .nodes
        .into_iter()
        .map(|n| (n.node_id, n.address))
        .collect();
    let mut topics = HashMap::new();
    for t in resp.topics {
        if !asked.contains(t.name.as_str()) {
            continue;
        }
        let count = t
            .partitions
            .iter()
            .map(|p| p.partition + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let mut partitions = vec![
            PartitionInfo {
                leader: -1,
                epoch: -1
            };
            count
        ];
        for p in &t.partitions {
            if let Ok(i) = usize::try_from(p.partition) {
                partitions[i] = PartitionInfo {
                    leader: p.leader,
                    epoch: p.leader_epoch,
                };
            }
        }
        topics.insert(
            t.name,
            Arc::new(TopicInfo {
                id: t.topic_id,
                partitions,
            }),
        );
    }
    let unknown = asked
        .iter()
        .filter(|n| !topics.contains_key(**n))
        .map(|n| n.to_string())
        .collect();
    Snapshot {
        version,
        fetched_at: Some(Instant::now()),
        nodes,
        topics,
        unknown,
    }
}

/// Keeps, in `next`, every partition leader of `previous` with a higher epoch than `next` says
/// (same topic id only): answers come from different coordinators (a watch on one, a refresh
/// from another, whose view may lag) and from `NOT_LEADER` hints, and an older answer must not
/// send requests back to a deposed leader. The kept leader's address is carried over when the
/// newer answer lacks it.
///
/// Likewise a leader whose node the newer answer no longer lists keeps its address: a node whose
/// lease lapsed (an etcd hiccup, or a node cut from etcd alone) still leads while the controller
/// probes it, and requests should keep going to it rather than wait for a new leader.
pub(super) fn keep_newer_leaders(previous: &Snapshot, next: &mut Snapshot) {
    let unlisted: BTreeSet<i32> = next
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(|p| p.leader))
        .filter(|l| *l >= 0 && !next.nodes.contains_key(l))
        .collect();
    for leader in unlisted {
        if let Some(addr) = previous.nodes.get(&leader) {
            next.nodes.insert(leader, addr.clone());
        }
    }
    for (name, topic) in next.topics.iter_mut() {
        let Some(old) = previous.topics.get(name).filter(|old| old.id == topic.id) else {
            continue;
        };
        let newer: Vec<(usize, PartitionInfo)> = old
            .partitions
            .iter()
            .zip(&topic.partitions)
            .enumerate()
            .filter(|(_, (o, n))| o.epoch > n.epoch)
            .map(|(i, (o, _))| (i, *o))
            .collect();
        if newer.is_empty() {
            continue;
        }
        let topic = Arc::make_mut(topic);
        for (i, info) in newer {
            topic.partitions[i] = info;
            if let Some(addr) = previous.nodes.get(&info.leader) {
                next.nodes
                    .entry(info.leader)
                    .or_insert_with(|| addr.clone());
            }
        }
    }
}

/// A hint is news when it names a different leader or a newer epoch, and is not older than what
/// the cache holds (hints from a stale node must not undo a newer view).
pub(super) fn hint_is_news(
    current: PartitionInfo,
    known_address: Option<&str>,
    hint: &LeaderHint,
) -> bool {
    if hint.leader_epoch < current.epoch {
        return false;
    }
    hint.leader_epoch > current.epoch
        || hint.node_id != current.leader
        || known_address != Some(hint.address.as_str())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn partition(partition: i32, leader: i32, epoch: i32) -> pb::PartitionMetadata {
        pb::PartitionMetadata {
            partition,
            leader,
            leader_epoch: epoch,
            ..Default::default()
        }
    }

    fn node(node_id: i32) -> pb::NodeInfo {
        pb::NodeInfo {
            node_id,
            address: format!("127.0.0.{node_id}:1"),
            ..Default::default()
        }
    }

    /// Topic "a" (partition 0 leaderless at epoch 2, partition 1 led by node 1 at epoch 3) and
    /// topic "other", on node 1.
    pub(in crate::metadata) fn response() -> pb::GetMetadataResponse {
        pb::GetMetadataResponse {
            cluster_name: "c".into(),
            nodes: vec![node(1)],
            topics: vec![
                pb::TopicMetadata {
                    name: "a".into(),
                    topic_id: Bytes::from_static(&[1; 16]),
                    partitions: vec![partition(1, 1, 3), partition(0, -1, 2)],
                    internal: false,
                },
                pb::TopicMetadata {
                    name: "other".into(),
                    topic_id: Bytes::new(),
                    partitions: vec![partition(0, 1, 0)],
                    internal: false,
                },
            ],
            controller: None,
        }
    }

    #[test]
    fn snapshot_keeps_asked_topics_with_partitions_by_id_and_records_unknown_ones() {
        let snap = build_snapshot(1, &["a".into(), "missing".into()], response());
        assert_eq!(snap.topics.len(), 1);
        let a = &snap.topics["a"];
        assert_eq!(
            a.partitions[0],
            PartitionInfo {
                leader: -1,
                epoch: 2
            }
        );
        assert_eq!(
            a.partitions[1],
            PartitionInfo {
                leader: 1,
                epoch: 3
            }
        );
        assert!(snap.unknown.contains("missing"));
        assert_eq!(snap.nodes[&1], "127.0.0.1:1");
    }

    #[test]
    fn an_older_answer_never_moves_a_leader_back_but_a_newer_one_does() {
        let asked = ["a".to_string()];
        let mut newer = response();
        newer.nodes.push(node(2));
        newer.topics[0].partitions = vec![partition(0, 2, 4), partition(1, 2, 4)];
        let previous = build_snapshot(1, &asked, newer);

        // A lagging coordinator still names node 1 (epoch 3) for partition 1, and has forgotten
        // node 2; partition 0 it reports at a newer epoch still.
        let mut lagging = response();
        lagging.topics[0].partitions = vec![partition(0, 1, 5), partition(1, 1, 3)];
        let mut next = build_snapshot(2, &asked, lagging);
        keep_newer_leaders(&previous, &mut next);
        let a = &next.topics["a"];
        assert_eq!(
            a.partitions[0],
            PartitionInfo {
                leader: 1,
                epoch: 5
            }
        );
        assert_eq!(
            a.partitions[1],
            PartitionInfo {
                leader: 2,
                epoch: 4
            }
        );
        assert_eq!(
            next.nodes[&2], "127.0.0.2:1",
            "the kept leader stays reachable"
        );

        // A re-created topic (new id) starts over: its epochs are not comparable.
        let mut recreated = response();
        recreated.topics[0].topic_id = Bytes::from_static(&[9; 16]);
        let mut next = build_snapshot(3, &asked, recreated);
        keep_newer_leaders(&previous, &mut next);
        assert_eq!(next.topics["a"].partitions[1].leader, 1);
    }

    #[test]
    fn a_leader_no_longer_listed_among_the_nodes_keeps_its_address() {
        let asked = ["a".to_string()];
        let mut before = response();
        before.nodes.push(node(2));
        before.topics[0].partitions = vec![partition(0, 2, 4), partition(1, 1, 4)];
        let previous = build_snapshot(1, &asked, before);
        let mut lapsed = response();
        lapsed.topics[0].partitions = vec![partition(0, 2, 4), partition(1, 1, 4)];
        let mut next = build_snapshot(2, &asked, lapsed);
        assert!(!next.nodes.contains_key(&2));
        keep_newer_leaders(&previous, &mut next);
        assert_eq!(next.nodes[&2], "127.0.0.2:1");
    }

    #[test]
    fn hints_move_the_leader_forward_but_never_back() {
        let current = PartitionInfo {
            leader: 1,
            epoch: 5,
        };
        let hint = |node_id, leader_epoch| LeaderHint {
            node_id,
            address: format!("n{node_id}:1"),
            leader_epoch,
        };
        assert!(hint_is_news(current, Some("n1:1"), &hint(2, 6)));
        assert!(hint_is_news(current, Some("n1:1"), &hint(2, 5)));
        assert!(!hint_is_news(current, Some("n1:1"), &hint(1, 5)));
        assert!(!hint_is_news(current, Some("n1:1"), &hint(2, 4)));
    }
}
