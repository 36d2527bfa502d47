//! `sluice bench produce|consume|e2e`: the workloads of BENCHMARKS.md against a running cluster.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_bench::Workload;
use sluice_bench::sluice::SluiceOptions;
use sluice_client::{Acks, ClientConfig, Compression};

/// The three benchmark workloads.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// W1: send --count records as fast as acknowledgements allow (creates the topic if needed).
    Produce(BenchArgs),
    /// W2: read --count records back from offset 0 of every partition.
    Consume(BenchArgs),
    /// W3: send at --rate for --duration while a consumer tails; prints latency percentiles.
    E2e(BenchArgs),
}

/// Flags shared by every workload.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Topic to write or read; created with --partitions when missing.
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Records to send or read (e2e: defaults to rate × duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Bytes per record value (random, incompressible).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Bytes per record key (random; 0 for no key).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Partitions of the topic when the run creates it.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Replication factor when the run creates the topic (0: the cluster default).
    #[arg(long, default_value_t = 0)]
    pub replication_factor: i32,
    /// `min.insync.replicas` when the run creates the topic.
    #[arg(long)]
    pub min_insync_replicas: Option<u32>,
    /// Topic config as key=value when the run creates the topic (repeatable), e.g.
    /// --topic-config retention.bytes=67108864.
    #[arg(long = "topic-config")]
    pub topic_config: Vec<String>,
    /// Records per second (e2e; produce: a fixed rate instead of full speed).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds to send for (e2e).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Milliseconds a batch waits for more records (default: 5 for produce, 0 for e2e).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Largest batch per partition, bytes (1 MiB: one request per partition is in flight, so
    /// bigger batches keep more bytes moving; topics accept 1 MiB by default).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: usize,
    /// Requests in flight per producer.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// Producer instances sharing the records.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Async worker threads of this process (default: 1 for e2e, whose fixed rate needs less
    /// than a core; one per core for produce and consume).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub worker_threads: Option<usize>,
    /// Print one JSON object instead of a table (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

impl BenchCmd {
    /// The async workers this workload runs on (see [`sluice_bench::runtime`]).
    pub fn worker_threads(&self) -> usize {
        match self {
            Self::Produce(a) | Self::Consume(a) => {
                sluice_bench::runtime::worker_threads(a.worker_threads, false)
            }
            Self::E2e(a) => sluice_bench::runtime::worker_threads(a.worker_threads, true),
        }
    }
}

/// Runs one workload and prints its report.
pub async fn run(cmd: BenchCmd, client: ClientConfig) -> Result<()> {
    let (kind, args) = match cmd {
        BenchCmd::Produce(a) => ("produce", a),
        BenchCmd::Consume(a) => ("consume", a),
        BenchCmd::E2e(a) => ("e2e", a),
    };
    let rate = match (kind, args.rate) {
        ("e2e", None) => Some(10_000),
        (_, r) => r,
    };
    if rate == Some(0) {
        bail!("--rate is 0: give records per second, e.g. --rate 10000");
    }
    if kind == "e2e" && args.count.is_none() && args.duration == 0 {
        bail!("--duration is 0: give the seconds to send for, e.g. --duration 20");
    }
    let count = match (kind, args.count, rate) {
        (_, Some(c), _) => c,
        ("e2e", None, Some(r)) => r * args.duration,
        _ => 1_000_000,
    };
    let workload = Workload {
        topic: args.topic.clone(),
        count,
        record_size: args.record_size,
        key_size: args.key_size,
        partitions: args.partitions,
        rate,
    };
    workload.validate()?;
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => bail!("--acks {other} is invalid; use 0, 1 or all"),
    };
    let compression = Compression::parse(&args.compression).with_context(|| {
        format!(
            "--compression {} is invalid; use none, gzip, snappy, lz4 or zstd",
            args.compression
        )
    })?;
    if args.producers == 0 {
        bail!("--producers is 0: give at least 1");
    }
    let linger = args.linger_ms.unwrap_or(if kind == "e2e" { 0 } else { 5 });
    let opts = SluiceOptions {
        client,
        acks,
        compression,
        linger: Duration::from_millis(linger),
        batch_size: args.batch_size,
        max_in_flight: args.max_in_flight,
        producers: args.producers,
        replication_factor: args.replication_factor,
        min_insync: args.min_insync_replicas,
        topic_config: super::topic::parse_config(&args.topic_config)?,
        progress: !args.json,
        ..SluiceOptions::default()
    };
    let report = match kind {
        "produce" => sluice_bench::sluice::produce(&workload, &opts).await?,
        "consume" => sluice_bench::sluice::consume(&workload, &opts).await?,
        _ => sluice_bench::sluice::e2e(&workload, &opts).await?,
    };
    report.print(args.json);
    if report.failed > 0 {
        bail!("{} of {} records failed", report.failed, workload.count);
    }
    Ok(())
}
