//! An in-process Sluice cluster for tests: the real [`sluice_coordinator::run`] and N ×
//! [`sluice_storage_node::run`] on one embedded metadata store, each on a loopback listener of
//! its own, with a fault switchboard per storage node (refuse, delay or hold produce requests,
//! drop an answer after the append, stop pushing to followers; see
//! `sluice_storage_node::faults`). Starting one takes milliseconds and needs no other process,
//! so client behaviour is tested against real nodes in unit-test time. What needs separate
//! processes (SIGKILL, SIGSTOP, network namespaces) lives in the integration crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_coordinator::CoordinatorConfig;
use sluice_metadata::MetaStore;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_proto::pb::{self, admin_client::AdminClient, metadata_client::MetadataClient};
use sluice_storage_node::StorageNodeConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use sluice_storage_node::faults;

/// How long a node's registration lease lives: short, so a stopped node's partitions move on
/// quickly.
const LEASE_TTL: Duration = Duration::from_millis(1500);

/// One running server of the sandbox.
struct Server {
    address: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Stops the server gracefully and waits for it.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }

    /// Stops the server gracefully, aborting it if that takes longer than `limit`.
    async fn stop_within(self, limit: Duration) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// A running in-process cluster; dropping it stops every server (see its `Drop`).
pub struct Sandbox {
    dir: tempfile::TempDir,
    store: Arc<dyn MetaStore>,
    coordinator: Option<Server>,
    nodes: Vec<Option<Server>>,
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    Ok((listener, address))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Sandbox {
    /// Starts a coordinator and `nodes` storage nodes, and waits until every node is
    /// registered.
    pub async fn start(nodes: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-sandbox-")
            .tempdir()?;
        let store: Arc<dyn MetaStore> = EmbeddedStore::open(dir.path().join("metadata.db"))
            .context("opening the embedded metadata store")?;
        let (listener, address) = listen().await?;
        let (stop, rx) = watch::channel(false);
        let cfg = CoordinatorConfig {
            id: "sandbox".into(),
            advertised_address: address.clone(),
            lease_ttl: LEASE_TTL,
            ..Default::default()
        };
        let task = tokio::spawn(sluice_coordinator::run(
            cfg,
            store.clone(),
            listener,
            stopped(rx),
        ));
        let mut sandbox = Self {
            dir,
            store,
            coordinator: Some(Server {
                address,
                stop,
                task,
            }),
            nodes: Vec::new(),
        };
        for id in 0..nodes {
            let node = sandbox.spawn_node(id).await?;
            sandbox.nodes.push(Some(node));
        }
        sandbox.wait_registered(nodes).await?;
        Ok(sandbox)
    }

    async fn spawn_node(&self, id: usize) -> anyhow::Result<Server> {
        let (listener, address) = listen().await?;
        let faults = self.faults_dir(id);
        std::fs::create_dir_all(&faults)?;
        let cfg = StorageNodeConfig {
            node_id: i32::try_from(id)?,
            data_dir: self.dir.path().join(format!("node-{id}")),
            advertised_address: address.clone(),
            kafka_advertised_address: String::new(),
            rack: String::new(),
            cluster_name: "sluice".into(),
            lease_ttl: LEASE_TTL,
            fsync: false,
            faults_dir: Some(faults),
            tail_cache_bytes: sluice_storage_node::log::tail::DEFAULT_TAIL_CACHE_BYTES,
            retention_check_interval: Duration::from_millis(200),
            recovery_checkpoint_interval: sluice_storage_node::recovery::DEFAULT_INTERVAL,
            min_free: Default::default(),
            cleaner: Default::default(),
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(sluice_storage_node::run(
            cfg,
            self.store.clone(),
            listener,
            None,
            stopped(rx),
        ));
        Ok(Server {
            address,
            stop,
            task,
        })
    }

    /// The coordinator's address, for a client's bootstrap list.
    pub fn bootstrap(&self) -> Vec<String> {
        self.coordinator.iter().map(|c| c.address.clone()).collect()
    }

    /// Storage node `id`'s address.
    pub fn node_address(&self, id: usize) -> Option<String> {
        self.nodes.get(id)?.as_ref().map(|n| n.address.clone())
    }

    /// Where node `id`'s fault switches live.
    pub fn faults_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("faults-{id}"))
    }

    /// Switches fault `name` of node `id` on with `content` (see `faults` for what each
    /// fault's file holds), or off with `None`.
    pub fn set_fault(&self, id: usize, name: &str, content: Option<&str>) {
        let path = self.faults_dir(id).join(name);
        match content {
            Some(c) => std::fs::write(path, c).expect("writing a fault switch"),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Whether fault `name` of node `id` is still switched on (one-shot faults switch
    /// themselves off when they fire).
    pub fn fault_armed(&self, id: usize, name: &str) -> bool {
        self.faults_dir(id).join(name).exists()
    }

    /// Stops storage node `id` gracefully (it hands its leaderships over first).
    pub async fn stop_node(&mut self, id: usize) -> anyhow::Result<()> {
        match self.nodes.get_mut(id).and_then(Option::take) {
            Some(node) => node.stop().await,
            None => anyhow::bail!("node {id} is not running"),
        }
    }

    /// Starts storage node `id` again on its data directory (on a new port).
    pub async fn restart_node(&mut self, id: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes.get(id).is_some_and(Option::is_none),
            "node {id} runs"
        );
        let node = self.spawn_node(id).await?;
        self.nodes[id] = Some(node);
        Ok(())
    }

    async fn admin(&self) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let address = self.bootstrap().pop().context("no coordinator")?;
        Ok(AdminClient::connect(format!("http://{address}")).await?)
    }

    async fn metadata(&self) -> anyhow::Result<MetadataClient<tonic::transport::Channel>> {
        let address = self.bootstrap().pop().context("no coordinator")?;
        Ok(MetadataClient::connect(format!("http://{address}")).await?)
    }

    async fn wait_registered(&self, nodes: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut md) = self.metadata().await
                && let Ok(r) = md.get_metadata(pb::GetMetadataRequest::default()).await
                && r.get_ref().nodes.len() >= nodes
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "nodes did not register in 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates `topic` and waits until every partition has a leader and a full ISR.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i32,
    ) -> anyhow::Result<()> {
        self.admin()
            .await?
            .create_topic(pb::CreateTopicRequest {
                name: topic.into(),
                partitions,
                replication_factor,
                ..Default::default()
            })
            .await?;
        self.wait_full_isr(topic, Duration::from_secs(20)).await
    }

    /// Waits until every partition of `topic` has a leader and all its replicas in sync.
    pub async fn wait_full_isr(&self, topic: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let partitions = self.partitions(topic).await?;
            let full = partitions
                .iter()
                .all(|p| p.leader >= 0 && p.isr.len() == p.replicas.len());
            if full && !partitions.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{topic} has no full ISR after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader of `topic`'s partition, by the metadata.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        self.partitions(topic)
            .await?
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .context("no such partition")
    }

    /// `topic`'s partitions (none when it does not exist), by the metadata.
    async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<pb::PartitionMetadata>> {
        let md = self
            .metadata()
            .await?
            .get_metadata(pb::GetMetadataRequest {
                topics: vec![topic.into()],
                include_internal: true,
            })
            .await?
            .into_inner();
        Ok(md
            .topics
            .into_iter()
            .next()
            .map(|t| t.partitions)
            .unwrap_or_default())
    }

    /// Stops every server gracefully, nodes first.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.stop().await?;
        }
        if let Some(c) = self.coordinator.take() {
            c.stop().await?;
        }
        Ok(())
    }
}

/// How long a dropped sandbox waits for a server's graceful stop before aborting it.
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Drop for Sandbox {
    /// Stops every server gracefully when the runtime lets a destructor wait (a multi-thread
    /// runtime), so each storage node closes its RocksDB before the test process exits: a
    /// database still closing on a writer thread while the process runs its exit handlers
    /// aborts it ("pthread lock: Invalid argument"). On a current-thread runtime nothing here
    /// can wait, and the servers are aborted.
    fn drop(&mut self) {
        let mut servers: Vec<Server> = self.nodes.iter_mut().filter_map(Option::take).collect();
        servers.extend(self.coordinator.take());
        if servers.is_empty() {
            return;
        }
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| {
                    h.block_on(async {
                        for server in servers {
                            server.stop_within(DROP_STOP_TIMEOUT).await;
                        }
                    })
                });
            }
            _ => servers.iter().for_each(|s| s.task.abort()),
        }
    }
}
