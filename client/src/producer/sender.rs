//! The producer's background task: sends ready batches to partition leaders, at most
//! `max_in_flight` requests at once and one per partition, and turns answers into delivered,
//! retried (back at the front of the partition's queue) or failed batches. It also fetches a new
//! producer id when a partition lost track of its sequence.
//!
//! During a leader failover the errors seen are transport errors (leader gone), `NOT_LEADER`,
//! `LEADER_NOT_AVAILABLE`, `PARTITION_OFFLINE`, `NOT_ENOUGH_REPLICAS` and `REQUEST_TIMED_OUT`: all
//! retriable, so the same batch is resent (same bytes, same sequence) after a backoff and a
//! metadata refresh, until the delivery timeout, before any later batch of its partition.
//!
//! A leader that hangs instead (a paused process, sockets open but nothing answering) would hold
//! its partition until the request timeout. So a request in flight is abandoned as soon as the
//! metadata cache names a newer leader for its partition (a watch message, a refresh, another
//! request's `NOT_LEADER` hint), and the batch is resent to that leader at once, same bytes,
//! still ahead of every later batch of its partition ([`ClientError::LeaderMoved`]). Its outcome
//! counts as unknown. With idempotence the resend is safe: the new leader de-duplicates it if
//! the old one had appended and replicated it, and an append the old one never replicated is
//! truncated away when it rejoins. Without idempotence the resend may duplicate the batch, as
//! any retry of an unanswered produce may (Kafka behaves the same).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};

use super::Shared;
use super::accumulator::ProducerBatch;
use super::identity::{self, Granted};
use super::request::{self, Completion};
use crate::config::Acks;
use crate::error::ClientError;
use crate::retry::{RetryDecision, RetryPolicy};

/// Requests from the [`super::Producer`] handle.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send everything queued now; answer once it is all resolved.
    Flush(oneshot::Sender<()>),
    /// Send everything queued, then stop.
    Close,
}

/// Runs until closed (or the producer is dropped) and nothing is left to send.
pub(crate) async fn run(shared: Arc<Shared>, mut control: mpsc::UnboundedReceiver<Control>) {
    let cfg = &shared.cfg;
    let policy = RetryPolicy {
        max_retries: cfg.retries,
        backoff: cfg.retry_backoff,
    };
    // One task per request (a lone batch, or every batch drained for one leader); the limit
    // counts batches, as one request per partition is in flight at most.
    let mut in_flight: JoinSet<Vec<Completion>> = JoinSet::new();
    let mut in_flight_tps: HashMap<Id, Vec<(String, i32)>> = HashMap::new();
    let mut batches_in_flight = 0usize;
    let mut flushes: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let mut closing = false;
    // One timer for the loop's whole life, moved only when the next wake-up changes: a new
    // `Sleep` per turn took the runtime's timer lock on every send.
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // A request for a new producer id, while a partition waits for one; dropped with the loop.
    let mut renewal: Option<BoxFuture<'static, Granted>> = None;
    loop {
        let now = Instant::now();
        let plan = shared.acc.lock().unwrap().plan(now, closing);
        for batch in plan.expired {
            let err = ClientError::Timeout(format!(
                "batch for {}-{} was not sent within the delivery timeout of {:?}",
                batch.topic, batch.partition, cfg.delivery_timeout
            ));
            tracing::warn!(topic = %batch.topic, partition = batch.partition, records = batch.len(), "batch expired before it could be sent");
            batch.fail(&err);
        }
        let room = cfg.max_in_flight.saturating_sub(batches_in_flight);
        for group in group_by_leader(&shared, plan.ready.into_iter().take(room)) {
            batches_in_flight += group.len();
            let tps = group
                .iter()
                .map(|b| (b.topic.clone(), b.partition))
                .collect();
            let handle = in_flight.spawn(request::send(shared.clone(), group));
            in_flight_tps.insert(handle.id(), tps);
        }
        if !flushes.is_empty() {
            let acc = shared.acc.lock().unwrap();
            let mut i = 0;
            while i < flushes.len() {
                if acc.pending_below(flushes[i].0) {
                    i += 1;
                } else {
                    let _ = flushes.swap_remove(i).1.send(());
                }
            }
        }
        if closing && in_flight.is_empty() && shared.acc.lock().unwrap().is_empty() {
            break;
        }
        // Checked after `plan`, which may have expired a stamped batch: the partition waiting
        // for a new id has no timer of its own to wake the loop.
        if renewal.is_none() && shared.acc.lock().unwrap().wants_identity() {
            renewal = Some(Box::pin(identity::renew(
                shared.metadata.clone(),
                cfg.retry_backoff,
            )));
        }
        let wakeup = plan.next_wakeup;
        if let Some(at) = wakeup
            && armed != Some(at)
        {
            timer.as_mut().reset(at.into());
            armed = Some(at);
        }
        tokio::select! {
            cmd = control.recv(), if !closing => match cmd {
                Some(Control::Flush(tx)) => {
                    let mark = shared.acc.lock().unwrap().begin_flush();
                    flushes.push((mark, tx));
                }
                Some(Control::Close) | None => closing = true,
            },
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                match joined {
                    Ok((id, done)) => {
                        let tps = in_flight_tps.remove(&id).unwrap_or_default();
                        batches_in_flight -= tps.len();
                        for completion in done {
                            handle_completion(&shared, &policy, completion);
                        }
                    }
                    Err(e) => {
                        // The request task panicked; its batches' futures resolve as closed.
                        let tps = in_flight_tps.remove(&e.id()).unwrap_or_default();
                        batches_in_flight -= tps.len();
                        for (topic, partition) in tps {
                            tracing::error!(%topic, partition, error = %e, "produce task failed");
                            shared.acc.lock().unwrap().lose(&topic, partition);
                        }
                    }
                }
            }
            (producer_id, epoch) = async { renewal.as_mut().expect("guarded").await }, if renewal.is_some() => {
                renewal = None;
                tracing::info!(producer_id, epoch, "new producer id; partitions that lost their sequence restart at 0");
                shared.acc.lock().unwrap().set_identity(producer_id, epoch);
            }
            _ = shared.wake.notified() => {}
            _ = &mut timer, if wakeup.is_some() => armed = None,
        }
    }
    for (_, tx) in flushes {
        let _ = tx.send(());
    }
    tracing::debug!("producer sender stopped");
}

/// Resolves, requeues or fails a batch after its attempt.
fn handle_completion(shared: &Shared, policy: &RetryPolicy, done: Completion) {
    let Completion {
        mut batch,
        result,
        rerouted,
    } = done;
    let (topic, partition) = (batch.topic.clone(), batch.partition);
    let now = Instant::now();
    match result {
        Ok(resp) => {
            shared.acc.lock().unwrap().complete(&topic, partition);
            let base = if shared.cfg.acks == Acks::None {
                -1
            } else {
                resp.base_offset
            };
            batch.succeed(base, resp.log_append_time_ms);
        }
        Err(err) => {
            batch.attempt_failed(&err);
            let deadline = batch.created + shared.cfg.delivery_timeout;
            let decision =
                policy.decide(err.is_retriable(), rerouted, batch.attempts, now, deadline);
            let mut acc = shared.acc.lock().unwrap();
            match decision {
                RetryDecision::GiveUp => {
                    acc.fail(&batch, &err);
                    drop(acc);
                    tracing::warn!(%topic, partition, attempts = batch.attempts, records = batch.len(), error = %err, "produce failed");
                    batch.fail(&err);
                }
                RetryDecision::Now => {
                    tracing::debug!(%topic, partition, attempts = batch.attempts, error = %err, "retrying at the new leader");
                    acc.requeue(batch, now);
                }
                RetryDecision::After(wait) => {
                    tracing::debug!(%topic, partition, attempts = batch.attempts, ?wait, error = %err, "retrying after backoff");
                    acc.requeue(batch, now + wait);
                }
            }
        }
    }
    // A requeued or completed partition may be sendable again.
    shared.wake.notify_one();
}

/// Most bytes of batches one `ProduceMany` carries (Kafka's `max.request.size` default): small
/// batches of many partitions share a request, while full batches each get their own, so large
/// ones keep pipelining instead of waiting for each other's answers.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Drains the ready partitions' batches and groups them by the leader the cache names, so each
/// node gets one request per [`MAX_REQUEST_BYTES`]; a batch whose leader is not cached yet goes
/// alone (its request looks the leader up).
fn group_by_leader(
    shared: &Shared,
    ready: impl Iterator<Item = super::accumulator::Ready>,
) -> Vec<Vec<ProducerBatch>> {
    let mut groups: Vec<(usize, Vec<ProducerBatch>)> = Vec::new();
    // The group each node fills now.
    let mut open: HashMap<i32, usize> = HashMap::new();
    for r in ready {
        let Some(batch) = shared.acc.lock().unwrap().drain(&r.topic, r.partition) else {
            continue;
        };
        let size = batch.size();
        let node = match shared.metadata.cached_leader(&batch.topic, batch.partition) {
            Some(Ok(leader)) => leader.node_id,
            _ => {
                groups.push((size, vec![batch]));
                continue;
            }
        };
        match open.get(&node).copied() {
            Some(i) if groups[i].0 + size <= MAX_REQUEST_BYTES => {
                groups[i].0 += size;
                groups[i].1.push(batch);
            }
            _ => {
                open.insert(node, groups.len());
                groups.push((size, vec![batch]));
            }
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}
