//! The follower side of replication: one task per partition this node follows. It opens a
//! replication sub-stream to the leader ([`link`]: one stream per leader node carries every
//! partition), announces where its log ends and in which epoch, truncates
//! when the leader says the logs diverge, appends what the leader pushes (queueing the next
//! chunk while one is written), and acknowledges its new log end after every append, in order,
//! so the leader can advance the high watermark.

pub mod link;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use sluice_metadata::cache::MetadataCache;
use sluice_proto::batch::BatchHeader;
use sluice_proto::model::{NodeId, Offset};
use sluice_proto::pb;
use std::panic::AssertUnwindSafe;

use crate::replica::{Leadership, Replica};
use crate::writer::Writer;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Chunks queued to the writer and not yet acknowledged, per replication stream.
const MAX_QUEUED_WRITES: usize = 4;

/// What every follower task of a node shares.
pub struct FollowerContext {
    /// This node.
    pub node_id: NodeId,
    /// This node's data-directory incarnation, announced to every leader.
    pub incarnation: String,
    /// Leader addresses come from the cluster view.
    pub cache: Arc<MetadataCache>,
    /// Replicated appends and truncations go through the group-commit writer.
    pub writer: Writer,
    /// The replication streams to leaders, shared by every follower task.
    pub links: link::Links,
    /// Free space on the data volume: a full one takes no replicated data.
    pub disk: Arc<crate::disk::DiskSpace>,
}

/// Follows the partition's leader until this node leads it or the replica is removed. Nothing a
/// leader sends ends it: a stream that ends or fails is reopened (at once, or with backoff after
/// a failure), and a panic in one attempt is logged and counted as a failure.
pub async fn run_follower(ctx: Arc<FollowerContext>, r: Arc<Replica>) {
    let mut leadership = r.watch_leadership();
    let mut backoff = Duration::from_millis(20);
    loop {
        if r.is_deleted() {
            return;
        }
        let l = *leadership.borrow_and_update();
        if l.leader == ctx.node_id {
            return;
        }
        let addr = ctx
            .cache
            .view()
            .nodes
            .get(&l.leader)
            .map(|n| n.address.clone());
        let Some(addr) = addr.filter(|_| l.leader >= 0) else {
            // No leader, or its node is not registered (yet): wait for a change.
            let _ = tokio::time::timeout(Duration::from_millis(200), leadership.changed()).await;
            continue;
        };
        // The attempt ends by itself when the leadership changes (telling the old leader).
        let attempt = AssertUnwindSafe(follow_once(&ctx, &r, l, &addr)).catch_unwind();
        let outcome = attempt.await.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(topic = %r.topic, partition = r.partition(), leader = l.leader, panic = %what, "replication attempt panicked; reopening");
            Err(format!("panicked: {what}"))
        });
        match outcome {
            Ok(()) => backoff = Duration::from_millis(20),
            Err(error) => {
                tracing::debug!(%error, topic = %r.topic, partition = r.partition(), leader = l.leader, "replication stream failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn ack(r: &Replica, node_id: NodeId, incarnation: &str, l: Leadership) -> pb::ReplicaAck {
    pb::ReplicaAck {
        topic: r.topic.clone(),
        partition: r.partition(),
        topic_id: r.topic_id().0.to_vec().into(),
        follower_id: node_id,
        leader_epoch: l.epoch,
        log_end_offset: r.log_end(),
        last_epoch: r.epochs.lock().expect("poisoned").last_epoch(),
        incarnation: incarnation.to_string(),
        leader_id: l.leader,
    }
}

/// One replication stream; returns `Ok` when the stream should simply be reopened (it ended,
/// or the logs diverged and were truncated).
async fn follow_once(
    ctx: &FollowerContext,
    r: &Arc<Replica>,
    l: Leadership,
    addr: &str,
) -> Result<(), String> {
    let mut leadership = r.watch_leadership();
    if *leadership.borrow_and_update() != l {
        return Ok(());
    }
    let open = ctx
        .links
        .open(l.leader, addr, ack(r, ctx.node_id, &ctx.incarnation, l));
    let mut link = tokio::select! {
        opened = open => opened?,
        _ = leadership.changed() => return Ok(()),
    };
    let acks = link.sender();
    // Chunks go to the writer as they arrive and are acknowledged in order once written: the
    // next chunk is on its way (and may share a group commit) while this one is written.
    let mut writes: FuturesOrdered<BoxFuture<'static, Result<Offset, String>>> =
        FuturesOrdered::new();
    let mut ended = false;
    // The leader's log start this follower last asked its log to move to.
    let mut start_asked = r.log_start();
    loop {
        // The leader ended the stream and every queued write is acknowledged: reopen.
        if ended && writes.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = leadership.changed() => {
                let now = *leadership.borrow();
                if now.epoch > l.epoch {
                    // Tell the old leader it was deposed: one cut from the metadata store
                    // would otherwise keep waiting for replicas that moved on.
                    acks.send(ack(r, ctx.node_id, &ctx.incarnation, now));
                }
                return Ok(());
            }
            done = writes.next(), if !writes.is_empty() => {
                let mut leader_hw = done.expect("a queued write")?;
                // Writes that landed in the same group commit share one acknowledgement.
                while let Some(Some(more)) = writes.next().now_or_never() {
                    leader_hw = more?;
                }
                r.follow_high_watermark(leader_hw);
                if !acks.send(ack(r, ctx.node_id, &ctx.incarnation, l)) {
                    return Ok(());
                }
            }
            msg = link.next(), if !ended && writes.len() < MAX_QUEUED_WRITES => {
                let Some(chunk) = msg.map_err(|e| link::describe(&e))? else {
                    ended = true;
                    continue;
                };
                if chunk.diverging {
                    // The leader says so before pushing anything; finish what is queued anyway.
                    while let Some(done) = writes.next().await {
                        done?;
                    }
                    ctx.writer
                        .truncate(r.clone(), chunk.truncate_to, chunk.diverging_epoch)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(());
                }
                let leader_hw = chunk.high_watermark;
                if !chunk.batches.is_empty() && ctx.disk.is_full() {
                    // Reopened with backoff until there is room; the leader's log is the copy.
                    return Err("the data volume is full; not appending replicated data".into());
                }
                if writes.is_empty() {
                    restart_at_leader_start(ctx, r, &chunk).await?;
                }
                if chunk.batches.is_empty() {
                    writes.push_back(Box::pin(async move { Ok(leader_hw) }));
                } else {
                    let written = ctx
                        .writer
                        .submit_replicated(r.clone(), chunk.batches)
                        .await
                        .map_err(|e| e.to_string())?;
                    writes.push_back(Box::pin(async move {
                        written
                            .await
                            .map_err(|_| "the writer stopped".to_string())?
                            .map_err(|e| e.to_string())?;
                        Ok(leader_hw)
                    }));
                }
                if chunk.log_start_offset > start_asked.max(r.log_start()) {
                    // The leader deleted records (retention, DeleteRecords): so does this one.
                    start_asked = chunk.log_start_offset;
                    let moved = ctx
                        .writer
                        .follow_log_start(r.clone(), chunk.log_start_offset)
                        .await
                        .map_err(|e| e.to_string())?;
                    writes.push_back(Box::pin(async move {
                        moved
                            .await
                            .map_err(|_| "the writer stopped".to_string())?
                            .map_err(|e| e.to_string())?;
                        Ok(leader_hw)
                    }));
                }
            }
        }
    }
}

/// A follower whose log ends below everything its leader still has (the leader deleted those
/// records while it was away) gets the leader's batches from the leader's log start on: its
/// own log is emptied and continues where they begin.
async fn restart_at_leader_start(
    ctx: &FollowerContext,
    r: &Arc<Replica>,
    chunk: &pb::ReplicaChunk,
) -> Result<(), String> {
    let Ok(first) = BatchHeader::parse(&chunk.batches) else {
        return Ok(());
    };
    let end = r.log_end();
    if first.base_offset <= end || chunk.log_start_offset <= end {
        return Ok(());
    }
    tracing::info!(topic = %r.topic, partition = r.partition(), log_end = end, leader_log_start = chunk.log_start_offset, "the leader no longer holds this follower's log end: restarting at its log start");
    ctx.writer
        .delete_before(r.clone(), first.base_offset)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
