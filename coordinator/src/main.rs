//! `sluice-coordinator`: parses flags, connects to etcd, and runs [`sluice_coordinator::run`].

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_coordinator::CoordinatorConfig;

/// A Sluice coordinator: admin and metadata APIs; one of them is the active controller.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unique id of this coordinator.
    #[arg(long, env = "SLUICE_COORDINATOR_ID")]
    id: String,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:9092")]
    listen: String,
    /// Address others dial to reach this coordinator (defaults to --listen).
    #[arg(long, env = "SLUICE_ADVERTISE")]
    advertise: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "SLUICE_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd: Vec<String>,
    /// Cluster name (key prefix /sluice/<name>/ in etcd).
    #[arg(long, env = "SLUICE_CLUSTER", default_value = "sluice")]
    cluster: String,
    /// Election lease TTL in milliseconds (at least 100).
    #[arg(long, env = "SLUICE_LEASE_TTL_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..))]
    lease_ttl_ms: u64,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9100); off when unset.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Partitions of the internal offsets topic (created on the first consumer-group use).
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50, value_parser = clap::value_parser!(i32).range(1..=1000))]
    offsets_topic_partitions: i32,
    /// Replication factor for topics created without one.
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(addr) = args.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])?
            .install()
            .context("starting the metrics listener")?;
    }
    sluice_metadata::keys::validate_cluster_name(&args.cluster).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let advertised = args.advertise.unwrap_or_else(|| {
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(args.listen)
    });
    tracing::info!(etcd = ?args.etcd, "connecting to etcd");
    let store = sluice_metadata::etcd::EtcdStore::connect(&args.etcd, Duration::from_secs(5))
        .await
        .context("connecting to etcd")?;
    let cfg = CoordinatorConfig {
        id: args.id,
        advertised_address: advertised,
        cluster_name: args.cluster,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms),
        default_replication_factor: args.default_replication_factor,
        offsets_topic_partitions: args.offsets_topic_partitions,
    };
    sluice_coordinator::run(cfg, store, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
