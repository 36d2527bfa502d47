//! `sluice cluster status|reassignments|rebalance|config` and `sluice node
//! decommission|recommission`.

use clap::Subcommand;
use sluice_client::{Admin, ClientConfig};

use super::table;

/// Cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Controller, coordinators, storage nodes and partition health.
    Status,
    /// Partition moves under way: replicas catching up (bytes copied) and replicas that go.
    Reassignments {
        /// Cancel every move under way (each partition goes back to its replicas before it).
        #[arg(long)]
        cancel: bool,
    },
    /// Even out replicas and preferred leaders over the storage nodes (racks kept, few moves).
    Rebalance {
        /// Print the plan without starting it.
        #[arg(long)]
        dry_run: bool,
        /// Also write the plan to this file (for `sluice topic reassign --plan`).
        #[arg(long)]
        plan_out: Option<std::path::PathBuf>,
    },
    /// Show the cluster-wide settings, or change them live (e.g. the reassignment throttle,
    /// automatic balancing).
    Config {
        /// Setting to change as key=value (repeatable), e.g.
        /// --set reassignment.throttle.bytes.per.second=10485760.
        #[arg(long)]
        set: Vec<String>,
        /// Setting to return to its default (repeatable).
        #[arg(long)]
        delete: Vec<String>,
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
        /// Wait until the node holds no replica (safe to remove), printing progress.
        #[arg(long)]
        wait: bool,
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
        NodeCmd::Decommission { id, wait } => {
            admin.decommission_node(id, false).await?;
            if !wait {
                outln!(
                    "node {id} is being decommissioned; `sluice cluster status` shows the replicas left"
                );
                return Ok(());
            }
            let mut last = None;
            loop {
                let c = admin.describe_cluster().await?;
                // A node listed nowhere holds no replica and is not registered.
                let left = c.nodes.iter().find(|n| n.node_id == id).map(|n| n.replicas);
                match left {
                    Some(0) | None => break,
                    Some(n) if last != Some(n) => {
                        outln!("node {id}: {n} replicas left");
                        last = Some(n);
                    }
                    Some(_) => {}
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            outln!("node {id} holds no replica: safe to remove");
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
    if let ClusterCmd::Config { set, delete } = cmd {
        let set = super::topic::parse_config(&set)?;
        return super::moves::cluster_config(&admin, set, delete).await;
    }
    if let ClusterCmd::Rebalance { dry_run, plan_out } = cmd {
        let moves = admin.rebalance(dry_run).await?;
        if let Some(path) = &plan_out {
            super::moves::write_plan(path, &moves)?;
            outln!("plan written to {}", path.display());
        }
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
    if let ClusterCmd::Reassignments { cancel } = cmd {
        if cancel {
            let cancelled = admin.cancel_all_reassignments().await?;
            outln!("{} move(s) cancelled", cancelled.len());
        }
        super::moves::print_reassignments(admin.list_reassignments().await?);
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
            _ if !n.registered && !n.decommissioning => "gone (not registered)".to_string(),
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
