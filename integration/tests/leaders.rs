//! Preferred leader election on real processes. On request (automatic balancing off): after a
//! storage node's restart its partitions stay led elsewhere; `ElectLeaders` moves each back to
//! its preferred replica once that is in sync, refuses (per partition, saying why) while it is
//! down, and producers follow the moves. By itself: a rolling restart of every storage node
//! under an `acks=all` load ends with every partition led by its preferred replica, and
//! nothing acknowledged is lost.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::ProducerRecord;
use sluice_integration::workload;
use sluice_integration::{ClusterSpec, TestCluster, config};

const TOPIC: &str = "pl";

/// The preferred (first) replica and the leader of every partition.
async fn leaders(cluster: &TestCluster) -> Vec<(i32, i32)> {
    let t = cluster
        .admin()
        .await
        .unwrap()
        .describe_topic(TOPIC)
        .await
        .unwrap();
    t.partitions
        .iter()
        .map(|p| (p.replicas[0], p.leader))
        .collect()
}

/// Three storage nodes with `setting` in the cluster config, and the topic: 6 partitions at RF 3,
/// `min.insync.replicas=2`, every ISR full.
async fn start(setting: (&str, &str)) -> (TestCluster, sluice_client::Admin) {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .alter_cluster_config(config(&[setting]), vec![])
        .await
        .unwrap();
    let min_isr = config(&[("min.insync.replicas", "2")]);
    admin.create_topic(TOPIC, 6, 3, min_isr).await.unwrap();
    cluster
        .wait_full_isr(TOPIC, 6, Duration::from_secs(30))
        .await;
    (cluster, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_goes_back_to_preferred_replicas_on_request_once_they_are_in_sync() {
    let (mut cluster, admin) = start(("auto.leader.rebalance.enable", "false")).await;
    let at_start = leaders(&cluster).await;
    assert!(
        at_start
            .iter()
            .all(|(preferred, leader)| preferred == leader)
    );
    let on_0: Vec<usize> = (0..6).filter(|p| at_start[*p].0 == 0).collect();
    assert!(!on_0.is_empty(), "{at_start:?}");

    cluster.kill_node(0);
    for p in &on_0 {
        cluster
            .wait_partition(TOPIC, *p as i32, Duration::from_secs(20), |s| s.leader > 0)
            .await
            .unwrap();
    }
    // While node 0 is down its partitions cannot go back, and the answer says why.
    let refused = admin.elect_leaders(TOPIC, vec![]).await.unwrap();
    for p in &on_0 {
        let r = &refused[*p];
        assert!(
            !r.moved && r.message.contains("not a live, in-sync member"),
            "{r:?}"
        );
    }

    cluster.restart_node(0).unwrap();
    cluster
        .wait_full_isr(TOPIC, 6, Duration::from_secs(30))
        .await;
    let restarted = leaders(&cluster).await;
    for p in &on_0 {
        assert_ne!(restarted[*p].1, 0, "automatic leader balancing is off");
    }
    let elected = admin.elect_leaders(TOPIC, vec![]).await.unwrap();
    for (p, r) in elected.iter().enumerate() {
        assert_eq!(r.moved, on_0.contains(&p), "{r:?}");
        assert_eq!(r.leader, at_start[p].0, "{r:?}");
    }
    for (p, (preferred, _)) in at_start.iter().enumerate() {
        cluster
            .wait_partition(TOPIC, p as i32, Duration::from_secs(10), |s| {
                s.leader == *preferred
            })
            .await
            .unwrap();
    }
    // Producers follow the moved leaders.
    let producer = cluster.producer().await;
    for p in 0..6 {
        let r = ProducerRecord::new(TOPIC, Bytes::from_static(b"after")).partition(p);
        producer.send(r).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();
    let e = admin.elect_leaders(TOPIC, vec![9]).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(sluice_proto::pb::ErrorCode::UnknownPartition),
        "{e}"
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_ends_with_every_partition_led_by_its_preferred_replica() {
    let (mut cluster, _) = start(("leader.imbalance.check.interval.ms", "1000")).await;
    let load = workload::AcksAllLoad::start(&cluster, TOPIC, 6);
    for n in 0..3 {
        // A graceful stop hands the node's leaderships over first (controlled shutdown).
        let exit = cluster.stop_node_gracefully(n, Duration::from_secs(20));
        assert!(exit.is_some_and(|e| e.success()), "node {n}: {exit:?}");
        cluster.restart_node(n).unwrap();
        cluster
            .wait_full_isr(TOPIC, 6, Duration::from_secs(30))
            .await;
    }
    let started = Instant::now();
    loop {
        let now = leaders(&cluster).await;
        if now.iter().all(|(preferred, leader)| preferred == leader) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "leaders not back on their preferred replicas: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "every leader back on its preferred replica {:?} after the last restart",
        started.elapsed()
    );
    load.check(&cluster).await;
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
