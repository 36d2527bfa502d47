//! End-to-end behaviour of a multi-process cluster: real etcd, coordinators and storage nodes
//! as processes, the real client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice_client::{
    Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use sluice_integration::{ClusterSpec, TestCluster};

/// What the producer saw acknowledged: (partition, offset) → (key, value).
type Acked = BTreeMap<(i32, i64), (Bytes, Bytes)>;

async fn produce_keyed(cluster: &TestCluster, topic: &str, count: usize, seed: u64) -> Acked {
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .expect("producer");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let key = Bytes::from(format!("key-{}", i % 500));
        let len = rng.random_range(1..300);
        let mut value = format!("{i:08}-").into_bytes();
        value.extend((0..len).map(|_| rng.random::<u8>()));
        let value = Bytes::from(value);
        let mut r = ProducerRecord::new(topic, value.clone());
        r.key = Some(key.clone());
        pending.push((producer.send(r).await.expect("send"), key, value));
    }
    let mut acked = Acked::new();
    for (f, key, value) in pending {
        let md = f.await.expect("acknowledged");
        assert!(
            acked
                .insert((md.partition, md.offset), (key, value))
                .is_none(),
            "offset given twice"
        );
    }
    producer.close().await.expect("close");
    acked
}

async fn consume_all(
    cluster: &TestCluster,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<sluice_client::ConsumerRecord> {
    let mut consumer = Consumer::new(ConsumerConfig {
        client: cluster.client_config(),
        ..Default::default()
    })
    .await
    .expect("consumer");
    consumer
        .assign(
            (0..partitions).map(|p| (topic.to_string(), p)).collect(),
            SeekTo::Earliest,
        )
        .await
        .expect("assign");
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        let next = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            consumer.next(),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out after {} of {count} records", out.len()));
        out.push(next.expect("stream open").expect("record"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_across_three_nodes_byte_for_byte() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 2,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let topic = admin
        .create_topic("orders", 6, 1, BTreeMap::new())
        .await
        .unwrap();
    let leaders: BTreeSet<i32> = topic.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(
        leaders,
        BTreeSet::from([0, 1, 2]),
        "6 partitions spread over all three nodes"
    );

    let acked = produce_keyed(&cluster, "orders", 20_000, 7).await;
    assert_eq!(acked.len(), 20_000);
    let mut partition_of_key: HashMap<Bytes, i32> = HashMap::new();
    for ((p, _), (k, _)) in &acked {
        assert_eq!(
            *partition_of_key.entry(k.clone()).or_insert(*p),
            *p,
            "same key, same partition"
        );
    }

    let records = consume_all(&cluster, "orders", 6, 20_000).await;
    let mut last: HashMap<i32, i64> = HashMap::new();
    for r in &records {
        if let Some(prev) = last.insert(r.partition, r.offset) {
            assert!(
                r.offset > prev,
                "partition {} out of order: {prev} then {}",
                r.partition,
                r.offset
            );
        }
        let (k, v) = acked
            .get(&(r.partition, r.offset))
            .expect("consumed record was acknowledged");
        assert_eq!(r.key.as_ref(), Some(k));
        assert_eq!(r.value.as_ref(), Some(v), "byte for byte");
    }
    let seen: BTreeSet<(i32, i64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(seen.len(), 20_000, "every acknowledged record, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_coordinator_takes_over_after_sigkill_while_data_plane_keeps_working() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 2,
        storage_nodes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("before", 4, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    // Warm the producer's metadata so the failover window needs no coordinator.
    producer
        .send(ProducerRecord::new("before", Bytes::from_static(b"warm")))
        .await
        .unwrap()
        .await
        .unwrap();

    let active = cluster.active_coordinator().await.unwrap();
    let killed_at = Instant::now();
    cluster.kill_coordinator(active);

    // Produce to existing partitions while the standby takes over: every send must succeed.
    let mut during = 0;
    let mut created = None;
    while created.is_none() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no controller 20 s after the kill"
        );
        let md = producer
            .send(ProducerRecord::new(
                "before",
                Bytes::from(format!("during-{during}")),
            ))
            .await
            .unwrap()
            .await;
        md.expect("produce to existing partitions keeps working without a controller");
        during += 1;
        match admin.create_topic("after", 2, 1, BTreeMap::new()).await {
            Ok(_) => created = Some(killed_at.elapsed()),
            Err(e) => assert!(e.is_retriable(), "unexpected error during failover: {e}"),
        }
    }
    let took = created.unwrap();
    println!(
        "coordinator failover: SIGKILL of the active controller -> topic created via the standby in {took:?} ({during} records produced meanwhile)"
    );
    assert_eq!(cluster.active_coordinator().await.unwrap(), 1 - active);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_node_restarted_after_sigkill_serves_every_acknowledged_record() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("durable", 6, 1, BTreeMap::new())
        .await
        .unwrap();
    let acked = produce_keyed(&cluster, "durable", 3_000, 11).await;

    cluster.kill_node(1);
    cluster.restart_node(1).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();

    let records = consume_all(&cluster, "durable", 6, acked.len()).await;
    let got: BTreeMap<(i32, i64), (Bytes, Bytes)> = records
        .into_iter()
        .map(|r| {
            (
                (r.partition, r.offset),
                (r.key.unwrap_or_default(), r.value.unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(
        got, acked,
        "every acknowledged record is served after the restart"
    );
}
