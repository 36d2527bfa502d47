//! The controller's writes against the in-memory metadata store: placement reaches the store,
//! topic identity is fresh per creation, and a deposed controller cannot write.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use sluice_coordinator::controller::Controller;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::keys::Keys;
use sluice_metadata::{Compare, MetaStore, Op, Txn};
use sluice_proto::pb::{self, ErrorCode};

async fn setup(nodes: i32) -> (Controller, i64) {
    let store: Arc<dyn MetaStore> = EmbeddedStore::in_memory();
    let keys = Keys::for_cluster("t");
    for id in 0..nodes {
        let rec = pb::NodeRecord {
            node_id: id,
            address: format!("127.0.0.1:{}", 9000 + id),
            ..Default::default()
        };
        store
            .txn(Txn::new().then(Op::Put {
                key: keys.node(id),
                value: rec.encode_to_vec().into(),
                lease: 0,
            }))
            .await
            .unwrap();
    }
    let fence = store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(keys.controller(), 0))
                .then(Op::Put {
                    key: keys.controller(),
                    value: pb::ControllerRecord {
                        coordinator_id: "c0".into(),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into(),
                    lease: 0,
                }),
        )
        .await
        .unwrap()
        .revision;
    let cache = Arc::new(
        MetadataCache::start(store.clone(), keys.clone())
            .await
            .unwrap(),
    );
    (
        Controller {
            store,
            keys,
            cache,
            default_replication_factor: 1,
        },
        fence,
    )
}

fn create(name: &str, partitions: i32) -> pb::CreateTopicRequest {
    pb::CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: 1,
        config: HashMap::new(),
        validate_only: false,
    }
}

#[tokio::test]
async fn created_topic_is_spread_over_live_nodes_and_described() {
    let (c, fence) = setup(3).await;
    let t = c.create_topic(fence, create("orders", 6)).await.unwrap();
    assert_eq!(t.partitions.len(), 6);
    let mut per_node = HashMap::new();
    for p in &t.partitions {
        *per_node.entry(p.leader).or_insert(0) += 1;
        assert_eq!(p.replicas, vec![p.leader]);
        assert_eq!(p.isr, vec![p.leader]);
    }
    assert_eq!(per_node.len(), 3);
    assert!(per_node.values().all(|n| *n == 2));
    assert_eq!(
        t.config.get("cleanup.policy").map(String::as_str),
        Some("delete"),
        "defaults are filled in"
    );
}

#[tokio::test]
async fn replicated_topic_places_distinct_replicas_all_in_sync() {
    let (c, fence) = setup(3).await;
    let mut req = create("replicated", 6);
    req.replication_factor = 3;
    let t = c.create_topic(fence, req).await.unwrap();
    assert_eq!(t.replication_factor, 3);
    let mut leaders = HashMap::new();
    for p in &t.partitions {
        let mut distinct = p.replicas.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct, vec![0, 1, 2]);
        assert_eq!(p.leader, p.replicas[0], "the preferred replica leads");
        assert_eq!(p.leader_epoch, 0);
        assert_eq!(p.isr, p.replicas);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert!(
        leaders.values().all(|n| *n == 2),
        "leaders spread: {leaders:?}"
    );
    let stored = sluice_coordinator::describe::topic(&c.cache.view(), "replicated").unwrap();
    assert_eq!(
        stored.partitions, t.partitions,
        "the store holds what was answered"
    );
}

#[tokio::test]
async fn recreated_topic_gets_a_fresh_id_and_new_partition_states() {
    let (c, fence) = setup(1).await;
    let first = c.create_topic(fence, create("t1", 2)).await.unwrap();
    c.delete_topic(fence, "t1").await.unwrap();
    assert!(
        c.cache.view().partitions.is_empty(),
        "partition states go with the topic"
    );
    let second = c.create_topic(fence, create("t1", 2)).await.unwrap();
    assert_ne!(first.topic_id, second.topic_id);
}

#[tokio::test]
async fn create_partitions_only_grows_and_keeps_existing_assignments() {
    let (c, fence) = setup(2).await;
    let before = c.create_topic(fence, create("g", 2)).await.unwrap();
    let after = c.create_partitions(fence, "g", 5).await.unwrap();
    assert_eq!(after.partitions.len(), 5);
    assert_eq!(&after.partitions[..2], &before.partitions[..]);
    let err = c.create_partitions(fence, "g", 5).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPartitions);
}

#[tokio::test]
async fn a_deposed_controller_cannot_write() {
    let (c, fence) = setup(1).await;
    // Another coordinator takes over: the controller key is re-created.
    c.store
        .txn(Txn::new().then(Op::Delete(c.keys.controller())))
        .await
        .unwrap();
    c.store
        .txn(Txn::new().then(Op::Put {
            key: c.keys.controller(),
            value: Vec::new().into(),
            lease: 0,
        }))
        .await
        .unwrap();
    let err = c.create_topic(fence, create("late", 1)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotController);
    assert!(c.cache.view().topics.is_empty());
    assert!(
        c.store
            .list(&c.keys.partitions())
            .await
            .unwrap()
            .0
            .is_empty(),
        "no partition state left behind"
    );
}

#[tokio::test]
async fn duplicate_and_invalid_topics_are_refused() {
    let (c, fence) = setup(1).await;
    c.create_topic(fence, create("dup", 1)).await.unwrap();
    assert_eq!(
        c.create_topic(fence, create("dup", 1))
            .await
            .unwrap_err()
            .code,
        ErrorCode::TopicAlreadyExists
    );
    let mut rf2 = create("rf2", 1);
    rf2.replication_factor = 2;
    assert_eq!(
        c.create_topic(fence, rf2).await.unwrap_err().code,
        ErrorCode::InvalidReplicationFactor,
        "more replicas than live nodes"
    );
    assert_eq!(
        c.create_topic(fence, create("__x", 1))
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidTopicName
    );
}

#[tokio::test]
async fn the_offsets_topic_is_created_once_internal_and_compacted() {
    let (c, fence) = setup(2).await;
    let t = c.ensure_offsets_topic(fence, 10).await.unwrap();
    assert_eq!(
        (
            t.name.as_str(),
            t.partitions.len(),
            t.replication_factor,
            t.internal
        ),
        ("__sluice_offsets", 10, 2, true)
    );
    assert_eq!(
        t.config.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    let again = c.ensure_offsets_topic(fence, 10).await.unwrap();
    assert_eq!(again.topic_id, t.topic_id, "created once");
    let err = c.delete_topic(fence, "__sluice_offsets").await.unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::InvalidRequest,
        "internal topics cannot be deleted"
    );
}
