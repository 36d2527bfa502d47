//! `sluice cluster status`.

use clap::Subcommand;
use sluice_client::{Admin, ClientConfig};

use super::table;

/// Cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Controller, coordinators, storage nodes and partition health.
    Status,
}

/// Runs a cluster subcommand.
pub async fn run(cmd: ClusterCmd, client: ClientConfig) -> anyhow::Result<()> {
    let ClusterCmd::Status = cmd;
    let admin = Admin::connect(client).await?;
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
