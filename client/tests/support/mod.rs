//! An in-process fake cluster: one coordinator (Metadata) and storage nodes (Log) sharing one
//! in-memory state, with knobs to inject faults — a stale advertised leader, queued produce
//! errors before or after the append, paused nodes that hold every
//! request unanswered with their connections open, stopped and restarted nodes —
//! so the client's routing, retry, idempotence and fetch logic is exercised over real gRPC
//! without the real servers.
//!
//! Like a real leader, a node de-duplicates idempotent batches: a resend of a producer's last
//! batch is answered with its original offset, and a sequence gap is refused with
//! `OUT_OF_ORDER_SEQUENCE`. So every test that produces also checks the client's sequences.

#![allow(dead_code)]

mod coordinator;
mod node;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::ClientConfig;
use sluice_proto::error::ApiError;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use coordinator::FakeCoordinator;
use node::FakeNode;

/// One partition's log: batches with their offsets assigned.
#[derive(Default)]
pub struct PartitionLog {
    pub batches: Vec<(i64, i64, Bytes)>,
    pub start: i64,
    pub end: i64,
}

pub struct FakeTopic {
    pub id: Bytes,
    /// The node that actually leads each partition (others answer NOT_LEADER).
    pub leaders: Vec<i32>,
    /// What the coordinator advertises; may lag `leaders` to test hints.
    pub advertised: Vec<i32>,
    pub epoch: i32,
    pub logs: Vec<PartitionLog>,
}

/// A produce request as a node received it (before any fault or check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceSeen {
    pub node: i32,
    pub topic: String,
    pub partition: i32,
    pub acks: i32,
    pub timeout_ms: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
}

/// A batch a node appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub node: i32,
    pub topic: String,
    pub partition: i32,
    pub base_offset: i64,
    pub records: i64,
    pub producer_id: i64,
    pub base_sequence: i32,
}

/// The last batch a producer appended to a partition, for de-duplication.
#[derive(Debug, Clone, Copy)]
pub struct LastBatch {
    pub base_sequence: i32,
    pub records: i32,
    pub base_offset: i64,
}

pub struct State {
    pub nodes: BTreeMap<i32, String>,
    pub topics: BTreeMap<String, FakeTopic>,
    /// Errors the next produce requests fail with before anything is appended, in order,
    /// whichever node gets them.
    pub produce_faults: VecDeque<ApiError>,
    /// Errors the next produce requests fail with *after* the batch was appended, or found to
    /// be a duplicate (the answer is lost), in order.
    pub faults_after_append: VecDeque<tonic::Status>,
    /// Every produce request received.
    pub requests: Vec<ProduceSeen>,
    /// Every batch appended.
    pub accepted: Vec<Accepted>,
    /// Resends answered with the original offset instead of being appended.
    pub duplicates: usize,
    /// Whether hints carry the leader (false: NOT_LEADER without a hint).
    pub no_hints: bool,
    /// Per (topic, partition, producer id): the producer's last appended batch.
    pub sequences: HashMap<(String, i32, i64), LastBatch>,
    /// The id the next InitProducerId grants.
    pub next_producer_id: i64,
    /// Errors the next InitProducerId calls fail with, in order.
    pub init_faults: VecDeque<ApiError>,
    pub init_calls: usize,
    /// Requests a paused node held: (node, "produce" or "fetch"), in arrival order.
    pub stalled: Vec<(i32, &'static str)>,
    /// Subscriptions opened on `SubscribeMany` streams.
    pub subscribes: usize,
    /// `SubscribeMany` calls received.
    pub subscription_streams: usize,
    /// `ProduceMany` requests received (alone or on a stream), and how many requests each
    /// carried.
    pub produce_many: Vec<usize>,
    /// `ProduceStream` calls received.
    pub produce_streams: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            produce_faults: VecDeque::new(),
            faults_after_append: VecDeque::new(),
            requests: Vec::new(),
            accepted: Vec::new(),
            duplicates: 0,
            no_hints: false,
            sequences: HashMap::new(),
            next_producer_id: 1000,
            init_faults: VecDeque::new(),
            init_calls: 0,
            stalled: Vec::new(),
            subscribes: 0,
            subscription_streams: 0,
            produce_many: Vec::new(),
            produce_streams: 0,
        }
    }
}

/// The coordinator's metadata watches: a publish wakes every open stream, which then sends the
/// advertised state. Nothing is pushed without `publish`, so tests choose whether the client
/// learns a change from the watch or from errors.
pub struct WatchHub {
    pub tx: watch::Sender<u64>,
    /// Streams open now.
    pub open: AtomicUsize,
    /// Messages sent on all streams so far.
    pub sent: AtomicUsize,
    /// Bumped by `end_watches`: streams opened before end at their next wake-up.
    pub generation: AtomicUsize,
}

struct RunningNode {
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

pub struct FakeCluster {
    pub coordinator: String,
    /// GetMetadata calls (not watches, not InitProducerId).
    pub metadata_calls: Arc<AtomicUsize>,
    pub watch: Arc<WatchHub>,
    pub state: Arc<Mutex<State>>,
    /// Nodes that hold produce and fetch requests unanswered, as a SIGSTOPped process does.
    pub paused: Arc<watch::Sender<BTreeSet<i32>>>,
    running: Mutex<BTreeMap<i32, RunningNode>>,
}

impl FakeCluster {
    /// A coordinator and `nodes` storage nodes (ids 1..=nodes) on loopback.
    pub async fn start(nodes: i32) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coordinator = listener.local_addr().unwrap().to_string();
        let metadata_calls = Arc::new(AtomicUsize::new(0));
        let watch = Arc::new(WatchHub {
            tx: watch::channel(0).0,
            open: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        });
        coordinator::serve(
            listener,
            FakeCoordinator {
                state: state.clone(),
                calls: metadata_calls.clone(),
                watch: watch.clone(),
            },
        );
        let cluster = Self {
            coordinator,
            metadata_calls,
            watch,
            state,
            paused: Arc::new(watch::channel(BTreeSet::new()).0),
            running: Mutex::new(BTreeMap::new()),
        };
        for id in 1..=nodes {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            cluster.state.lock().unwrap().nodes.insert(id, addr);
            cluster.serve_node(id, listener);
        }
        cluster
    }

    fn serve_node(&self, id: i32, listener: TcpListener) {
        let (stopping, stopping_rx) = watch::channel(false);
        let svc = FakeNode {
            id,
            state: self.state.clone(),
            paused: self.paused.clone(),
            stopping: stopping_rx,
        };
        let (shutdown, signal) = oneshot::channel();
        let server = node::serve(listener, svc, signal, stopping);
        self.running
            .lock()
            .unwrap()
            .insert(id, RunningNode { shutdown, server });
    }

    /// Stops node `id`'s server as a dying process would: connections close, and connecting
    /// to its address is refused until `restart_node`.
    pub async fn stop_node(&self, id: i32) {
        let node = self.running.lock().unwrap().remove(&id).expect("node runs");
        let _ = node.shutdown.send(());
        let abort = node.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), node.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// Pauses node `id` as SIGSTOP would: its connections stay open, but the produce and fetch
    /// requests it gets from now on are held unanswered (and listed in `State::stalled`) until
    /// `resume_node`.
    pub fn pause_node(&self, id: i32) {
        self.paused.send_modify(|p| {
            p.insert(id);
        });
    }

    /// Lets a paused node carry on with the requests it held, as SIGCONT would.
    pub fn resume_node(&self, id: i32) {
        self.paused.send_modify(|p| {
            p.remove(&id);
        });
    }

    /// Requests held by paused nodes so far.
    pub fn stalled(&self) -> Vec<(i32, &'static str)> {
        self.state.lock().unwrap().stalled.clone()
    }

    /// Serves node `id` again on its old address.
    pub async fn restart_node(&self, id: i32) {
        let addr: SocketAddr = self.state.lock().unwrap().nodes[&id].parse().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        self.serve_node(id, listener);
    }

    /// Creates a topic whose partitions are all led by `leader`.
    pub fn create_topic(&self, name: &str, partitions: usize, leader: i32) {
        let mut st = self.state.lock().unwrap();
        let id = st.topics.len() as u8 + 1;
        st.topics.insert(
            name.to_string(),
            FakeTopic {
                id: Bytes::from(vec![id; 16]),
                leaders: vec![leader; partitions],
                advertised: vec![leader; partitions],
                epoch: 1,
                logs: (0..partitions).map(|_| PartitionLog::default()).collect(),
            },
        );
    }

    /// Moves leadership of every partition of `topic` to `node` without telling the coordinator.
    pub fn move_leader_silently(&self, topic: &str, node: i32) {
        let mut st = self.state.lock().unwrap();
        let t = st.topics.get_mut(topic).unwrap();
        t.leaders.iter_mut().for_each(|l| *l = node);
        t.epoch += 1;
    }

    /// Lets the coordinator's GetMetadata answers catch up with the real leaders (watches learn
    /// it at the next `publish`).
    pub fn advertise_leaders(&self, topic: &str) {
        let mut st = self.state.lock().unwrap();
        let t = st.topics.get_mut(topic).unwrap();
        t.advertised = t.leaders.clone();
    }

    /// Pushes the advertised state to every open metadata watch.
    pub fn publish(&self) {
        self.watch.tx.send_modify(|v| *v += 1);
    }

    /// Ends every open metadata watch, as a coordinator restart would.
    pub fn end_watches(&self) {
        self.watch.generation.fetch_add(1, Ordering::SeqCst);
        self.publish();
    }

    /// A leader election as the real controller does it: the leader moves, the coordinator
    /// advertises it, and watches hear of it.
    pub fn move_leader(&self, topic: &str, node: i32) {
        self.move_leader_silently(topic, node);
        self.advertise_leaders(topic);
        self.publish();
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new([self.coordinator.clone()])
        }
    }

    /// GetMetadata calls so far.
    pub fn calls(&self) -> usize {
        self.metadata_calls.load(Ordering::SeqCst)
    }

    pub fn open_watches(&self) -> usize {
        self.watch.open.load(Ordering::SeqCst)
    }

    pub fn watch_messages(&self) -> usize {
        self.watch.sent.load(Ordering::SeqCst)
    }

    /// Batches appended so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Produce requests received so far.
    pub fn requests(&self) -> Vec<ProduceSeen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits up to 5 s for `cond`, polling.
    pub async fn eventually(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
