//! The client's default paths against real nodes in this process (the sandbox: the real
//! coordinator and storage nodes on an embedded metadata store): the producer's
//! `ProduceStream`, the consumer's `SubscribeMany`, idempotent retries that a real leader
//! de-duplicates, and leadership moving under both.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_client::{
    Acks, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_sandbox::{Sandbox, faults};

fn client(sandbox: &Sandbox) -> ClientConfig {
    ClientConfig {
        bootstrap: sandbox.bootstrap(),
        ..Default::default()
    }
}

async fn producer(sandbox: &Sandbox) -> Producer {
    Producer::new(ProducerConfig {
        client: client(sandbox),
        acks: Acks::All,
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(20),
        delivery_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .await
    .expect("producer")
}

async fn consumer(sandbox: &Sandbox, topic: &str, partitions: i32) -> Consumer {
    let mut consumer = Consumer::new(ConsumerConfig {
        client: client(sandbox),
        ..Default::default()
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
