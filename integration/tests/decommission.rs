//! Node decommission on real processes, under an `acks=all` load read back by the checker:
//! `sluice node decommission` empties the node a few partitions at a time, `cluster status`
//! reports it safe to remove, and stopping it afterwards leaves no partition under-replicated;
//! new topics skip it, and recommission lets it take replicas again.

use std::time::{Duration, Instant};

use sluice_integration::workload;
use sluice_integration::{ClusterSpec, TestCluster, config};

const TOPIC: &str = "dc";
const PARTITIONS: i32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_is_emptied_under_load_and_can_then_go() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let min_isr = config(&[("min.insync.replicas", "2")]);
    admin
        .create_topic(TOPIC, PARTITIONS, 3, min_isr.clone())
        .await
        .unwrap();
    cluster
        .wait_full_isr(TOPIC, PARTITIONS, Duration::from_secs(30))
        .await;
    let load = workload::AcksAllLoad::start(&cluster, TOPIC, PARTITIONS);
    tokio::time::sleep(Duration::from_millis(300)).await;

    admin.decommission_node(0, false).await.unwrap();
    let started = Instant::now();
    let status = loop {
        let c = admin.describe_cluster().await.unwrap();
        let n0 = c.nodes.iter().find(|n| n.node_id == 0).cloned().unwrap();
        assert!(n0.decommissioning);
        if n0.replicas == 0 {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 0 still holds {} replicas",
            n0.replicas
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("node 0 emptied under load in {:?}", started.elapsed());
    for n in status.nodes.iter().filter(|n| n.node_id != 0) {
        assert_eq!(
            n.replicas, PARTITIONS,
            "node {} holds a replica of each",
            n.node_id
        );
    }
    // New topics skip it.
    let fresh = admin.create_topic("after", 4, 3, min_isr).await.unwrap();
    assert!(fresh.partitions.iter().all(|p| !p.replicas.contains(&0)));

    // Stopping it now leaves every partition with its full ISR.
    cluster.kill_node(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = admin.describe_topic(TOPIC).await.unwrap();
    for p in &t.partitions {
        assert_eq!(
            p.isr.len(),
            3,
            "partition {} after node 0 went: {p:?}",
            p.partition
        );
    }
    load.check(&cluster).await;

    // Recommissioned, it takes replicas of new topics again.
    cluster.restart_node(0).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    admin.decommission_node(0, true).await.unwrap();
    let again = admin
        .create_topic("again", 8, 3, Default::default())
        .await
        .unwrap();
    assert!(again.partitions.iter().any(|p| p.replicas.contains(&0)));
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
