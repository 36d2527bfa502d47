//! One `SubscribeMany` stream per node for every partition a consumer reads from that node (the
//! client side of the mux, [`sluice_proto::mux::client`]).
//!
//! The node sends what committed for all of them in one message (one push, HTTP/2 frame and
//! wake-up per burst instead of per partition), and the stream's reader hands each partition's
//! part to that partition's fetch task over a small bounded queue, so the tasks decode in
//! parallel; while a fetch task is behind (the consumer's queue is full) the reader waits and
//! HTTP/2 flow control holds the node back.
//!
//! Each partition's fetch task owns its partition: it picks the leader, opens its subscription
//! on that node's stream, delivers what arrives, and retries when the subscription ends (an
//! error from the node, the stream breaking, the leader moving). Dropping a subscription ends
//! it; pushes still queued are dropped undelivered, so its position stays exact.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_proto::mux::client::{Mux, Outbound, SubStream};
use sluice_proto::mux::protocols::Subscribe;
use sluice_proto::pb::{self, log_client::LogClient};
use tonic::transport::Channel;

use crate::connection::{Pool, opener};
use crate::error::{ClientError, Result};

/// Pushes queued per subscription before the stream's reader waits for its fetch task.
const QUEUED_PUSHES: usize = 2;

/// One partition's subscription; dropping it ends it.
pub(crate) type Subscription = SubStream<Subscribe>;

/// A consumer's streams, one per node address.
pub(crate) struct Sessions {
    mux: Mux<Subscribe>,
}

fn open_stream(
    mut client: LogClient<Channel>,
    outbound: Outbound<Subscribe>,
) -> BoxFuture<'static, std::result::Result<tonic::Streaming<pb::SubscribePushes>, tonic::Status>> {
    async move { Ok(client.subscribe_many(outbound).await?.into_inner()) }.boxed()
}

impl Sessions {
    /// Streams on the pool's channels, accepting messages up to `decode_limit` bytes; opening
    /// one gives up after `timeout`.
    pub(crate) fn new(pool: Arc<Pool>, decode_limit: usize, timeout: Duration) -> Arc<Self> {
        let opener = opener(pool, decode_limit, timeout, open_stream);
        Arc::new(Self {
            mux: Mux::new(opener, QUEUED_PUSHES),
        })
    }

    /// Subscribes at the node at `address` from `fetch`'s offset.
    pub(crate) async fn add(&self, address: &str, fetch: pb::FetchRequest) -> Result<Subscription> {
        self.mux
            .open(address, fetch)
            .await
            .map_err(ClientError::from)
    }
}
