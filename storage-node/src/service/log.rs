//! The `Log` service: produce, fetch and list-offsets for the partitions this node leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_metadata::cache::MetadataCache;
use sluice_proto::batch::{self, BatchBuilder, Compression};
use sluice_proto::error::ApiError;
use sluice_proto::model::{NodeId, Offset};
use sluice_proto::pb::{self, ErrorCode, log_server::Log, produce_request::Payload};
use tonic::{Request, Response, Status};

use super::resolve::{Target, leader_replica};
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::replica::Replica;
use crate::writer::{AppendError, Writer};

/// Longest long-poll a fetch may ask for.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// `max_bytes` when a fetch gives 0.
const DEFAULT_FETCH_BYTES: usize = 1 << 20;
/// Largest fetch response.
const MAX_FETCH_BYTES: usize = 64 << 20;

/// Serves `Log` for one storage node.
pub struct LogService {
    /// This node's id.
    pub node_id: NodeId,
    /// Watch-fed cluster view.
    pub cache: Arc<MetadataCache>,
    /// Hosted replicas.
    pub partitions: Arc<Partitions>,
    /// Group-commit writer.
    pub writer: Writer,
    /// The log store, for reads.
    pub log: Arc<dyn LogStore>,
}

fn corrupt(e: batch::BatchError) -> ApiError {
    ApiError::new(ErrorCode::CorruptBatch, format!("{e}"))
}

fn append_error(e: AppendError, r: &Replica) -> ApiError {
    match e {
        AppendError::Deleted => ApiError::new(
            ErrorCode::UnknownTopic,
            format!("topic '{}' was deleted", r.topic),
        ),
        AppendError::Stopped => ApiError::new(
            ErrorCode::NotLeader,
            "storage node is shutting down; retry on the new leader",
        ),
        AppendError::Storage(e) => ApiError::new(
            ErrorCode::StorageError,
            format!("{e}; retry, and check the node's disk"),
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_compression(c: i32) -> Result<Compression, ApiError> {
    Ok(match pb::Compression::try_from(c) {
        Ok(pb::Compression::None) => Compression::None,
        Ok(pb::Compression::Gzip) => Compression::Gzip,
        Ok(pb::Compression::Snappy) => Compression::Snappy,
        Ok(pb::Compression::Lz4) => Compression::Lz4,
        Ok(pb::Compression::Zstd) => Compression::Zstd,
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("unknown compression {c}; use none, gzip, snappy, lz4 or zstd"),
            ));
        }
    })
}

/// Encodes structured records into one batch (for clients without a codec).
fn encode_records(list: &pb::RecordList, compression: Compression) -> Result<Bytes, ApiError> {
    if list.records.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "produce request has no records; send at least one",
        ));
    }
    let now = now_ms();
    let mut b = BatchBuilder::new(compression);
    for r in &list.records {
        b.push(&batch::Record {
            key: r.has_key.then(|| r.key.clone()),
            value: r.has_value.then(|| r.value.clone()),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.clone(), Some(h.value.clone())))
                .collect(),
            timestamp_ms: if r.timestamp_ms == 0 {
                now
            } else {
                r.timestamp_ms
            },
        });
    }
    b.finish(0).map_err(corrupt)
}

fn decode_for_client(batches: &[Bytes], from: Offset) -> Result<Vec<pb::Record>, ApiError> {
    let mut out = Vec::new();
    for b in batches {
        for r in batch::decode_records(b).map_err(corrupt)? {
            if r.offset < from {
                continue;
            }
            out.push(pb::Record {
                has_key: r.key.is_some(),
                key: r.key.unwrap_or_default(),
                has_value: r.value.is_some(),
                value: r.value.unwrap_or_default(),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| pb::Header {
                        key: k,
                        value: v.unwrap_or_default(),
                    })
                    .collect(),
                timestamp_ms: r.timestamp_ms,
                offset: r.offset,
            });
        }
    }
    Ok(out)
}

impl LogService {
    /// Reads whole batches from `from`, none reaching `limit` (the high watermark the caller
    /// read once and reports, so a response never holds data above what it says).
    async fn read(
        &self,
        r: &Arc<Replica>,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ApiError> {
        let (log, uid) = (self.log.clone(), r.uid);
        tokio::task::spawn_blocking(move || log.read(uid, from, limit, max_bytes))
            .await
            .map_err(internal)?
            .map_err(|e| ApiError::new(ErrorCode::StorageError, e.to_string()))
    }

    /// First offset with a timestamp at or after `ts`, scanning batch headers (max timestamp)
    /// and decoding only the batch that holds it. A linear scan: a time index is future work.
    async fn offset_for_timestamp(
        &self,
        r: &Arc<Replica>,
        ts: i64,
    ) -> Result<(Offset, i64), ApiError> {
        let mut from = r.log_start();
        loop {
            let hw = r.high_watermark();
            if from >= hw {
                return Ok((-1, -1));
            }
            let batches = self.read(r, from, hw, 4 << 20).await?;
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
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

fn produce_response(base_offset: Offset, r: &Replica, epoch: i32) -> Response<pb::ProduceResponse> {
    Response::new(pb::ProduceResponse {
        base_offset,
        log_append_time_ms: -1,
        log_start_offset: r.log_start(),
        leader_epoch: epoch,
    })
}

/// Checks a produced batch whole: header, CRC, size, and every record. Decompression is CPU
/// work, so compressed batches are checked off the async workers.
async fn check_batch(bytes: Bytes, r: &Replica) -> Result<(Bytes, i64), ApiError> {
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
    if header.compression().map_err(corrupt)? == Compression::None {
        batch::validate_records(&bytes).map_err(corrupt)?;
    } else {
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || batch::validate_records(&b))
            .await
            .map_err(internal)?
            .map_err(corrupt)?;
    }
    Ok((bytes, i64::from(header.last_offset_delta) + 1))
}

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = req.into_inner();
        if !matches!(req.acks, -1..=1) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("acks={} is invalid; use 0, 1 or -1 (all)", req.acks),
            )
            .into());
        }
        let replica = {
            let view = self.cache.view();
            let target = Target {
                topic: &req.topic,
                partition: req.partition,
                topic_id: &req.topic_id,
                leader_epoch: req.leader_epoch,
            };
            leader_replica(&view, &self.partitions, self.node_id, &target)?
        };
        let bytes = match req.payload {
            Some(Payload::Batch(b)) => b,
            Some(Payload::Records(list)) => {
                let compression = to_compression(req.compression)?;
                tokio::task::spawn_blocking(move || encode_records(&list, compression))
                    .await
                    .map_err(internal)??
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "produce request has no payload; send a batch or records",
                )
                .into());
            }
        };
        let (bytes, records) = check_batch(bytes, &replica).await?;
        let batch = bytes
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let epoch = replica.leadership().epoch;
        if req.acks == 0 {
            // Admitted to the writer's queue (backpressure), not waited for.
            let pending = self
                .writer
                .submit(replica.clone(), batch, records)
                .await
                .map_err(|e| append_error(e, &replica))?;
            let r = replica.clone();
            tokio::spawn(async move {
                if let Ok(Err(error)) = pending.await {
                    tracing::warn!(%error, topic = %r.topic, partition = r.partition(), "acks=0 append failed");
                }
            });
            return Ok(produce_response(-1, &replica, epoch));
        }
        let base = self
            .writer
            .append(replica.clone(), batch, records)
            .await
            .map_err(|e| append_error(e, &replica))?;
        Ok(produce_response(base, &replica, epoch))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let req = req.into_inner();
        if req.max_bytes < 0 || req.min_bytes < 0 || req.max_wait_ms < 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "max_bytes, min_bytes and max_wait_ms must not be negative",
            )
            .into());
        }
        let replica = {
            let view = self.cache.view();
            let target = Target {
                topic: &req.topic,
                partition: req.partition,
                topic_id: &req.topic_id,
                leader_epoch: req.leader_epoch,
            };
            leader_replica(&view, &self.partitions, self.node_id, &target)?
        };
        let max_bytes = if req.max_bytes == 0 {
            DEFAULT_FETCH_BYTES
        } else {
            (req.max_bytes as usize).min(MAX_FETCH_BYTES)
        };
        let deadline =
            Instant::now() + Duration::from_millis(req.max_wait_ms as u64).min(MAX_WAIT_CAP);
        let mut hw_rx = replica.watch_high_watermark();
        loop {
            if replica.is_deleted() {
                return Err(ApiError::new(
                    ErrorCode::UnknownTopic,
                    format!("topic '{}' was deleted", replica.topic),
                )
                .into());
            }
            let (start, hw) = (replica.log_start(), *hw_rx.borrow_and_update());
            if req.offset < start || req.offset > hw {
                return Err(ApiError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {} is out of range for {}-{}: valid offsets are {start} to {hw}; seek to earliest or latest",
                        req.offset, replica.topic, req.partition
                    ),
                )
                .into());
            }
            let batches = if req.offset < hw {
                self.read(&replica, req.offset, hw, max_bytes).await?
            } else {
                Vec::new()
            };
            let size: usize = batches.iter().map(Bytes::len).sum();
            let now = Instant::now();
            if size >= (req.min_bytes.max(1) as usize) || now >= deadline {
                return Ok(Response::new(
                    fetch_response(
                        batches,
                        req.decode,
                        req.offset,
                        hw,
                        start,
                        replica.leadership().epoch,
                    )
                    .await?,
                ));
            }
            // Long poll: wake on the next high-watermark move or at the deadline.
            let _ = tokio::time::timeout(deadline - now, hw_rx.changed()).await;
        }
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = req.into_inner();
        let replica = {
            let view = self.cache.view();
            let target = Target {
                topic: &req.topic,
                partition: req.partition,
                topic_id: &[],
                leader_epoch: -1,
            };
            leader_replica(&view, &self.partitions, self.node_id, &target)?
        };
        let (start, hw) = (replica.log_start(), replica.high_watermark());
        let (offset, timestamp_ms) = match req.spec {
            Some(pb::list_offsets_request::Spec::Earliest(_)) => (start, -1),
            Some(pb::list_offsets_request::Spec::Latest(_)) => (hw, -1),
            Some(pb::list_offsets_request::Spec::TimestampMs(ts)) => {
                self.offset_for_timestamp(&replica, ts).await?
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "list-offsets needs earliest, latest or a timestamp",
                )
                .into());
            }
        };
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            timestamp_ms,
            log_start_offset: start,
            high_watermark: hw,
        }))
    }
}

/// Builds a fetch answer: raw batches for batch-aware clients, or decoded records only for
/// structured clients (sending both could exceed the message limit).
async fn fetch_response(
    batches: Vec<Bytes>,
    decode: bool,
    from: Offset,
    high_watermark: Offset,
    log_start_offset: Offset,
    leader_epoch: i32,
) -> Result<pb::FetchResponse, ApiError> {
    let (records, raw) = if decode {
        let records = tokio::task::spawn_blocking(move || decode_for_client(&batches, from))
            .await
            .map_err(internal)??;
        (records, Bytes::new())
    } else {
        let size = batches.iter().map(Bytes::len).sum();
        let mut buf = BytesMut::with_capacity(size);
        for b in &batches {
            buf.extend_from_slice(b);
        }
        (Vec::new(), buf.freeze())
    };
    Ok(pb::FetchResponse {
        batches: raw,
        high_watermark,
        log_start_offset,
        records,
        leader_epoch,
    })
}
