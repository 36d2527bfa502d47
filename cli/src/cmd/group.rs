//! `sluice group list|describe|reset|delete`.

use clap::{ArgGroup, Subcommand};
use sluice_client::{Admin, ClientConfig, SeekTo};

use super::table;

/// Consumer group subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List the cluster's consumer groups (asks every storage node).
    List,
    /// Show a group's members, assignments, committed offsets and lag per partition.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets on a topic; prints the plan, and commits it only with
    /// --execute (the group must have no members).
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_timestamp", "to_offset"])))]
    Reset {
        /// Group id.
        group: String,
        /// Topic whose partitions are reset.
        #[arg(long)]
        topic: String,
        /// The earliest retained offset.
        #[arg(long)]
        to_earliest: bool,
        /// The log end (skip everything not yet consumed).
        #[arg(long)]
        to_latest: bool,
        /// The first record at or after this time (ms since the Unix epoch).
        #[arg(long, value_name = "MS")]
        to_timestamp: Option<i64>,
        /// This offset on every partition (clamped into the log).
        #[arg(long, value_name = "N")]
        to_offset: Option<i64>,
        /// Commit the plan; without it, only print it.
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group and its committed offsets (it must have no members).
    Delete {
        /// Group id.
        group: String,
    },
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Runs a group subcommand.
pub async fn run(cmd: GroupCmd, client: ClientConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match cmd {
        GroupCmd::List => {
            let mut t = table(&["group", "state", "members"]);
            for g in admin.list_groups().await? {
                t.add_row(vec![g.group_id, g.state, g.members.to_string()]);
            }
            outln!("{t}");
        }
        GroupCmd::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            outln!(
                "group {}: state {}, epoch {}, assignor {}, {} members",
                d.group_id,
                d.state,
                d.group_epoch,
                d.assignor,
                d.members.len()
            );
            let mut members = table(&["member", "instance", "epoch", "topics", "assignment"]);
            for m in &d.members {
                let assignment = m
                    .assignment
                    .iter()
                    .map(|tp| format!("{}:{}", tp.topic, super::ids(&tp.partitions)))
                    .collect::<Vec<_>>()
                    .join(" ");
                members.add_row(vec![
                    m.member_id.clone(),
                    m.instance_id.clone(),
                    m.member_epoch.to_string(),
                    m.subscribed_topics.join(","),
                    assignment,
                ]);
            }
            outln!("{members}");
            let mut parts = table(&[
                "topic",
                "partition",
                "committed",
                "log end",
                "lag",
                "member",
            ]);
            for p in &d.partitions {
                parts.add_row(vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    opt(p.committed),
                    opt(p.log_end),
                    opt(p.lag),
                    p.member_id.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            outln!("{parts}");
            outln!("total lag: {}", d.total_lag);
        }
        GroupCmd::Reset {
            group,
            topic,
            to_earliest,
            to_latest: _,
            to_timestamp,
            to_offset,
            execute,
        } => {
            let to = match (to_earliest, to_timestamp, to_offset) {
                (true, _, _) => SeekTo::Earliest,
                (_, Some(ms), _) => SeekTo::Timestamp(ms),
                (_, _, Some(n)) => SeekTo::Offset(n),
                _ => SeekTo::Latest,
            };
            let plan = admin.reset_offsets(&group, &topic, to, execute).await?;
            let mut t = table(&["topic", "partition", "current", "new"]);
            for p in &plan {
                t.add_row(vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    opt(p.current),
                    p.target.to_string(),
                ]);
            }
            outln!("{t}");
            if execute {
                outln!("committed new offsets for group {group}");
            } else {
                outln!("dry run: nothing committed; add --execute to apply");
            }
        }
        GroupCmd::Delete { group } => {
            admin.delete_group(&group).await?;
            outln!("deleted group {group}");
        }
    }
    Ok(())
}
