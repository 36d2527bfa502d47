//! Sluice's data plane. A storage node registers itself in the metadata store, hosts the
//! partition replicas the controller assigns it (segment files per replica, one RocksDB index
//! for all of them), and serves produce, fetch, subscribe and list-offsets for the partitions it
//! leads.
//!
//! [`run`] is the whole process minus argument parsing, so tests and `sluice dev` run nodes in
//! process with their own listener and shutdown signal.

pub mod cleaner;
pub mod disk;
pub mod faults;
pub mod follower;
pub mod groups;
pub mod health;
pub mod isr_manager;
pub mod kafka;
pub mod log;
pub mod partitions;
pub mod recovery;
pub mod registration;
pub mod replica;
pub mod retention;
pub mod service;
pub mod telemetry;
pub mod throttle;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_metadata::MetaStore;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_proto::model::NodeId;
use sluice_proto::{pb, transport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::log::LogStore;
use crate::log::rocks::RocksLog;
use crate::log::tail::TailCachedLog;
use crate::partitions::Partitions;
use crate::writer::Writer;

/// Longest a SIGTERMed node waits for its leaderships to move before it stops anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest gRPC message a node accepts or sends (a produce batch plus framing).
pub const MAX_MESSAGE_SIZE: usize = 80 << 20;

/// Everything a storage node needs besides its store and listener.
#[derive(Debug, Clone)]
pub struct StorageNodeConfig {
    /// Stable node id (the StatefulSet ordinal in Kubernetes).
    pub node_id: NodeId,
    /// Directory of the node's log: the RocksDB index and, under it, `segments/`.
    pub data_dir: PathBuf,
    /// Address clients dial to reach this node (host:port).
    pub advertised_address: String,
    /// Address Kafka clients dial to reach this node's Kafka listener (host:port); empty when
    /// it serves none.
    pub kafka_advertised_address: String,
    /// Rack or zone label, for placement.
    pub rack: String,
    /// Name of the cluster; selects the key prefix.
    pub cluster_name: String,
    /// TTL of the registration lease: how long a crashed node stays listed.
    pub lease_ttl: Duration,
    /// Fsync the log's WAL before acknowledging appends (durable across power loss).
    pub fsync: bool,
    /// Directory of fault-injection switches (tests only; `None` in production).
    pub faults_dir: Option<PathBuf>,
    /// Bytes of recently written batches kept in memory across all replicas, so tailing
    /// consumers and followers read them without touching RocksDB (0 turns the cache off).
    pub tail_cache_bytes: usize,
    /// How often retention checks every replica for segments to delete.
    pub retention_check_interval: Duration,
    /// How often every log is flushed to disk and its recovery point recorded (what a restart
    /// after a crash verifies is what came after).
    pub recovery_checkpoint_interval: Duration,
    /// Free space kept on the data volume: below it, writes are refused with `STORAGE_FULL`.
    pub min_free: disk::MinFree,
    /// How often compacted replicas are looked at, and the cap of the cleaner's disk traffic.
    pub cleaner: CleanerConfig,
}

/// Settings of the key-compaction cleaner.
#[derive(Debug, Clone, Copy)]
pub struct CleanerConfig {
    /// How often every compacted replica is looked at.
    pub interval: Duration,
    /// Bytes per second the cleaner reads plus writes, at most.
    pub io_bytes_per_sec: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            interval: cleaner::DEFAULT_INTERVAL,
            io_bytes_per_sec: cleaner::DEFAULT_IO_BYTES_PER_SEC,
        }
    }
}

/// Runs a storage node until `shutdown` resolves. Shutdown order: stop accepting and drain
/// requests, stop the group coordinator, stop the reconcile loop, drain the writer, sync the WAL, release the registration.
pub async fn run(
    cfg: StorageNodeConfig,
    store: Arc<dyn MetaStore>,
    listener: TcpListener,
    kafka_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let rocks = RocksLog::open(&cfg.data_dir.join("rocksdb"), cfg.fsync)
        .with_context(|| format!("opening RocksDB under {}", cfg.data_dir.display()))?;
    let incarnation = rocks
        .incarnation()
        .context("reading the data directory's incarnation")?;
    let keys = Keys::for_cluster(&cfg.cluster_name);
    let cluster_id = sluice_metadata::cluster_id::ensure(store.as_ref(), &keys)
        .await
        .context("reading the cluster id")?;
    rocks.bind_cluster(&cluster_id)?;
    let log: Arc<dyn LogStore> = Arc::new(TailCachedLog::new(rocks, cfg.tail_cache_bytes));
    let cache = Arc::new(
        MetadataCache::start(store.clone(), keys.clone())
            .await
            .context("loading cluster metadata")?,
    );
    let (writer, writer_thread) = Writer::spawn(log.clone(), !cfg.fsync);
    let disk = Arc::new(disk::DiskSpace::new(cfg.min_free));
    let disk_monitor = tokio::spawn(disk::run_monitor(disk.clone(), cfg.data_dir.clone()));
    let follower_ctx = Arc::new(follower::FollowerContext {
        node_id: cfg.node_id,
        incarnation: incarnation.clone(),
        cache: cache.clone(),
        writer: writer.clone(),
        links: follower::link::Links::default(),
        disk: disk.clone(),
    });
    let (boot_tx, boot_rx) = watch::channel(None);
    let partitions = Arc::new(Partitions::new(
        cfg.node_id,
        log.clone(),
        writer.clone(),
        follower_ctx,
        boot_rx.clone(),
    ));
    {
        let (p, view) = (partitions.clone(), cache.view());
        tokio::task::spawn_blocking(move || {
            p.remove_strays(&view);
            p.reconcile(&view)
        })
        .await??;
    }
    let reconcile = tokio::spawn(reconcile_loop(cache.clone(), partitions.clone(), boot_rx));
    let partitions_for_shutdown = partitions.clone();
    let isr_manager = tokio::spawn(isr_manager::run_isr_manager(
        store.clone(),
        keys.clone(),
        cache.clone(),
        partitions.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (registered_tx, registered_rx) = watch::channel(false);
    let (draining_tx, draining_rx) = watch::channel(false);
    let registration = tokio::spawn(registration::run_registration(
        store,
        keys,
        pb::NodeRecord {
            node_id: cfg.node_id,
            address: cfg.advertised_address.clone(),
            rack: cfg.rack.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            registered_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            draining: false,
            incarnation,
            boot_revision: 0,
            kafka_address: cfg.kafka_advertised_address.clone(),
        },
        cfg.lease_ttl,
        registration::Reports {
            registered: registered_tx,
            boot: boot_tx,
        },
        draining_rx,
        stop_rx,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::log_server::LogServer<service::LogService>>()
        .await;
    let checkpoints = tokio::spawn(recovery::run_checkpoints(
        partitions_for_shutdown.clone(),
        log.clone(),
        cfg.recovery_checkpoint_interval,
    ));
    let cleaner = tokio::spawn(cleaner::run(
        partitions_for_shutdown.clone(),
        log.clone(),
        cfg.cleaner.interval,
        cfg.cleaner.io_bytes_per_sec,
    ));
    let retention = tokio::spawn(retention::run(
        partitions_for_shutdown.clone(),
        log.clone(),
        writer.clone(),
        cfg.retention_check_interval,
    ));
    let gauges = tokio::spawn(telemetry::run_gauges(
        partitions_for_shutdown.clone(),
        log.clone(),
        cfg.data_dir.clone(),
    ));
    let readiness = tokio::spawn(health::run_readiness(
        health.clone(),
        cfg.node_id,
        cache.clone(),
        registered_rx,
        draining_tx.subscribe(),
    ));
    let (closing_tx, closing_rx) = watch::channel(false);
    let drain = {
        let (cache, node_id) = (cache.clone(), cfg.node_id);
        async move {
            shutdown.await;
            tracing::info!(
                node_id,
                "shutdown requested: handing leaderships to in-sync followers"
            );
            draining_tx.send_replace(true);
            health::wait_drained(&cache, node_id, DRAIN_TIMEOUT).await;
            // Long-lived streams would hold the graceful shutdown open: end them.
            closing_tx.send_replace(true);
        }
    };
    let (reflection, reflection_v1alpha) =
        sluice_proto::server::reflection(&["sluice.v1.Log", "sluice.v1.Groups"])?;
    let coordinator = Arc::new(groups::GroupCoordinator::new(
        cfg.node_id,
        cache.clone(),
        partitions.clone(),
        writer.clone(),
        log.clone(),
        sluice_groups::GroupConfig::default(),
    ));
    let coordinator_loop = tokio::spawn(coordinator.clone().run());
    let group_lag = tokio::spawn(telemetry::run_group_lag(
        coordinator.clone(),
        partitions.clone(),
    ));
    let groups_service = groups::service::GroupsService {
        coordinator: coordinator.clone(),
    };
    let log_service = service::LogService {
        node_id: cfg.node_id,
        cache: cache.clone(),
        partitions,
        writer,
        log: log.clone(),
        faults: faults::Faults::new(cfg.faults_dir.clone()),
        closing: closing_rx,
        disk,
        throttle: Arc::new(throttle::Throttle::new(cache.clone())),
    };
    tracing::info!(node_id = cfg.node_id, address = %cfg.advertised_address, data_dir = %cfg.data_dir.display(), "storage node serving");
    let kafka = kafka_listener.map(|l| {
        let ctx = kafka::KafkaContext {
            svc: log_service.clone(),
            cluster_id: cluster_id.clone(),
        };
        tracing::info!(address = %cfg.kafka_advertised_address, "Kafka listener serving");
        tokio::spawn(kafka::serve(l, Arc::new(ctx)))
    });
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(transport::KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(transport::KEEP_ALIVE_TIMEOUT))
        .initial_stream_window_size(transport::STREAM_WINDOW)
        .initial_connection_window_size(transport::CONNECTION_WINDOW)
        .max_frame_size(transport::MAX_FRAME_SIZE)
        .layer(sluice_proto::server::MetricsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::log_server::LogServer::new(log_service)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            pb::groups_server::GroupsServer::new(groups_service)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(incoming(listener), drain)
        .await
        .context("storage node gRPC server")?;
    // The Kafka connections hold writer handles too.
    if let Some(k) = kafka {
        k.abort();
        let _ = k.await;
    }
    // The group coordinator holds writer handles: stop it before the writer drains.
    coordinator_loop.abort();
    group_lag.abort();
    let _ = coordinator_loop.await;
    let _ = group_lag.await;
    coordinator.stop().await;
    drop(coordinator);
    reconcile.abort();
    isr_manager.abort();
    readiness.abort();
    gauges.abort();
    retention.abort();
    checkpoints.abort();
    cleaner.abort();
    let _ = cleaner.await;
    disk_monitor.abort();
    let _ = gauges.await;
    let _ = retention.await;
    let _ = checkpoints.await;
    let _ = reconcile.await;
    let _ = isr_manager.await;
    partitions_for_shutdown.stop_followers();
    let replicas = partitions_for_shutdown.all();
    drop(partitions_for_shutdown);
    // The service, the loops and the follower tasks (the writer's handles) are gone: the writer
    // drains its queue and stops.
    let joined = tokio::task::spawn_blocking(move || writer_thread.join());
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        tracing::warn!("writer did not drain within 10 s");
    }
    if let Err(error) = writer::checkpoint_high_watermarks(log.as_ref(), &replicas) {
        tracing::error!(%error, "final high-watermark checkpoint failed");
    }
    if let Err(error) = log.checkpoint_recovery(&recovery::ends(&replicas)) {
        tracing::error!(%error, "final flush and recovery checkpoint failed");
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), registration).await;
    tracing::info!(node_id = cfg.node_id, "storage node stopped");
    Ok(())
}

/// Re-reconciles hosted replicas at every change of the cluster view, and once this process has
/// registered (leaderships are confirmed against its boot revision).
async fn reconcile_loop(
    cache: Arc<MetadataCache>,
    partitions: Arc<Partitions>,
    mut boot: watch::Receiver<Option<i64>>,
) {
    let mut rx = cache.subscribe();
    let mut booted = false;
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            changed = boot.changed(), if !booted => {
                booted = true;
                if changed.is_err() { continue }
            }
        }
        let view = rx.borrow_and_update().clone();
        let p = partitions.clone();
        match tokio::task::spawn_blocking(move || p.reconcile(&view)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "reconciling replicas failed"),
            Err(error) => tracing::error!(%error, "reconcile task panicked"),
        }
    }
}

/// Accepted connections with Nagle off: small answers (produce acks, heartbeats) go out at once
/// instead of waiting up to 40 ms for the peer's delayed ACK.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
