//! `sluice-peer-bench nats|redis produce|consume|e2e`: the workloads of `sluice bench` against
//! NATS JetStream and Redis Streams, with the same payloads, clocks and report, so the three
//! systems can be compared side by side.

mod common;
mod nats;
mod redis_streams;
mod window;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use sluice_bench::Workload;

use crate::common::PeerOptions;

/// System under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    /// NATS JetStream (file storage).
    Nats,
    /// Redis Streams.
    Redis,
}

/// The three benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// W1: send --count records as fast as acknowledgements allow (creates streams if needed).
    Produce,
    /// W2: read --count records back from the start of every stream.
    Consume,
    /// W3: send at --rate for --duration while a consumer tails; prints latency percentiles.
    E2e,
}

/// Runs a Sluice benchmark workload against NATS JetStream or Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "sluice-peer-bench", version)]
struct Cli {
    /// System under test.
    #[arg(value_enum)]
    system: System,
    /// Workload to run.
    #[arg(value_enum)]
    workload: Kind,
    /// Server address [default: nats://127.0.0.1:4222 or redis://127.0.0.1:6379].
    #[arg(long)]
    url: Option<String>,
    /// Stream prefix: NATS streams <topic>-<i> on subjects <topic>.<i>, Redis keys <topic>:<i>.
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    /// Records to send or read (e2e: defaults to rate × duration).
    #[arg(long)]
    count: Option<u64>,
    /// Bytes per record value (random, incompressible).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Bytes per record key (random; 0 for no key, records then go round robin).
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Streams the records are spread over (by murmur2 of the key, as Sluice partitions).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Records per second (e2e, default 10000).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds to send for (e2e).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Replicas of each JetStream stream when the run creates it (nats).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Producer connections sharing the records (produce).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Records awaiting acknowledgement per producer.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// XADDs per pipeline (redis produce).
    #[arg(long, default_value_t = 256)]
    pipeline: usize,
    /// Records per pull request (nats) or XRANGE/XREAD (redis).
    #[arg(long, default_value_t = 1000)]
    fetch: usize,
    /// Delete and recreate the streams before the run (produce, e2e).
    #[arg(long)]
    fresh: bool,
    /// Async worker threads of this process (default: 1 for e2e, whose fixed rate needs less
    /// than a core; one per core for produce and consume), as `sluice bench` does.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    worker_threads: Option<usize>,
    /// Print one JSON object instead of a table (and no progress bar).
    #[arg(long)]
    json: bool,
}

impl Cli {
    fn workload(&self) -> Workload {
        let rate = match (self.workload, self.rate) {
            (Kind::E2e, None) => Some(10_000),
            (_, r) => r,
        };
        let count = match (self.workload, self.count, rate) {
            (_, Some(c), _) => c,
            (Kind::E2e, None, Some(r)) => r * self.duration,
            _ => 1_000_000,
        };
        Workload {
            topic: self.topic.clone(),
            count,
            record_size: self.record_size,
            key_size: self.key_size,
            partitions: self.partitions,
            rate,
        }
    }

    fn options(&self) -> PeerOptions {
        let url = self.url.clone().unwrap_or_else(|| {
            match self.system {
                System::Nats => "nats://127.0.0.1:4222",
                System::Redis => "redis://127.0.0.1:6379",
            }
            .to_string()
        });
        PeerOptions {
            url,
            producers: self.producers,
            window: self.window,
            pipeline: self.pipeline,
            fetch: self.fetch,
            replicas: self.replicas,
            fresh: self.fresh,
            progress: !self.json,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let workers = sluice_bench::runtime::worker_threads(
        cli.worker_threads,
        matches!(cli.workload, Kind::E2e),
    );
    let result = sluice_bench::runtime::build(workers)
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        // `{:#}` prints the causes on one line and no backtrace, whatever RUST_BACKTRACE says.
        eprintln!("sluice-peer-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Parses the command line, runs the workload and prints its report.
async fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let w = cli.workload();
    w.validate()?;
    let o = cli.options();
    for (flag, v) in [
        ("--producers", o.producers),
        ("--window", o.window),
        ("--pipeline", o.pipeline),
        ("--fetch", o.fetch),
        ("--replicas", o.replicas),
    ] {
        if v == 0 {
            bail!("{flag} is 0: give at least 1");
        }
    }
    let report = match (cli.system, cli.workload) {
        (System::Nats, Kind::Produce) => nats::produce(&w, &o).await?,
        (System::Nats, Kind::Consume) => nats::consume(&w, &o).await?,
        (System::Nats, Kind::E2e) => nats::e2e(&w, &o).await?,
        (System::Redis, Kind::Produce) => redis_streams::produce(&w, &o).await?,
        (System::Redis, Kind::Consume) => redis_streams::consume(&w, &o).await?,
        (System::Redis, Kind::E2e) => redis_streams::e2e(&w, &o).await?,
    };
    report.print(cli.json);
    if report.failed > 0 {
        bail!("{} of {} records failed", report.failed, w.count);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2e_count_follows_rate_and_duration() {
        let cli = Cli::parse_from(["x", "redis", "e2e", "--rate", "2000", "--duration", "3"]);
        assert_eq!(cli.workload().count, 6000);
        assert_eq!(cli.options().url, "redis://127.0.0.1:6379");
        let cli = Cli::parse_from(["x", "nats", "produce", "--json"]);
        assert_eq!(cli.workload().count, 1_000_000);
        assert_eq!(cli.workload().rate, None);
        assert!(!cli.options().progress);
        assert_eq!(cli.options().url, "nats://127.0.0.1:4222");
    }
}
