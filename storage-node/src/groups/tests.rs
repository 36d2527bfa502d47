//! Shard tests on the in-memory log: the state a shard persists is the state a new shard
//! replays, and the refusals clients branch on.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_groups::{GroupConfig, GroupState, HeartbeatRequest, Partitions, TopicPartition};
use sluice_proto::model::TopicId;
use sluice_proto::pb::ErrorCode;

use super::codec::Committed;
use super::{HeartbeatInput, Shard, Subscription, TopicCatalog};
use crate::log::memory::MemoryLog;
use crate::log::{LogStore, PartitionKey};
use crate::replica::{Assignment, Leadership, Replica, ReplicaConfig};
use crate::writer::Writer;

struct Fixture {
    log: Arc<dyn LogStore>,
    writer: Writer,
    replica: Arc<Replica>,
}

impl Fixture {
    fn new() -> Self {
        let log: Arc<dyn LogStore> = Arc::new(MemoryLog::new());
        let (writer, _thread) = Writer::spawn(log.clone(), true);
        let key = PartitionKey {
            topic_id: TopicId([9; 16]),
            partition: 0,
        };
        let opened = log.open(key).unwrap();
        let replica = Replica::new(
            0,
            "__sluice_offsets".into(),
            key,
            opened,
            Assignment {
                leadership: Leadership {
                    leader: 0,
                    epoch: 1,
                },
                replicas: vec![0],
                isr: vec![0],
                partition_epoch: 0,
                isr_incarnations: Default::default(),
                adding: Vec::new(),
            },
            ReplicaConfig {
                max_batch_bytes: 1 << 20,
                min_insync: 1,
                max_lag_ms: 10_000,
                ..Default::default()
            },
        );
        Self {
            log,
            writer,
            replica,
        }
    }

    /// A new shard over the same partition, loaded from its log (as after a failover).
    async fn shard(&self) -> Arc<Shard> {
        let s = Shard::new(
            self.replica.clone(),
            self.writer.clone(),
            self.log.clone(),
            GroupConfig::default(),
        );
        s.load().await;
        s
    }
}

fn catalog() -> TopicCatalog {
    [("t".to_string(), 12)].into()
}

/// A well-behaved member: owns what it was told, reports it.
#[derive(Default)]
struct Member {
    id: String,
    epoch: i32,
    owned: Partitions,
}

impl Member {
    async fn heartbeat(&mut self, shard: &Arc<Shard>, epoch: i32) {
        let input = HeartbeatInput {
            group_id: "g".into(),
            assignor: "uniform".into(),
            request: HeartbeatRequest {
                member_id: self.id.clone(),
                member_epoch: epoch,
                owned_partitions: self.owned.clone(),
                ..HeartbeatRequest::default()
            },
            subscription: Subscription {
                topics: BTreeSet::from(["t".to_string()]),
                pattern: None,
            },
        };
        let r = shard.heartbeat(input, &catalog()).await.unwrap();
        self.id = r.member_id;
        self.epoch = r.member_epoch;
        self.owned = r.assignment;
    }
}

/// Three members joined and heartbeating until the group is stable.
async fn stable_group(shard: &Arc<Shard>) -> Vec<Member> {
    let mut members: Vec<Member> = (0..3).map(|_| Member::default()).collect();
    for m in &mut members {
        m.heartbeat(shard, 0).await;
    }
    for _ in 0..10 {
        for m in &mut members {
            let epoch = m.epoch;
            m.heartbeat(shard, epoch).await;
        }
    }
    members
}

#[tokio::test]
async fn three_members_share_twelve_partitions_and_a_new_shard_replays_them() {
    let f = Fixture::new();
    let shard = f.shard().await;
    let members = stable_group(&shard).await;
    for m in &members {
        assert_eq!(m.owned.len(), 4, "member {} owns {:?}", m.id, m.owned);
    }
    let all: BTreeSet<&TopicPartition> = members.iter().flat_map(|m| &m.owned).collect();
    assert_eq!(all.len(), 12, "no partition is owned twice");
    let commit = Committed {
        offset: 42,
        metadata: "m".into(),
    };
    // A member commits a partition it owns (others' are refused).
    let p = members[0]
        .owned
        .iter()
        .next()
        .cloned()
        .expect("owns partitions");
    shard
        .commit(
            "g",
            &members[0].id,
            members[0].epoch,
            vec![(p.clone(), commit.clone())],
        )
        .await
        .unwrap();
    let (before, offsets_before) = shard.describe("g").await.unwrap();
    assert_eq!(before.state, GroupState::Stable);
    assert_eq!(offsets_before.get(&p), Some(&commit));

    let replayed = f.shard().await;
    let (after, offsets_after) = replayed.describe("g").await.unwrap();
    assert_eq!(
        after, before,
        "members, epochs and assignments survive failover"
    );
    assert_eq!(offsets_after, offsets_before);
    let fetched = replayed.fetch_offsets("g", None).await.unwrap();
    assert_eq!(fetched, vec![(p, Some(commit))]);
}

#[tokio::test]
async fn a_commit_with_a_stale_member_epoch_is_fenced() {
    let f = Fixture::new();
    let shard = f.shard().await;
    let mut first = Member::default();
    first.heartbeat(&shard, 0).await;
    let stale = first.epoch;
    let members = stable_group(&shard).await;
    let id = first.id.clone();
    assert!(members.iter().all(|m| m.epoch > stale));
    // Others joined after `first`, so the group epoch moved on; `first` reconciles (releases
    // what is revoked) and advances, and a commit carrying its old epoch is a zombie's.
    for _ in 0..3 {
        let epoch = first.epoch;
        first.heartbeat(&shard, epoch).await;
    }
    assert!(first.epoch > stale);
    let p = TopicPartition::new("t", 0);
    let c = Committed {
        offset: 1,
        metadata: String::new(),
    };
    let err = shard
        .commit("g", &id, stale, vec![(p.clone(), c.clone())])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FencedMemberEpoch, "{err}");
    let err = shard
        .commit("g", "nobody", 1, vec![(p.clone(), c.clone())])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownMemberId, "{err}");
    let err = shard.commit("g", "", -1, vec![(p, c)]).await.unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::UnknownMemberId,
        "no admin commit while the group has members"
    );
}

#[tokio::test]
async fn a_group_is_deleted_only_when_empty_and_stays_deleted_after_replay() {
    let f = Fixture::new();
    let shard = f.shard().await;
    let mut members = stable_group(&shard).await;
    let err = shard.delete("g").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::GroupNotEmpty, "{err}");
    for m in &mut members {
        m.heartbeat(&shard, -1).await;
    }
    let c = Committed {
        offset: 7,
        metadata: String::new(),
    };
    shard
        .commit("g", "", -1, vec![(TopicPartition::new("t", 1), c)])
        .await
        .expect("admin commits are allowed once the group is empty");
    shard.delete("g").await.unwrap();
    let err = shard.describe("g").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::GroupIdNotFound);
    let replayed = f.shard().await;
    assert_eq!(
        replayed.describe("g").await.unwrap_err().code,
        ErrorCode::GroupIdNotFound
    );
    assert!(replayed.fetch_offsets("g", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn expired_members_are_removed_and_the_removal_is_persisted() {
    let f = Fixture::new();
    let shard = f.shard().await;
    stable_group(&shard).await;
    let deadline = shard
        .next_deadline_ms()
        .await
        .expect("members have sessions");
    shard.expire_due(deadline + 3_600_000).await.unwrap();
    let (d, _) = shard.describe("g").await.unwrap();
    assert_eq!(d.state, GroupState::Empty);
    let (replayed, _) = f.shard().await.describe("g").await.unwrap();
    assert_eq!(replayed, d);
}

#[tokio::test]
async fn a_shard_answers_load_in_progress_until_loaded() {
    let f = Fixture::new();
    let shard = Shard::new(
        f.replica.clone(),
        f.writer.clone(),
        f.log.clone(),
        GroupConfig::default(),
    );
    let err = shard.list().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::CoordinatorLoadInProgress);
    shard.load().await;
    assert!(shard.list().await.unwrap().is_empty());
}

/// Heartbeats of a member subscribed to `topics` (both exist in the catalog).
async fn beat(shard: &Arc<Shard>, m: &mut Member, topics: &[&str]) {
    let catalog: TopicCatalog = [("t".to_string(), 12), ("u".to_string(), 4)].into();
    let input = HeartbeatInput {
        group_id: "mixed".into(),
        assignor: "uniform".into(),
        request: HeartbeatRequest {
            member_id: m.id.clone(),
            member_epoch: m.epoch,
            owned_partitions: m.owned.clone(),
            ..HeartbeatRequest::default()
        },
        subscription: Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: None,
        },
    };
    let r = shard.heartbeat(input, &catalog).await.unwrap();
    m.id = r.member_id;
    m.epoch = r.member_epoch;
    m.owned = r.assignment;
}

#[tokio::test]
async fn members_with_different_subscriptions_converge_and_stay_stable() {
    let f = Fixture::new();
    let shard = f.shard().await;
    let (mut a, mut b) = (Member::default(), Member::default());
    for _ in 0..12 {
        beat(&shard, &mut a, &["t"]).await;
        beat(&shard, &mut b, &["t", "u"]).await;
    }
    let epochs = (a.epoch, b.epoch);
    for _ in 0..5 {
        beat(&shard, &mut a, &["t"]).await;
        beat(&shard, &mut b, &["t", "u"]).await;
    }
    assert_eq!((a.epoch, b.epoch), epochs, "no rebalance without a change");
    assert!(
        b.owned.iter().filter(|tp| tp.topic == "u").count() == 4,
        "only b subscribes to u: {:?}",
        b.owned
    );
    assert_eq!(a.owned.len() + b.owned.len(), 16);
}
