//! `sluice consume <topic>`: prints records as they arrive (follows by default).

use std::io::Write;

use anyhow::bail;
use clap::Args;
use sluice_client::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig,
    OffsetReset, SeekTo,
};

/// Flags of `sluice consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Start at the earliest offset instead of the end (with --group: for partitions the group
    /// has no committed offset for).
    #[arg(long)]
    pub from_beginning: bool,
    /// Join this consumer group: read the partitions it assigns, commit as records are printed,
    /// and leave on Ctrl-C or after --count records.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at this offset (needs --partition).
    #[arg(long)]
    pub offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Output template with {topic} {partition} {offset} {timestamp} {key} {value}.
    #[arg(long, default_value = "{value}")]
    pub format: String,
}

fn text(b: &Option<bytes::Bytes>) -> String {
    match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

fn render(format: &str, r: &ConsumerRecord) -> String {
    format
        .replace("{topic}", &r.topic)
        .replace("{partition}", &r.partition.to_string())
        .replace("{offset}", &r.offset.to_string())
        .replace("{timestamp}", &r.timestamp_ms.to_string())
        .replace("{key}", &text(&r.key))
        .replace("{value}", &text(&r.value))
        .replace("\\t", "\t")
}

/// Consumes until `--count` records were printed, or forever.
pub async fn run(args: ConsumeArgs, client: ClientConfig) -> anyhow::Result<()> {
    if args.offset.is_some() && args.partition.is_none() {
        bail!("--offset needs --partition (offsets are per partition)");
    }
    if args.count == Some(0) {
        return Ok(());
    }
    if let Some(group) = args.group.clone() {
        return run_group(args, group, client).await;
    }
    let mut consumer = Consumer::new(ConsumerConfig {
        client,
        ..Default::default()
    })
    .await?;
    let partitions = match args.partition {
        Some(p) => vec![p],
        None => consumer.partitions_for(&args.topic).await?,
    };
    let start = match (args.offset, args.from_beginning) {
        (Some(o), _) => SeekTo::Offset(o),
        (None, true) => SeekTo::Earliest,
        (None, false) => SeekTo::Latest,
    };
    consumer
        .assign(
            partitions
                .into_iter()
                .map(|p| (args.topic.clone(), p))
                .collect(),
            start,
        )
        .await?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while let Some(record) = consumer.next().await {
        let record = record?;
        let mut out = stdout.lock();
        if writeln!(out, "{}", render(&args.format, &record)).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
        let _ = out.flush();
        printed += 1;
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(())
}

/// `--group`: a group member that prints what it is assigned, commits every 5 s (and once more
/// when it leaves), and leaves the group at once on Ctrl-C or `--count`.
async fn run_group(args: ConsumeArgs, group: String, client: ClientConfig) -> anyhow::Result<()> {
    let mut consumer = GroupConsumer::new(GroupConsumerConfig {
        client,
        group_id: group,
        topics: vec![args.topic.clone()],
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..Default::default()
    })
    .await?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        let record = tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            r = consumer.next() => r,
        };
        let record = match record {
            Some(Ok(r)) => r,
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        };
        let mut out = stdout.lock();
        if writeln!(out, "{}", render(&args.format, &record)).is_err() {
            break Ok(()); // stdout closed (e.g. piped into head)
        }
        let _ = out.flush();
        printed += 1;
        if args.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
    };
    // Leaves (committing what was printed) even after an error, so the partitions move at once.
    let closed = consumer.close().await;
    outcome?;
    closed?;
    Ok(())
}
