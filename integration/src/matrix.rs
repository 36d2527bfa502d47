//! The fault matrix's common run: a cluster of three storage nodes, a topic of one partition at
//! RF 3 with `min.insync.replicas=2`, and an `acks=all` producer writing sequence-numbered
//! records while a test injects one fault. A test then measures the availability gap (the
//! longest time the partition went without an acknowledgement from the fault on), and
//! [`Run::finish`] reads everything back with the checker (every acknowledged record present
//! exactly once, in order), compares the replicas byte for byte and looks for panics in every
//! process log. Used by `tests/network_faults.rs` and `tests/node_faults.rs`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{Acks, ProducerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::netns::Network;
use crate::workload::{self, Ledger};
use crate::{ClusterSpec, TestCluster};

/// How long the network faults last.
pub const FAULT: Duration = Duration::from_secs(5);
/// After a heal, every ISR must be full again within this.
pub const ISR_AFTER_HEAL: Duration = Duration::from_secs(2);
/// A gap may exceed the fault itself by at most this.
pub const GAP_OVER_FAULT: Duration = Duration::from_secs(2);

/// The chaos seed: `SLUICE_CHAOS_SEED`, or a random one; printed so a run can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("SLUICE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed: {seed} (replay with SLUICE_CHAOS_SEED={seed})");
    seed
}

/// A cluster of 3 storage nodes, a topic `t` of one partition (RF 3, `min.insync.replicas=2`
/// unless `config` says otherwise) with a full ISR, and an `acks=all` producer writing to it.
pub struct Run {
    /// The cluster.
    pub cluster: TestCluster,
    /// What the producer saw.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Stops the producer.
    pub stop: watch::Sender<bool>,
    /// The producer task.
    pub producer: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a [`Run`] (its cluster in network namespaces when `network`), with `coordinators`
/// coordinators and `config` added to the topic's; `None` (after printing why) when the
/// network is asked for and cannot be built here.
pub async fn start(network: bool, coordinators: usize, config: &[(&str, &str)]) -> Option<Run> {
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
    cluster.wait_full_isr("t", 1, Duration::from_secs(30)).await;
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

impl Run {
    /// The current leader of `t`-0.
    pub async fn leader(&self) -> usize {
        self.cluster.leader_of("t", 0).await.unwrap() as usize
    }

    /// Storage node `id`'s address in the test network.
    pub fn node_ip(&self, id: usize) -> Ipv4Addr {
        self.cluster.node_hosts[id].ip
    }

    /// Waits until `n` records sent after `since` are acknowledged.
    pub async fn wait_for_acks(&self, since: Instant, n: usize) {
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
    pub fn gap_since(&self, since: Instant) -> (Duration, Duration) {
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
    pub async fn gap(&self, what: &str, fault_at: Instant) -> Duration {
        self.wait_for_acks(Instant::now(), 20).await;
        let (gap, began) = self.gap_since(fault_at);
        println!(
            "{what}: longest time without an acks=all acknowledgement: {gap:?} (from {began:?} after the fault began)"
        );
        gap
    }

    /// Stops the producer, checks every acknowledged record, and compares the replicas.
    pub async fn finish(mut self) {
        self.stop.send(true).unwrap();
        self.producer.take().unwrap().await.unwrap().unwrap();
        self.cluster
            .wait_full_isr("t", 1, Duration::from_secs(30))
            .await;
        let ledger = std::mem::take(&mut *self.ledger.lock().unwrap());
        workload::assert_guarantees(&self.cluster, "t", 1, &ledger).await;
        assert_replicas_agree(&self.cluster, "t").await;
        let panics = self.cluster.panics();
        assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    }

    /// After a network fault that began at `fault_at` and was just healed: waits for every ISR
    /// to be full again and for writes to flow, prints both, and asserts that the ISR took at
    /// most [`ISR_AFTER_HEAL`] and the gap at most `gap_bound`.
    pub async fn healed(&self, what: &str, fault_at: Instant, gap_bound: Duration) {
        let healed = self
            .cluster
            .wait_full_isr("t", 1, Duration::from_secs(30))
            .await;
        println!("{what}: ISR full again {healed:?} after the heal");
        let gap = self.gap(what, fault_at).await;
        self.assert_gap(gap, gap_bound, what);
        assert!(
            healed <= ISR_AFTER_HEAL,
            "{what}: ISR full {healed:?} after the heal"
        );
    }

    /// Asserts a gap, printing every process log's end when it fails.
    pub fn assert_gap(&self, gap: Duration, bound: Duration, what: &str) {
        assert!(
            gap <= bound,
            "{what}: gap {gap:?} over {bound:?}\n{}",
            self.cluster.log_tails(30)
        );
    }
}

/// Every replica of `topic`-0 holds the same bytes (once followers caught up).
pub async fn assert_replicas_agree(cluster: &TestCluster, topic: &str) {
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

/// Lines of the cluster's logs that record an ISR change of `t` (by the controller or a
/// leader).
pub fn isr_changes(cluster: &TestCluster) -> usize {
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

/// `text` without terminal colour sequences (`ESC [ ... m`), e.g. a process's log line.
pub fn strip_ansi(text: &str) -> String {
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
