//! Producer, consumer and routing behaviour over real gRPC against an in-process fake cluster
//! (see `support`). End-to-end tests against the real coordinator and storage nodes live in the
//! integration crate.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sluice_client::{
    Acks, ApiError, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo, partition_for_key,
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
async fn keyed_records_land_on_murmur2_partitions_and_read_back_in_order() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("orders", 3, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let key = format!("key-{}", i % 7);
        let record = ProducerRecord::new("orders", format!("v{i}"))
            .key(key.clone())
            .header("i", i.to_string());
        deliveries.push((key, producer.send(record).await.unwrap()));
    }
    producer.flush().await.unwrap();
    let mut last = [-1i64; 3];
    for (key, d) in deliveries {
        let md = d.await.unwrap();
        assert_eq!(md.partition, partition_for_key(key.as_bytes(), 3));
        assert!(
            md.offset > last[md.partition as usize],
            "offsets grow in send order"
        );
        last[md.partition as usize] = md.offset;
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    let partitions = consumer.partitions_for("orders").await.unwrap();
    assert_eq!(partitions, vec![0, 1, 2]);
    let tps = partitions
        .into_iter()
        .map(|p| ("orders".to_string(), p))
        .collect();
    consumer.assign(tps, SeekTo::Earliest).await.unwrap();
    let mut seen = Vec::new();
    let mut next_offset = [0i64; 3];
    for _ in 0..60 {
        let r = next_record(&mut consumer).await.unwrap();
        assert_eq!(
            r.offset, next_offset[r.partition as usize],
            "no gaps, no reordering"
        );
        next_offset[r.partition as usize] += 1;
        assert_eq!(r.headers.len(), 1);
        seen.push(r.value.unwrap());
    }
    seen.sort();
    let mut want: Vec<Bytes> = (0..60).map(|i| Bytes::from(format!("v{i}"))).collect();
    want.sort();
    assert_eq!(seen, want);
    for p in 0..3 {
        assert_eq!(consumer.position("orders", p), Some(last[p as usize] + 1));
    }
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
async fn acks_zero_resolves_with_offset_minus_one() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let cfg = ProducerConfig {
        acks: Acks::None,
        enable_idempotence: false,
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let md = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, -1);
    producer.close().await.unwrap();
    assert_eq!(cluster.state.lock().unwrap().accepted.len(), 1);
}

#[tokio::test]
async fn unknown_topic_and_partition_fail_send_at_once() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 2, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    let err = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    let err = producer
        .send(ProducerRecord::new("t", "x").partition(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
}

#[tokio::test]
async fn send_waits_when_buffer_memory_is_used_up() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let cfg = ProducerConfig {
        batch_size: 1024,
        buffer_memory: 4096,
        linger: Duration::ZERO,
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let gate = cluster.produce_gate.write().await;
    let value = vec![b'x'; 500];
    let mut deliveries = Vec::new();
    let blocked = loop {
        let send = producer.send(ProducerRecord::new("t", value.clone()));
        match tokio::time::timeout(Duration::from_millis(200), send).await {
            Ok(d) => deliveries.push(d.unwrap()),
            Err(_) => break deliveries.len(),
        }
        assert!(deliveries.len() < 20, "send never blocked");
    };
    assert!(blocked >= 4, "buffer holds several records before blocking");
    drop(gate);
    producer
        .send(ProducerRecord::new("t", value.clone()))
        .await
        .unwrap()
        .await
        .unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
}

#[tokio::test]
async fn keyless_records_fill_a_batch_on_one_partition() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 4, 1);
    let cfg = ProducerConfig {
        linger: Duration::from_millis(50),
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..20 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    let partitions: std::collections::BTreeSet<i32> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .map(|r| r.unwrap().partition)
        .collect();
    assert_eq!(partitions.len(), 1, "one lingering batch, one partition");
    assert_eq!(cluster.state.lock().unwrap().accepted.len(), 1);
}

#[tokio::test]
async fn consumer_skips_records_below_its_position_in_the_first_batch() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        linger: Duration::from_millis(50),
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    for i in 0..10 {
        // Fire and forget: `close` waits for delivery.
        producer
            .send(ProducerRecord::new("t", format!("{i}")))
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    assert_eq!(
        cluster.state.lock().unwrap().accepted.len(),
        1,
        "one batch of 10"
    );

    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Offset(6))
        .await
        .unwrap();
    let offsets: Vec<i64> = consumer
        .by_ref()
        .take(4)
        .map(|r| r.unwrap().offset)
        .collect()
        .await;
    assert_eq!(offsets, vec![6, 7, 8, 9]);
    assert_eq!(consumer.position("t", 0), Some(10));
}

/// Produces `values` on partition 0 of `t` as one batch.
async fn produce_batch(cluster: &FakeCluster, values: std::ops::Range<i32>) {
    let producer = Producer::new(ProducerConfig {
        linger: Duration::from_millis(50),
        ..producer_config(cluster)
    })
    .await
    .unwrap();
    for i in values {
        producer
            .send(ProducerRecord::new("t", format!("{i}")).partition(0))
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
}

#[tokio::test]
async fn pushed_batches_larger_than_the_queue_arrive_whole_and_in_order() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap();
    // Two batches of 40 records against a queue of 16: each push waits for room.
    produce_batch(&cluster, 0..40).await;
    produce_batch(&cluster, 40..80).await;
    for i in 0..80 {
        let r = next_record(&mut consumer).await.unwrap();
        assert_eq!(
            (r.offset, r.value.unwrap()),
            (i, Bytes::from(i.to_string()))
        );
    }
    assert_eq!(
        cluster.state.lock().unwrap().subscribes,
        1,
        "one subscription served all"
    );
}

#[tokio::test]
async fn offset_out_of_range_surfaces_from_next_and_seek_recovers() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    for i in 0..3 {
        producer
            .send(ProducerRecord::new("t", format!("{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Offset(50))
        .await
        .unwrap();
    let err = next_record(&mut consumer).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange));
    assert_eq!(consumer.position("t", 0), Some(50), "no silent reset");
    consumer.seek("t", 0, SeekTo::Earliest).await.unwrap();
    assert_eq!(consumer.position("t", 0), Some(0));
    assert_eq!(next_record(&mut consumer).await.unwrap().offset, 0);
}

#[tokio::test]
async fn seek_latest_and_timestamp_use_list_offsets() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    for ts in [1_000, 2_000, 3_000] {
        let r = ProducerRecord::new("t", format!("{ts}")).timestamp_ms(ts);
        producer.send(r).await.unwrap().await.unwrap();
    }
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Latest)
        .await
        .unwrap();
    assert_eq!(consumer.position("t", 0), Some(3));
    consumer
        .seek("t", 0, SeekTo::Timestamp(1_500))
        .await
        .unwrap();
    assert_eq!(consumer.position("t", 0), Some(1));
    let r = next_record(&mut consumer).await.unwrap();
    assert_eq!((r.offset, r.timestamp_ms), (1, 2_000));
    consumer
        .seek("t", 0, SeekTo::Timestamp(9_000))
        .await
        .unwrap();
    assert_eq!(
        consumer.position("t", 0),
        Some(3),
        "after the last record: the log end"
    );

    // Latest then waits for new records.
    let _delivery = producer
        .send(ProducerRecord::new("t", "new"))
        .await
        .unwrap();
    producer.flush().await.unwrap();
    let r = next_record(&mut consumer).await.unwrap();
    assert_eq!((r.offset, r.value.unwrap()), (3, Bytes::from("new")));
}

#[tokio::test]
async fn assign_refuses_unknown_partitions_and_seek_needs_an_assignment() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    assert!(
        consumer.next().await.is_none(),
        "nothing assigned, nothing to wait for"
    );
    let err = consumer
        .assign(vec![("t".into(), 5)], SeekTo::Earliest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
    let err = consumer
        .assign(vec![("missing".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    assert!(matches!(
        consumer.seek("t", 0, SeekTo::Earliest).await,
        Err(ClientError::Config(_))
    ));
}

#[tokio::test]
async fn unreachable_bootstrap_addresses_are_skipped() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let cfg = ProducerConfig {
        client: ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new(["127.0.0.1:1".to_string(), cluster.coordinator.clone()])
        },
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    let md = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, 0);
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
