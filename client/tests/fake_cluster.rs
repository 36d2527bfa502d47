//! Routing and retry behaviour that needs a node to misbehave on demand (errors without a
//! leader hint, a queue of refusals, a stale leader), against the in-process fake cluster (see
//! `support`). Everything a real node shows is tested against the sandbox (`sandbox.rs`).

mod support;

use std::time::Duration;

use sluice_client::{
    ApiError, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_proto::pb::ErrorCode;
use support::FakeCluster;

fn producer_config(cluster: &FakeCluster) -> ProducerConfig {
    ProducerConfig {
        client: cluster.client_config(),
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(10),
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    }
}

fn consumer_config(cluster: &FakeCluster) -> ConsumerConfig {
    ConsumerConfig {
        client: cluster.client_config(),
        max_wait: Duration::from_millis(100),
        queue_records: 16,
        ..ConsumerConfig::default()
    }
}

async fn next_record(
    consumer: &mut Consumer,
) -> sluice_client::Result<sluice_client::ConsumerRecord> {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a record within 5 s")
        .expect("partitions are assigned")
}

#[tokio::test]
async fn not_leader_hint_reroutes_produce_and_fetch_without_a_metadata_refresh() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    producer
        .send(ProducerRecord::new("t", "first"))
        .await
        .unwrap()
        .await
        .unwrap();
    let calls = cluster.calls();
    cluster.move_leader_silently("t", 2);
    let md = producer
        .send(ProducerRecord::new("t", "second"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, 1);
    assert_eq!(cluster.calls(), calls, "the hint was enough");
    let accepted = cluster.state.lock().unwrap().accepted.clone();
    assert_eq!(accepted.last().unwrap().node, 2, "node 2 took the retry");

    // A fresh consumer learns node 1 from the (stale) coordinator and follows the hint too.
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Offset(0))
        .await
        .unwrap();
    assert_eq!(
        next_record(&mut consumer).await.unwrap().value.unwrap(),
        "first"
    );
    assert_eq!(
        next_record(&mut consumer).await.unwrap().value.unwrap(),
        "second"
    );
}

#[tokio::test]
async fn not_leader_without_hint_refreshes_metadata_and_retries() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    cluster.state.lock().unwrap().no_hints = true;
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    producer
        .send(ProducerRecord::new("t", "a"))
        .await
        .unwrap()
        .await
        .unwrap();
    cluster.move_leader_silently("t", 2);
    let pending = producer.send(ProducerRecord::new("t", "b")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.advertise_leaders("t");
    let md = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(md.offset, 1);
    assert!(cluster.calls() >= 2);
}

#[tokio::test]
async fn retriable_errors_are_retried_without_reordering_a_partition() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    {
        let mut st = cluster.state.lock().unwrap();
        for _ in 0..3 {
            st.produce_faults
                .push_back(ApiError::new(ErrorCode::NotEnoughReplicas, "isr too small"));
        }
    }
    let cfg = ProducerConfig {
        batch_size: 200,
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..30 {
        let r = ProducerRecord::new("t", format!("{i:04}")).partition(0);
        deliveries.push(producer.send(r).await.unwrap());
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.await.unwrap().offset);
    }
    assert_eq!(
        offsets,
        (0..30).collect::<Vec<i64>>(),
        "send order is log order"
    );
    let batches = cluster.state.lock().unwrap().accepted.len();
    assert!(batches > 1, "several batches were in play");
}

#[tokio::test]
async fn non_retriable_error_fails_the_batch_and_later_batches_still_go() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    cluster
        .state
        .lock()
        .unwrap()
        .produce_faults
        .push_back(ApiError::new(ErrorCode::BatchTooLarge, "too large"));
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    let err = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BatchTooLarge));
    assert!(!err.is_retriable());
    let md = producer
        .send(ProducerRecord::new("t", "y"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, 0);
}

#[tokio::test]
async fn retries_end_at_the_delivery_timeout() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    {
        let mut st = cluster.state.lock().unwrap();
        for _ in 0..1000 {
            st.produce_faults
                .push_back(ApiError::new(ErrorCode::NotEnoughReplicas, "isr too small"));
        }
    }
    let cfg = ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let started = std::time::Instant::now();
    let err = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotEnoughReplicas));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_burst_of_leader_errors_costs_one_metadata_refresh() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 8, 1);
    cluster.state.lock().unwrap().no_hints = true;
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    for p in 0..8 {
        producer
            .send(ProducerRecord::new("t", "warm").partition(p))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let before = cluster.calls();
    cluster.move_leader_silently("t", 2);
    cluster.advertise_leaders("t");
    let mut deliveries = Vec::new();
    for p in 0..8 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", "moved").partition(p))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        assert_eq!(d.await.unwrap().offset, 1);
    }
    let refreshes = cluster.calls() - before;
    assert!(
        (1..=2).contains(&refreshes),
        "{refreshes} refreshes for 8 failing partitions"
    );
}
