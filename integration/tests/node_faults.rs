//! The node rows of the fault matrix: a leader's data directory wiped, the last in-sync replica
//! wiped, a 5 s etcd pause, and 3,000 partitions with a leader restarted, each under an
//! `acks=all` producer (`sluice_integration::matrix`) and checked afterwards. Seeded: set
//! `SLUICE_CHAOS_SEED` to replay a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice_client::{Acks, ProducerConfig};
use sluice_integration::matrix::{FAULT, GAP_OVER_FAULT, seed, start};
use sluice_integration::{ClusterSpec, TestCluster};

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
    // A topic created while the wiped node comes back;
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
    run.cluster
        .wait_full_isr("late", 3, Duration::from_secs(30))
        .await;
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
    run.cluster
        .wait_full_isr("u", 1, Duration::from_secs(30))
        .await;
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
    cluster.wait_full_isr("many", N, bound).await;
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
