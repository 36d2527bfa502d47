//! Every request a user can get wrong is refused with its own gRPC code and stable error
//! code, no process panics, and nothing already written is lost or changed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_client::ClientError;
use sluice_integration::{ClusterSpec, TestCluster, produce_when_open};
use sluice_proto::batch::{BatchBuilder, Compression, Record};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient};

fn code_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Api(e)) => e.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn batch_of(values: &[&[u8]]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.push(&Record {
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        });
    }
    b.finish(0).unwrap()
}

async fn log_client(addr: &str) -> LogClient<tonic::transport::Channel> {
    LogClient::connect(format!("http://{addr}")).await.unwrap()
}

fn produce(topic: &str, partition: i32, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition,
        acks: 1,
        timeout_ms: 5_000,
        payload: Some(pb::produce_request::Payload::Batch(batch)),
        compression: 0,
        leader_epoch: -1,
        topic_id: Bytes::new(),
        producer: None,
    }
}

fn status_code(
    r: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
) -> (tonic::Code, ApiError) {
    let s = r.expect_err("request must be refused");
    (s.code(), ApiError::from_status(&s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_specific_codes_and_change_nothing() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();

    // Topic names.
    for name in ["", &"x".repeat(250), "bad/name", "has space", "__reserved"] {
        assert_eq!(
            code_of(admin.create_topic(name, 1, 1, BTreeMap::new()).await),
            ErrorCode::InvalidTopicName,
            "{name:?}"
        );
    }
    // Partition counts and replication factors.
    assert_eq!(
        code_of(admin.create_topic("t", 0, 1, BTreeMap::new()).await),
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        code_of(admin.create_topic("t", -2, 1, BTreeMap::new()).await),
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        code_of(admin.create_topic("t", 1, 3, BTreeMap::new()).await),
        ErrorCode::InvalidReplicationFactor
    );
    let mut cfg = BTreeMap::new();
    cfg.insert("retention.msec".to_string(), "1".to_string());
    assert_eq!(
        code_of(admin.create_topic("t", 1, 1, cfg).await),
        ErrorCode::InvalidConfig
    );
    // Unknown topics.
    assert_eq!(
        code_of(admin.describe_topic("nope").await),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        code_of(admin.delete_topic("nope").await),
        ErrorCode::UnknownTopic
    );

    // A real topic with a small batch limit, and one good record in it.
    let mut cfg = BTreeMap::new();
    cfg.insert("max.message.bytes".to_string(), "1024".to_string());
    let topic = admin.create_topic("guarded", 2, 1, cfg).await.unwrap();
    assert_eq!(
        code_of(admin.create_topic("guarded", 1, 1, BTreeMap::new()).await),
        ErrorCode::TopicAlreadyExists
    );
    let status = admin.describe_cluster().await.unwrap();
    let address = |id: i32| {
        status
            .nodes
            .iter()
            .find(|n| n.node_id == id)
            .unwrap()
            .address
            .clone()
    };
    let p0 = &topic.partitions[0];
    let mut leader = log_client(&address(p0.leader)).await;
    // The new partition may still be opening on its leader for a moment after creation.
    let good = produce_when_open(
        &mut leader,
        produce("guarded", 0, batch_of(&[b"kept"])),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(good.base_offset, 0);

    // Corrupt CRC: flip a byte inside the records.
    let mut corrupt = batch_of(&[b"will be corrupted"]).to_vec();
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0xff;
    let (grpc, err) = status_code(
        leader
            .produce(produce("guarded", 0, Bytes::from(corrupt.clone())))
            .await,
    );
    assert_eq!(
        (grpc, err.code),
        (tonic::Code::InvalidArgument, ErrorCode::CorruptBatch),
        "{err}"
    );
    // Batch over max.message.bytes.
    let big = vec![7u8; 4096];
    let (grpc, err) = status_code(
        leader
            .produce(produce("guarded", 0, batch_of(&[&big])))
            .await,
    );
    assert_eq!(
        (grpc, err.code),
        (tonic::Code::InvalidArgument, ErrorCode::BatchTooLarge),
        "{err}"
    );
    assert!(err.message.contains("max.message.bytes=1024"), "{err}");
    // Unknown topic and partition on the data plane.
    let (grpc, err) = status_code(
        leader
            .produce(produce("missing", 0, batch_of(&[b"x"])))
            .await,
    );
    assert_eq!(
        (grpc, err.code),
        (tonic::Code::NotFound, ErrorCode::UnknownTopic)
    );
    let (_, err) = status_code(
        leader
            .produce(produce("guarded", 9, batch_of(&[b"x"])))
            .await,
    );
    assert_eq!(err.code, ErrorCode::UnknownPartition);
    assert!(err.message.contains("has 2 partitions"), "{err}");
    // Invalid acks.
    let mut bad_acks = produce("guarded", 0, batch_of(&[b"x"]));
    bad_acks.acks = 5;
    assert_eq!(
        status_code(leader.produce(bad_acks).await).1.code,
        ErrorCode::InvalidRequest
    );
    // ProduceMany answers each request on its own: a corrupt batch beside a good one is refused
    // alone, and the good one is appended.
    let many = leader
        .produce_many(pb::ProduceManyRequest {
            requests: vec![
                produce("guarded", 0, batch_of(&[b"kept too"])),
                produce("guarded", 0, Bytes::from(corrupt)),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(many.results.len(), 2);
    assert_eq!(many.results[0].response.as_ref().unwrap().base_offset, 1);
    let refused = many.results[1]
        .error
        .as_ref()
        .expect("corrupt batch refused");
    assert_eq!(refused.code, ErrorCode::CorruptBatch as i32);
    assert!(!refused.retriable && many.results[1].response.is_none());
    assert!(
        many.results[1].message.contains("CRC"),
        "{}",
        many.results[1].message
    );
    // Produce to a node that does not lead the partition: NOT_LEADER with the leader's address.
    let other = if p0.leader == 0 { 1 } else { 0 };
    let mut follower = log_client(&address(other)).await;
    let (grpc, err) = status_code(
        follower
            .produce(produce("guarded", 0, batch_of(&[b"x"])))
            .await,
    );
    assert_eq!(
        (grpc, err.code),
        (tonic::Code::FailedPrecondition, ErrorCode::NotLeader)
    );
    let hint = err.leader.expect("leader hint");
    assert_eq!(
        (hint.node_id, hint.address),
        (p0.leader, address(p0.leader))
    );
    // Offset out of range says the valid range.
    let fetch = pb::FetchRequest {
        topic: "guarded".into(),
        partition: 0,
        offset: 1_000,
        max_bytes: 0,
        max_wait_ms: 0,
        min_bytes: 0,
        leader_epoch: -1,
        topic_id: Bytes::new(),
        decode: false,
        replica_read: false,
    };
    let (grpc, err) = status_code(leader.fetch(fetch.clone()).await);
    assert_eq!(
        (grpc, err.code),
        (tonic::Code::OutOfRange, ErrorCode::OffsetOutOfRange)
    );
    assert!(err.message.contains("0 to 2"), "{err}");

    // Nothing was lost or changed: the two good records are still the whole log.
    let ok = leader
        .fetch(pb::FetchRequest {
            offset: 0,
            decode: true,
            ..fetch
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.high_watermark, 2);
    let values: Vec<&[u8]> = ok.records.iter().map(|r| r.value.as_ref()).collect();
    assert_eq!(values, [&b"kept"[..], &b"kept too"[..]]);
    // And no process died.
    for p in cluster
        .coordinators
        .iter_mut()
        .chain(cluster.nodes.iter_mut())
    {
        assert!(p.exited().is_none(), "{} exited:\n{}", p.name, p.tail(30));
    }
}
