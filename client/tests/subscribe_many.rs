//! A consumer reads every partition one node leads through one `SubscribeMany` stream; against
//! a node without it, through one `Subscribe` per partition.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_client::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo};
use support::FakeCluster;

const PARTITIONS: i32 = 4;

/// Appends records `from..to` to every partition; record i of a partition lands at offset i.
async fn produce(cluster: &FakeCluster, from: i64, to: i64) {
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        linger: Duration::from_millis(1),
        ..ProducerConfig::default()
    })
    .await
    .unwrap();
    for i in from..to {
        for p in 0..PARTITIONS {
            let r = ProducerRecord::new("t", format!("{p}-{i}")).partition(p);
            producer.send(r).await.unwrap();
        }
    }
    producer.flush().await.unwrap();
}

/// Reads `n` records and returns the offsets seen per partition, in arrival order.
async fn read(consumer: &mut Consumer, n: usize) -> BTreeMap<i32, Vec<i64>> {
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for _ in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a record within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(r.value.unwrap(), format!("{}-{}", r.partition, r.offset));
        seen.entry(r.partition).or_default().push(r.offset);
    }
    seen
}

async fn consumer_of_all(cluster: &FakeCluster) -> Consumer {
    let mut consumer = Consumer::new(ConsumerConfig {
        client: cluster.client_config(),
        max_wait: Duration::from_millis(100),
        queue_records: 16,
        ..ConsumerConfig::default()
    })
    .await
    .unwrap();
    let all = (0..PARTITIONS).map(|p| ("t".to_string(), p)).collect();
    consumer.assign(all, SeekTo::Earliest).await.unwrap();
    consumer
}

fn in_order(n: i64) -> BTreeMap<i32, Vec<i64>> {
    (0..PARTITIONS).map(|p| (p, (0..n).collect())).collect()
}

#[tokio::test]
async fn partitions_of_one_node_share_one_stream_and_arrive_in_order() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", PARTITIONS as usize, 1);
    produce(&cluster, 0, 10).await;
    let mut consumer = consumer_of_all(&cluster).await;
    assert_eq!(read(&mut consumer, 40).await, in_order(10));
    // Records produced while the consumer tails arrive through the same stream.
    produce(&cluster, 10, 15).await;
    let more = read(&mut consumer, 20).await;
    assert_eq!(
        more,
        (0..PARTITIONS).map(|p| (p, (10..15).collect())).collect()
    );
    let st = cluster.state.lock().unwrap();
    assert_eq!(st.subscription_streams, 1, "one stream for the node");
    assert_eq!(
        st.subscribes, PARTITIONS as usize,
        "one subscription per partition"
    );
}

#[tokio::test]
async fn a_seek_moves_one_partition_and_leaves_the_others_streaming() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", PARTITIONS as usize, 1);
    produce(&cluster, 0, 10).await;
    let mut consumer = consumer_of_all(&cluster).await;
    assert_eq!(read(&mut consumer, 40).await, in_order(10));
    consumer.seek("t", 2, SeekTo::Offset(7)).await.unwrap();
    assert_eq!(
        read(&mut consumer, 3).await,
        BTreeMap::from([(2, vec![7, 8, 9])])
    );
    produce(&cluster, 10, 11).await;
    assert_eq!(
        read(&mut consumer, 4).await,
        (0..PARTITIONS).map(|p| (p, vec![10])).collect()
    );
}
