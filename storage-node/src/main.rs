//! `sluice-storage-node`: parses flags, connects to etcd, and runs [`sluice_storage_node::run`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_storage_node::StorageNodeConfig;

/// A Sluice storage node: hosts partition replicas in RocksDB and serves produce and fetch.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Stable node id; keep it across restarts (with the same --data-dir).
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: i32,
    /// Directory for the node's data.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:9093")]
    listen: String,
    /// Address clients dial to reach this node (defaults to the bound --listen address).
    #[arg(long, env = "SLUICE_ADVERTISE")]
    advertise: Option<String>,
    /// Address of the Kafka listener (Kafka's wire protocol, for Kafka clients); none when
    /// unset.
    #[arg(long, env = "SLUICE_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address Kafka clients dial to reach this node's Kafka listener (defaults to the bound
    /// --kafka-listen address).
    #[arg(long, env = "SLUICE_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// Rack or zone label, used to spread replicas.
    #[arg(long, env = "SLUICE_RACK", default_value = "")]
    rack: String,
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
    /// Registration lease TTL in milliseconds (at least 100).
    #[arg(long, env = "SLUICE_LEASE_TTL_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..))]
    lease_ttl_ms: u64,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9100); off when unset.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Fsync the write-ahead log before acknowledging appends (survives power loss, slower).
    #[arg(long, env = "SLUICE_FSYNC")]
    fsync: bool,
    /// MiB of recently written batches kept in memory for tailing consumers and followers.
    #[arg(long, env = "SLUICE_TAIL_CACHE_MB", default_value_t = 64)]
    tail_cache_mb: usize,
    /// How often (ms) each replica is checked for segments that retention deletes (Kafka's
    /// `log.retention.check.interval.ms`).
    #[arg(long, env = "SLUICE_RETENTION_CHECK_INTERVAL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(10..))]
    retention_check_interval_ms: u64,
    /// How often (ms) every log is flushed to disk and its recovery point recorded: after a
    /// crash, a node verifies (CRC) only the batches written since.
    #[arg(long, env = "SLUICE_RECOVERY_CHECKPOINT_INTERVAL_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    recovery_checkpoint_interval_ms: u64,
    /// Free bytes kept on the data volume: below them (or below --min-free-percent of the
    /// volume, when that is less) produce is refused with STORAGE_FULL until space is freed.
    #[arg(long, env = "SLUICE_MIN_FREE_BYTES", default_value_t = 1 << 30)]
    min_free_bytes: u64,
    /// Percent of the data volume kept free (see --min-free-bytes).
    #[arg(long, env = "SLUICE_MIN_FREE_PERCENT", default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=50))]
    min_free_percent: u8,
    /// How often (ms) compacted replicas are looked at (Kafka's log.cleaner.backoff.ms).
    #[arg(long, env = "SLUICE_CLEANER_INTERVAL_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(10..))]
    cleaner_interval_ms: u64,
    /// Bytes per second the compaction cleaner reads plus writes, at most.
    #[arg(long, env = "SLUICE_CLEANER_IO_BYTES_PER_SEC", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    cleaner_io_bytes_per_sec: u64,
    /// Async worker threads (default: one per CPU). Give 1 when several nodes share a few cores
    /// (a local cluster, a benchmark): each worker wakes the others for work it could do
    /// itself, and on a crowded machine those wake-ups cost more than the parallelism gives, in
    /// CPU and in tail latency.
    #[arg(long, env = "SLUICE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Directory of fault-injection switch files (integration tests only).
    #[arg(long, hide = true)]
    faults_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(usize::from(n));
    }
    runtime
        .build()
        .context("starting the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
    if args.node_id < 0 {
        anyhow::bail!("--node-id must be 0 or more (got {})", args.node_id);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let advertised = args.advertise.unwrap_or_else(|| {
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(args.listen)
    });
    let kafka_listener = match &args.kafka_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Kafka listener {addr}"))?,
        ),
        None => None,
    };
    let kafka_advertised = match (&args.kafka_advertise, &kafka_listener) {
        (Some(a), _) => a.clone(),
        (None, Some(l)) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        (None, None) => String::new(),
    };
    let store = sluice_metadata::etcd::EtcdStore::connect(&args.etcd, Duration::from_secs(5))
        .await
        .context("connecting to etcd")?;
    let cfg = StorageNodeConfig {
        node_id: args.node_id,
        data_dir: args.data_dir,
        advertised_address: advertised,
        kafka_advertised_address: kafka_advertised,
        rack: args.rack,
        cluster_name: args.cluster,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms),
        fsync: args.fsync,
        tail_cache_bytes: args.tail_cache_mb << 20,
        retention_check_interval: Duration::from_millis(args.retention_check_interval_ms),
        recovery_checkpoint_interval: Duration::from_millis(args.recovery_checkpoint_interval_ms),
        min_free: sluice_storage_node::disk::MinFree {
            bytes: args.min_free_bytes,
            percent: args.min_free_percent,
        },
        cleaner: sluice_storage_node::CleanerConfig {
            interval: Duration::from_millis(args.cleaner_interval_ms),
            io_bytes_per_sec: args.cleaner_io_bytes_per_sec,
        },
        faults_dir: args.faults_dir,
    };
    sluice_storage_node::run(cfg, store, listener, kafka_listener, shutdown_signal()).await
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
