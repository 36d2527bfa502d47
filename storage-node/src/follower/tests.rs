//! A follower against a leader that only knows `Replicate` (an older node during a rolling
//! upgrade): it falls back to one stream per partition and stays there.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use sluice_proto::pb::{self, log_server};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::link::{AckSender, ChunkReceiver, Links};

/// A leader of the version before `ReplicateMany`: its `Replicate` answers each opening
/// position with one chunk whose high watermark echoes it (log end + 7), then stays open. It
/// counts the `ReplicateMany` calls it refused.
#[derive(Clone, Default)]
struct OldLeader {
    refused_many: Arc<AtomicUsize>,
}

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::ReplicaChunk, Status>> + Send>>;
type ManyChunks = Pin<Box<dyn Stream<Item = Result<pb::ReplicaChunks, Status>> + Send>>;
type Fetches = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

fn old() -> Status {
    Status::unimplemented("not in this version")
}

#[tonic::async_trait]
impl log_server::Log for OldLeader {
    async fn produce(
        &self,
        _: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        Err(old())
    }
    async fn produce_many(
        &self,
        _: Request<pb::ProduceManyRequest>,
    ) -> Result<Response<pb::ProduceManyResponse>, Status> {
        Err(old())
    }
    async fn fetch(
        &self,
        _: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        Err(old())
    }
    type SubscribeStream = Fetches;
    async fn subscribe(&self, _: Request<pb::FetchRequest>) -> Result<Response<Fetches>, Status> {
        Err(old())
    }
    type SubscribeManyStream = sluice_proto::subscribe::PushStream;
    async fn subscribe_many(
        &self,
        _: Request<Streaming<pb::SubscribeControl>>,
    ) -> Result<Response<Self::SubscribeManyStream>, Status> {
        Err(old())
    }
    async fn list_offsets(
        &self,
        _: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Err(old())
    }
    type ReplicateStream = Chunks;
    async fn replicate(
        &self,
        req: Request<Streaming<pb::ReplicaAck>>,
    ) -> Result<Response<Chunks>, Status> {
        let mut acks = req.into_inner();
        let hello = acks.message().await?.expect("an opening position");
        let chunk = pb::ReplicaChunk {
            high_watermark: hello.log_end_offset + 7,
            ..Default::default()
        };
        let stream = futures::stream::iter([Ok(chunk)]).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
    type ProduceStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::ProduceStreamResponse, Status>> + Send>>;
    async fn produce_stream(
        &self,
        _: Request<Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Err(old())
    }
    type ReplicateManyStream = ManyChunks;
    async fn replicate_many(
        &self,
        _: Request<Streaming<pb::ReplicaAcks>>,
    ) -> Result<Response<ManyChunks>, Status> {
        self.refused_many.fetch_add(1, Ordering::SeqCst);
        Err(old())
    }
}

fn hello(log_end_offset: i64) -> pb::ReplicaAck {
    pb::ReplicaAck {
        topic: "t".into(),
        follower_id: 2,
        log_end_offset,
        last_epoch: -1,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_follower_falls_back_to_one_stream_per_partition_against_an_older_leader() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let leader = OldLeader::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(log_server::LogServer::new(leader.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let links = Links::default();
    for end in [3, 40] {
        let (acks, mut chunks) = links.open(1, &addr, hello(end)).await.unwrap();
        assert!(matches!(acks, AckSender::One(_)), "a stream of its own");
        assert!(matches!(chunks, ChunkReceiver::One(_)));
        let chunk = chunks.next().await.unwrap().expect("the leader's chunk");
        assert_eq!(
            chunk.high_watermark,
            end + 7,
            "the leader saw this opening position"
        );
    }
}
