//! The leader side of `ReplicateMany` as a configuration of the node side of the mux
//! ([`sluice_proto::mux::server`]): one stream per follower node, a sub-stream per partition it
//! follows from this leader, each accepted and pushed by [`super::replicate`]. The follower's
//! acknowledgements are applied in place as they are read (no task or channel per
//! acknowledgement), and the chunks of all partitions that are ready together leave in one
//! message: one HTTP/2 frame and one wake-up of the follower per burst, not per partition.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_metadata::cache::MetadataCache;
use sluice_proto::error::ApiError;
use sluice_proto::model::NodeId;
use sluice_proto::mux::server::{Handler, Limits};
use sluice_proto::mux::{Down, protocols};
use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::LogService;
use super::replicate::{Accepted, Following, accept, push};
use crate::faults::Faults;
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::throttle::Throttle;

/// A follower's replication: chunk messages carry up to 8 MiB of batches.
pub const LIMITS: Limits = Limits {
    message_bytes: 8 << 20,
    max_open: usize::MAX,
    drain_on_close: false,
};

/// Chunks a partition's push reads ahead of the stream.
const QUEUED_CHUNKS: usize = 2;

/// Serves one follower node's `ReplicateMany`.
pub struct Leading {
    node_id: NodeId,
    cache: Arc<MetadataCache>,
    partitions: Arc<Partitions>,
    log: Arc<dyn LogStore>,
    faults: Faults,
    throttle: Arc<Throttle>,
    /// The followers of the open sub-streams, by id.
    following: HashMap<u64, Following>,
}

impl Leading {
    /// The leader side of one stream on `svc`'s node.
    pub fn new(svc: &LogService) -> Self {
        Self {
            node_id: svc.node_id,
            cache: svc.cache.clone(),
            partitions: svc.partitions.clone(),
            log: svc.log.clone(),
            faults: svc.faults.clone(),
            throttle: svc.throttle.clone(),
            following: HashMap::new(),
        }
    }
}

impl Handler for Leading {
    type P = protocols::Replicate;

    /// Accepts the follower's opening position: a refusal or a divergence ends the sub-stream
    /// at once (the follower truncates and reopens); otherwise batches are pushed from where
    /// its log ends.
    fn open(
        &mut self,
        id: u64,
        hello: pb::ReplicaAck,
    ) -> BoxStream<'static, Down<pb::ReplicaChunk>> {
        let view = self.cache.view();
        match accept(self.node_id, &view, &self.partitions, &hello) {
            Err(e) => futures::stream::iter([Down::End(Some(e))]).boxed(),
            Ok(Accepted::Diverging(chunk)) => futures::stream::iter([Down::Item(chunk)]).boxed(),
            Ok(Accepted::Follow(following)) => {
                let from = following.push_from();
                self.following.insert(id, following);
                let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
                let (log, faults) = (self.log.clone(), self.faults.clone());
                // The push ends when this node stops leading at `epoch` or the sub-stream is
                // dropped; the sub-stream then ends plainly and the follower reopens it.
                tokio::spawn(push(from, log, faults, self.throttle.clone(), tx));
                ReceiverStream::new(rx).map(Down::Item).boxed()
            }
        }
    }

    /// A later acknowledgement moves the follower's position; one for another epoch ends the
    /// sub-stream (and, when newer, tells this node it was deposed).
    fn item(&mut self, id: u64, ack: pb::ReplicaAck) -> Result<(), ApiError> {
        let Some(following) = self.following.get(&id) else {
            return Ok(());
        };
        if following.acked(&ack) {
            return Ok(());
        }
        following.deposed_if_newer(&ack);
        Err(ApiError::new(
            ErrorCode::FencedLeaderEpoch,
            format!("follower moved to leader epoch {}", ack.leader_epoch),
        ))
    }

    fn closed(&mut self, id: u64) {
        if let Some(following) = self.following.remove(&id) {
            following.gone();
        }
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        for (_, following) in self.following.drain() {
            following.gone();
        }
    }
}
