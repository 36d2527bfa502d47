//! Partition reassignment on real processes under an `acks=all` load read back by the checker
//! (every acknowledged record exactly once, in order): every partition moves off one node
//! (leadership first where it led) onto the fourth; then, mid-move, the active controller and
//! the node the replicas leave are SIGKILLed and the successor finishes the moves from the
//! state in etcd. The replicas that leave delete their data; the new ones hold the leader's
//! batches byte for byte. And a storage node that joins a running cluster receives its share
//! of replicas and preferred leaders without an operator command.

use std::time::{Duration, Instant};

use sluice_integration::workload;
use sluice_integration::{ClusterSpec, TestCluster, config};
use sluice_proto::pb::PartitionReassignment;

const TOPIC: &str = "mv";
const PARTITIONS: i32 = 4;

/// Every partition's replicas and target, as described.
async fn replicas(cluster: &TestCluster) -> Vec<(Vec<i32>, Vec<i32>)> {
    replicas_of(cluster, TOPIC).await
}

async fn replicas_of(cluster: &TestCluster, topic: &str) -> Vec<(Vec<i32>, Vec<i32>)> {
    let admin = cluster.admin().await.unwrap();
    let t = admin.describe_topic(topic).await.unwrap();
    t.partitions
        .iter()
        .map(|p| (p.replicas.clone(), p.target_replicas.clone()))
        .collect()
}

/// Moves every partition that has a replica on `from` to `to` instead (keeping the order).
async fn move_all(cluster: &TestCluster, from: i32, to: i32) -> Vec<Vec<i32>> {
    let now = replicas(cluster).await;
    let targets: Vec<Vec<i32>> = now
        .iter()
        .map(|(r, _)| r.iter().map(|n| if *n == from { to } else { *n }).collect())
        .collect();
    let moves = targets
        .iter()
        .enumerate()
        .filter(|(p, t)| **t != now[*p].0)
        .map(|(p, t)| PartitionReassignment {
            topic: TOPIC.into(),
            partition: p as i32,
            replicas: t.clone(),
        })
        .collect();
    cluster
        .admin()
        .await
        .unwrap()
        .reassign_partitions(moves)
        .await
        .unwrap();
    targets
}

async fn wait_moved(cluster: &TestCluster, targets: &[Vec<i32>], within: Duration) -> Duration {
    wait_topic_moved(cluster, TOPIC, targets, within).await
}

async fn wait_topic_moved(
    cluster: &TestCluster,
    topic: &str,
    targets: &[Vec<i32>],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = replicas_of(cluster, topic).await;
        let done = now
            .iter()
            .zip(targets)
            .all(|((r, target), want)| r == want && target.is_empty());
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "moves not finished: {now:?}, want {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_nodes_under_load_across_a_controller_failover() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 2,
        storage_nodes: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    // The moves here are the operator's; automatic balancing would even them out again (node 3
    // is emptied, killed and restarted).
    let manual = config(&[("auto.balance.enable", "false")]);
    admin.alter_cluster_config(manual, vec![]).await.unwrap();
    let min_isr = config(&[("min.insync.replicas", "2")]);
    admin
        .create_topic(TOPIC, PARTITIONS, 3, min_isr)
        .await
        .unwrap();
    cluster
        .wait_full_isr(TOPIC, PARTITIONS, Duration::from_secs(30))
        .await;
    let load = workload::AcksAllLoad::start(&cluster, TOPIC, PARTITIONS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Off node 0 (onto whichever node each partition lacks, node 3 for those on 0, 1, 2).
    let before = replicas(&cluster).await;
    let spare = |r: &Vec<i32>| (0..4).find(|n| !r.contains(n)).unwrap();
    let on_0: Vec<usize> = (0..PARTITIONS as usize)
        .filter(|p| before[*p].0.contains(&0))
        .collect();
    assert!(!on_0.is_empty(), "{before:?}");
    let moves: Vec<PartitionReassignment> = on_0
        .iter()
        .map(|p| PartitionReassignment {
            topic: TOPIC.into(),
            partition: *p as i32,
            replicas: before[*p]
                .0
                .iter()
                .map(|n| if *n == 0 { spare(&before[*p].0) } else { *n })
                .collect(),
        })
        .collect();
    let mut targets: Vec<Vec<i32>> = before.iter().map(|(r, _)| r.clone()).collect();
    for m in &moves {
        targets[m.partition as usize] = m.replicas.clone();
    }
    admin.reassign_partitions(moves).await.unwrap();
    let took = wait_moved(&cluster, &targets, Duration::from_secs(60)).await;
    println!(
        "moved {} partitions off node 0 under load in {took:?}",
        on_0.len()
    );
    assert!(admin.list_reassignments().await.unwrap().is_empty());

    // Back onto node 0 from the node that received most; kill the active controller mid-move.
    let targets = move_all(&cluster, 3, 0).await;
    let moving = admin.list_reassignments().await.unwrap();
    println!("moving back: {moving:?}");
    let active = cluster.active_coordinator().await.unwrap();
    cluster.kill_coordinator(active);
    cluster.kill_node(3);
    let took = wait_moved(&cluster, &targets, Duration::from_secs(60)).await;
    println!(
        "moves finished {took:?} after the controller and the source node were killed mid-move"
    );
    cluster.restart_coordinator(active).unwrap();
    cluster.restart_node(3).unwrap();

    load.check(&cluster).await;
    cluster
        .wait_full_isr(TOPIC, PARTITIONS, Duration::from_secs(30))
        .await;
    for (p, r) in targets.iter().enumerate() {
        let leader = cluster.leader_of(TOPIC, p as i32).await.unwrap() as usize;
        let want = cluster.replica_log(leader, TOPIC, p as i32).await.unwrap();
        for n in r {
            let got = cluster
                .replica_log(*n as usize, TOPIC, p as i32)
                .await
                .unwrap();
            assert_eq!(got, want, "node {n} holds partition {p} as its leader does");
        }
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_receives_its_share_of_replicas_and_leaders_by_itself() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let often = config(&[("leader.imbalance.check.interval.ms", "1000")]);
    admin.alter_cluster_config(often, vec![]).await.unwrap();
    // Node 3 is down while the topic is made; it joins afterwards.
    cluster.kill_node(3);
    let started = Instant::now();
    let registered = |c: &sluice_proto::pb::DescribeClusterResponse| {
        c.nodes.iter().filter(|n| n.registered).count()
    };
    while registered(&admin.describe_cluster().await.unwrap()) != 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 3 still registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .create_topic("rb", 24, 3, Default::default())
        .await
        .unwrap();
    cluster
        .wait_full_isr("rb", 24, Duration::from_secs(30))
        .await;
    cluster.restart_node(3).unwrap();
    let started = Instant::now();
    let (replicas, leaders) = loop {
        let t = admin.describe_topic("rb").await.unwrap();
        let mut replicas = [0usize; 4];
        let mut leaders = [0usize; 4];
        for p in &t.partitions {
            for r in &p.replicas {
                replicas[*r as usize] += 1;
            }
            if p.leader >= 0 && p.leader == p.replicas[0] {
                leaders[p.leader as usize] += 1;
            }
        }
        let settled = t.partitions.iter().all(|p| p.target_replicas.is_empty());
        if settled && replicas == [18; 4] && leaders == [6; 4] {
            break (replicas, leaders);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not balanced: replicas {replicas:?}, preferred leaders leading {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "node 3 joined: replicas {replicas:?}, leaders {leaders:?} after {:?}",
        started.elapsed()
    );
    assert!(
        admin.rebalance(true).await.unwrap().is_empty(),
        "balanced: nothing more to move"
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reassignment_throttle_caps_catch_up_and_changes_live() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("th", 1, 1, Default::default())
        .await
        .unwrap();
    let producer = cluster.producer().await;
    let value = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let mut acks = Vec::new();
    for _ in 0..128 {
        let r = sluice_client::ProducerRecord::new("th", value.clone()).partition(0);
        acks.push(producer.send(r).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    producer.close().await.unwrap();
    let from = admin.describe_topic("th").await.unwrap().partitions[0].replicas[0];
    let to = 1 - from;

    // 8 MiB at 1 MiB/s: after 2 s the new replica holds at most about 3 MiB of it.
    let throttle = "reassignment.throttle.bytes.per.second";
    let slow = config(&[(throttle, "1048576")]);
    admin.alter_cluster_config(slow, vec![]).await.unwrap();
    let target = vec![to];
    admin
        .reassign_partitions(vec![PartitionReassignment {
            topic: "th".into(),
            partition: 0,
            replicas: target.clone(),
        }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moving = admin.list_reassignments().await.unwrap();
    let m = moving.first().expect("still moving at 1 MiB/s");
    let copied = m.adding_bytes.first().map_or(0, |r| r.bytes);
    println!(
        "after 2 s at 1 MiB/s: {copied} of {} bytes copied",
        m.leader_bytes
    );
    assert!(m.leader_bytes >= 8 << 20, "{m:?}");
    assert!(
        copied <= 3 << 20,
        "the throttle holds catch-up to 1 MiB/s: {m:?}"
    );

    // Lifted live: the move finishes.
    admin
        .alter_cluster_config(config(&[(throttle, "-1")]), vec![])
        .await
        .unwrap();
    let took = wait_topic_moved(&cluster, "th", &[target], Duration::from_secs(60)).await;
    println!("finished {took:?} after the throttle was lifted");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
