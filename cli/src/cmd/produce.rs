//! `sluice produce <topic>`: one record per stdin line, optionally `key<sep>value`.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use sluice_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::batch::Compression;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Acknowledgements still awaited before reading more input (bounds memory on huge inputs).
const MAX_PENDING: usize = 50_000;

/// Flags of `sluice produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    pub topic: String,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Acknowledgement: 0 (none), 1 (leader), all (every in-sync replica; idempotent).
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Batch compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// How long a batch waits for more records, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
}

fn parse_acks(s: &str) -> anyhow::Result<Acks> {
    Ok(match s {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => bail!("--acks {other} is invalid; use 0, 1 or all"),
    })
}

/// Reads stdin to its end, sending every line; reports the count when all are acknowledged.
pub async fn run(args: ProduceArgs, client: ClientConfig) -> anyhow::Result<()> {
    let compression = Compression::parse(&args.compression).with_context(|| {
        format!(
            "--compression {} is invalid; use none, gzip, snappy, lz4 or zstd",
            args.compression
        )
    })?;
    let acks = parse_acks(&args.acks)?;
    let producer = Producer::new(ProducerConfig {
        client,
        acks,
        // Idempotence needs acks=all; with weaker acks retries may duplicate, as in Kafka.
        enable_idempotence: matches!(acks, Acks::All),
        compression,
        linger: Duration::from_millis(args.linger_ms),
        ..Default::default()
    })
    .await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending = VecDeque::new();
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await? {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = ProducerRecord::new(&args.topic, Bytes::from(value));
        record.key = key;
        record.partition = args.partition;
        pending.push_back(producer.send(record).await?);
        sent += 1;
        if pending.len() >= MAX_PENDING
            && let Some(f) = pending.pop_front()
        {
            f.await?;
        }
    }
    for f in pending {
        f.await?;
    }
    producer.close().await?;
    eprintln!("produced {sent} record(s) to {}", args.topic);
    Ok(())
}
