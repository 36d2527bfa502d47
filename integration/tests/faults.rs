//! The fault matrix: RF 3, `min.insync.replicas=2`, an `acks=all` producer writing
//! sequence-numbered records while one fault is injected, then the checker reads everything
//! back (every acknowledged record present exactly once, in order) and the replicas are
//! compared byte for byte. Network faults are real packet drops between network namespaces
//! (see `sluice_integration::netns`; such tests need root and skip themselves, saying why,
//! without it). Each test prints the availability gap it measured: the longest time the
//! partition went without an acknowledgement from the fault on. Seeded: set
//! `SLUICE_CHAOS_SEED` to replay a run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice_client::{Acks, ConsumerConfig, ProducerConfig};
use sluice_integration::netns::Network;
use sluice_integration::workload::{self, Ledger};
use sluice_integration::{ClusterSpec, TestCluster};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the network faults last.
const FAULT: Duration = Duration::from_secs(5);
/// After a heal, every ISR must be full again within this.
const ISR_AFTER_HEAL: Duration = Duration::from_secs(2);
/// A gap may exceed the fault itself by at most this.
const GAP_OVER_FAULT: Duration = Duration::from_secs(2);

fn seed() -> u64 {
    let seed = std::env::var("SLUICE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed: {seed} (replay with SLUICE_CHAOS_SEED={seed})");
    seed
}

/// A cluster of 3 storage nodes, a topic `t` of one partition (RF 3, `min.insync.replicas=2`
/// unless `config` says otherwise) with a full ISR, and an `acks=all` producer writing to it.
struct Run {
    cluster: TestCluster,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Sender<bool>,
    producer: Option<JoinHandle<anyhow::Result<()>>>,
}

async fn start(network: bool, coordinators: usize, config: &[(&str, &str)]) -> Option<Run> {
    if network && let Some(why) = Network::unavailable() {
        println!("SKIPPED: {why}");
        return None;
    }
    let cluster = TestCluster::start(ClusterSpec {
        coordinators,
        storage_nodes: 3,
        network,
        ..Default::default()
    })
    .await
    .expect("cluster");
    let mut cfg = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    for (k, v) in config {
        cfg.insert(k.to_string(), v.to_string());
    }
    let admin = cluster.admin().await.unwrap();
    admin.create_topic("t", 1, 3, cfg).await.unwrap();
    wait_full_isr(&cluster, "t", 1, Duration::from_secs(30)).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop, stopped) = watch::channel(false);
    let producer = workload::spawn_producer(
        ProducerConfig {
            client: cluster.client_config(),
            acks: Acks::All,
            ..Default::default()
        },
        "t",
        1,
        8,
        ledger.clone(),
        stopped,
    );
    let run = Run {
        cluster,
        ledger,
        stop,
        producer: Some(producer),
    };
    run.wait_for_acks(Instant::now(), 50).await;
    Some(run)
}

/// Waits until every partition of `topic` has a leader and all 3 replicas in sync; returns how
/// long that took.
async fn wait_full_isr(
    cluster: &TestCluster,
    topic: &str,
    partitions: i32,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + within;
    loop {
        let full = match cluster.admin().await {
            Ok(admin) => admin.describe_topic(topic).await.is_ok_and(|t| {
                t.partitions.len() == partitions as usize
                    && t.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && p.isr.len() == 3)
            }),
            Err(_) => false,
        };
        if full {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "ISRs of {topic} not full within {within:?}:\n{}",
            cluster.log_tails(15)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Run {
    async fn leader(&self) -> usize {
        self.cluster.leader_of("t", 0).await.unwrap() as usize
    }

    fn node_ip(&self, id: usize) -> Ipv4Addr {
        self.cluster.node_hosts[id].ip
    }

    /// Waits until `n` records sent after `since` are acknowledged.
    async fn wait_for_acks(&self, since: Instant, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let acked = self
                .ledger
                .lock()
                .unwrap()
                .acked
                .get(&0)
                .map_or(0, |a| a.iter().filter(|a| a.sent >= since).count());
            if acked >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} acknowledgements 30 s after {:?} ago:\n{}",
                since.elapsed(),
                self.cluster.log_tails(15)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The longest time without an acknowledgement on the partition from `since` to the last
    /// acknowledgement (counted from the last one before `since`), and when it began relative
    /// to `since`.
    fn gap_since(&self, since: Instant) -> (Duration, Duration) {
        let ledger = self.ledger.lock().unwrap();
        let mut times: Vec<Instant> = ledger
            .acked
            .get(&0)
            .map(|a| a.iter().map(|a| a.acked).collect())
            .unwrap_or_default();
        times.sort();
        let mut prev = times
            .iter()
            .copied()
            .rfind(|t| *t <= since)
            .unwrap_or(since);
        let (mut gap, mut began) = (Duration::ZERO, Duration::ZERO);
        for t in times.into_iter().filter(|t| *t > since) {
            if t - prev > gap {
                gap = t - prev;
                began = prev.saturating_duration_since(since);
            }
            prev = t;
        }
        (gap, began)
    }

    /// After a fault that began at `fault_at`: waits for writes to flow again, then prints and
    /// returns the gap.
    async fn gap(&self, what: &str, fault_at: Instant) -> Duration {
        self.wait_for_acks(Instant::now(), 20).await;
        let (gap, began) = self.gap_since(fault_at);
        println!(
            "{what}: longest time without an acks=all acknowledgement: {gap:?} (from {began:?} after the fault began)"
        );
        gap
    }

    /// Stops the producer, checks every acknowledged record, and compares the replicas.
    async fn finish(mut self) {
        self.stop.send(true).unwrap();
        self.producer.take().unwrap().await.unwrap().unwrap();
        wait_full_isr(&self.cluster, "t", 1, Duration::from_secs(30)).await;
        let ledger = std::mem::take(&mut *self.ledger.lock().unwrap());
        let failed: usize = ledger.failed.values().map(Vec::len).sum();
        let report = workload::check(
            ConsumerConfig {
                client: self.cluster.client_config(),
                ..Default::default()
            },
            "t",
            1,
            &ledger,
        )
        .await
        .expect("checker");
        println!(
            "checked {} acknowledged records, read {} ({} committed without an ack), {} sends failed",
            report.acked, report.read, report.committed_unacked, failed
        );
        assert!(
            report.violations.is_empty(),
            "guarantees violated:\n{}",
            report.violations.join("\n")
        );
        assert!(report.acked > 0);
        assert_replicas_agree(&self.cluster, "t").await;
        let panics = self.cluster.panics();
        assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    }

    /// Asserts a gap, printing every process log's end when it fails.
    fn assert_gap(&self, gap: Duration, bound: Duration, what: &str) {
        assert!(
            gap <= bound,
            "{what}: gap {gap:?} over {bound:?}\n{}",
            self.cluster.log_tails(30)
        );
    }
}

/// Every replica of `topic`-0 holds the same bytes (once followers caught up).
async fn assert_replicas_agree(cluster: &TestCluster, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut logs = Vec::new();
        for id in 0..3 {
            logs.push(cluster.replica_log(id, topic, 0).await.unwrap());
        }
        if logs.iter().all(|l| *l == logs[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas of {topic}-0 differ: {:?} bytes",
            logs.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_isolated_from_everything_is_replaced_within_3_s() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let host = run.cluster.node_hosts[leader].clone();
    let at = Instant::now();
    run.cluster.net().isolate(&host).unwrap();
    tokio::time::sleep(FAULT).await;
    run.cluster.net().heal(&host).unwrap();
    let healed = wait_full_isr(&run.cluster, "t", 1, Duration::from_secs(30)).await;
    println!("ISR full again {healed:?} after the heal");
    let what = format!("node {leader} (leader) isolated for {FAULT:?}");
    let gap = run.gap(&what, at).await;
    run.assert_gap(gap, Duration::from_secs(3), "isolated leader");
    assert!(healed <= ISR_AFTER_HEAL, "ISR full {healed:?} after heal");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_the_other_storage_nodes_loses_nothing() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let host = run.cluster.node_hosts[leader].clone();
    let at = Instant::now();
    for f in (0..3).filter(|f| *f != leader) {
        run.cluster.net().cut(&host, run.node_ip(f)).unwrap();
    }
    tokio::time::sleep(FAULT).await;
    run.cluster.net().heal(&host).unwrap();
    let gap = run
        .gap(
            &format!("node {leader} (leader) cut from its followers for {FAULT:?}"),
            at,
        )
        .await;
    let healed = wait_full_isr(&run.cluster, "t", 1, Duration::from_secs(30)).await;
    println!("ISR full again {healed:?} after the heal");
    run.assert_gap(gap, FAULT + GAP_OVER_FAULT, "leader cut from followers");
    assert!(healed <= ISR_AFTER_HEAL, "ISR full {healed:?} after heal");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_etcd_and_the_coordinators_is_replaced() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let host = run.cluster.node_hosts[leader].clone();
    let (net, gateway) = (run.cluster.net(), run.cluster.net().gateway());
    let at = Instant::now();
    net.cut_port(&host, gateway, run.cluster.etcd.client_port())
        .unwrap();
    for c in &run.cluster.coordinator_hosts {
        net.cut(&host, c.ip).unwrap();
    }
    tokio::time::sleep(FAULT).await;
    let during = run.cluster.partition_state("t", 0).await.unwrap();
    net.heal(&host).unwrap();
    let healed = wait_full_isr(&run.cluster, "t", 1, Duration::from_secs(30)).await;
    println!("ISR full again {healed:?} after the heal");
    let what = format!(
        "node {leader} (leader) cut from etcd and the coordinators for {FAULT:?} (then node {} led at epoch {})",
        during.leader, during.leader_epoch
    );
    let gap = run.gap(&what, at).await;
    run.assert_gap(
        gap,
        FAULT + GAP_OVER_FAULT,
        "leader cut from etcd and coordinators",
    );
    assert!(healed <= ISR_AFTER_HEAL, "ISR full {healed:?} after heal");
    run.finish().await;
}

/// Lines of the cluster's logs that record an ISR change of `t` (by the controller or a
/// leader).
fn isr_changes(cluster: &TestCluster) -> usize {
    let Ok(entries) = std::fs::read_dir(cluster.dir.path()) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            strip_ansi(&std::fs::read_to_string(p).unwrap_or_default())
                .lines()
                .filter(|l| {
                    l.contains("ISR") && (l.contains(" topic=t ") || l.contains(" topic=\"t\" "))
                })
                .count()
        })
        .sum()
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_from_etcd_and_the_coordinators_does_not_flap_in_and_out_of_the_isr() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let follower = (0..3).find(|f| *f != leader).unwrap();
    let host = run.cluster.node_hosts[follower].clone();
    let net = run.cluster.net();
    let before = isr_changes(&run.cluster);
    let at = Instant::now();
    net.cut_port(&host, net.gateway(), run.cluster.etcd.client_port())
        .unwrap();
    for c in &run.cluster.coordinator_hosts {
        net.cut(&host, c.ip).unwrap();
    }
    tokio::time::sleep(FAULT).await;
    let during = run.cluster.partition_state("t", 0).await.unwrap();
    net.heal(&host).unwrap();
    let healed = wait_full_isr(&run.cluster, "t", 1, Duration::from_secs(30)).await;
    let changes = isr_changes(&run.cluster) - before;
    let what = format!(
        "node {follower} (follower) cut from etcd and the coordinators for {FAULT:?} (ISR then {:?}, {changes} ISR changes in all, full again {healed:?} after the heal)",
        during.isr
    );
    let gap = run.gap(&what, at).await;
    assert!(
        !during.isr.contains(&(follower as i32)),
        "a follower the controller cannot see left the ISR"
    );
    assert!(changes <= 2, "the ISR flapped: {changes} changes");
    run.assert_gap(gap, GAP_OVER_FAULT, "follower cut from etcd");
    assert!(healed <= ISR_AFTER_HEAL, "ISR full {healed:?} after heal");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_follower_to_leader_packets_heal_within_2_s() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let at = Instant::now();
    for f in (0..3).filter(|f| *f != leader) {
        let host = run.cluster.node_hosts[f].clone();
        run.cluster
            .net()
            .drop_one_way(&host, run.node_ip(leader))
            .unwrap();
    }
    tokio::time::sleep(FAULT).await;
    run.cluster.net().heal_all().unwrap();
    let gap = run
        .gap(
            &format!("followers -> node {leader} (leader) dropped for {FAULT:?}"),
            at,
        )
        .await;
    let healed = wait_full_isr(&run.cluster, "t", 1, Duration::from_secs(30)).await;
    println!("ISR full again {healed:?} after the heal");
    run.assert_gap(gap, FAULT + GAP_OVER_FAULT, "followers to leader dropped");
    assert!(healed <= ISR_AFTER_HEAL, "ISR full {healed:?} after heal");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_controller_cut_from_etcd_does_not_stop_writes() {
    let Some(run) = start(true, 2, &[]).await else {
        return;
    };
    let active = run.cluster.active_coordinator().await.unwrap();
    let host = run.cluster.coordinator_hosts[active].clone();
    let net = run.cluster.net();
    let at = Instant::now();
    net.cut_port(&host, net.gateway(), run.cluster.etcd.client_port())
        .unwrap();
    tokio::time::sleep(FAULT).await;
    // Asked of the other coordinator: the cut one's view stopped when it was cut.
    let other = sluice_client::Admin::connect(sluice_client::ClientConfig::new([run
        .cluster
        .coordinators[1 - active]
        .address()]))
    .await
    .unwrap();
    let now_active = other
        .describe_cluster()
        .await
        .unwrap()
        .controller
        .map_or_else(|| "none".to_string(), |c| c.coordinator_id);
    net.heal(&host).unwrap();
    let gap = run
        .gap(
            &format!("active coordinator {active} cut from etcd (controller now {now_active})"),
            at,
        )
        .await;
    run.assert_gap(gap, GAP_OVER_FAULT, "controller cut from etcd");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_replication_connection_costs_acks_less_than_1_s() {
    let Some(run) = start(true, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let follower = (0..3).find(|f| *f != leader).unwrap();
    let host = run.cluster.node_hosts[follower].clone();
    let port = run.cluster.nodes[leader].port;
    let at = Instant::now();
    let resets = run
        .cluster
        .net()
        .reset_connections(&host, run.node_ip(leader), port, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        resets > 0,
        "no segment of node {follower} to node {leader} was reset"
    );
    let what = format!(
        "node {follower}'s connections to node {leader} (leader) reset ({resets} segments answered by RST for 300 ms)"
    );
    let gap = run.gap(&what, at).await;
    run.assert_gap(gap, Duration::from_secs(1), "replication reset");
    run.finish().await;
}

/// Watches the partition while a wiped node comes back: no leadership granted after the fault
/// (an epoch above `epoch`) may go to it while it holds less than the partition had committed.
/// (The record naming it leader at `epoch` lingers until the controller acts; the restarted
/// process does not serve it.)
async fn watch_wiped_leader(cluster: &TestCluster, wiped: usize, epoch: i32, committed: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(p) = cluster.partition_state("t", 0).await
            && p.leader as usize == wiped
            && p.leader_epoch > epoch
        {
            let held = cluster
                .replica_log(wiped, "t", 0)
                .await
                .map_or(0, |l| l.len());
            assert!(
                held >= committed,
                "wiped node {wiped} leads with {held} bytes of the {committed} committed"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_data_directory_was_wiped_rejoins_without_losing_anything() {
    let Some(mut run) = start(false, 1, &[]).await else {
        return;
    };
    let leader = run.leader().await;
    let epoch = run
        .cluster
        .partition_state("t", 0)
        .await
        .unwrap()
        .leader_epoch;
    let committed = run.cluster.replica_log(leader, "t", 0).await.unwrap().len();
    let at = Instant::now();
    run.cluster.kill_node(leader);
    run.cluster.wipe_node_data(leader).unwrap();
    run.cluster.restart_node(leader).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A topic created while the wiped node comes back (the case that once lost a partition);
    // refused while only two nodes are registered.
    let admin = run.cluster.admin().await.unwrap();
    let config = BTreeMap::from([("min.insync.replicas".into(), "2".into())]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = admin.create_topic("late", 3, 3, config.clone()).await {
        assert!(Instant::now() < deadline, "creating a topic: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, took) = tokio::join!(
        watch_wiped_leader(&run.cluster, leader, epoch, committed),
        async {
            // Full again after the failover (the record from before the wipe names all three).
            run.cluster
                .wait_partition("t", 0, Duration::from_secs(30), |p| {
                    p.leader_epoch > epoch && p.isr.len() == 3
                })
                .await
                .unwrap();
            at.elapsed()
        },
    );
    println!("ISR full again {took:?} after the restart");
    let gap = run
        .gap(&format!("node {leader} (leader) wiped and restarted"), at)
        .await;
    run.assert_gap(gap, Duration::from_secs(5), "wiped leader");
    wait_full_isr(&run.cluster, "late", 3, Duration::from_secs(30)).await;
    let state = run.cluster.partition_state("t", 0).await.unwrap();
    println!(
        "after: leader {} epoch {} isr {:?}",
        state.leader, state.leader_epoch, state.isr
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_in_sync_replica_back_without_its_data_keeps_the_partition_offline() {
    let Some(mut run) = start(
        false,
        1,
        &[
            ("min.insync.replicas", "1"),
            ("replica.lag.time.max.ms", "1000"),
        ],
    )
    .await
    else {
        return;
    };
    let admin = run.cluster.admin().await.unwrap();
    admin
        .create_topic(
            "u",
            1,
            3,
            BTreeMap::from([
                ("unclean.leader.election".into(), "true".into()),
                ("replica.lag.time.max.ms".into(), "1000".into()),
            ]),
        )
        .await
        .unwrap();
    wait_full_isr(&run.cluster, "u", 1, Duration::from_secs(30)).await;
    // Both topics down to one in-sync replica, the same node: kill the other two (a
    // partition of `u` they led fails over to it).
    let last = run.leader().await;
    let others: Vec<usize> = (0..3).filter(|n| *n != last).collect();
    for n in &others {
        run.cluster.kill_node(*n);
    }
    for topic in ["t", "u"] {
        run.cluster
            .wait_partition(topic, 0, Duration::from_secs(20), |p| {
                p.isr == [last as i32]
            })
            .await
            .unwrap();
    }
    run.wait_for_acks(Instant::now(), 20).await;
    run.stop.send(true).unwrap();
    run.producer.take().unwrap().await.unwrap().unwrap();
    // Now the last in-sync replica loses its disk; everyone comes back.
    run.cluster.kill_node(last);
    run.cluster.wipe_node_data(last).unwrap();
    for n in 0..3 {
        run.cluster.restart_node(n).unwrap();
    }
    run.cluster
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap();
    let offline = run
        .cluster
        .wait_partition("t", 0, Duration::from_secs(10), |p| {
            p.leader == -1 && !p.offline_reason.is_empty()
        })
        .await
        .unwrap();
    println!("t-0 offline: {}", offline.offline_reason);
    assert!(offline.offline_reason.contains(&format!("node {last}")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = run.cluster.partition_state("t", 0).await.unwrap();
    assert_eq!(still.leader, -1, "stays offline without unclean election");
    let elected = run
        .cluster
        .wait_partition("u", 0, Duration::from_secs(10), |p| p.leader >= 0)
        .await
        .unwrap();
    println!(
        "u-0 (unclean.leader.election=true) elected node {} at epoch {}",
        elected.leader, elected.leader_epoch
    );
    let producer = sluice_client::Producer::new(ProducerConfig {
        client: run.cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    producer
        .send(
            sluice_client::ProducerRecord::new("u", bytes::Bytes::from_static(b"after"))
                .partition(0),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let panics = run.cluster.panics();
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_s_etcd_pause_takes_no_partition_offline() {
    let Some(mut run) = start(false, 1, &[]).await else {
        return;
    };
    let before = run.cluster.partition_state("t", 0).await.unwrap();
    let at = Instant::now();
    run.cluster.etcd.pause();
    tokio::time::sleep(FAULT).await;
    run.cluster.etcd.resume();
    let gap = run.gap("etcd paused for 5 s", at).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = run.cluster.partition_state("t", 0).await.unwrap();
    println!(
        "leader {} epoch {} -> leader {} epoch {}",
        before.leader, before.leader_epoch, after.leader, after.leader_epoch
    );
    assert_eq!(
        (after.leader, after.leader_epoch),
        (before.leader, before.leader_epoch),
        "the partition kept its leader and epoch (never offline)"
    );
    run.assert_gap(gap, GAP_OVER_FAULT, "etcd pause");
    run.finish().await;
}

/// One `acks=all` record to every partition of `topic`: every leader serves and every ISR
/// replicates.
async fn write_everywhere(cluster: &TestCluster, topic: &str, partitions: i32) -> Duration {
    let t0 = Instant::now();
    let producer = sluice_client::Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut acks = Vec::new();
    for p in 0..partitions {
        let record =
            sluice_client::ProducerRecord::new(topic, bytes::Bytes::from_static(b"x")).partition(p);
        acks.push(producer.send(record).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    producer.close().await.unwrap();
    t0.elapsed()
}

/// Waits until no ISR of `topic` holds `node` (every failover after its death is written).
async fn wait_out_of_every_isr(cluster: &TestCluster, topic: &str, node: i32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let t = cluster
            .admin()
            .await
            .unwrap()
            .describe_topic(topic)
            .await
            .unwrap();
        if t.partitions
            .iter()
            .all(|p| !p.isr.contains(&node) && p.leader >= 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} still in some ISR after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_partitions_recover_from_a_leader_restart_without_a_panic() {
    const N: i32 = 3000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut cluster = TestCluster::start(ClusterSpec {
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .expect("cluster");
    let admin = cluster.admin().await.unwrap();
    let t0 = Instant::now();
    admin
        .create_topic(
            "many",
            N,
            3,
            BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
        )
        .await
        .unwrap();
    let wrote = write_everywhere(&cluster, "many", N).await;
    println!(
        "3,000 partitions at RF 3 created and an acks=all record written to each after {:?} (writes {wrote:?})",
        t0.elapsed()
    );
    let bound = Duration::from_secs(60);

    // A leader killed, failed over, then restarted.
    let victim = rng.random_range(0..3);
    let at = Instant::now();
    cluster.kill_node(victim);
    wait_out_of_every_isr(&cluster, "many", victim as i32, bound).await;
    println!(
        "node {victim} killed: out of every ISR, every partition led, after {:?}",
        at.elapsed()
    );
    let at = Instant::now();
    cluster.restart_node(victim).unwrap();
    wait_full_isr(&cluster, "many", N, bound).await;
    println!(
        "node {victim} restarted: every ISR full again after {:?} (bound {bound:?})",
        at.elapsed()
    );

    // A leader killed and restarted at once: its leaderships are confirmed or moved.
    let victim = (victim + 1) % 3;
    let before = admin.describe_topic("many").await.unwrap();
    let at = Instant::now();
    cluster.kill_node(victim);
    cluster.restart_node(victim).unwrap();
    let deadline = at + bound;
    loop {
        let now = admin.describe_topic("many").await.unwrap();
        let settled = now.partitions.iter().zip(&before.partitions).all(|(p, b)| {
            p.isr.len() == 3
                && p.leader >= 0
                && (b.leader != victim as i32 || p.leader_epoch > b.leader_epoch)
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {bound:?}\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "node {victim} killed and restarted at once: every leadership it held confirmed at a new epoch or moved, every ISR full, after {:?}",
        at.elapsed()
    );
    let wrote = write_everywhere(&cluster, "many", N).await;
    println!("an acks=all record written to each partition again in {wrote:?}");
    let panics = cluster.panics();
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}
