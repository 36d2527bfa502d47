//! How a follower task reaches its leader: a sub-stream of the one `ReplicateMany` stream this
//! node keeps per leader node (the client side of the mux, [`sluice_proto::mux::client`]).
//! Acknowledgements of every follower task to one leader go out together in one message, and
//! one task hands each incoming chunk to its partition's task in order. A sub-stream ends when
//! its task drops it (the leader is told), when the leader ends it, or with the stream; the
//! task then reopens it.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_proto::model::NodeId;
use sluice_proto::mux::client::{Mux, MuxError, Opener, Outbound, SubStream, with_open_timeout};
use sluice_proto::mux::protocols::Replicate;
use sluice_proto::pb::{self, log_client::LogClient};
use sluice_proto::transport;

/// How long connecting to a leader and opening the stream may take before the follower retries.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Chunks queued for one follower task; the stream's reader waits when it is full.
const QUEUED_CHUNKS: usize = 8;

/// One partition's replication from its leader.
pub type Link = SubStream<Replicate>;

/// The streams this node keeps to its leaders, one per leader address.
pub struct Links {
    mux: Mux<Replicate>,
}

impl Default for Links {
    fn default() -> Self {
        let opener: Opener<Replicate> = Arc::new(open_stream);
        Self {
            mux: Mux::new(
                with_open_timeout::<Replicate>(CONNECT_TIMEOUT, opener),
                QUEUED_CHUNKS,
            ),
        }
    }
}

impl Links {
    /// Opens replication of one partition at `addr`, sending `hello` (the follower's position)
    /// first.
    pub async fn open(
        &self,
        leader: NodeId,
        addr: &str,
        hello: pb::ReplicaAck,
    ) -> Result<Link, String> {
        self.mux.open(addr, hello).await.map_err(|e| {
            format!(
                "replicating from leader {leader} at {addr}: {}",
                describe(&e)
            )
        })
    }
}

/// A mux error as the follower logs it.
pub fn describe(e: &MuxError) -> String {
    match e {
        MuxError::Refused(e) => e.to_string(),
        MuxError::Broken(s) => s.message().to_string(),
    }
}

/// Opens a `ReplicateMany` stream to the leader at `addr`.
fn open_stream(
    addr: String,
    outbound: Outbound<Replicate>,
) -> BoxFuture<'static, Result<tonic::Streaming<pb::ReplicaChunks>, tonic::Status>> {
    async move {
        let mut client = connect(&addr).map_err(tonic::Status::unavailable)?;
        Ok(client.replicate_many(outbound).await?.into_inner())
    }
    .boxed()
}

/// A client of the leader at `addr`, connecting when the stream opens.
fn connect(addr: &str) -> Result<LogClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(transport::KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(transport::KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // Replicated batches stream at disk speed; h2's defaults would throttle them.
        .initial_stream_window_size(transport::STREAM_WINDOW)
        .initial_connection_window_size(transport::CONNECTION_WINDOW)
        .max_frame_size(transport::MAX_FRAME_SIZE)
        .connect_lazy();
    Ok(LogClient::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE))
}
