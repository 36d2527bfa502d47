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
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, log_client::LogClient, produce_request::Payload};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};

use super::Shared;
use super::accumulator::ProducerBatch;
use super::identity::{self, Granted};
use crate::config::Acks;
use crate::connection::{MAX_MESSAGE_BYTES, request, with_timeout};
use crate::error::{ClientError, Result};
use crate::metadata::Leader;
use crate::retry::{RetryDecision, RetryPolicy};

/// Requests from the [`super::Producer`] handle.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send everything queued now; answer once it is all resolved.
    Flush(oneshot::Sender<()>),
    /// Send everything queued, then stop.
    Close,
}

/// A finished produce attempt, handed back to the loop that owns retry decisions.
struct Completion {
    batch: ProducerBatch,
    result: Result<pb::ProduceResponse>,
    /// A `NOT_LEADER` hint named a newer leader, so a retry can go at once.
    rerouted: bool,
}

/// Runs until closed (or the producer is dropped) and nothing is left to send.
pub(crate) async fn run(shared: Arc<Shared>, mut control: mpsc::UnboundedReceiver<Control>) {
    let cfg = &shared.cfg;
    let policy = RetryPolicy {
        max_retries: cfg.retries,
        backoff: cfg.retry_backoff,
    };
    let mut in_flight: JoinSet<Completion> = JoinSet::new();
    let mut in_flight_tps: HashMap<Id, (String, i32)> = HashMap::new();
    let mut flushes: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let mut closing = false;
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
        let room = cfg.max_in_flight.saturating_sub(in_flight.len());
        for ready in plan.ready.into_iter().take(room) {
            let batch = shared
                .acc
                .lock()
                .unwrap()
                .drain(&ready.topic, ready.partition);
            if let Some(batch) = batch {
                let handle = in_flight.spawn(send_batch(shared.clone(), batch));
                in_flight_tps.insert(handle.id(), (ready.topic, ready.partition));
            }
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
                        in_flight_tps.remove(&id);
                        handle_completion(&shared, &policy, done);
                    }
                    Err(e) => {
                        // The request task panicked; its batch's futures resolve as closed.
                        if let Some((topic, partition)) = in_flight_tps.remove(&e.id()) {
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
            _ = tokio::time::sleep_until(wakeup.unwrap_or(now).into()), if wakeup.is_some() => {}
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

/// One produce attempt for `batch`, including the routing reaction to its error (follow the
/// leader hint or refresh metadata) so the retry goes to the right node.
async fn send_batch(shared: Arc<Shared>, mut batch: ProducerBatch) -> Completion {
    let payload = match batch.payload() {
        Ok(p) => p,
        Err(e) => {
            return Completion {
                batch,
                result: Err(ClientError::Api(ApiError::from(e))),
                rerouted: false,
            };
        }
    };
    let meta = &shared.metadata;
    let seen = meta.version();
    let result = match meta.leader(&batch.topic, batch.partition).await {
        Ok(leader) => {
            let attempt = produce(&shared, &batch.topic, batch.partition, &leader, payload);
            meta.unless_leader_moves(&batch.topic, batch.partition, &leader, attempt)
                .await
        }
        Err(e) => Err(e),
    };
    let rerouted = match &result {
        // The cache already names the leader to resend to.
        Err(ClientError::LeaderMoved(_)) => true,
        Err(e) if e.is_retriable() => {
            meta.handle_error(&batch.topic, batch.partition, e, seen)
                .await
        }
        _ => false,
    };
    Completion {
        batch,
        result,
        rerouted,
    }
}

async fn produce(
    shared: &Shared,
    topic: &str,
    partition: i32,
    leader: &Leader,
    payload: bytes::Bytes,
) -> Result<pb::ProduceResponse> {
    let cfg = &shared.cfg;
    let channel = shared.metadata.pool.channel(&leader.address)?;
    let mut client = LogClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server_timeout = cfg.client.request_timeout;
    let req = pb::ProduceRequest {
        topic: topic.to_string(),
        partition,
        acks: cfg.acks.as_i32(),
        timeout_ms: i32::try_from(server_timeout.as_millis()).unwrap_or(i32::MAX),
        payload: Some(Payload::Batch(payload)),
        compression: pb::Compression::None as i32,
        leader_epoch: leader.epoch,
        topic_id: leader.topic_id.clone(),
    };
    // The leader gives up waiting for replicas at `timeout_ms`; allow its answer to arrive.
    let timeout = server_timeout + Duration::from_secs(1);
    let resp = with_timeout(timeout, "produce", async {
        client.produce(request(req, timeout)).await
    })
    .await?;
    Ok(resp.into_inner())
}
