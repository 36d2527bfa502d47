//! The one cluster harness of Sluice's integration tests: [`TestCluster`] starts a real etcd,
//! coordinators and storage nodes as real processes on loopback, and offers the faults the
//! tests need (SIGKILL, SIGSTOP/SIGCONT, restart with the same id and data).

pub mod matrix;
pub mod netns;
pub mod process;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    SeekTo,
};
use sluice_metadata::testing::EtcdProcess;

use crate::netns::{Host, Network};
use crate::process::{ManagedProcess, free_port};

/// Ports of every server in a namespace of its own (each namespace has its own port space).
const NS_COORDINATOR_PORT: u16 = 9092;
const NS_NODE_PORT: u16 = 9093;
const NS_METRICS_PORT: u16 = 9100;

/// Where the built binaries are: `$SLUICE_BIN_DIR`, else the target dir this test runs from.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SLUICE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            // target/<profile>/deps/<test-binary>
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, which ./scripts/test does)",
        path.display()
    );
    path
}

/// Client-side logs of the test process, for post-mortems: set `SLUICE_CLIENT_LOG` (e.g.
/// `sluice_client=debug`); off otherwise. Server logs go to each process's log file.
pub fn init_client_logs() {
    if let Ok(filter) = std::env::var("SLUICE_CLIENT_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
}

/// A topic config (or any string map) from `key, value` pairs.
pub fn config(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of coordinators.
    pub coordinators: usize,
    /// Number of storage nodes (ids 0..n).
    pub storage_nodes: usize,
    /// Lease TTL of coordinators and nodes; short so failover tests are quick.
    pub lease_ttl: Duration,
    /// Every coordinator and storage node in a network namespace of its own, etcd and the
    /// test's clients on the bridge (see [`netns`]), so tests can cut links. Needs root.
    pub network: bool,
    /// Extra command-line arguments of every storage node.
    pub node_args: Vec<String>,
    /// Extra command-line arguments of every coordinator.
    pub coordinator_args: Vec<String>,
    /// Where the nodes' data directories go (`node-<id>` under it) instead of the cluster's
    /// temporary directory, e.g. a small file system a test mounted.
    pub node_data_root: Option<PathBuf>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            coordinators: 1,
            storage_nodes: 1,
            lease_ttl: Duration::from_millis(1500),
            network: false,
            node_args: Vec::new(),
            coordinator_args: Vec::new(),
            node_data_root: None,
        }
    }
}

/// A running cluster; every process is killed when it is dropped.
pub struct TestCluster {
    /// The cluster's etcd.
    pub etcd: EtcdProcess,
    /// Coordinator processes, by index.
    pub coordinators: Vec<ManagedProcess>,
    /// Storage-node processes, by node id.
    pub nodes: Vec<ManagedProcess>,
    /// Holds data dirs and logs.
    pub dir: tempfile::TempDir,
    /// Namespaces of the coordinators, by index (with [`ClusterSpec::network`]).
    pub coordinator_hosts: Vec<Host>,
    /// Namespaces of the storage nodes, by node id (with [`ClusterSpec::network`]).
    pub node_hosts: Vec<Host>,
    spec: ClusterSpec,
    /// Dropped last: the namespaces go once the processes in them are killed.
    pub network: Option<Network>,
}

impl TestCluster {
    /// Starts etcd, the coordinators and the storage nodes, and waits until the cluster has a
    /// controller and every node is registered.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        init_client_logs();
        let mut network = if spec.network {
            Some(Network::new().context("creating the test network")?)
        } else {
            None
        };
        let etcd = match &network {
            Some(n) => EtcdProcess::start_on(n.gateway().into()).await,
            None => EtcdProcess::start().await,
        }
        .context("starting etcd")?;
        let (mut coordinator_hosts, mut node_hosts) = (Vec::new(), Vec::new());
        if let Some(n) = network.as_mut() {
            for _ in 0..spec.coordinators {
                coordinator_hosts.push(n.add_host()?);
            }
            for _ in 0..spec.storage_nodes {
                node_hosts.push(n.add_host()?);
            }
        }
        let mut dir = tempfile::Builder::new().prefix("sluice-it-").tempdir()?;
        if std::env::var_os("SLUICE_KEEP_LOGS").is_some() {
            // Keep data and logs for post-mortems; the path is printed.
            dir.disable_cleanup(true);
            println!("cluster files kept in {}", dir.path().display());
        }
        let mut cluster = Self {
            etcd,
            coordinators: Vec::new(),
            nodes: Vec::new(),
            dir,
            coordinator_hosts,
            node_hosts,
            spec: spec.clone(),
            network,
        };
        for i in 0..spec.coordinators {
            let p = cluster.spawn_coordinator(i)?;
            cluster.coordinators.push(p);
        }
        for id in 0..spec.storage_nodes {
            let port = if spec.network {
                NS_NODE_PORT
            } else {
                free_port()?
            };
            let p = cluster.spawn_node(id, port)?;
            cluster.nodes.push(p);
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn_coordinator(&self, i: usize) -> anyhow::Result<ManagedProcess> {
        let port = if self.spec.network {
            NS_COORDINATOR_PORT
        } else {
            free_port()?
        };
        self.spawn_coordinator_on(i, port)
    }

    /// The address a process listens on (its namespace's, or loopback) and a free metrics
    /// address beside it.
    fn listen_addrs(&self, host: Option<&Host>, port: u16) -> anyhow::Result<(String, String)> {
        Ok(match host {
            Some(h) => (
                format!("{}:{port}", h.ip),
                format!("{}:{NS_METRICS_PORT}", h.ip),
            ),
            None => (
                format!("127.0.0.1:{port}"),
                format!("127.0.0.1:{}", free_port()?),
            ),
        })
    }

    fn spawn_coordinator_on(&self, i: usize, port: u16) -> anyhow::Result<ManagedProcess> {
        let host = self.coordinator_hosts.get(i);
        let (listen, metrics) = self.listen_addrs(host, port)?;
        let mut args: Vec<String> = vec![
            "--id".into(),
            format!("coordinator-{i}"),
            "--listen".into(),
            listen,
            "--etcd".into(),
            self.etcd.endpoint(),
            "--lease-ttl-ms".into(),
            self.spec.lease_ttl.as_millis().to_string(),
            "--metrics-listen".into(),
            metrics,
        ];
        args.extend(self.spec.coordinator_args.iter().cloned());
        ManagedProcess::spawn_on(
            host,
            &format!("coordinator-{i}"),
            bin_path("sluice-coordinator"),
            args,
            self.dir.path().join(format!("coordinator-{i}.log")),
            port,
        )
    }

    fn spawn_node(&self, id: usize, port: u16) -> anyhow::Result<ManagedProcess> {
        let host = self.node_hosts.get(id);
        let (listen, metrics) = self.listen_addrs(host, port)?;
        let mut args = vec![
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.node_data_dir(id).display().to_string(),
            "--listen".into(),
            listen,
            "--etcd".into(),
            self.etcd.endpoint(),
            "--lease-ttl-ms".into(),
            self.spec.lease_ttl.as_millis().to_string(),
            "--faults-dir".into(),
            self.faults_dir(id).display().to_string(),
            "--metrics-listen".into(),
            metrics,
        ];
        args.extend(self.spec.node_args.iter().cloned());
        ManagedProcess::spawn_on(
            host,
            &format!("node-{id}"),
            bin_path("sluice-storage-node"),
            args,
            self.dir.path().join(format!("node-{id}.log")),
            port,
        )
    }

    /// Storage node `id`'s data directory.
    pub fn node_data_dir(&self, id: usize) -> PathBuf {
        let root = self.spec.node_data_root.as_deref();
        root.unwrap_or(self.dir.path()).join(format!("node-{id}"))
    }

    /// Addresses of every coordinator (killed ones included: clients must skip them).
    pub fn bootstrap(&self) -> Vec<String> {
        self.coordinators.iter().map(|c| c.address()).collect()
    }

    /// A client config pointed at the coordinators.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            bootstrap: self.bootstrap(),
            ..Default::default()
        }
    }

    /// An admin client.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::connect(self.client_config()).await?)
    }

    /// A producer with `acks=all` (idempotent, the default).
    pub async fn producer(&self) -> Producer {
        Producer::new(ProducerConfig {
            client: self.client_config(),
            acks: Acks::All,
            ..Default::default()
        })
        .await
        .expect("a producer")
    }

    /// A consumer assigned `topic`'s partition 0 from `from`, resetting as `reset` says when
    /// its position is out of range.
    pub async fn consumer_at(&self, topic: &str, from: SeekTo, reset: OffsetReset) -> Consumer {
        let mut consumer = Consumer::new(ConsumerConfig {
            client: self.client_config(),
            offset_reset: reset,
            ..Default::default()
        })
        .await
        .expect("a consumer");
        consumer
            .assign(vec![(topic.to_string(), 0)], from)
            .await
            .expect("assigned");
        consumer
    }

    /// Waits until a controller is elected and all running nodes are registered.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let want_nodes = self.nodes.iter().filter(|n| n.is_running()).count();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(admin) = self.admin().await
                && let Ok(c) = admin.describe_cluster().await
                && c.controller.is_some()
                && c.nodes.iter().filter(|n| n.registered).count() == want_nodes
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster not ready after {timeout:?}; the end of each process's log (the \
                     directory is removed with the cluster):\n{}\n{}",
                    self.log_tails(20),
                    self.silent_processes()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where each process that has written nothing to its log is (its state and the stack of
    /// every thread, from gdb when installed): a server that hangs before its first log line
    /// says nothing otherwise.
    pub fn silent_processes(&self) -> String {
        let mut out = String::new();
        for p in self.coordinators.iter().chain(&self.nodes) {
            let silent = std::fs::metadata(&p.log).map_or(true, |m| m.len() == 0);
            let Some(pid) = p.pid().filter(|_| silent) else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let state = status
                .lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or("State: ?");
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            let stacks = std::process::Command::new("timeout")
                .args([
                    "20",
                    "gdb",
                    "-batch",
                    "-p",
                    &pid.to_string(),
                    "-ex",
                    "thread apply all bt 12",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| format!("(no gdb: {e})"));
            out.push_str(&format!(
                "== {} (pid {pid}) wrote nothing: {state}, wchan {wchan}\n{stacks}\n",
                p.name
            ));
        }
        out
    }

    /// The last `lines` lines of every process log of this cluster, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return out;
        };
        let mut logs: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("== {}\n{}\n", path.display(), tail.join("\n")));
        }
        out
    }

    /// Index of the active controller's coordinator, from DescribeCluster.
    pub async fn active_coordinator(&self) -> anyhow::Result<usize> {
        let c = self.admin().await?.describe_cluster().await?;
        let id = c.controller.context("no controller")?.coordinator_id;
        self.coordinators
            .iter()
            .position(|p| p.name == id)
            .with_context(|| format!("unknown controller {id}"))
    }

    /// The fault-switch directory of a node (see the storage node's `faults` module).
    pub fn faults_dir(&self, id: usize) -> PathBuf {
        let d = self.dir.path().join(format!("faults-{id}"));
        let _ = std::fs::create_dir_all(&d);
        d
    }

    /// Switches a fault of a node on (`on`) or off.
    pub fn set_fault(&self, id: usize, fault: &str, on: bool) {
        let f = self.faults_dir(id).join(fault);
        if on {
            std::fs::write(&f, b"").expect("write fault switch");
        } else {
            let _ = std::fs::remove_file(&f);
        }
    }

    /// Whether a one-shot fault is still armed (not yet fired).
    pub fn fault_armed(&self, id: usize, fault: &str) -> bool {
        self.faults_dir(id).join(fault).exists()
    }

    /// The current leader of a partition, from the coordinators.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let t = self.admin().await?.describe_topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .context("no such partition")?;
        Ok(p.leader)
    }

    /// A partition's state (leader, epoch, replicas, ISR), from the coordinators.
    pub async fn partition_state(
        &self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<sluice_proto::pb::PartitionMetadata> {
        let t = self.admin().await?.describe_topic(topic).await?;
        t.partitions
            .into_iter()
            .find(|p| p.partition == partition)
            .context("no such partition")
    }

    /// Waits until `pred` holds for a partition's state.
    pub async fn wait_partition(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
        pred: impl Fn(&sluice_proto::pb::PartitionMetadata) -> bool,
    ) -> anyhow::Result<sluice_proto::pb::PartitionMetadata> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = self.partition_state(topic, partition).await
                && pred(&p)
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "partition {topic}-{partition} did not reach the expected state in {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every partition of `topic` (`partitions` of them) has a leader and all its
    /// replicas in sync; returns how long that took, and fails with the logs' tails after
    /// `within`.
    pub async fn wait_full_isr(&self, topic: &str, partitions: i32, within: Duration) -> Duration {
        let t0 = Instant::now();
        let deadline = t0 + within;
        loop {
            let full = match self.admin().await {
                Ok(admin) => admin.describe_topic(topic).await.is_ok_and(|t| {
                    t.partitions.len() == partitions as usize
                        && t.partitions
                            .iter()
                            .all(|p| p.leader >= 0 && p.isr.len() == p.replicas.len())
                }),
                Err(_) => false,
            };
            if full {
                return t0.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "ISRs of {topic} not full within {within:?}:\n{}",
                self.log_tails(15)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every batch of a node's own replica of a partition (leader or follower), up to its log
    /// end, concatenated: for comparing replicas byte for byte.
    pub async fn replica_log(
        &self,
        id: usize,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<bytes::Bytes> {
        self.replica_log_from(id, topic, partition, 0).await
    }

    /// [`TestCluster::replica_log`] from offset `from` (at or after the replica's log start).
    pub async fn replica_log_from(
        &self,
        id: usize,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut client = sluice_proto::pb::log_client::LogClient::connect(format!(
            "http://{}",
            self.nodes[id].address()
        ))
        .await?;
        let mut out = bytes::BytesMut::new();
        let mut offset = from;
        loop {
            let resp = client
                .fetch(sluice_proto::pb::FetchRequest {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes: 1 << 20,
                    leader_epoch: -1,
                    replica_read: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if resp.batches.is_empty() {
                return Ok(out.freeze());
            }
            for b in sluice_proto::batch::BatchIter::new(resp.batches.clone()) {
                offset = b?.0.next_offset();
            }
            out.extend_from_slice(&resp.batches);
        }
    }

    /// SIGSTOPs a storage node.
    pub fn pause_node(&self, id: usize) -> anyhow::Result<()> {
        self.nodes[id].signal("STOP")
    }

    /// SIGCONTs a paused storage node.
    pub fn resume_node(&self, id: usize) -> anyhow::Result<()> {
        self.nodes[id].signal("CONT")
    }

    /// Restarts a killed coordinator on its port.
    pub fn restart_coordinator(&mut self, i: usize) -> anyhow::Result<()> {
        self.coordinators[i].kill();
        self.coordinators[i] = self.spawn_coordinator_on(i, self.coordinators[i].port)?;
        Ok(())
    }

    /// The Prometheus text a process serves (`node` or `coordinator`, by index).
    pub async fn scrape(&self, process: &ManagedProcess) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = process
            .arg_after("--metrics-listen")
            .context("metrics not enabled")?;
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut out = String::new();
        conn.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// SIGTERMs a storage node and waits for its graceful exit (controlled shutdown).
    pub fn stop_node_gracefully(
        &mut self,
        id: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.nodes[id].terminate(timeout)
    }

    /// SIGKILLs a storage node.
    pub fn kill_node(&mut self, id: usize) {
        self.nodes[id].kill();
    }

    /// Deletes a (killed) node's data directory, as a lost or replaced volume would.
    pub fn wipe_node_data(&self, id: usize) -> anyhow::Result<()> {
        let dir = self.node_data_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("wiping {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// The test network (with [`ClusterSpec::network`]).
    pub fn net(&self) -> &Network {
        self.network
            .as_ref()
            .expect("a cluster started with network: true")
    }

    /// Lines of every process log that report a panic.
    pub fn panics(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.extend(
                    text.lines()
                        .filter(|l| l.contains("panicked"))
                        .map(|l| format!("{}: {l}", path.display())),
                );
            }
        }
        out
    }

    /// Restarts a killed node with the same id, port and data dir.
    pub fn restart_node(&mut self, id: usize) -> anyhow::Result<()> {
        let port = self.nodes[id].port;
        self.nodes[id].kill();
        self.nodes[id] = self.spawn_node(id, port)?;
        Ok(())
    }

    /// SIGKILLs a coordinator.
    pub fn kill_coordinator(&mut self, i: usize) {
        self.coordinators[i].kill();
    }
}

/// Produces over raw gRPC, retrying while a freshly created partition is still opening on its
/// leader (LEADER_NOT_AVAILABLE) or the leader has not yet heard of the topic (UNKNOWN_TOPIC):
/// both are retriable and a client library hides them, a raw caller sees them. Any other
/// refusal, or the same one after `timeout`, is returned as is.
pub async fn produce_when_open(
    log: &mut sluice_proto::pb::log_client::LogClient<tonic::transport::Channel>,
    request: sluice_proto::pb::ProduceRequest,
    timeout: Duration,
) -> Result<sluice_proto::pb::ProduceResponse, tonic::Status> {
    let deadline = Instant::now() + timeout;
    loop {
        match log.produce(request.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if sluice_proto::error::ApiError::from_status(&s).is_retriable()
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => return Err(s),
        }
    }
}
