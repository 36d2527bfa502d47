//! Fetch and list-offsets on the leader: reads stop at the high watermark (consumers never see
//! uncommitted records), long polls wait on it, and a replica read serves a node's own log up to
//! its end for consistency checks.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use sluice_proto::batch;
use sluice_proto::error::ApiError;
use sluice_proto::model::{Offset, TopicId};
use sluice_proto::pb::{self, ErrorCode};
use tonic::Status;

use super::LogService;
use super::codec::{corrupt, fetch_response, internal};
use super::resolve::{Target, leader_replica};
use crate::log::PartitionKey;
use crate::replica::Replica;

/// Longest long poll a fetch may ask for.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// `max_bytes` when a fetch gives 0.
const DEFAULT_FETCH_BYTES: usize = 1 << 20;
/// Largest fetch response.
const MAX_FETCH_BYTES: usize = 64 << 20;

/// Reads whole batches from `from`, none reaching `limit`.
async fn read(
    svc: &LogService,
    r: &Arc<Replica>,
    from: Offset,
    limit: Offset,
    max_bytes: usize,
) -> Result<Vec<Bytes>, ApiError> {
    crate::log::read_async(&svc.log, r.uid, from, limit, max_bytes)
        .await
        .map_err(|e| {
            // Retention or DeleteRecords removed the files while this read was under way.
            if from < r.log_start() {
                out_of_range(r, from)
            } else {
                ApiError::new(ErrorCode::StorageError, e.to_string())
            }
        })
}

/// OFFSET_OUT_OF_RANGE for `offset`, naming the valid range.
fn out_of_range(r: &Replica, offset: Offset) -> ApiError {
    ApiError::new(
        ErrorCode::OffsetOutOfRange,
        format!(
            "offset {offset} is out of range for {}-{}: valid offsets are {} to {}; seek to earliest or latest",
            r.topic,
            r.partition(),
            r.log_start(),
            r.log_end()
        ),
    )
}

/// The local replica for a replica read, led here or not.
fn local_replica(svc: &LogService, topic: &str, partition: i32) -> Result<Arc<Replica>, ApiError> {
    let view = svc.cache.view();
    let t = view.topics.get(topic).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTopic,
            format!("topic '{topic}' does not exist"),
        )
    })?;
    let key = PartitionKey {
        topic_id: TopicId::from_slice(&t.record.topic_id)?,
        partition,
    };
    svc.partitions.get(&key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownPartition,
            format!(
                "node {} holds no replica of {topic}-{partition}",
                svc.node_id
            ),
        )
    })
}

/// Handles one fetch: long polls until `min_bytes` are committed or `max_wait` passes.
pub async fn fetch(svc: &LogService, req: pb::FetchRequest) -> Result<pb::FetchResponse, ApiError> {
    if req.max_bytes < 0 || req.min_bytes < 0 || req.max_wait_ms < 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "max_bytes, min_bytes and max_wait_ms must not be negative",
        ));
    }
    let replica = if req.replica_read {
        local_replica(svc, &req.topic, req.partition)?
    } else {
        let view = svc.cache.view();
        let target = Target {
            topic: &req.topic,
            partition: req.partition,
            topic_id: &req.topic_id,
            leader_epoch: req.leader_epoch,
        };
        leader_replica(&view, &svc.partitions, svc.node_id, &target)?
    };
    let max_bytes = if req.max_bytes == 0 {
        DEFAULT_FETCH_BYTES
    } else {
        (req.max_bytes as usize).min(MAX_FETCH_BYTES)
    };
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms as u64).min(MAX_WAIT_CAP);
    let mut hw_rx = replica.watch_high_watermark();
    loop {
        if replica.is_deleted() {
            return Err(ApiError::new(
                ErrorCode::UnknownTopic,
                format!("topic '{}' was deleted", replica.topic),
            ));
        }
        let (start, end, hw) = (
            replica.log_start(),
            replica.log_end(),
            *hw_rx.borrow_and_update(),
        );
        // Offsets up to the log end are valid positions; only committed ones are returned.
        if req.offset < start || req.offset > end {
            return Err(out_of_range(&replica, req.offset));
        }
        let limit = if req.replica_read { end } else { hw };
        let batches = if req.offset < limit {
            read(svc, &replica, req.offset, limit, max_bytes).await?
        } else {
            Vec::new()
        };
        let size: usize = batches.iter().map(Bytes::len).sum();
        let now = Instant::now();
        if size >= (req.min_bytes.max(1) as usize) || now >= deadline {
            metrics::counter!("sluice_fetch_bytes_total", "topic" => replica.topic.clone())
                .increment(size as u64);
            return fetch_response(
                batches,
                req.decode,
                req.offset,
                hw,
                start,
                replica.leadership().epoch,
            )
            .await;
        }
        // Long poll: wake on the next high-watermark move or at the deadline.
        let _ = tokio::time::timeout(deadline - now, hw_rx.changed()).await;
    }
}

/// The pushes of one subscription.
pub type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

/// How long each fetch inside a subscription waits before it looks again (nothing is sent for
/// an empty one; HTTP/2 keep-alives watch the connection meanwhile).
const SUBSCRIBE_POLL: Duration = Duration::from_secs(5);

/// Serves a subscription: fetches in a loop from `req.offset`, yielding each non-empty answer
/// and moving on to its `next_offset`, until the client goes away (the stream is dropped) or a
/// fetch fails (the stream then ends with that error, e.g. NOT_LEADER after a leader change).
/// The loop runs inside the response body's polls, so no task or channel sits between the read
/// and the wire, and at most one answer is held while HTTP/2 flow control holds the next back.
pub fn subscribe(svc: LogService, mut req: pb::FetchRequest) -> FetchStream {
    req.max_wait_ms = SUBSCRIBE_POLL.as_millis() as i32;
    let closing = svc.closing.clone();
    let open = Some((svc, req, closing));
    Box::pin(futures::stream::unfold(open, |state| async move {
        let (svc, mut req, mut closing) = state?;
        loop {
            let answer = tokio::select! {
                answer = fetch(&svc, req.clone()) => answer,
                _ = async { drop(closing.wait_for(|c| *c).await) } => {
                    let status = Status::unavailable(format!(
                        "node {} is shutting down; subscribe to the partition's leader again",
                        svc.node_id
                    ));
                    return Some((Err(status), None));
                }
            };
            match answer {
                Ok(resp) if resp.next_offset == req.offset => {}
                Ok(resp) => {
                    req.offset = resp.next_offset;
                    return Some((Ok(resp), Some((svc, req, closing))));
                }
                Err(e) => return Some((Err(e.into()), None)),
            }
        }
    }))
}

/// First offset with a timestamp at or after `ts`: the log's time index names the first batch
/// whose largest timestamp reaches it, and from there batches are decoded until a record does.
async fn offset_for_timestamp(
    svc: &LogService,
    r: &Arc<Replica>,
    ts: i64,
) -> Result<(Offset, i64), ApiError> {
    let start = r.log_start();
    let found = {
        let (log, uid) = (svc.log.clone(), r.uid);
        tokio::task::spawn_blocking(move || log.offset_for_timestamp(uid, start, ts))
            .await
            .map_err(internal)?
            .map_err(|e| ApiError::new(ErrorCode::StorageError, e.to_string()))?
    };
    let Some(mut from) = found else {
        return Ok((-1, -1));
    };
    from = from.max(start);
    loop {
        let hw = r.high_watermark();
        if from >= hw {
            return Ok((-1, -1));
        }
        let batches = read(svc, r, from, hw, 4 << 20).await?;
        let Some(last) = batches.last() else {
            return Ok((-1, -1));
        };
        let next = batch::BatchHeader::parse(last)
            .map_err(corrupt)?
            .next_offset();
        let found =
            tokio::task::spawn_blocking(move || -> Result<Option<(Offset, i64)>, ApiError> {
                for b in &batches {
                    let h = batch::BatchHeader::parse(b).map_err(corrupt)?;
                    if h.max_timestamp < ts {
                        continue;
                    }
                    for rec in batch::decode_records_shared(b).map_err(corrupt)? {
                        if rec.offset >= from && rec.timestamp_ms >= ts {
                            return Ok(Some((rec.offset, rec.timestamp_ms)));
                        }
                    }
                }
                Ok(None)
            })
            .await
            .map_err(internal)??;
        if let Some(found) = found {
            return Ok(found);
        }
        from = next;
    }
}

/// Handles one list-offsets request.
pub async fn list_offsets(
    svc: &LogService,
    req: pb::ListOffsetsRequest,
) -> Result<pb::ListOffsetsResponse, ApiError> {
    let replica = svc.leader_by_name(&req.topic, req.partition)?;
    let (start, hw) = (replica.log_start(), replica.high_watermark());
    let (offset, timestamp_ms) = match req.spec {
        Some(pb::list_offsets_request::Spec::Earliest(_)) => (start, -1),
        Some(pb::list_offsets_request::Spec::Latest(_)) => (hw, -1),
        Some(pb::list_offsets_request::Spec::TimestampMs(ts)) => {
            offset_for_timestamp(svc, &replica, ts).await?
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "list-offsets needs earliest, latest or a timestamp",
            ));
        }
    };
    Ok(pb::ListOffsetsResponse {
        offset,
        timestamp_ms,
        log_start_offset: start,
        high_watermark: hw,
    })
}
