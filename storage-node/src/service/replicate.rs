//! The leader side of replication, per follower and partition: the leader checks the follower's
//! epoch and divergence first (KIP-101/279), then pushes batches as they are appended (waiting
//! on the log end, never polling) with the high watermark, while the follower's
//! acknowledgements track its log end. [`super::replicate_many`] carries every partition of a
//! follower node on one stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_proto::batch::BatchHeader;
use sluice_proto::error::ApiError;
use sluice_proto::model::{NodeId, Offset};
use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::resolve::{Target, leader_replica};
use crate::faults::{self, Faults};
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::replica::Replica;
use crate::replica::epochs::divergence;

/// Most bytes pushed in one chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// A chunk is sent at least this often, so the follower's view of the leader stays fresh.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A follower the leader accepted at its opening position: what pushing to it and taking its
/// acknowledgements need.
pub(super) struct Following {
    replica: Arc<Replica>,
    epoch: i32,
    follower: NodeId,
    next: Offset,
}

impl Following {
    /// Takes an acknowledgement; `false` when it belongs to another epoch (the sub-stream ends).
    pub(super) fn acked(&self, ack: &pb::ReplicaAck) -> bool {
        if ack.leader_epoch != self.epoch {
            return false;
        }
        self.replica
            .update_follower(self.follower, Some(ack.log_end_offset), true);
        true
    }

    /// The replica, epoch and offset its push starts from.
    pub(super) fn push_from(&self) -> (Arc<Replica>, i32, Offset) {
        (self.replica.clone(), self.epoch, self.next)
    }

    /// The follower follows `epoch`: when that is newer than this leadership, this node was
    /// deposed (the follower saw the partition state that says so, which this node may not
    /// see, cut from the metadata store) and stops leading at once.
    pub(super) fn deposed_if_newer(&self, ack: &pb::ReplicaAck) {
        if ack.leader_epoch > self.epoch {
            self.replica.deposed(ack.leader_epoch, ack.leader_id);
        }
    }

    /// The follower stopped reading: it no longer counts as connected.
    pub(super) fn gone(&self) {
        self.replica.update_follower(self.follower, None, false);
    }
}

/// What the leader makes of a follower's opening position.
pub(super) enum Accepted {
    /// The logs diverge: this one chunk says where to truncate, and nothing follows it.
    Diverging(pb::ReplicaChunk),
    /// Push to it from where its log ends.
    Follow(Following),
}

/// Checks a follower's opening position (`hello`) against this leader: the partition, its epoch,
/// that the sender is a follower of it, and divergence (KIP-101/279).
pub(super) fn accept(
    node_id: NodeId,
    view: &sluice_metadata::cache::ClusterView,
    partitions: &Partitions,
    hello: &pb::ReplicaAck,
) -> Result<Accepted, ApiError> {
    let target = Target {
        topic: &hello.topic,
        partition: hello.partition,
        topic_id: &hello.topic_id,
        leader_epoch: hello.leader_epoch,
    };
    let replica = leader_replica(view, partitions, node_id, &target)?;
    let epoch = replica.leadership().epoch;
    if hello.leader_epoch != epoch {
        return Err(ApiError::new(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "follower is at leader epoch {}, the leader at {epoch}",
                hello.leader_epoch
            ),
        ));
    }
    if !replica.is_replica(hello.follower_id) || hello.follower_id == node_id {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "node {} is not a follower of {}-{}",
                hello.follower_id, hello.topic, hello.partition
            ),
        ));
    }
    let answer = replica
        .epochs
        .lock()
        .expect("poisoned")
        .end_offset_for(hello.last_epoch, replica.log_end());
    if let Some((diverging_epoch, truncate_to)) =
        divergence(hello.last_epoch, hello.log_end_offset, answer)
    {
        tracing::info!(
            topic = %replica.topic, partition = replica.partition(), follower = hello.follower_id,
            follower_end = hello.log_end_offset, truncate_to, "follower log diverges; asking it to truncate"
        );
        return Ok(Accepted::Diverging(pb::ReplicaChunk {
            leader_epoch: epoch,
            high_watermark: replica.high_watermark(),
            log_start_offset: replica.log_start(),
            diverging: true,
            diverging_epoch,
            truncate_to,
            ..Default::default()
        }));
    }
    replica.set_follower_incarnation(hello.follower_id, hello.incarnation.clone());
    replica.update_follower(hello.follower_id, Some(hello.log_end_offset), true);
    Ok(Accepted::Follow(Following {
        replica,
        epoch,
        follower: hello.follower_id,
        next: hello.log_end_offset,
    }))
}

/// Where [`push`] sends chunks: sub-stream `id` of a follower's `ReplicateMany`.
pub(super) struct Outlet {
    pub(super) id: u32,
    pub(super) tx: mpsc::Sender<pb::TaggedReplicaChunk>,
}

impl Outlet {
    /// Sends one chunk; `false` once nobody reads the stream.
    async fn send(&self, chunk: pb::ReplicaChunk) -> bool {
        self.tx
            .send(pb::TaggedReplicaChunk {
                id: self.id,
                chunk: Some(chunk),
                ..Default::default()
            })
            .await
            .is_ok()
    }
}

/// Pushes batches from `next` on, each chunk carrying the high watermark, and an empty chunk
/// after [`HEARTBEAT`] without one, until the follower goes away (`stop` resolves, or nobody
/// reads `out`) or this node stops leading at `epoch`.
pub(super) async fn push(
    r: Arc<Replica>,
    log: Arc<dyn LogStore>,
    faults: Faults,
    mut next: Offset,
    epoch: i32,
    out: Outlet,
    mut stop: oneshot::Receiver<()>,
) {
    let (mut end_rx, mut lead_rx) = (r.watch_log_end(), r.watch_leadership());
    // One timer, pushed back after every chunk (extending a timer takes no lock).
    let heartbeat = tokio::time::sleep(HEARTBEAT);
    tokio::pin!(heartbeat);
    loop {
        let l = *lead_rx.borrow_and_update();
        if r.is_deleted() || l.leader != r.node_id || l.epoch != epoch {
            return;
        }
        if faults.active(faults::BLOCK_REPLICATION) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let end = *end_rx.borrow_and_update();
        let hw = r.high_watermark();
        let mut chunk = pb::ReplicaChunk {
            leader_epoch: epoch,
            high_watermark: hw,
            log_start_offset: r.log_start(),
            ..Default::default()
        };
        if next < end {
            let Ok(batches) = crate::log::read_async(&log, r.uid, next, end, CHUNK_BYTES).await
            else {
                return;
            };
            let Some(last) = batches.last() else { return };
            let Ok(h) = BatchHeader::parse(last) else {
                return;
            };
            next = h.next_offset();
            chunk.batches = concat(&batches);
        } else if !heartbeat.is_elapsed() {
            // A moved high watermark alone sends nothing: it rides on the next batches or
            // heartbeat (as a Kafka follower learns it from its next fetch). Sending it at once
            // doubled the chunks and acknowledgements per produced batch, and a follower needs
            // it only to serve reads after it becomes the leader, which recomputes it anyway.
            tokio::select! {
                _ = end_rx.changed() => {}
                _ = lead_rx.changed() => {}
                _ = out.tx.closed() => return,
                _ = &mut stop => return,
                _ = &mut heartbeat => {}
            }
            continue;
        }
        // An empty chunk after HEARTBEAT keeps the follower's acknowledgements flowing.
        heartbeat
            .as_mut()
            .reset(tokio::time::Instant::now() + HEARTBEAT);
        tokio::select! {
            sent = out.send(chunk) => if !sent { return },
            _ = &mut stop => return,
        }
    }
}

fn concat(batches: &[Bytes]) -> Bytes {
    if batches.len() == 1 {
        return batches[0].clone();
    }
    let mut buf = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
    for b in batches {
        buf.extend_from_slice(b);
    }
    buf.freeze()
}
