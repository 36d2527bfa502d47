//! Replication and failover with real processes and a real etcd: RF 3, `acks=all`,
//! `min.insync.replicas=2`. Leaders are SIGKILLed, paused and isolated while a producer writes
//! sequence-numbered records; a checker then reads everything back. Seeded: set
//! `SLUICE_CHAOS_SEED` to replay a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice_client::{Acks, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_integration::matrix::seed;
use sluice_integration::workload::{self, Ledger};
use sluice_integration::{ClusterSpec, TestCluster};

/// How long a topic's ISRs may take to fill (a restarted node catching up).
const ISR_WAIT: Duration = Duration::from_secs(40);

fn rf3_config(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    for (k, v) in extra {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

async fn cluster3(coordinators: usize) -> TestCluster {
    TestCluster::start(ClusterSpec {
        coordinators,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .expect("cluster")
}

/// Waits for the first acknowledgement on `partition` of a record sent after `since`.
async fn next_ack_after(ledger: &Arc<Mutex<Ledger>>, partition: i32, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = ledger
            .lock()
            .unwrap()
            .acked
            .get(&partition)
            .and_then(|acks| acks.iter().find(|a| a.sent > since))
        {
            return a.acked - since;
        }
        assert!(
            Instant::now() < deadline,
            "no acknowledged write on partition {partition} 30 s after the fault"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn finish_and_check(
    cluster: &TestCluster,
    topic: &str,
    partitions: i32,
    ledger: &Arc<Mutex<Ledger>>,
) {
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    workload::assert_guarantees(cluster, topic, partitions, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_leader_sigkill_and_a_coordinator_kill() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut cluster = cluster3(2).await;
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("chaos", 6, 3, rf3_config(&[]))
        .await
        .unwrap();
    cluster.wait_full_isr("chaos", 6, ISR_WAIT).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    };
    let producer = workload::spawn_producer(cfg, "chaos", 6, 24, ledger.clone(), stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut failovers = Vec::new();
    let test_deadline = Instant::now() + Duration::from_secs(240);
    for round in 0..10 {
        assert!(
            Instant::now() < test_deadline,
            "chaos loop over its time budget"
        );
        let p = rng.random_range(0..6);
        let leader = cluster.leader_of("chaos", p).await.unwrap() as usize;
        let killed_at = Instant::now();
        cluster.kill_node(leader);
        let coordinator = if round == 4 {
            let c = cluster.active_coordinator().await.unwrap();
            cluster.kill_coordinator(c);
            Some(c)
        } else {
            None
        };
        let took = next_ack_after(&ledger, p, killed_at).await;
        println!(
            "round {round}: SIGKILL node {leader} (leader of chaos-{p}){} -> next acks=all write after {took:?}",
            if coordinator.is_some() {
                " and the active coordinator"
            } else {
                ""
            }
        );
        failovers.push(took);
        if let Some(c) = coordinator {
            cluster.restart_coordinator(c).unwrap();
        }
        cluster.restart_node(leader).unwrap();
        cluster.wait_full_isr("chaos", 6, ISR_WAIT).await;
    }
    stop_tx.send(true).unwrap();
    producer.await.unwrap().unwrap();
    failovers.sort();
    println!(
        "leader failover (SIGKILL -> next acknowledged acks=all write) over {} trials: p50 {:?}, max {:?}",
        failovers.len(),
        percentile(&failovers, 0.5),
        failovers.last().unwrap()
    );
    finish_and_check(&cluster, "chaos", 6, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_and_killed_follower_lose_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut cluster = cluster3(1).await;
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("pause", 4, 3, rf3_config(&[]))
        .await
        .unwrap();
    cluster.wait_full_isr("pause", 4, ISR_WAIT).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    };
    let producer = workload::spawn_producer(cfg, "pause", 4, 16, ledger.clone(), stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let p = rng.random_range(0..4);
    let leader = cluster.leader_of("pause", p).await.unwrap() as usize;
    let paused_at = Instant::now();
    cluster.pause_node(leader).unwrap();
    let took = next_ack_after(&ledger, p, paused_at).await;
    println!(
        "SIGSTOP of node {leader} (leader of pause-{p}) -> next acks=all write after {took:?}"
    );
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(paused_at.elapsed())).await;
    cluster.resume_node(leader).unwrap();
    cluster.wait_full_isr("pause", 4, ISR_WAIT).await;

    let state = cluster.partition_state("pause", p).await.unwrap();
    let follower = state
        .replicas
        .iter()
        .copied()
        .find(|r| *r != state.leader)
        .unwrap() as usize;
    cluster.kill_node(follower);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart_node(follower).unwrap();
    cluster.wait_full_isr("pause", 4, ISR_WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    producer.await.unwrap().unwrap();
    finish_and_check(&cluster, "pause", 4, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_old_leader_truncates_its_unreplicated_tail() {
    let mut cluster = cluster3(1).await;
    let admin = cluster.admin().await.unwrap();
    // A long lag limit keeps the followers in the ISR while they are cut off.
    admin
        .create_topic(
            "tail",
            1,
            3,
            rf3_config(&[("replica.lag.time.max.ms", "120000")]),
        )
        .await
        .unwrap();
    cluster.wait_full_isr("tail", 1, ISR_WAIT).await;
    let all = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..50 {
        all.send(ProducerRecord::new("tail", Bytes::from(format!("committed-{i}"))).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let old = cluster.leader_of("tail", 0).await.unwrap() as usize;
    cluster.set_fault(old, "block-replication", true);
    let one = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::Leader,
        enable_idempotence: false,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..20 {
        let md = one
            .send(ProducerRecord::new("tail", Bytes::from(format!("isolated-{i}"))).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            md.offset,
            50 + i,
            "acks=1 writes land on the isolated leader only"
        );
    }
    one.close().await.unwrap();
    cluster.kill_node(old);
    cluster.set_fault(old, "block-replication", false);
    let new = cluster
        .wait_partition("tail", 0, Duration::from_secs(20), |s| {
            s.leader >= 0 && s.leader as usize != old
        })
        .await
        .unwrap();
    for i in 0..30 {
        let md = all
            .send(ProducerRecord::new("tail", Bytes::from(format!("new-{i}"))).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            md.offset,
            50 + i,
            "the new leader continues after the last committed record"
        );
    }
    all.close().await.unwrap();
    cluster.restart_node(old).unwrap();
    cluster.wait_full_isr("tail", 1, ISR_WAIT).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected = cluster
        .replica_log(new.leader as usize, "tail", 0)
        .await
        .unwrap();
    loop {
        let got = cluster.replica_log(old, "tail", 0).await.unwrap();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader's log ({} bytes) never matched the new leader's ({} bytes)",
            got.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8_lossy(&expected);
    assert!(
        !text.contains("isolated-"),
        "the unreplicated tail is gone everywhere"
    );
    assert!(text.contains("new-29") && text.contains("committed-49"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_a_dropped_answer_writes_no_duplicate() {
    let cluster = cluster3(1).await;
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("once", 1, 3, rf3_config(&[]))
        .await
        .unwrap();
    cluster.wait_full_isr("once", 1, ISR_WAIT).await;
    let leader = cluster.leader_of("once", 0).await.unwrap() as usize;
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        producer.producer_id().is_some_and(|id| id >= 0),
        "idempotence is on by default"
    );
    let mut offsets = Vec::new();
    for i in 0..10u64 {
        if i == 3 {
            cluster.set_fault(leader, "drop-produce-response", true);
        }
        let md = producer
            .send(ProducerRecord::new("once", workload::value(0, i)).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
        offsets.push(md.offset);
    }
    assert!(
        !cluster.fault_armed(leader, "drop-produce-response"),
        "the fault fired: one answer was dropped"
    );
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<i64>>(),
        "the retried batch kept its first offset"
    );
    producer.close().await.unwrap();
    let mut ledger = Ledger::default();
    ledger.sent.insert(0, 9);
    let report = workload::check(
        ConsumerConfig {
            client: cluster.client_config(),
            ..Default::default()
        },
        "once",
        1,
        &ledger,
    )
    .await
    .unwrap();
    assert_eq!(
        report.read, 10,
        "exactly the ten records, no duplicate: {:?}",
        report.violations
    );
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
