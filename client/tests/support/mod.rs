//! An in-process fake cluster: one coordinator (Metadata) and storage nodes (Log) sharing one
//! in-memory state, with knobs to inject faults — a stale advertised leader, queued produce
//! errors, a gate that stalls produce — so the client's routing, retry and fetch logic is
//! exercised over real gRPC without the real servers.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::ClientConfig;
use sluice_proto::batch::{decode_records, set_base_offset, validate};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{
    self, ErrorCode, LeaderHint, list_offsets_request::Spec, log_server, metadata_server,
    produce_request::Payload,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

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

#[derive(Default)]
pub struct State {
    pub nodes: BTreeMap<i32, String>,
    pub topics: BTreeMap<String, FakeTopic>,
    /// Errors the next produce requests fail with, in order, whichever node gets them.
    pub produce_faults: VecDeque<ApiError>,
    /// (node, topic, partition, base offset, records) of every accepted produce.
    pub accepted: Vec<(i32, String, i32, i64, i64)>,
    /// Whether hints carry the leader (false: NOT_LEADER without a hint).
    pub no_hints: bool,
}

pub struct FakeCluster {
    pub coordinator: String,
    pub metadata_calls: Arc<AtomicUsize>,
    pub state: Arc<Mutex<State>>,
    /// Produce handlers take a read lock first; a test holding the write lock stalls them.
    pub produce_gate: Arc<tokio::sync::RwLock<()>>,
}

impl FakeCluster {
    /// A coordinator and `nodes` storage nodes (ids 1..=nodes) on loopback.
    pub async fn start(nodes: i32) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let produce_gate = Arc::new(tokio::sync::RwLock::new(()));
        for id in 1..=nodes {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            state.lock().unwrap().nodes.insert(id, addr);
            let svc = FakeNode {
                id,
                state: state.clone(),
                gate: produce_gate.clone(),
            };
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(log_server::LogServer::new(svc))
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coordinator = listener.local_addr().unwrap().to_string();
        let metadata_calls = Arc::new(AtomicUsize::new(0));
        let svc = FakeCoordinator {
            state: state.clone(),
            calls: metadata_calls.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(metadata_server::MetadataServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self {
            coordinator,
            metadata_calls,
            state,
            produce_gate,
        }
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

    /// Lets the coordinator catch up with the real leaders.
    pub fn advertise_leaders(&self, topic: &str) {
        let mut st = self.state.lock().unwrap();
        let t = st.topics.get_mut(topic).unwrap();
        t.advertised = t.leaders.clone();
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new([self.coordinator.clone()])
        }
    }

    pub fn calls(&self) -> usize {
        self.metadata_calls.load(Ordering::SeqCst)
    }
}

struct FakeCoordinator {
    state: Arc<Mutex<State>>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl metadata_server::Metadata for FakeCoordinator {
    async fn get_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        let st = self.state.lock().unwrap();
        let names: Vec<String> = if req.topics.is_empty() {
            st.topics.keys().cloned().collect()
        } else {
            req.topics
        };
        let mut topics = Vec::new();
        for name in names {
            let t = st.topics.get(&name).ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownTopic, format!("no topic {name}")).to_status()
            })?;
            topics.push(pb::TopicMetadata {
                name,
                topic_id: t.id.clone(),
                partitions: t
                    .advertised
                    .iter()
                    .enumerate()
                    .map(|(p, &leader)| pb::PartitionMetadata {
                        partition: p as i32,
                        leader,
                        leader_epoch: t.epoch,
                        replicas: vec![leader],
                        isr: vec![leader],
                    })
                    .collect(),
                internal: false,
            });
        }
        let nodes = st
            .nodes
            .iter()
            .map(|(&node_id, address)| pb::NodeInfo {
                node_id,
                address: address.clone(),
                rack: String::new(),
            })
            .collect();
        Ok(Response::new(pb::GetMetadataResponse {
            cluster_name: "fake".into(),
            nodes,
            topics,
            controller: None,
        }))
    }
}

struct FakeNode {
    id: i32,
    state: Arc<Mutex<State>>,
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl FakeNode {
    /// The partition's log if this node leads it, else the error a real node gives.
    fn check_leader(&self, st: &State, topic: &str, partition: i32) -> Result<(), Status> {
        let t = st.topics.get(topic).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownTopic, format!("no topic {topic}")).to_status()
        })?;
        let leader = *t.leaders.get(partition as usize).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownPartition, "no such partition").to_status()
        })?;
        if leader != self.id {
            let hint = (!st.no_hints).then(|| LeaderHint {
                node_id: leader,
                address: st.nodes[&leader].clone(),
                leader_epoch: t.epoch,
            });
            return Err(
                ApiError::not_leader(format!("node {} does not lead", self.id), hint).to_status(),
            );
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl log_server::Log for FakeNode {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let _gate = self.gate.read().await;
        let req = req.into_inner();
        let mut st = self.state.lock().unwrap();
        if let Some(e) = st.produce_faults.pop_front() {
            return Err(e.to_status());
        }
        self.check_leader(&st, &req.topic, req.partition)?;
        let t = st.topics.get_mut(&req.topic).unwrap();
        if !req.topic_id.is_empty() && req.topic_id != t.id {
            return Err(ApiError::new(ErrorCode::UnknownTopicId, "topic id mismatch").to_status());
        }
        let Some(Payload::Batch(batch)) = req.payload else {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "batch expected").to_status());
        };
        let header = validate(&batch).map_err(|e| ApiError::from(e).to_status())?;
        let log = &mut t.logs[req.partition as usize];
        let base = log.end;
        let count = header.record_count as i64;
        let mut buf = batch.to_vec();
        set_base_offset(&mut buf, base);
        log.batches.push((base, base + count, Bytes::from(buf)));
        log.end += count;
        st.accepted
            .push((self.id, req.topic.clone(), req.partition, base, count));
        Ok(Response::new(pb::ProduceResponse {
            base_offset: if req.acks == 0 { -1 } else { base },
            log_append_time_ms: -1,
            log_start_offset: 0,
            leader_epoch: 1,
        }))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let req = req.into_inner();
        let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        loop {
            {
                let st = self.state.lock().unwrap();
                self.check_leader(&st, &req.topic, req.partition)?;
                let log = &st.topics[&req.topic].logs[req.partition as usize];
                if req.offset > log.end || req.offset < log.start {
                    return Err(ApiError::new(
                        ErrorCode::OffsetOutOfRange,
                        format!("offset {} outside {}..={}", req.offset, log.start, log.end),
                    )
                    .to_status());
                }
                let mut out = Vec::new();
                for (_, next, b) in &log.batches {
                    if *next > req.offset
                        && (out.is_empty() || out.len() + b.len() <= req.max_bytes as usize)
                    {
                        out.extend_from_slice(b);
                    }
                }
                if !out.is_empty() || Instant::now() >= deadline {
                    return Ok(Response::new(pb::FetchResponse {
                        batches: Bytes::from(out),
                        high_watermark: log.end,
                        log_start_offset: log.start,
                        records: vec![],
                        leader_epoch: 1,
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = req.into_inner();
        let st = self.state.lock().unwrap();
        self.check_leader(&st, &req.topic, req.partition)?;
        let log = &st.topics[&req.topic].logs[req.partition as usize];
        let (offset, timestamp_ms) = match req.spec {
            Some(Spec::Earliest(_)) => (log.start, -1),
            Some(Spec::Latest(_)) => (log.end, -1),
            Some(Spec::TimestampMs(ts)) => log
                .batches
                .iter()
                .flat_map(|(_, _, b)| decode_records(b).unwrap())
                .find(|r| r.timestamp_ms >= ts)
                .map_or((-1, -1), |r| (r.offset, r.timestamp_ms)),
            None => return Err(ApiError::new(ErrorCode::InvalidRequest, "no spec").to_status()),
        };
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            timestamp_ms,
            log_start_offset: log.start,
            high_watermark: log.end,
        }))
    }
}
