//! The fake coordinator's `Metadata` service: answers from the advertised state, grants
//! producer ids, and streams the state to watchers at each publish.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::Stream;
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, metadata_server};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{State, WatchHub};

pub(super) struct FakeCoordinator {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) calls: Arc<AtomicUsize>,
    pub(super) watch: Arc<WatchHub>,
}

pub(super) fn serve(listener: TcpListener, svc: FakeCoordinator) {
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(metadata_server::MetadataServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
}

/// Counts a watch stream as open until the server drops it (the client went away).
struct OpenWatch(Arc<WatchHub>);

impl OpenWatch {
    fn new(hub: Arc<WatchHub>) -> Self {
        hub.open.fetch_add(1, Ordering::SeqCst);
        Self(hub)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer a real coordinator gives, from what this one advertises.
fn describe(st: &State, req: &pb::GetMetadataRequest) -> Result<pb::GetMetadataResponse, Status> {
    let names: Vec<String> = if req.topics.is_empty() {
        st.topics.keys().cloned().collect()
    } else {
        req.topics.clone()
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
                    ..Default::default()
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
            ..Default::default()
        })
        .collect();
    Ok(pb::GetMetadataResponse {
        cluster_name: "fake".into(),
        nodes,
        topics,
        controller: None,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::GetMetadataResponse, Status>> + Send>>;

#[tonic::async_trait]
impl metadata_server::Metadata for FakeCoordinator {
    async fn get_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let st = self.state.lock().unwrap();
        Ok(Response::new(describe(&st, req.get_ref())?))
    }

    type WatchMetadataStream = WatchStream;

    async fn watch_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = req.into_inner();
        let state = self.state.clone();
        let hub = self.watch.clone();
        let generation = hub.generation.load(Ordering::SeqCst);
        let seed = (hub.tx.subscribe(), true, OpenWatch::new(hub.clone()));
        let stream = futures::stream::unfold(seed, move |(mut rx, first, open)| {
            let (state, req, hub) = (state.clone(), req.clone(), hub.clone());
            async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                if hub.generation.load(Ordering::SeqCst) != generation {
                    return None;
                }
                rx.borrow_and_update();
                let msg = describe(&state.lock().unwrap(), &req);
                hub.sent.fetch_add(1, Ordering::SeqCst);
                Some((msg, (rx, false, open)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn init_producer_id(
        &self,
        _req: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let mut st = self.state.lock().unwrap();
        st.init_calls += 1;
        if let Some(e) = st.init_faults.pop_front() {
            return Err(e.to_status());
        }
        let producer_id = st.next_producer_id;
        st.next_producer_id += 1;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}
