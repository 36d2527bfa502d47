//! Produce on the leader: validate the batch, check the ISR for `acks=all`, hand the batch to
//! the group-commit writer (which assigns offsets and de-duplicates idempotent retries), and
//! answer per `acks` — `acks=all` only once the high watermark has passed the batch.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{self, BatchHeader, Compression};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, produce_request::Payload};

use super::LogService;
use super::codec::{corrupt, encode_records, internal, to_compression};
use super::resolve::{Target, leader_replica};
use crate::faults;
use crate::replica::Replica;
use crate::replica::commit::{CommitError, wait_committed};
use crate::writer::{AppendError, Appended};

/// `acks=all` waits at most this long when the request gives no timeout.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests one `ProduceMany` may carry (one per partition is what producers send).
const MAX_PRODUCE_MANY: usize = 4096;

pub(super) fn append_error(e: AppendError, r: &Replica) -> ApiError {
    match e {
        AppendError::Deleted => ApiError::new(
            ErrorCode::UnknownTopic,
            format!("topic '{}' was deleted", r.topic),
        ),
        AppendError::Stopped => ApiError::new(
            ErrorCode::NotLeader,
            "storage node is shutting down; retry on the new leader",
        ),
        AppendError::NotLeader => ApiError::not_leader(
            format!(
                "this node stopped leading {}-{}; refresh metadata and retry",
                r.topic,
                r.partition()
            ),
            None,
        ),
        AppendError::OutOfOrder { expected } => ApiError::new(
            ErrorCode::OutOfOrderSequence,
            format!(
                "batch sequence is out of order for {}-{}: expected sequence {expected} next",
                r.topic,
                r.partition()
            ),
        ),
        AppendError::StaleProducerEpoch => ApiError::new(
            ErrorCode::InvalidProducerEpoch,
            "producer epoch is older than this partition has seen: another producer instance took over",
        ),
        AppendError::NotFollower => ApiError::new(
            ErrorCode::Internal,
            "a replicated write reached the produce path; report this as a bug",
        ),
        e @ (AppendError::Storage(_) | AppendError::Gap { .. } | AppendError::Corrupt(_)) => {
            ApiError::new(
                ErrorCode::StorageError,
                format!("{e}; retry, and check the node's disk"),
            )
        }
    }
}

/// Checks a produced batch whole: header, CRC, size, and every record. Decompression is CPU
/// work, so compressed batches are checked off the async workers.
async fn check_batch(bytes: Bytes, r: &Replica) -> Result<(Bytes, BatchHeader), ApiError> {
    let max = r.max_batch_bytes();
    if bytes.len() > max {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes={max} of topic '{}'; send smaller batches or raise the topic's max.message.bytes",
                bytes.len(),
                r.topic
            ),
        ));
    }
    let header = batch::validate(&bytes).map_err(corrupt)?;
    let keyed = r.compaction().enabled;
    if header.compression().map_err(corrupt)? == Compression::None {
        batch::validate_records_keyed(&bytes, keyed).map_err(corrupt)?;
    } else {
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || batch::validate_records_keyed(&b, keyed))
            .await
            .map_err(internal)?
            .map_err(corrupt)?;
    }
    Ok((bytes, header))
}

fn not_enough_replicas(r: &Replica, isr: usize) -> ApiError {
    ApiError::new(
        ErrorCode::NotEnoughReplicas,
        format!(
            "{}-{} has {isr} in-sync replicas, fewer than min.insync.replicas={}; nothing was written, retry when replicas catch up",
            r.topic,
            r.partition(),
            r.min_insync()
        ),
    )
}

/// The produce answer for a batch that was appended but did not commit.
fn commit_error(e: CommitError, svc: &LogService, r: &Replica) -> ApiError {
    match e {
        CommitError::LeadershipMoved { .. } => ApiError::not_leader(
            format!("{e}; retry on the new leader (idempotent producers do not duplicate)"),
            super::resolve::leader_hint(&svc.cache.view(), r),
        ),
        CommitError::TooFewInSync { .. } => ApiError::new(
            ErrorCode::NotEnoughReplicasAfterAppend,
            format!(
                "{e}; it may still be read, retry when replicas catch up (idempotent producers do not duplicate)"
            ),
        ),
        CommitError::TimedOut(_) => ApiError::new(
            ErrorCode::RequestTimedOut,
            format!("{e}; retry (idempotent producers do not duplicate)"),
        ),
    }
}

/// Handles one produce request.
pub async fn produce(
    svc: &LogService,
    req: pb::ProduceRequest,
) -> Result<pb::ProduceResponse, ApiError> {
    if !matches!(req.acks, -1..=1) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("acks={} is invalid; use 0, 1 or -1 (all)", req.acks),
        ));
    }
    let replica = {
        let view = svc.cache.view();
        let target = Target {
            topic: &req.topic,
            partition: req.partition,
            topic_id: &req.topic_id,
            leader_epoch: req.leader_epoch,
        };
        leader_replica(&view, &svc.partitions, svc.node_id, &target)?
    };
    let bytes = match req.payload {
        Some(Payload::Batch(_)) if req.producer.is_some() => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a batch carries its producer id, epoch and sequence in its own header; leave `producer` unset",
            ));
        }
        Some(Payload::Batch(b)) => b,
        Some(Payload::Records(list)) => {
            let compression = to_compression(req.compression)?;
            let producer = req.producer;
            tokio::task::spawn_blocking(move || {
                encode_records(&list, compression, producer.as_ref())
            })
            .await
            .map_err(internal)??
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "produce request has no payload; send a batch or records",
            ));
        }
    };
    let (bytes, header) = check_batch(bytes, &replica).await?;
    if let Some(refused) = svc.faults.before_produce().await {
        return Err(refused);
    }
    svc.disk.check(svc.node_id)?;
    let epoch = replica.leadership().epoch;
    if req.acks == -1 {
        let isr = replica.isr().len();
        if isr < replica.min_insync() {
            return Err(not_enough_replicas(&replica, isr));
        }
    }
    metrics::counter!("sluice_produce_bytes_total", "topic" => replica.topic.clone())
        .increment(bytes.len() as u64);
    let batch = bytes
        .try_into_mut()
        .unwrap_or_else(|b| BytesMut::from(&b[..]));
    let response = |a: Option<Appended>| pb::ProduceResponse {
        base_offset: a.map_or(-1, |a| a.base_offset),
        log_append_time_ms: -1,
        log_start_offset: replica.log_start(),
        leader_epoch: epoch,
    };
    if req.acks == 0 {
        // Admitted to the writer's queue (backpressure), not waited for.
        let pending = svc
            .writer
            .submit(replica.clone(), batch, header)
            .await
            .map_err(|e| append_error(e, &replica))?;
        let r = replica.clone();
        tokio::spawn(async move {
            if let Ok(Err(error)) = pending.await {
                tracing::warn!(%error, topic = %r.topic, partition = r.partition(), "acks=0 append failed");
            }
        });
        return Ok(response(None));
    }
    let appended = svc
        .writer
        .append(replica.clone(), batch, header)
        .await
        .map_err(|e| append_error(e, &replica))?;
    if req.acks == -1 {
        let timeout = if req.timeout_ms > 0 {
            Duration::from_millis(req.timeout_ms as u64)
        } else {
            DEFAULT_ACK_TIMEOUT
        };
        wait_committed(&replica, appended.end_offset, epoch, timeout)
            .await
            .map_err(|e| commit_error(e, svc, &replica))?;
    }
    if svc.faults.take(faults::DROP_PRODUCE_RESPONSE) {
        tracing::warn!(topic = %replica.topic, partition = replica.partition(), "fault injection: dropping a produce answer");
        return Err(ApiError::new(
            ErrorCode::RequestTimedOut,
            "fault injection: answer dropped after the append; retry",
        ));
    }
    Ok(response(Some(appended)))
}

/// Handles a `ProduceMany`: each request as [`produce`] would handle it, all concurrently in this
/// task (so their batches reach the writer together and share one group commit), answered in
/// request order, each with its own result.
pub async fn produce_many(
    svc: &LogService,
    req: pb::ProduceManyRequest,
) -> Result<pb::ProduceManyResponse, ApiError> {
    if req.requests.len() > MAX_PRODUCE_MANY {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "ProduceMany carries {} requests, more than {MAX_PRODUCE_MANY}; split it into several calls",
                req.requests.len()
            ),
        ));
    }
    let answers =
        futures::future::join_all(req.requests.into_iter().map(|r| produce(svc, r))).await;
    let results = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(response) => pb::ProduceResult {
                response: Some(response),
                ..Default::default()
            },
            Err(e) => pb::ProduceResult {
                error: Some(e.detail()),
                message: e.message,
                response: None,
            },
        })
        .collect();
    Ok(pb::ProduceManyResponse { results })
}
