//! `sluice topic create|list|describe|alter|delete|delete-records|elect-leaders|add-partitions`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;
use sluice_client::{Admin, ClientConfig};

use super::{hex, ids, table};

/// Topic subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition (0: the cluster default).
        #[arg(long, short = 'r', default_value_t = 0)]
        replication_factor: i32,
        /// Topic config as key=value (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", short = 'c')]
        config: Vec<String>,
    },
    /// List topics.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions, leaders, replicas and config.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Change a topic's config; every replica applies it at once, without a restart.
    Alter {
        /// Topic name.
        name: String,
        /// Config to set as key=value (repeatable), e.g. --config min.insync.replicas=2.
        #[arg(long = "config", short = 'c')]
        config: Vec<String>,
        /// Config key to remove, so it returns to its default (repeatable).
        #[arg(long = "delete-config")]
        delete_config: Vec<String>,
        /// Check the change and show the result without applying it.
        #[arg(long)]
        validate_only: bool,
    },
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Delete a partition's records before an offset (as kafka-delete-records); prints the new
    /// log start (low watermark).
    DeleteRecords {
        /// Topic name.
        name: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// Records before this offset are deleted; -1 deletes every committed record.
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
    /// Move partitions to other storage nodes (the first is the preferred leader): one with
    /// NAME --partition P --replicas 1,2,3, or many from a plan file (Kafka's reassignment JSON,
    /// as `sluice cluster rebalance --dry-run --plan-out` writes). The new replicas catch up
    /// before the old ones go; `sluice cluster reassignments` shows progress.
    Reassign {
        /// Topic name (with --partition).
        name: Option<String>,
        /// The partition.
        #[arg(long, requires = "name")]
        partition: Option<i32>,
        /// The node ids it moves to, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',')]
        replicas: Vec<i32>,
        /// A plan file: {"version": 1, "partitions": [{"topic": "t", "partition": 0,
        /// "replicas": [1, 2, 3]}]}.
        #[arg(long, conflicts_with_all = ["name", "replicas"])]
        plan: Option<std::path::PathBuf>,
        /// Cancel the named moves: each partition goes back to its replicas before the move.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
    /// Move leadership back to each partition's preferred (first) replica where it is in sync.
    ElectLeaders {
        /// Topic name.
        name: String,
        /// Only this partition (repeatable; default: all).
        #[arg(long)]
        partition: Vec<i32>,
    },
    /// Raise a topic's partition count.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        total: i32,
    },
}

/// A byte count for people (B, KiB, MiB, GiB).
fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// `key=value` items as a config map.
pub fn parse_config(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("config '{item}' is not key=value (e.g. retention.ms=3600000)");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Prints a topic; with `replicas` (from the leaders) each partition's log start and size too.
fn print_description(
    t: &sluice_proto::pb::TopicDescription,
    replicas: Option<&BTreeMap<i32, sluice_proto::pb::ReplicaInfo>>,
) {
    outln!(
        "topic {} (id {}, replication factor {})",
        t.name,
        hex(&t.topic_id),
        t.replication_factor
    );
    let mut columns = vec!["partition", "leader", "epoch", "replicas", "isr"];
    if replicas.is_some() {
        columns.extend(["log start", "end", "size"]);
    }
    let mut tab = table(&columns);
    for p in &t.partitions {
        let leader = if p.leader < 0 {
            "none".to_string()
        } else {
            p.leader.to_string()
        };
        let mut row = vec![
            p.partition.to_string(),
            leader,
            p.leader_epoch.to_string(),
            ids(&p.replicas),
            ids(&p.isr),
        ];
        if let Some(r) = replicas {
            match r.get(&p.partition) {
                Some(i) => row.extend([
                    i.log_start_offset.to_string(),
                    i.high_watermark.to_string(),
                    bytes(i.size_bytes),
                ]),
                None => row.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
            }
        }
        tab.add_row(row);
    }
    outln!("{tab}");
    for p in t.partitions.iter().filter(|p| !p.offline_reason.is_empty()) {
        outln!("partition {} is offline: {}", p.partition, p.offline_reason);
    }
    if !t.config.is_empty() {
        let mut cfg = table(&["config", "value", "source"]);
        let sorted: BTreeMap<_, _> = t.config.iter().collect();
        for (k, v) in sorted {
            let source = if t.default_configs.contains(k) {
                "default"
            } else {
                "topic"
            };
            cfg.add_row(vec![k.clone(), v.clone(), source.to_string()]);
        }
        outln!("{cfg}");
    }
}

/// Runs a topic subcommand.
pub async fn run(cmd: TopicCmd, client: ClientConfig) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            config,
        } => {
            let t = admin
                .create_topic(
                    &name,
                    partitions,
                    replication_factor,
                    parse_config(&config)?,
                )
                .await?;
            outln!(
                "created topic {} with {} partition(s)",
                t.name,
                t.partitions.len()
            );
        }
        TopicCmd::List { internal } => {
            let topics = admin.list_topics(internal).await?;
            let mut tab = table(&["topic", "partitions", "replication", "id"]);
            for t in topics {
                tab.add_row(vec![
                    t.name,
                    t.partitions.to_string(),
                    t.replication_factor.to_string(),
                    hex(&t.topic_id),
                ]);
            }
            outln!("{tab}");
        }
        TopicCmd::Describe { name } => {
            let t = admin.describe_topic(&name).await?;
            let replicas = admin.describe_replicas(&name).await.ok();
            print_description(&t, replicas.as_ref());
        }
        TopicCmd::Alter {
            name,
            config,
            delete_config,
            validate_only,
        } => {
            let t = admin
                .alter_topic_config(&name, parse_config(&config)?, delete_config, validate_only)
                .await?;
            if validate_only {
                outln!("valid; nothing changed. The config would be:");
            } else {
                outln!("altered topic {}", t.name);
            }
            print_description(&t, None);
        }
        TopicCmd::Delete { name } => {
            admin.delete_topic(&name).await?;
            outln!("deleted topic {name}");
        }
        TopicCmd::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let low = admin.delete_records(&name, partition, before).await?;
            outln!("{name}-{partition}: records before {low} deleted; low watermark {low}");
        }
        TopicCmd::Reassign {
            name,
            partition,
            replicas,
            plan,
            cancel,
        } => {
            let args = super::moves::ReassignArgs {
                name,
                partition,
                replicas,
                plan,
                cancel,
            };
            super::moves::reassign(&admin, args).await?;
        }
        TopicCmd::ElectLeaders { name, partition } => {
            let mut tab = table(&["partition", "leader", "result"]);
            for r in admin.elect_leaders(&name, partition).await? {
                let result = if r.moved {
                    "moved to the preferred replica".to_string()
                } else {
                    r.message
                };
                tab.add_row(vec![r.partition.to_string(), r.leader.to_string(), result]);
            }
            outln!("{tab}");
        }
        TopicCmd::AddPartitions { name, total } => {
            let t = admin.create_partitions(&name, total).await?;
            outln!("topic {} now has {} partitions", t.name, t.partitions.len());
        }
    }
    Ok(())
}
