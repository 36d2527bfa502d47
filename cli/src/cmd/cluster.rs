//! `sluice cluster status|reassignments`.

use clap::Subcommand;
use sluice_client::{Admin, ClientConfig};

use super::table;

/// Cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Controller, coordinators, storage nodes and partition health.
    Status,
    /// Partition moves under way: replicas catching up and replicas that go.
    Reassignments,
}

/// Runs a cluster subcommand.
pub async fn run(cmd: ClusterCmd, client: ClientConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    if let ClusterCmd::Reassignments = cmd {
        let moves = admin.list_reassignments().await?;
        if moves.is_empty() {
            outln!("no partition is moving");
            return Ok(());
        }
        let mut tab = table(&[
            "topic",
            "partition",
            "replicas",
            "target",
            "catching up",
            "leaving",
        ]);
        for m in moves {
            tab.add_row(vec![
                m.topic,
                m.partition.to_string(),
                super::ids(&m.replicas),
                super::ids(&m.target_replicas),
                super::ids(&m.adding),
                super::ids(&m.removing),
            ]);
        }
        outln!("{tab}");
        return Ok(());
    }
    let c = admin.describe_cluster().await?;
    let controller = c
        .controller
        .as_ref()
        .map(|c| format!("{} at {}", c.coordinator_id, c.address))
        .unwrap_or_else(|| "none".into());
    outln!("cluster {}: controller {controller}", c.cluster_name);
    outln!(
        "{} topics, {} partitions, {} offline",
        c.topic_count,
        c.partition_count,
        c.offline_partitions
    );
    let mut coords = table(&["coordinator", "address", "role"]);
    for k in &c.coordinators {
        coords.add_row(vec![
            k.coordinator_id.clone(),
            k.address.clone(),
            if k.active { "active" } else { "standby" }.to_string(),
        ]);
    }
    outln!("{coords}");
    let mut nodes = table(&["node", "address", "rack"]);
    for n in &c.nodes {
        nodes.add_row(vec![
            n.node_id.to_string(),
            n.address.clone(),
            n.rack.clone(),
        ]);
    }
    outln!("{nodes}");
    Ok(())
}
