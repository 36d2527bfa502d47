//! The network rows of the fault matrix: every process in a network namespace of its own, real
//! packet drops between them (see `sluice_integration::netns`; these tests need root and skip
//! themselves, saying why, without it), an `acks=all` producer under way
//! (`sluice_integration::matrix`). Each prints the availability gap it measured and checks
//! every acknowledged record afterwards.

use std::time::{Duration, Instant};

use sluice_integration::matrix::{FAULT, GAP_OVER_FAULT, Run, isr_changes, start};
use sluice_integration::netns::Host;

/// A run with `coordinators` coordinators, the leader of `t`-0 and its namespace.
async fn start_at_leader(coordinators: usize) -> Option<(Run, usize, Host)> {
    let run = start(true, coordinators, &[]).await?;
    let leader = run.leader().await;
    let host = run.cluster.node_hosts[leader].clone();
    Some((run, leader, host))
}

/// Holds the injected fault for [`FAULT`], heals every host, then measures and checks the
/// recovery (see [`Run::healed`]).
async fn hold_and_heal(run: &Run, at: Instant, what: &str, gap_bound: Duration) {
    tokio::time::sleep(FAULT).await;
    run.cluster.net().heal_all().unwrap();
    run.healed(&format!("{what} for {FAULT:?}"), at, gap_bound)
        .await;
}

/// Drops every packet between `host` and etcd or any coordinator.
fn cut_from_metadata(run: &Run, host: &Host) {
    let net = run.cluster.net();
    net.cut_port(host, net.gateway(), run.cluster.etcd.client_port())
        .unwrap();
    for c in &run.cluster.coordinator_hosts {
        net.cut(host, c.ip).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_isolated_from_everything_is_replaced_within_3_s() {
    let Some((run, leader, host)) = start_at_leader(1).await else {
        return;
    };
    let at = Instant::now();
    run.cluster.net().isolate(&host).unwrap();
    let what = format!("node {leader} (leader) isolated");
    hold_and_heal(&run, at, &what, Duration::from_secs(3)).await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_the_other_storage_nodes_loses_nothing() {
    let Some((run, leader, host)) = start_at_leader(1).await else {
        return;
    };
    let at = Instant::now();
    for f in (0..3).filter(|f| *f != leader) {
        run.cluster.net().cut(&host, run.node_ip(f)).unwrap();
    }
    let what = format!("node {leader} (leader) cut from its followers");
    hold_and_heal(&run, at, &what, FAULT + GAP_OVER_FAULT).await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_etcd_and_the_coordinators_is_replaced() {
    let Some((run, leader, host)) = start_at_leader(1).await else {
        return;
    };
    let at = Instant::now();
    cut_from_metadata(&run, &host);
    let what = format!("node {leader} (leader) cut from etcd and the coordinators");
    hold_and_heal(&run, at, &what, FAULT + GAP_OVER_FAULT).await;
    let after = run.cluster.partition_state("t", 0).await.unwrap();
    println!(
        "then led by node {} at epoch {}",
        after.leader, after.leader_epoch
    );
    assert!(
        after.leader_epoch > 0,
        "leadership moved off the cut leader"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_from_etcd_and_the_coordinators_does_not_flap_in_and_out_of_the_isr() {
    let Some((run, leader, _)) = start_at_leader(1).await else {
        return;
    };
    let follower = (0..3).find(|f| *f != leader).unwrap();
    let host = run.cluster.node_hosts[follower].clone();
    let before = isr_changes(&run.cluster);
    let at = Instant::now();
    cut_from_metadata(&run, &host);
    tokio::time::sleep(FAULT).await;
    let during = run.cluster.partition_state("t", 0).await.unwrap();
    run.cluster.net().heal_all().unwrap();
    let what =
        format!("node {follower} (follower) cut from etcd and the coordinators for {FAULT:?}");
    run.healed(&what, at, GAP_OVER_FAULT).await;
    let changes = isr_changes(&run.cluster) - before;
    println!(
        "ISR during the fault {:?}; {changes} ISR changes in all",
        during.isr
    );
    assert!(
        !during.isr.contains(&(follower as i32)),
        "a follower the controller cannot see left the ISR"
    );
    assert!(changes <= 2, "the ISR flapped: {changes} changes");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_follower_to_leader_packets_heal_within_2_s() {
    let Some((run, leader, _)) = start_at_leader(1).await else {
        return;
    };
    let at = Instant::now();
    for f in (0..3).filter(|f| *f != leader) {
        let host = run.cluster.node_hosts[f].clone();
        run.cluster
            .net()
            .drop_one_way(&host, run.node_ip(leader))
            .unwrap();
    }
    let what = format!("followers -> node {leader} (leader) dropped");
    hold_and_heal(&run, at, &what, FAULT + GAP_OVER_FAULT).await;
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
    let other = run.cluster.coordinators[1 - active].address();
    let other = sluice_client::Admin::connect(sluice_client::ClientConfig::new([other]))
        .await
        .unwrap();
    let now_active = other
        .describe_cluster()
        .await
        .unwrap()
        .controller
        .map_or_else(|| "none".to_string(), |c| c.coordinator_id);
    net.heal(&host).unwrap();
    let what = format!("active coordinator {active} cut from etcd (controller now {now_active})");
    let gap = run.gap(&what, at).await;
    run.assert_gap(gap, GAP_OVER_FAULT, "controller cut from etcd");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_replication_connection_costs_acks_less_than_1_s() {
    let Some((run, leader, _)) = start_at_leader(1).await else {
        return;
    };
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
