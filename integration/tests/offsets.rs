//! Positions: list-offsets by timestamp, seeks, and the structured (codec-free) produce and
//! fetch path that clients in other languages use.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_integration::{ClusterSpec, TestCluster, produce_when_open};
use sluice_proto::pb::{self, log_client::LogClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_by_timestamp_earliest_and_offset_land_on_the_right_records() {
    let cluster = TestCluster::start(ClusterSpec::default()).await.unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("clock", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    for (i, ts) in [1_000i64, 2_000, 3_000, 4_000].into_iter().enumerate() {
        let r = ProducerRecord::new("clock", Bytes::from(format!("r{i}"))).timestamp_ms(ts);
        producer.send(r).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(ConsumerConfig {
        client: cluster.client_config(),
        ..Default::default()
    })
    .await
    .unwrap();
    consumer
        .assign(vec![("clock".into(), 0)], SeekTo::Timestamp(2_500))
        .await
        .unwrap();
    let r = consumer.next().await.unwrap().unwrap();
    assert_eq!(
        (r.offset, r.timestamp_ms, r.value.as_deref()),
        (2, 3_000, Some(&b"r2"[..]))
    );

    consumer.seek("clock", 0, SeekTo::Offset(1)).await.unwrap();
    assert_eq!(consumer.next().await.unwrap().unwrap().offset, 1);
    consumer.seek("clock", 0, SeekTo::Earliest).await.unwrap();
    assert_eq!(consumer.next().await.unwrap().unwrap().offset, 0);
    consumer.seek("clock", 0, SeekTo::Latest).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(700), consumer.next()).await;
    assert!(
        nothing.is_err(),
        "nothing after the end until something is produced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_records_round_trip_without_a_client_side_codec() {
    let cluster = TestCluster::start(ClusterSpec::default()).await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let topic = admin
        .create_topic("plain", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let leader = topic.partitions[0].leader;
    let status = admin.describe_cluster().await.unwrap();
    let addr = &status
        .nodes
        .iter()
        .find(|n| n.node_id == leader)
        .unwrap()
        .address;
    let mut log = LogClient::connect(format!("http://{addr}")).await.unwrap();
    let records = pb::RecordList {
        records: vec![
            pb::Record {
                key: Bytes::from_static(b"k"),
                has_key: true,
                value: Bytes::from_static(b"v1"),
                has_value: true,
                timestamp_ms: 42,
                ..Default::default()
            },
            pb::Record {
                value: Bytes::from_static(b"v2"),
                has_value: true,
                headers: vec![pb::Header {
                    key: "h".into(),
                    value: Bytes::from_static(b"x"),
                }],
                ..Default::default()
            },
        ],
    };
    let request = pb::ProduceRequest {
        topic: "plain".into(),
        partition: 0,
        acks: -1,
        timeout_ms: 5_000,
        payload: Some(pb::produce_request::Payload::Records(records)),
        compression: pb::Compression::Zstd as i32,
        leader_epoch: -1,
        topic_id: Bytes::new(),
        producer: None,
    };
    // The new partition may still be opening on its leader for a moment after creation.
    let produced = produce_when_open(&mut log, request, Duration::from_secs(10))
        .await
        .expect("produce");
    assert_eq!(produced.base_offset, 0);
    let fetched = log
        .fetch(pb::FetchRequest {
            topic: "plain".into(),
            partition: 0,
            offset: 1,
            decode: true,
            leader_epoch: -1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.high_watermark, 2);
    assert_eq!(
        fetched.records.len(),
        1,
        "records below the asked offset are skipped"
    );
    let r = &fetched.records[0];
    assert_eq!(
        (r.offset, r.has_key, r.value.as_ref()),
        (1, false, &b"v2"[..])
    );
    assert_eq!(r.headers[0].key, "h");
    assert!(r.timestamp_ms > 0, "a zero timestamp means now");
    let offsets = log
        .list_offsets(pb::ListOffsetsRequest {
            topic: "plain".into(),
            partition: 0,
            spec: Some(pb::list_offsets_request::Spec::TimestampMs(40)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((offsets.offset, offsets.timestamp_ms), (0, 42));
}
