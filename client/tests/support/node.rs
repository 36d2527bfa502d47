//! The fake storage node's `Log` service: leads the partitions the shared state says it does,
//! appends produced batches (de-duplicating idempotent resends), and serves fetch and
//! list-offsets from the shared logs.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use sluice_proto::batch::{BatchHeader, decode_records, set_base_offset, validate};
use sluice_proto::error::ApiError;
use sluice_proto::mux::server::{self, Answers, Handler, Limits};
use sluice_proto::mux::{Down, protocols};
use sluice_proto::pb::{
    self, ErrorCode, LeaderHint, list_offsets_request::Spec, log_server, produce_request::Payload,
};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{Accepted, LastBatch, ProduceSeen, State};

#[derive(Clone)]
pub(super) struct FakeNode {
    pub(super) id: i32,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) paused: Arc<watch::Sender<BTreeSet<i32>>>,
    /// Turns true when the node stops: its subscriptions end, as a real node's do.
    pub(super) stopping: watch::Receiver<bool>,
}

/// Serves `svc` until `shutdown` fires; `stopping` must be the sender of `svc.stopping`.
pub(super) fn serve(
    listener: TcpListener,
    svc: FakeNode,
    shutdown: oneshot::Receiver<()>,
    stopping: watch::Sender<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(log_server::LogServer::new(svc))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = shutdown.await;
                stopping.send_replace(true);
            })
            .await;
    })
}

/// What a leader does with an idempotent batch, given the producer's last batch.
enum SequenceCheck {
    Append,
    /// A resend of the last batch: answer with its offset.
    Duplicate(i64),
    Gap(String),
}

fn check_sequence(last: Option<&LastBatch>, h: &BatchHeader) -> SequenceCheck {
    let expected = match last {
        Some(last) if last.base_sequence == h.base_sequence && last.records == h.record_count => {
            return SequenceCheck::Duplicate(last.base_offset);
        }
        Some(last) => ((last.base_sequence as i64 + last.records as i64) % (1 << 31)) as i32,
        None => 0,
    };
    if h.base_sequence == expected {
        SequenceCheck::Append
    } else {
        SequenceCheck::Gap(format!(
            "producer {} sent sequence {} but {expected} was expected",
            h.producer_id, h.base_sequence
        ))
    }
}

impl FakeNode {
    /// While this node is paused, holds the request (`call`) unanswered, as a stopped process
    /// would, and lists it in `State::stalled`.
    async fn hold_while_paused(&self, call: &'static str) {
        let mut rx = self.paused.subscribe();
        if !rx.borrow_and_update().contains(&self.id) {
            return;
        }
        self.state.lock().unwrap().stalled.push((self.id, call));
        let _ = rx.wait_for(|p| !p.contains(&self.id)).await;
    }

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

fn produced(base_offset: i64) -> Response<pb::ProduceResponse> {
    Response::new(pb::ProduceResponse {
        base_offset,
        log_append_time_ms: -1,
        log_start_offset: 0,
        leader_epoch: 1,
    })
}

type ReplicaChunksStream = Pin<Box<dyn Stream<Item = Result<pb::ReplicaChunks, Status>> + Send>>;
type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;
type ProduceAnswers = Pin<Box<dyn Stream<Item = Result<pb::ProduceStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl log_server::Log for FakeNode {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.hold_while_paused("produce").await;
        let req = req.into_inner();
        let mut st = self.state.lock().unwrap();
        let Some(Payload::Batch(batch)) = req.payload else {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "batch expected").to_status());
        };
        let header = validate(&batch).map_err(|e| ApiError::from(e).to_status())?;
        st.requests.push(ProduceSeen {
            node: self.id,
            topic: req.topic.clone(),
            partition: req.partition,
            acks: req.acks,
            timeout_ms: req.timeout_ms,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            records: header.record_count,
        });
        if let Some(e) = st.produce_faults.pop_front() {
            return Err(e.to_status());
        }
        self.check_leader(&st, &req.topic, req.partition)?;
        let topic_id = st.topics[&req.topic].id.clone();
        if !req.topic_id.is_empty() && req.topic_id != topic_id {
            return Err(ApiError::new(ErrorCode::UnknownTopicId, "topic id mismatch").to_status());
        }
        let key = (req.topic.clone(), req.partition, header.producer_id);
        if header.producer_id >= 0 {
            match check_sequence(st.sequences.get(&key), &header) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(offset) => {
                    st.duplicates += 1;
                    if let Some(status) = st.faults_after_append.pop_front() {
                        return Err(status);
                    }
                    return Ok(produced(offset));
                }
                SequenceCheck::Gap(msg) => {
                    return Err(ApiError::new(ErrorCode::OutOfOrderSequence, msg).to_status());
                }
            }
        }
        let log = &mut st.topics.get_mut(&req.topic).unwrap().logs[req.partition as usize];
        let base = log.end;
        let count = header.record_count as i64;
        let mut buf = batch.to_vec();
        set_base_offset(&mut buf, base);
        log.batches.push((base, base + count, Bytes::from(buf)));
        log.end += count;
        if header.producer_id >= 0 {
            let last = LastBatch {
                base_sequence: header.base_sequence,
                records: header.record_count,
                base_offset: base,
            };
            st.sequences.insert(key, last);
        }
        st.accepted.push(Accepted {
            node: self.id,
            topic: req.topic.clone(),
            partition: req.partition,
            base_offset: base,
            records: count,
            producer_id: header.producer_id,
            base_sequence: header.base_sequence,
        });
        if let Some(status) = st.faults_after_append.pop_front() {
            return Err(status);
        }
        Ok(produced(if req.acks == 0 { -1 } else { base }))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.hold_while_paused("fetch").await;
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
                let mut next_offset = req.offset;
                for (_, next, b) in &log.batches {
                    if *next > req.offset
                        && (out.is_empty() || out.len() + b.len() <= req.max_bytes as usize)
                    {
                        out.extend_from_slice(b);
                        next_offset = *next;
                    }
                }
                if !out.is_empty() || Instant::now() >= deadline {
                    return Ok(Response::new(pb::FetchResponse {
                        batches: Bytes::from(out),
                        high_watermark: log.end,
                        log_start_offset: log.start,
                        records: vec![],
                        leader_epoch: 1,
                        next_offset,
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Each request as `produce` answers it; a status without Sluice details (a simulated
    /// transport failure) fails the whole call, as a broken connection would.
    async fn produce_many(
        &self,
        req: Request<pb::ProduceManyRequest>,
    ) -> Result<Response<pb::ProduceManyResponse>, Status> {
        let requests = req.into_inner().requests;
        {
            let mut st = self.state.lock().unwrap();
            st.produce_many.push(requests.len());
        }
        let mut results = Vec::with_capacity(requests.len());
        for r in requests {
            match log_server::Log::produce(self, Request::new(r)).await {
                Ok(resp) => results.push(pb::ProduceResult {
                    response: Some(resp.into_inner()),
                    ..Default::default()
                }),
                Err(status) if sluice_proto::error::error_detail(&status).is_none() => {
                    return Err(status);
                }
                Err(status) => {
                    let e = ApiError::from_status(&status);
                    results.push(pb::ProduceResult {
                        error: Some(e.detail()),
                        message: e.message,
                        response: None,
                    });
                }
            }
        }
        Ok(Response::new(pb::ProduceManyResponse { results }))
    }

    type ProduceStreamStream = ProduceAnswers;

    /// Each message answered as `produce_many` answers the call, in order; a simulated
    /// transport failure ends the stream, as a broken connection would.
    async fn produce_stream(
        &self,
        req: Request<tonic::Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<ProduceAnswers>, Status> {
        self.state.lock().unwrap().produce_streams += 1;
        let (node, mut requests) = (self.clone(), req.into_inner());
        let mut stopping = self.stopping.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                // A stopping node ends the stream, as a real one does when it drains.
                let msg = tokio::select! {
                    m = requests.message() => m,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let Ok(Some(msg)) = msg else { return };
                let request = Request::new(msg.request.unwrap_or_default());
                let answer = match log_server::Log::produce_many(&node, request).await {
                    Ok(r) => Ok(pb::ProduceStreamResponse {
                        id: msg.id,
                        response: Some(r.into_inner()),
                        ..Default::default()
                    }),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type SubscribeManyStream = Answers<pb::SubscribePushes>;

    /// Many subscriptions on one stream (the node side of the mux), each served by
    /// `subscribe`.
    async fn subscribe_many(
        &self,
        req: Request<tonic::Streaming<pb::SubscribeControl>>,
    ) -> Result<Response<Self::SubscribeManyStream>, Status> {
        self.state.lock().unwrap().subscription_streams += 1;
        let mut stopping = self.stopping.clone();
        let closing = async move { drop(stopping.wait_for(|s| *s).await) };
        let limits = Limits {
            message_bytes: 2 << 20,
            max_open: usize::MAX,
            drain_on_close: false,
        };
        Ok(Response::new(server::serve(
            req.into_inner(),
            Subscribing(self.clone()),
            limits,
            closing,
        )))
    }

    async fn delete_records(
        &self,
        req: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.state.lock().unwrap();
        self.check_leader(&st, &req.topic, req.partition)?;
        let log = &mut st.topics.get_mut(&req.topic).unwrap().logs[req.partition as usize];
        let before = if req.before_offset < 0 {
            log.end
        } else {
            req.before_offset
        };
        log.start = log.start.max(before.min(log.end));
        Ok(Response::new(pb::DeleteRecordsResponse {
            low_watermark: log.start,
        }))
    }

    async fn describe_replicas(
        &self,
        _req: Request<pb::DescribeReplicasRequest>,
    ) -> Result<Response<pb::DescribeReplicasResponse>, Status> {
        // The fake keeps no segment files to describe.
        Ok(Response::new(pb::DescribeReplicasResponse::default()))
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

    type ReplicateManyStream = ReplicaChunksStream;

    /// Node-to-node replication; the client never calls it.
    async fn replicate_many(
        &self,
        _req: Request<tonic::Streaming<pb::ReplicaAcks>>,
    ) -> Result<Response<ReplicaChunksStream>, Status> {
        Err(Status::unimplemented("the fake cluster does not replicate"))
    }
}

impl FakeNode {
    /// One subscription of a `SubscribeMany`: fetches in a loop, pushing every non-empty
    /// answer, until a fetch fails.
    fn subscribe(&self, mut req: pb::FetchRequest) -> FetchStream {
        self.state.lock().unwrap().subscribes += 1;
        let node = self.clone();
        let mut stopping = self.stopping.clone();
        req.max_wait_ms = 200;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    answer = log_server::Log::fetch(&node, Request::new(req.clone())) => answer,
                    _ = tx.closed() => return,
                    _ = async { drop(stopping.wait_for(|s| *s).await) } => {
                        let _ = tx.send(Err(Status::unavailable("node stopping"))).await;
                        return;
                    }
                };
                match answer.map(Response::into_inner) {
                    Ok(resp) if resp.next_offset == req.offset => {}
                    Ok(resp) => {
                        req.offset = resp.next_offset;
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// The fake's subscriptions on a `SubscribeMany` stream.
struct Subscribing(FakeNode);

impl Handler for Subscribing {
    type P = protocols::Subscribe;

    fn open(
        &mut self,
        _id: u64,
        fetch: pb::FetchRequest,
    ) -> BoxStream<'static, Down<pb::FetchResponse>> {
        self.0
            .subscribe(fetch)
            .map(|pushed| match pushed {
                Ok(data) => Down::Item(data),
                Err(status) => Down::End(Some(ApiError::from_status(&status))),
            })
            .boxed()
    }
}
