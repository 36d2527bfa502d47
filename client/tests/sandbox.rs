//! The client against real nodes in this process (the sandbox: the real coordinator and
//! storage nodes on an embedded metadata store): the producer's `ProduceStream` and the
//! consumer's `SubscribeMany`, idempotent retries that a real leader de-duplicates, leadership
//! moving under both; routing by key, acks, bounded buffer memory, positions, seeks,
//! list-offsets and bootstrap handling. The fake cluster (`support`) is kept for what a real
//! node cannot be made to do on demand.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sluice_client::{
    Acks, ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, SeekTo, partition_for_key,
};
use sluice_proto::pb::ErrorCode;
use sluice_sandbox::{Sandbox, faults};

fn client(sandbox: &Sandbox) -> ClientConfig {
    ClientConfig {
        bootstrap: sandbox.bootstrap(),
        ..Default::default()
    }
}

async fn producer(sandbox: &Sandbox) -> Producer {
    Producer::new(ProducerConfig {
        acks: Acks::All,
        delivery_timeout: Duration::from_secs(20),
        ..producer_config(sandbox)
    })
    .await
    .expect("producer")
}

async fn consumer(sandbox: &Sandbox, topic: &str, partitions: i32) -> Consumer {
    let mut consumer = Consumer::new(ConsumerConfig {
        queue_records: 10_000,
        ..consumer_config(sandbox)
    })
    .await
    .expect("consumer");
    let all = (0..partitions).map(|p| (topic.to_string(), p)).collect();
    consumer
        .assign(all, SeekTo::Earliest)
        .await
        .expect("assign");
    consumer
}

/// Reads `n` records: (partition → values in offset order), checking each partition's
/// offsets follow one another.
async fn read(consumer: &mut Consumer, n: usize) -> BTreeMap<i32, Vec<String>> {
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for _ in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a record in time")
            .expect("the consumer runs")
            .expect("no error");
        let expected = next.entry(r.partition).or_insert(r.offset);
        assert_eq!(r.offset, *expected, "offsets follow one another");
        *expected += 1;
        let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
        out.entry(r.partition).or_default().push(value);
    }
    out
}

/// Sends `values` to `topic`'s partition and returns the acknowledged offsets.
async fn send_all(producer: &Producer, topic: &str, partition: i32, values: &[String]) -> Vec<i64> {
    let mut pending = Vec::new();
    for v in values {
        let r = ProducerRecord::new(topic, v.clone()).partition(partition);
        pending.push(producer.send(r).await.expect("send"));
    }
    let mut offsets = Vec::new();
    for d in pending {
        offsets.push(d.await.expect("acknowledged").offset);
    }
    offsets
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("v{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_through_produce_and_subscribe_streams_in_order() {
    let sandbox = Sandbox::start(3).await.unwrap();
    sandbox.create_topic("t", 6, 3).await.unwrap();
    let producer = producer(&sandbox).await;
    let mut want = BTreeMap::new();
    for p in 0..6 {
        let v = values(p as usize * 1000..p as usize * 1000 + 300);
        assert_eq!(
            send_all(&producer, "t", p, &v).await,
            (0..300).collect::<Vec<i64>>()
        );
        want.insert(p, v);
    }
    let mut consumer = consumer(&sandbox, "t", 6).await;
    assert_eq!(read(&mut consumer, 1800).await, want);
    // Records produced while the consumer tails arrive on the same streams.
    let more = values(9000..9010);
    send_all(&producer, "t", 2, &more).await;
    let tail = read(&mut consumer, 10).await;
    assert_eq!(tail.get(&2).map(Vec::len), Some(10));
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_the_append_is_retried_and_the_leader_keeps_one_copy() {
    let sandbox = Sandbox::start(1).await.unwrap();
    sandbox.create_topic("t", 1, 1).await.unwrap();
    let producer = producer(&sandbox).await;
    sandbox.set_fault(0, faults::DROP_PRODUCE_RESPONSE, Some(""));
    assert_eq!(send_all(&producer, "t", 0, &values(0..1)).await, vec![0]);
    assert!(
        !sandbox.fault_armed(0, faults::DROP_PRODUCE_RESPONSE),
        "the fault fired"
    );
    assert_eq!(send_all(&producer, "t", 0, &values(1..2)).await, vec![1]);
    let mut consumer = consumer(&sandbox, "t", 1).await;
    assert_eq!(
        read(&mut consumer, 2).await[&0],
        values(0..2),
        "one copy each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_held_produce_requests_are_retried_until_they_land_once() {
    let sandbox = Sandbox::start(1).await.unwrap();
    sandbox.create_topic("t", 1, 1).await.unwrap();
    let producer = std::sync::Arc::new(producer(&sandbox).await);
    sandbox.set_fault(0, faults::REFUSE_PRODUCE, Some("NOT_ENOUGH_REPLICAS 3"));
    assert_eq!(
        send_all(&producer, "t", 0, &values(0..5)).await,
        (0..5).collect::<Vec<i64>>()
    );
    assert!(
        !sandbox.fault_armed(0, faults::REFUSE_PRODUCE),
        "three refusals, then through"
    );
    sandbox.set_fault(0, faults::HOLD_PRODUCE, Some(""));
    let held = tokio::spawn({
        let producer = producer.clone();
        async move { send_all(&producer, "t", 0, &values(5..8)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "held while the leader holds it");
    sandbox.set_fault(0, faults::HOLD_PRODUCE, None);
    assert_eq!(held.await.unwrap(), vec![5, 6, 7]);
    let mut consumer = consumer(&sandbox, "t", 1).await;
    assert_eq!(read(&mut consumer, 8).await[&0], values(0..8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_is_waited_for_and_answers_once() {
    let sandbox = Sandbox::start(1).await.unwrap();
    sandbox.create_topic("t", 1, 1).await.unwrap();
    let producer = producer(&sandbox).await;
    sandbox.set_fault(0, faults::DELAY_PRODUCE, Some("300"));
    let started = std::time::Instant::now();
    assert_eq!(
        send_all(&producer, "t", 0, &values(0..3)).await,
        vec![0, 1, 2]
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    sandbox.set_fault(0, faults::DELAY_PRODUCE, None);
    let mut consumer = consumer(&sandbox, "t", 1).await;
    assert_eq!(read(&mut consumer, 3).await[&0], values(0..3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_follow_the_partition_when_its_leader_stops() {
    let mut sandbox = Sandbox::start(3).await.unwrap();
    sandbox.create_topic("t", 1, 3).await.unwrap();
    let producer = producer(&sandbox).await;
    send_all(&producer, "t", 0, &values(0..100)).await;
    let mut consumer = consumer(&sandbox, "t", 1).await;
    assert_eq!(read(&mut consumer, 100).await[&0], values(0..100));
    let leader = sandbox.leader_of("t", 0).await.unwrap();
    sandbox.stop_node(leader as usize).await.unwrap();
    let offsets = send_all(&producer, "t", 0, &values(100..200)).await;
    assert_eq!(
        offsets,
        (100..200).collect::<Vec<i64>>(),
        "in order, none lost or doubled"
    );
    assert_ne!(sandbox.leader_of("t", 0).await.unwrap(), leader);
    assert_eq!(read(&mut consumer, 100).await[&0], values(100..200));
}

fn producer_config(sandbox: &Sandbox) -> ProducerConfig {
    ProducerConfig {
        client: client(sandbox),
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(10),
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    }
}

fn consumer_config(sandbox: &Sandbox) -> ConsumerConfig {
    ConsumerConfig {
        client: client(sandbox),
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

/// Produces `values` on partition 0 of `t` as one batch.
async fn produce_batch(cluster: &Sandbox, values: std::ops::Range<i32>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_murmur2_partitions_and_read_back_in_order() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("orders", 3, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_resolves_with_offset_minus_one() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap();
    let r = next_record(&mut consumer).await.unwrap();
    assert_eq!(
        (r.offset, r.value.unwrap()),
        (0, Bytes::from("x")),
        "written once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_and_partition_fail_send_at_once() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 2, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_when_buffer_memory_is_used_up() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
    let cfg = ProducerConfig {
        batch_size: 1024,
        buffer_memory: 4096,
        linger: Duration::ZERO,
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    // The leader holds every produce request, as a stopped process would.
    cluster.set_fault(0, faults::HOLD_PRODUCE, Some(""));
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
    cluster.set_fault(0, faults::HOLD_PRODUCE, None);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_fill_a_batch_on_one_partition() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 4, 1).await.unwrap();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_skips_records_below_its_position_in_the_first_batch() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_batches_larger_than_the_queue_arrive_whole_and_in_order() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_out_of_range_surfaces_from_next_and_seek_recovers() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_latest_and_timestamp_use_list_offsets() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_refuses_unknown_partitions_and_seek_needs_an_assignment() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_addresses_are_skipped() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
    let cfg = ProducerConfig {
        client: ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new(["127.0.0.1:1".to_string(), cluster.bootstrap()[0].clone()])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_out_of_range_moves_as_offset_reset_says() {
    let cluster = Sandbox::start(1).await.unwrap();
    cluster.create_topic("t", 1, 1).await.unwrap();
    let producer = producer(&cluster).await;
    send_all(&producer, "t", 0, &values(0..3)).await;
    let mut earliest = reading_from(&cluster, OffsetReset::Earliest).await;
    assert_eq!(next_record(&mut earliest).await.unwrap().offset, 0);
    let mut latest = reading_from(&cluster, OffsetReset::Latest).await;
    // Moved to the end, it reads only what comes next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_all(&producer, "t", 0, &values(3..4)).await;
    assert_eq!(next_record(&mut latest).await.unwrap().offset, 3);
    let mut none = reading_from(&cluster, OffsetReset::None).await;
    let err = next_record(&mut none).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange));
}

/// A consumer of `t`-0 positioned at offset 50, past the end, with `reset`.
async fn reading_from(cluster: &Sandbox, reset: OffsetReset) -> Consumer {
    let mut consumer = Consumer::new(ConsumerConfig {
        offset_reset: reset,
        ..consumer_config(cluster)
    })
    .await
    .unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Offset(50))
        .await
        .unwrap();
    consumer
}
