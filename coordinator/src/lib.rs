//! Sluice's control plane. Every coordinator serves `Admin` and `Metadata` from a watch-fed
//! view of the metadata store; one of them, elected through the store, is the active
//! controller that performs writes (topic creation and deletion, partition placement).
//!
//! [`run`] is the whole process minus argument parsing, so tests and `sluice dev` run
//! coordinators in process with their own listener and shutdown signal.

pub mod controller;
pub mod describe;
pub mod election;
pub mod placement;
pub mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_metadata::MetaStore;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_proto::pb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::controller::Controller;
use crate::election::{ElectionConfig, Role};

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
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            id: "coordinator-0".into(),
            advertised_address: "127.0.0.1:9092".into(),
            cluster_name: "sluice".into(),
            lease_ttl: Duration::from_secs(3),
            default_replication_factor: 1,
        }
    }
}

/// Runs a coordinator until `shutdown` resolves, then stops accepting requests, drains them,
/// and resigns the controller role (so a standby takes over at once).
pub async fn run(
    cfg: CoordinatorConfig,
    store: Arc<dyn MetaStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let keys = Keys::for_cluster(&cfg.cluster_name);
    let cache = Arc::new(
        MetadataCache::start(store.clone(), keys.clone())
            .await
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
        stop_rx,
    ));
    let controller = Controller {
        store,
        keys,
        cache: cache.clone(),
        default_replication_factor: cfg.default_replication_factor,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::admin_server::AdminServer<service::admin::AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tracing::info!(id = %cfg.id, address = %cfg.advertised_address, "coordinator serving");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(pb::admin_server::AdminServer::new(
            service::admin::AdminService {
                controller,
                role: role_rx,
                cluster_name: cfg.cluster_name.clone(),
            },
        ))
        .add_service(pb::metadata_server::MetadataServer::new(
            service::metadata::MetadataService {
                cache,
                cluster_name: cfg.cluster_name.clone(),
            },
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("coordinator gRPC server")?;
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(5), election)
        .await
        .is_err()
    {
        tracing::warn!("election did not stop within 5 s");
    }
    tracing::info!(id = %cfg.id, "coordinator stopped");
    Ok(())
}
