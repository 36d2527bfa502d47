//! Sluice's control plane. Every coordinator serves `Admin` and `Metadata` from a watch-fed
//! view of the metadata store; one of them, elected through the store, is the active
//! controller that performs writes (topic creation and deletion, partition placement) and
//! moves leaders off storage nodes whose lease lapsed (`reconcile`, deciding with `failover`).
//!
//! [`run`] is the whole process minus argument parsing, so tests and `sluice dev` run
//! coordinators in process with their own listener and shutdown signal.

pub mod alter_config;
pub mod autobalance;
pub mod balance;
pub mod cluster_config;
pub mod controller;
pub mod decommission;
pub mod describe;
pub mod elect;
pub mod election;
pub mod failover;
pub mod liveness;
pub mod moves;
pub mod placement;
pub mod probe;
pub mod producer_ids;
pub mod progress;
pub mod reassign;
pub mod reconcile;
pub mod service;
pub mod suspects;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_metadata::MetaStore;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_proto::{pb, transport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::controller::Controller;
use crate::election::{ElectionConfig, Role};
use crate::producer_ids::ProducerIdAllocator;
use crate::reconcile::Reconciler;

/// How long each background loop gets to stop after the server has drained.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Everything a coordinator needs besides its store and listener.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Unique id of this coordinator (e.g. the pod name).
    pub id: String,
    /// Address other processes dial to reach this coordinator (host:port).
    pub advertised_address: String,
    /// Name of the cluster; selects the key prefix `/sluice/<name>/`.
    pub cluster_name: String,
    /// TTL of the election lease: how long a crashed controller blocks writes.
    pub lease_ttl: Duration,
    /// Replication factor for topics created without one.
    pub default_replication_factor: i32,
    /// Partitions of the internal offsets topic, created on the first consumer-group use.
    pub offsets_topic_partitions: i32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            id: "coordinator-0".into(),
            advertised_address: "127.0.0.1:9092".into(),
            cluster_name: "sluice".into(),
            lease_ttl: Duration::from_secs(3),
            default_replication_factor: 1,
            offsets_topic_partitions: 50,
        }
    }
}

/// How long loading the cluster view at start may take before the coordinator gives up (and
/// says so) instead of waiting silently.
const VIEW_LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a coordinator until `shutdown` resolves, then stops accepting requests, ends metadata
/// watches, drains requests, stops the failover loop and resigns the controller role (so a
/// standby takes over at once).
pub async fn run(
    cfg: CoordinatorConfig,
    store: Arc<dyn MetaStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let keys = Keys::for_cluster(&cfg.cluster_name);
    tracing::info!(id = %cfg.id, "loading the cluster view");
    let cache = Arc::new(
        tokio::time::timeout(
            VIEW_LOAD_TIMEOUT,
            MetadataCache::start(store.clone(), keys.clone()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("the metadata store did not answer within {VIEW_LOAD_TIMEOUT:?}")
        })
        .and_then(|r| r.map_err(anyhow::Error::from))
        .context("loading cluster metadata")?,
    );
    let (role_tx, role_rx) = watch::channel(Role::Standby);
    let (stop_tx, stop_rx) = watch::channel(false);
    let election = tokio::spawn(election::run_election(
        store.clone(),
        keys.clone(),
        cache.clone(),
        ElectionConfig {
            me: pb::ControllerRecord {
                coordinator_id: cfg.id.clone(),
                address: cfg.advertised_address.clone(),
                elected_at_ms: 0,
            },
            lease_ttl: cfg.lease_ttl,
        },
        role_tx,
        stop_rx.clone(),
    ));
    // A vanished node that still answers probes keeps its roles for two lease TTLs (at least
    // 3 s): long enough to register again after an etcd pause expired every lease at once.
    let suspects = suspects::Suspects::new((cfg.lease_ttl * 2).max(Duration::from_secs(3)));
    let prober = tokio::spawn(suspects.clone().run(cache.clone(), stop_rx.clone()));
    let liveness = tokio::spawn(liveness::run_liveness(
        store.clone(),
        keys.clone(),
        cache.clone(),
        suspects.clone(),
        role_rx.clone(),
        stop_rx.clone(),
    ));
    let reconciler = tokio::spawn(
        Reconciler {
            store: store.clone(),
            keys: keys.clone(),
            cache: cache.clone(),
            suspects,
        }
        .run(role_rx.clone(), stop_rx.clone()),
    );
    let producer_ids = Arc::new(ProducerIdAllocator::new(store.clone(), &keys));
    let controller = Controller {
        store,
        keys,
        cache: cache.clone(),
        default_replication_factor: cfg.default_replication_factor,
    };
    let balancer = tokio::spawn(
        autobalance::AutoBalancer {
            controller: controller.clone(),
        }
        .run(role_rx.clone(), stop_rx),
    );
    // Streams never finish by themselves, and a graceful shutdown waits for every open one.
    let (streams_stop_tx, streams_stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = streams_stop_tx.send(true);
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::admin_server::AdminServer<service::admin::AdminService>>()
        .await;
    // A coordinator is ready once its view is loaded (done above): standbys serve reads and
    // forward writes, so every coordinator can take client traffic.
    health
        .set_service_status("readiness", tonic_health::ServingStatus::Serving)
        .await;
    let (reflection, reflection_v1alpha) =
        sluice_proto::server::reflection(&["sluice.v1.Admin", "sluice.v1.Metadata"])?;
    tracing::info!(id = %cfg.id, address = %cfg.advertised_address, "coordinator serving");
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
        .add_service(pb::admin_server::AdminServer::new(
            service::admin::AdminService {
                controller,
                role: role_rx,
                cluster_name: cfg.cluster_name.clone(),
                offsets_topic_partitions: cfg.offsets_topic_partitions,
            },
        ))
        .add_service(pb::metadata_server::MetadataServer::new(
            service::metadata::MetadataService {
                cache,
                cluster_name: cfg.cluster_name.clone(),
                producer_ids,
                shutdown: streams_stop_rx,
            },
        ))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .context("coordinator gRPC server")?;
    let _ = stop_tx.send(true);
    // Both loops stop on the same signal; a failover write still in flight when the election
    // resigns is fenced, so it either lands before the resignation or not at all.
    if tokio::time::timeout(STOP_DEADLINE, reconciler)
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_ms = STOP_DEADLINE.as_millis() as u64,
            "failover loop did not stop in time"
        );
    }
    if tokio::time::timeout(STOP_DEADLINE, balancer).await.is_err() {
        tracing::warn!("balancer did not stop in time");
    }
    if tokio::time::timeout(STOP_DEADLINE, prober).await.is_err() {
        tracing::warn!("suspect prober did not stop in time");
    }
    if tokio::time::timeout(STOP_DEADLINE, liveness).await.is_err() {
        tracing::warn!("liveness prober did not stop in time");
    }
    if tokio::time::timeout(STOP_DEADLINE, election).await.is_err() {
        tracing::warn!(
            deadline_ms = STOP_DEADLINE.as_millis() as u64,
            "election did not stop in time"
        );
    }
    tracing::info!(id = %cfg.id, "coordinator stopped");
    Ok(())
}

/// Accepted connections with Nagle off: small answers (produce acks, heartbeats) go out at once
/// instead of waiting up to 40 ms for the peer's delayed ACK.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
