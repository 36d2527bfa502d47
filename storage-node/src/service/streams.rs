//! The produce and subscribe streams as configurations of the node side of the mux
//! ([`sluice_proto::mux::server`]): a `ProduceStream` sub-stream is one `ProduceMany` handled
//! as the call would be, a `SubscribeMany` sub-stream one partition's subscription.

use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_proto::error::ApiError;
use sluice_proto::mux::server::{Handler, Limits};
use sluice_proto::mux::{Down, protocols};
use sluice_proto::pb;
use sluice_proto::server::observe;

use super::LogService;
use super::{fetch, produce};

/// A producer's requests: many at once (their batches share group commits), each answered as
/// soon as it is done, and those already read still answered when the node drains.
pub const PRODUCE_LIMITS: Limits = Limits {
    message_bytes: usize::MAX,
    // A producer that sends without waiting is paced by HTTP/2 flow control beyond this,
    // instead of growing the node's memory (a unary call is bounded by HTTP/2's concurrent
    // streams the same way).
    max_open: 128,
    drain_on_close: true,
};

/// A consumer's subscriptions. Each message is encoded into a buffer of its own size, so
/// messages stay at a few MiB: larger ones left large buffers behind after a backlog read.
pub const SUBSCRIBE_LIMITS: Limits = Limits {
    message_bytes: 2 << 20,
    max_open: usize::MAX,
    drain_on_close: false,
};

/// Answers a producer's `ProduceStream` requests.
pub struct Producing(pub LogService);

impl Handler for Producing {
    type P = protocols::Produce;

    fn open(
        &mut self,
        _id: u64,
        request: pb::ProduceManyRequest,
    ) -> BoxStream<'static, Down<pb::ProduceManyResponse>> {
        let svc = self.0.clone();
        futures::stream::once(async move {
            match observe("ProduceStream", produce::produce_many(&svc, request)).await {
                Ok(response) => Down::Item(response),
                Err(e) => Down::End(Some(e)),
            }
        })
        .boxed()
    }
}

/// Serves a consumer's `SubscribeMany` subscriptions, each as [`fetch::subscribe`].
pub struct Subscribing(pub LogService);

impl Handler for Subscribing {
    type P = protocols::Subscribe;

    fn open(
        &mut self,
        _id: u64,
        request: pb::FetchRequest,
    ) -> BoxStream<'static, Down<pb::FetchResponse>> {
        fetch::subscribe(self.0.clone(), request)
            .map(|pushed| match pushed {
                Ok(data) => Down::Item(data),
                Err(status) => Down::End(Some(ApiError::from_status(&status))),
            })
            .boxed()
    }
}
