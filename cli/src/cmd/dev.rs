//! `sluice dev`: a coordinator and a storage node in one process, on the embedded metadata
//! store, with data under `./sluice-data`. The same `run` functions as the real binaries.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_coordinator::CoordinatorConfig;
use sluice_metadata::MetaStore;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_storage_node::StorageNodeConfig;
use std::sync::Arc;

/// Flags of `sluice dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the metadata and the log live.
    #[arg(long, default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// Coordinator (admin + metadata) address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub coordinator: String,
    /// Storage node (produce + fetch) address.
    #[arg(long, default_value = "127.0.0.1:9093")]
    pub node: String,
    /// Kafka listener address (Kafka's wire protocol, for Kafka clients such as kcat).
    #[arg(long, default_value = "127.0.0.1:9094")]
    pub kafka: String,
    /// Fsync the log before acknowledging appends (group commit: one fsync covers every append
    /// that arrived meanwhile).
    #[arg(long, env = "SLUICE_FSYNC")]
    pub fsync: bool,
    /// How often (ms) retention checks every partition for segments to delete.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub retention_check_interval_ms: u64,
}

/// Runs until Ctrl-C or SIGTERM, then shuts both servers down in order.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store: Arc<dyn MetaStore> = EmbeddedStore::open(args.data_dir.join("metadata.db"))
        .context("opening the embedded metadata store")?;
    let coord_listener = tokio::net::TcpListener::bind(&args.coordinator)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another sluice dev running? use --coordinator)",
                args.coordinator
            )
        })?;
    let node_listener = tokio::net::TcpListener::bind(&args.node)
        .await
        .with_context(|| format!("binding {} (use --node to pick another address)", args.node))?;
    let kafka_listener = tokio::net::TcpListener::bind(&args.kafka)
        .await
        .with_context(|| {
            format!(
                "binding {} (use --kafka to pick another address)",
                args.kafka
            )
        })?;
    let coord_addr = coord_listener.local_addr()?.to_string();
    let node_addr = node_listener.local_addr()?.to_string();
    let kafka_addr = kafka_listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut coordinator = tokio::spawn(sluice_coordinator::run(
        CoordinatorConfig {
            id: "dev".into(),
            advertised_address: coord_addr.clone(),
            lease_ttl: Duration::from_secs(2),
            ..Default::default()
        },
        store.clone(),
        coord_listener,
        stopped(stop_rx.clone()),
    ));
    let mut node = tokio::spawn(sluice_storage_node::run(
        StorageNodeConfig {
            node_id: 0,
            data_dir: args.data_dir.join("node-0"),
            advertised_address: node_addr.clone(),
            kafka_advertised_address: kafka_addr.clone(),
            rack: String::new(),
            cluster_name: "sluice".into(),
            lease_ttl: Duration::from_secs(2),
            fsync: args.fsync,
            faults_dir: None,
            tail_cache_bytes: sluice_storage_node::log::tail::DEFAULT_TAIL_CACHE_BYTES,
            retention_check_interval: Duration::from_millis(args.retention_check_interval_ms),
            recovery_checkpoint_interval: sluice_storage_node::recovery::DEFAULT_INTERVAL,
            min_free: Default::default(),
            cleaner: Default::default(),
        },
        store,
        node_listener,
        Some(kafka_listener),
        stopped(stop_rx),
    ));
    outln!(
        "sluice dev is running (data in {})",
        args.data_dir.display()
    );
    outln!("  coordinator (admin, metadata): {coord_addr}");
    outln!("  storage node 0 (produce, fetch): {node_addr}");
    outln!("  Kafka listener (Kafka clients): {kafka_addr}");
    outln!();
    outln!("Try, in another terminal:");
    outln!("  sluice topic create greetings --partitions 3");
    outln!("  echo hello | sluice produce greetings");
    outln!("  sluice consume greetings --from-beginning");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = &mut node => {
            let _ = stop_tx.send(true);
            let _ = coordinator.await;
            return r?.context("storage node stopped");
        }
        r = &mut coordinator => {
            let _ = stop_tx.send(true);
            let _ = node.await;
            return r?.context("coordinator stopped");
        }
    }
    eprintln!("shutting down");
    let _ = stop_tx.send(true);
    node.await??;
    coordinator.await??;
    Ok(())
}
