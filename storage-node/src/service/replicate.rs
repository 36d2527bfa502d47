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
use tokio::sync::mpsc;

use super::resolve::{Target, leader_replica};
use crate::faults::{self, Faults};
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::replica::Replica;
use crate::replica::epochs::divergence;
use crate::throttle::Throttle;

/// Most bytes pushed in one chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Most bytes in one chunk to a replica a move is adding: small chunks interleave with the
/// ISR's traffic on the shared stream instead of holding it up.
const MOVING_CHUNK_BYTES: usize = 128 << 10;
/// How long a moved high watermark waits for batches to ride on before it is sent alone.
const HW_NEWS: Duration = Duration::from_millis(500);

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

    /// Where its push starts.
    pub(super) fn push_from(&self) -> PushFrom {
        PushFrom {
            replica: self.replica.clone(),
            follower: self.follower,
            epoch: self.epoch,
            next: self.next,
        }
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

/// A push's start: the replica, the follower, the leader epoch and the first offset to send.
pub(super) struct PushFrom {
    replica: Arc<Replica>,
    follower: NodeId,
    epoch: i32,
    next: Offset,
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

/// Pushes batches from `next` on, each chunk carrying the high watermark, until the follower
/// goes away (nobody reads `out`) or this node stops leading at `epoch`.
///
/// An idle partition sends nothing: the follower stays in the ISR while its stream is open and
/// its log ends where the leader's does, and the connection's HTTP/2 keep-alives (per node
/// pair, not per partition) notice a follower that vanished. A high watermark that moved after
/// the last batch rides on the next one, or goes alone after [`HW_NEWS`] (as a Kafka follower
/// learns it from its next fetch): sending it at once would double the chunks and
/// acknowledgements per produced batch, and a follower needs it only to serve reads after it
/// becomes the leader, which recomputes it anyway.
///
/// Batches for a replica a reassignment is adding, while it catches up, are charged to the
/// node's reassignment `throttle` before they leave.
pub(super) async fn push(
    from: PushFrom,
    log: Arc<dyn LogStore>,
    faults: Faults,
    throttle: Arc<Throttle>,
    out: mpsc::Sender<pb::ReplicaChunk>,
) {
    let PushFrom {
        replica: r,
        follower,
        epoch,
        mut next,
    } = from;
    let (mut end_rx, mut lead_rx) = (r.watch_log_end(), r.watch_leadership());
    let (mut hw_rx, mut start_rx) = (r.watch_high_watermark(), r.watch_log_start());
    // The high watermark and log start the follower was last sent (-1: nothing sent yet, so
    // the first chunk goes at once and tells the follower where the leader is).
    let (mut told, mut told_start) = (-1, -1);
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
        let hw = *hw_rx.borrow_and_update();
        let start = *start_rx.borrow_and_update();
        let mut chunk = pb::ReplicaChunk {
            leader_epoch: epoch,
            high_watermark: hw,
            log_start_offset: start,
            ..Default::default()
        };
        if next < end {
            let moving = r.is_moving_in(follower);
            let most = if moving {
                MOVING_CHUNK_BYTES
            } else {
                CHUNK_BYTES
            };
            let Ok(batches) = crate::log::read_async(&log, r.uid, next, end, most).await else {
                return;
            };
            let Some(last) = batches.last() else { return };
            let Ok(h) = BatchHeader::parse(last) else {
                return;
            };
            next = h.next_offset();
            chunk.batches = concat(&batches);
            if moving {
                throttle.take(chunk.batches.len()).await;
            }
        } else if hw == told && start == told_start {
            tokio::select! {
                _ = end_rx.changed() => {}
                _ = lead_rx.changed() => {}
                _ = hw_rx.changed() => {}
                _ = start_rx.changed() => {}
                _ = out.closed() => return,
            }
            continue;
        } else if told >= 0 && start == told_start {
            // Give batches a chance to carry the news.
            tokio::select! {
                _ = end_rx.changed() => continue,
                _ = lead_rx.changed() => continue,
                _ = out.closed() => return,
                _ = tokio::time::sleep(HW_NEWS) => {}
            }
            chunk.high_watermark = *hw_rx.borrow_and_update();
        }
        told = chunk.high_watermark;
        // A moved log start goes at once (it is rare): followers free the same space.
        told_start = start;
        if out.send(chunk).await.is_err() {
            return;
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
