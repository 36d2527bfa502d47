//! One `ProduceStream` per node: the producer's `ProduceMany` requests to a node travel as
//! sub-streams of one long-lived stream (the client side of the mux,
//! [`sluice_proto::mux::client`]), each answered in whatever order the node finishes them. A
//! unary call costs an HTTP/2 stream (headers, trailers) and a task on each side per request,
//! which is most of a small request's cost.
//!
//! When the stream breaks (the node went away), every request still waiting fails with a
//! transport error, retried like any other, and the next request opens a new stream.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_proto::mux::client::{Mux, Outbound};
use sluice_proto::mux::protocols::Produce;
use sluice_proto::pb::{self, log_client::LogClient};
use tonic::transport::Channel;

use crate::connection::{MAX_MESSAGE_BYTES, Pool, opener};
use crate::error::{ClientError, Result};

/// The producer's streams, one per node address.
pub(crate) struct ProduceStreams {
    mux: Mux<Produce>,
}

impl std::fmt::Debug for ProduceStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceStreams").finish_non_exhaustive()
    }
}

fn open_stream(
    mut client: LogClient<Channel>,
    outbound: Outbound<Produce>,
) -> BoxFuture<
    'static,
    std::result::Result<tonic::Streaming<pb::ProduceStreamResponse>, tonic::Status>,
> {
    async move { Ok(client.produce_stream(outbound).await?.into_inner()) }.boxed()
}

impl ProduceStreams {
    /// Streams on the pool's channels; opening one gives up after `timeout`.
    pub(crate) fn new(pool: Arc<Pool>, timeout: Duration) -> Self {
        let opener = opener(pool, MAX_MESSAGE_BYTES, timeout, open_stream);
        Self {
            mux: Mux::new(opener, 1),
        }
    }

    /// Sends `request` on the stream to `address` and waits up to `timeout` for its answer. A
    /// request abandoned (its leader moved, say) is forgotten; its late answer is discarded.
    pub(crate) async fn call(
        &self,
        address: &str,
        request: pb::ProduceManyRequest,
        timeout: Duration,
    ) -> Result<pb::ProduceManyResponse> {
        match tokio::time::timeout(timeout, self.mux.call(address, request)).await {
            Ok(answer) => answer.map_err(ClientError::from),
            Err(_) => Err(ClientError::Timeout(format!("produce after {timeout:?}"))),
        }
    }
}
