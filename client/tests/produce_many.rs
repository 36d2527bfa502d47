//! The producer sends the batches it drains together for one leader in one `ProduceMany`, each
//! answered on its own; against a node without it, one `Produce` per batch.

mod support;

use std::time::Duration;

use sluice_client::{ApiError, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::pb::ErrorCode;
use support::FakeCluster;

/// Long enough that the records of each test are drained in one go.
fn config(cluster: &FakeCluster) -> ProducerConfig {
    ProducerConfig {
        client: cluster.client_config(),
        linger: Duration::from_millis(200),
        retry_backoff: Duration::from_millis(10),
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    }
}

/// Sends one record to each of `partitions` partitions of `t`, flushes, and returns the offsets.
async fn one_record_per_partition(producer: &Producer, partitions: i32) -> Vec<i64> {
    let mut deliveries = Vec::new();
    for p in 0..partitions {
        let record = ProducerRecord::new("t", format!("p{p}")).partition(p);
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.await.unwrap().offset);
    }
    offsets
}

#[tokio::test]
async fn batches_for_one_leader_travel_in_one_produce_many() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 6, 1);
    {
        let mut st = cluster.state.lock().unwrap();
        let t = st.topics.get_mut("t").unwrap();
        for p in [1, 3, 5] {
            t.leaders[p] = 2;
            t.advertised[p] = 2;
        }
    }
    let producer = Producer::new(config(&cluster)).await.unwrap();
    assert_eq!(one_record_per_partition(&producer, 6).await, vec![0; 6]);
    let st = cluster.state.lock().unwrap();
    let mut calls = st.produce_many.clone();
    calls.sort();
    assert_eq!(
        calls,
        vec![3, 3],
        "one call per node, three partitions each"
    );
    assert_eq!(st.requests.len(), 6, "every batch was produced once");
}

#[tokio::test]
async fn one_refused_partition_is_retried_alone_and_the_others_land_once() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 4, 1);
    cluster
        .state
        .lock()
        .unwrap()
        .produce_faults
        .push_back(ApiError::new(ErrorCode::NotEnoughReplicas, "isr too small"));
    let producer = Producer::new(config(&cluster)).await.unwrap();
    assert_eq!(one_record_per_partition(&producer, 4).await, vec![0; 4]);
    let st = cluster.state.lock().unwrap();
    assert_eq!(st.accepted.len(), 4, "each partition's batch appended once");
    assert_eq!(st.requests.len(), 5, "four in the first call, one retry");
    assert_eq!(st.duplicates, 0);
}

#[tokio::test]
async fn requests_to_one_node_share_its_produce_stream() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 4, 1);
    let producer = Producer::new(config(&cluster)).await.unwrap();
    assert_eq!(one_record_per_partition(&producer, 4).await, vec![0; 4]);
    assert_eq!(one_record_per_partition(&producer, 4).await, vec![1; 4]);
    let st = cluster.state.lock().unwrap();
    assert_eq!(st.accepted.len(), 8, "every batch landed once");
    assert_eq!(st.produce_streams, 1, "one stream carried every request");
}
