//! `sluice`: run a dev cluster, administer topics, produce and consume from the shell.

mod cmd;

use clap::{Parser, Subcommand};

/// Sluice: a distributed event-streaming platform.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Coordinator address(es), comma separated.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        value_delimiter = ',',
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node cluster (coordinator + storage node) on an embedded metadata store.
    Dev(cmd::dev::DevArgs),
    /// Create, list, describe, delete topics and add partitions.
    #[command(subcommand)]
    Topic(cmd::topic::TopicCmd),
    /// Produce lines from stdin, one record per line.
    Produce(cmd::produce::ProduceArgs),
    /// Consume records and print them, one per line.
    Consume(cmd::consume::ConsumeArgs),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(subcommand)]
    Group(cmd::group::GroupCmd),
    /// Cluster-wide information.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Storage node lifecycle: decommission (empty before removal) or recommission.
    #[command(subcommand)]
    Node(cmd::cluster::NodeCmd),
    /// Measure throughput and latency: produce, consume, e2e (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
}

fn main() {
    let cli = Cli::parse();
    // A benchmark picks its workers (one for e2e); everything else gets one per core.
    let runtime = match &cli.command {
        Command::Bench(b) => sluice_bench::runtime::build(b.worker_threads()),
        _ => tokio::runtime::Runtime::new(),
    };
    match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) {
    let quiet_default = if matches!(cli.command, Command::Dev(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| quiet_default.into()),
        )
        .init();
    let client = sluice_client::ClientConfig {
        bootstrap: cli.bootstrap.clone(),
        ..Default::default()
    };
    let result = match cli.command {
        Command::Dev(args) => cmd::dev::run(args).await,
        Command::Topic(c) => cmd::topic::run(c, client).await,
        Command::Produce(a) => cmd::produce::run(a, client).await,
        Command::Consume(a) => cmd::consume::run(a, client).await,
        Command::Cluster(c) => cmd::cluster::run(c, client).await,
        Command::Node(c) => cmd::cluster::run_node(c, client).await,
        Command::Group(c) => cmd::group::run(c, client).await,
        Command::Bench(c) => cmd::bench::run(c, client).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
