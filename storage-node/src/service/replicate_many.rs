//! The leader side of `ReplicateMany`: one stream per follower node carrying a sub-stream per
//! partition it follows from this leader, each accepted and pushed by [`super::replicate`].
//! One task reads the
//! follower's messages and applies each acknowledgement in place (no task or channel per
//! partition), and the pushes of all partitions meet in one queue whose ready chunks leave in
//! one message: one HTTP/2 frame and one wake-up of the follower per burst, not per partition.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sluice_metadata::cache::MetadataCache;
use sluice_proto::error::ApiError;
use sluice_proto::model::NodeId;
use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::replicate::{Accepted, Following, Outlet, accept, push};
use crate::faults::Faults;
use crate::log::LogStore;
use crate::partitions::Partitions;

/// The chunks of one `ReplicateMany` call.
pub type ChunksStream = Pin<Box<dyn Stream<Item = Result<pb::ReplicaChunks, Status>> + Send>>;

/// Chunks queued for the follower across all sub-streams (each push task waits when full).
const QUEUED_CHUNKS: usize = 64;
/// Batch bytes one message carries at most; further ready chunks go in the next message.
const MESSAGE_BYTES: usize = 8 << 20;

/// What serving a `ReplicateMany` needs from the node.
pub struct Leader {
    /// This node.
    pub node_id: NodeId,
    /// Partition state, read when a sub-stream opens.
    pub cache: Arc<MetadataCache>,
    /// Hosted replicas.
    pub partitions: Arc<Partitions>,
    /// Where pushes read batches from.
    pub log: Arc<dyn LogStore>,
    /// Test fault switches.
    pub faults: Faults,
}

/// A sub-stream the leader pushes to.
struct Route {
    following: Following,
    /// Dropped to stop the sub-stream's push task.
    _stop: oneshot::Sender<()>,
}

/// Serves one `ReplicateMany` until the follower goes away or `closing` resolves.
pub fn open(
    leader: Leader,
    inbound: Streaming<pb::ReplicaAcks>,
    closing: impl Future<Output = ()> + Send + 'static,
) -> ChunksStream {
    let (out, queued) = mpsc::channel(QUEUED_CHUNKS);
    tokio::spawn(serve_acks(leader, inbound, out, closing));
    Box::pin(futures::stream::unfold(queued, |mut queued| async move {
        // Everything ready goes together, up to MESSAGE_BYTES.
        let first = queued.recv().await?;
        let mut bytes = chunk_bytes(&first);
        let mut chunks = vec![first];
        while bytes < MESSAGE_BYTES {
            let Ok(more) = queued.try_recv() else { break };
            bytes += chunk_bytes(&more);
            chunks.push(more);
        }
        Some((Ok(pb::ReplicaChunks { chunks }), queued))
    }))
}

fn chunk_bytes(c: &pb::TaggedReplicaChunk) -> usize {
    c.chunk.as_ref().map_or(0, |c| c.batches.len())
}

/// Reads the follower's messages: opens sub-streams on their first acknowledgement, applies
/// later ones to the follower's position, and ends sub-streams the follower ends. Every
/// sub-stream ends with the stream.
async fn serve_acks(
    leader: Leader,
    mut inbound: Streaming<pb::ReplicaAcks>,
    out: mpsc::Sender<pb::TaggedReplicaChunk>,
    closing: impl Future<Output = ()>,
) {
    let mut routes: HashMap<u32, Route> = HashMap::new();
    // The follower numbers sub-streams in the order it opens them, so an acknowledgement for an
    // unknown id at or below this one is a late one for a sub-stream that already ended, not an
    // opening position.
    let mut last_opened: Option<u32> = None;
    tokio::pin!(closing);
    'serve: loop {
        let msg = tokio::select! {
            msg = inbound.message() => msg,
            _ = &mut closing => break,
        };
        let Ok(Some(msg)) = msg else { break };
        // Acknowledgements before ends: a follower that moves to a newer leader sends its new
        // epoch, then ends the sub-stream, and both may arrive in one message.
        for tagged in msg.acks {
            let (id, Some(ack)) = (tagged.id, tagged.ack) else {
                continue;
            };
            if let Some(route) = routes.get(&id) {
                if !route.following.acked(&ack) {
                    route.following.deposed_if_newer(&ack);
                    let route = routes.remove(&id).expect("just found");
                    route.following.gone();
                    let e = ApiError::new(
                        ErrorCode::FencedLeaderEpoch,
                        format!("follower moved to leader epoch {}", ack.leader_epoch),
                    );
                    if !refuse(&out, id, e).await {
                        break 'serve;
                    }
                }
                continue;
            }
            if last_opened.is_some_and(|last| id <= last) {
                continue;
            }
            last_opened = Some(id);
            let accepted = accept(
                leader.node_id,
                &leader.cache.view(),
                &leader.partitions,
                &ack,
            );
            let sent = match accepted {
                Err(e) => refuse(&out, id, e).await,
                Ok(Accepted::Diverging(chunk)) => out
                    .send(pb::TaggedReplicaChunk {
                        id,
                        chunk: Some(chunk),
                        ..Default::default()
                    })
                    .await
                    .is_ok(),
                Ok(Accepted::Follow(following)) => {
                    let (stop, stopped) = oneshot::channel();
                    let (replica, epoch, next) = following.push_from();
                    let outlet = Outlet {
                        id,
                        tx: out.clone(),
                    };
                    let (log, faults, ended) =
                        (leader.log.clone(), leader.faults.clone(), out.clone());
                    tokio::spawn(async move {
                        push(replica, log, faults, next, epoch, outlet, stopped).await;
                        // Neither chunk nor error: the follower reopens the sub-stream.
                        let _ = ended
                            .send(pb::TaggedReplicaChunk {
                                id,
                                ..Default::default()
                            })
                            .await;
                    });
                    routes.insert(
                        id,
                        Route {
                            following,
                            _stop: stop,
                        },
                    );
                    true
                }
            };
            if !sent {
                break 'serve;
            }
        }
        for id in msg.end {
            if let Some(route) = routes.remove(&id) {
                route.following.gone();
            }
        }
    }
    for route in routes.into_values() {
        route.following.gone();
    }
}

/// Ends sub-stream `id` with `e`; `false` once nobody reads the stream.
async fn refuse(out: &mpsc::Sender<pb::TaggedReplicaChunk>, id: u32, e: ApiError) -> bool {
    out.send(pb::TaggedReplicaChunk {
        id,
        chunk: None,
        error: Some(e.detail()),
        message: e.message,
    })
    .await
    .is_ok()
}
