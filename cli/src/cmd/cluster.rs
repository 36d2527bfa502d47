//! `sluice cluster status|reassignments|rebalance` and `sluice node decommission|recommission`.

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
    /// Even out replicas and preferred leaders over the storage nodes (racks kept, few moves).
    Rebalance {
        /// Print the plan without starting it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Storage node subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Empty a storage node before removing it: its replicas move to the other nodes (a few
    /// partitions at a time) and no new ones go to it; `sluice cluster status` says when it is
    /// safe to remove.
    Decommission {
        /// The node id.
        id: i32,
    },
    /// Let a decommissioned node take replicas again (those already moved stay put).
    Recommission {
        /// The node id.
        id: i32,
    },
}

/// Runs a node subcommand.
pub async fn run_node(cmd: NodeCmd, client: ClientConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match cmd {
        NodeCmd::Decommission { id } => {
            admin.decommission_node(id, false).await?;
            outln!(
                "node {id} is being decommissioned; `sluice cluster status` shows the replicas left"
            );
        }
        NodeCmd::Recommission { id } => {
            admin.decommission_node(id, true).await?;
            outln!("node {id} takes replicas again");
        }
    }
    Ok(())
}

/// Runs a cluster subcommand.
pub async fn run(cmd: ClusterCmd, client: ClientConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    if let ClusterCmd::Rebalance { dry_run } = cmd {
        let moves = admin.rebalance(dry_run).await?;
        if moves.is_empty() {
            outln!("balanced: nothing to move");
            return Ok(());
        }
        let mut tab = table(&["topic", "partition", "to"]);
        for m in &moves {
            tab.add_row(vec![
                m.topic.clone(),
                m.partition.to_string(),
                super::ids(&m.replicas),
            ]);
        }
        outln!("{tab}");
        let verb = if dry_run { "would move" } else { "moving" };
        outln!(
            "{verb} {} partitions; `sluice cluster reassignments` shows progress",
            moves.len()
        );
        return Ok(());
    }
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
    let mut nodes = table(&["node", "address", "rack", "replicas", "state"]);
    for n in &c.nodes {
        let state = match (n.decommissioning, n.replicas) {
            (false, _) => "serving".to_string(),
            (true, 0) => "decommissioned: safe to remove".to_string(),
            (true, left) => format!("decommissioning: {left} replicas left"),
        };
        nodes.add_row(vec![
            n.node_id.to_string(),
            n.address.clone(),
            n.rack.clone(),
            n.replicas.to_string(),
            state,
        ]);
    }
    outln!("{nodes}");
    Ok(())
}
