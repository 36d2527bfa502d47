//! Partition moves from the command line: `sluice topic reassign` (one partition, or a JSON
//! plan file in the format of Kafka's `kafka-reassign-partitions`, or `--cancel`), the progress
//! table of `sluice cluster reassignments`, and `sluice cluster config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sluice_client::Admin;
use sluice_proto::pb;

use super::{ids, table};

/// A reassignment plan file: `{"version": 1, "partitions": [{"topic": "t", "partition": 0,
/// "replicas": [1, 2, 3]}]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanFile {
    /// Format version; 1.
    #[serde(default = "one")]
    pub version: u32,
    /// The moves.
    pub partitions: Vec<PlanEntry>,
}

/// One partition's target in a plan file.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanEntry {
    /// Topic name.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Where it moves to (the first is its preferred leader).
    pub replicas: Vec<i32>,
}

fn one() -> u32 {
    1
}

/// Reads and checks a plan file.
pub fn read_plan(path: &Path) -> anyhow::Result<Vec<pb::PartitionReassignment>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan file {}", path.display()))?;
    let plan: PlanFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "plan file {} is not a reassignment plan; expected {{\"version\": 1, \"partitions\": [{{\"topic\": \"t\", \"partition\": 0, \"replicas\": [1, 2, 3]}}]}}",
            path.display()
        )
    })?;
    if plan.version != 1 {
        bail!(
            "plan file {} has version {}; only version 1 is known",
            path.display(),
            plan.version
        );
    }
    Ok(plan
        .partitions
        .into_iter()
        .map(|e| pb::PartitionReassignment {
            topic: e.topic,
            partition: e.partition,
            replicas: e.replicas,
        })
        .collect())
}

/// Writes `moves` as a plan file (what `sluice topic reassign --plan` reads).
pub fn write_plan(path: &Path, moves: &[pb::PartitionReassignment]) -> anyhow::Result<()> {
    let plan = PlanFile {
        version: 1,
        partitions: moves
            .iter()
            .map(|m| PlanEntry {
                topic: m.topic.clone(),
                partition: m.partition,
                replicas: m.replicas.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&plan)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// What `sluice topic reassign` was given.
pub struct ReassignArgs {
    /// Topic name, with `--partition`.
    pub name: Option<String>,
    /// The partition, with a topic name.
    pub partition: Option<i32>,
    /// Target replicas, with a topic and partition.
    pub replicas: Vec<i32>,
    /// A plan file instead.
    pub plan: Option<PathBuf>,
    /// Cancel the named moves instead of starting them.
    pub cancel: bool,
}

/// Runs `sluice topic reassign`.
pub async fn reassign(admin: &Admin, a: ReassignArgs) -> anyhow::Result<()> {
    let moves = match (&a.plan, &a.name, a.partition) {
        (Some(path), None, None) => read_plan(path)?,
        (None, Some(name), Some(partition)) => vec![pb::PartitionReassignment {
            topic: name.clone(),
            partition,
            replicas: a.replicas.clone(),
        }],
        _ => bail!(
            "give either a topic with --partition (and --replicas, or --cancel), or --plan FILE"
        ),
    };
    if moves.is_empty() {
        bail!("the plan names no partition; nothing to do");
    }
    if a.cancel {
        let named = moves
            .iter()
            .map(|m| (m.topic.clone(), m.partition))
            .collect();
        let cancelled = admin.cancel_reassignments(named).await?;
        for m in &cancelled {
            outln!(
                "{}-{}: move cancelled; going back to {}",
                m.topic,
                m.partition,
                ids(&m.replicas)
            );
        }
        if cancelled.is_empty() {
            outln!("none of those partitions was moving");
        }
        return Ok(());
    }
    if let Some(m) = moves.iter().find(|m| m.replicas.is_empty()) {
        bail!(
            "{}-{}: give the node ids it moves to, e.g. --replicas 1,2,3",
            m.topic,
            m.partition
        );
    }
    let n = moves.len();
    admin.reassign_partitions(moves).await?;
    outln!(
        "moves requested for {n} partition(s) (a partition already on its target stays); `sluice cluster reassignments` shows progress"
    );
    Ok(())
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Prints the moves under way with their progress in bytes.
pub fn print_reassignments(moves: Vec<pb::Reassignment>) {
    if moves.is_empty() {
        outln!("no partition is moving");
        return;
    }
    let mut tab = table(&[
        "topic",
        "partition",
        "replicas",
        "target",
        "catching up",
        "copied",
        "leaving",
    ]);
    for m in moves {
        let copied = m
            .adding_bytes
            .iter()
            .map(|r| format!("{}: {} of {}", r.node_id, mib(r.bytes), mib(m.leader_bytes)))
            .collect::<Vec<_>>()
            .join("; ");
        tab.add_row(vec![
            m.topic,
            m.partition.to_string(),
            ids(&m.replicas),
            ids(&m.target_replicas),
            ids(&m.adding),
            copied,
            ids(&m.removing),
        ]);
    }
    outln!("{tab}");
}

/// Runs `sluice cluster config`: changes what is given, then prints every setting.
pub async fn cluster_config(
    admin: &Admin,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
) -> anyhow::Result<()> {
    let c = if set.is_empty() && delete.is_empty() {
        admin.describe_cluster_config().await?
    } else {
        admin.alter_cluster_config(set, delete).await?
    };
    let mut tab = table(&["config", "value", "source"]);
    let mut keys: Vec<_> = c.config.iter().collect();
    keys.sort();
    for (k, v) in keys {
        let source = if c.default_configs.contains(k) {
            "default"
        } else {
            "set"
        };
        tab.add_row(vec![k.clone(), v.clone(), source.to_string()]);
    }
    outln!("{tab}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_written_reads_back_and_bad_files_say_what_is_expected() {
        let dir = std::env::temp_dir().join(format!("sluice-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        let moves = vec![pb::PartitionReassignment {
            topic: "t".into(),
            partition: 2,
            replicas: vec![3, 1, 2],
        }];
        write_plan(&path, &moves).unwrap();
        assert_eq!(read_plan(&path).unwrap(), moves);
        std::fs::write(&path, "{\"partitions\": [{\"topic\": \"t\"}]}").unwrap();
        let e = read_plan(&path).unwrap_err();
        assert!(format!("{e:#}").contains("expected"), "{e:#}");
        std::fs::write(&path, "{\"version\": 2, \"partitions\": []}").unwrap();
        assert!(format!("{:#}", read_plan(&path).unwrap_err()).contains("version 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
