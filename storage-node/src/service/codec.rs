//! Conversions between the structured (codec-free) API form and record batches, and the error
//! helpers the data-plane handlers share.

use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{self, BatchBuilder, Compression};
use sluice_proto::error::ApiError;
use sluice_proto::model::Offset;
use sluice_proto::pb::{self, ErrorCode};

/// A batch the codec refused, as the client sees it.
pub fn corrupt(e: batch::BatchError) -> ApiError {
    ApiError::from(e)
}

/// An unexpected failure (a panicked blocking task).
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The codec's compression for the API's enum value.
pub fn to_compression(c: i32) -> Result<Compression, ApiError> {
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

/// Encodes structured records into one batch (for clients without a codec), stamped with the
/// idempotent producer's identity and sequence when given.
pub fn encode_records(
    list: &pb::RecordList,
    compression: Compression,
    producer: Option<&pb::ProducerSequence>,
) -> Result<Bytes, ApiError> {
    if list.records.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "produce request has no records; send at least one",
        ));
    }
    let now = now_ms();
    let mut b = BatchBuilder::new(compression);
    if let Some(p) = producer {
        let epoch = i16::try_from(p.producer_epoch).ok().filter(|e| *e >= 0);
        let (Some(epoch), true, true) = (epoch, p.producer_id >= 0, p.base_sequence >= 0) else {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "producer id {}, epoch {} and base sequence {} must be the non-negative values InitProducerId gave and the records sent so far (epoch at most 32767)",
                    p.producer_id, p.producer_epoch, p.base_sequence
                ),
            ));
        };
        b = b.with_producer(p.producer_id, epoch, p.base_sequence);
    }
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

/// Decodes fetched batches for structured clients, skipping records below `from`.
pub fn decode_for_client(batches: &[Bytes], from: Offset) -> Result<Vec<pb::Record>, ApiError> {
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

/// Builds a fetch answer: raw batches for batch-aware clients, or decoded records only for
/// structured clients (sending both could exceed the message limit).
pub async fn fetch_response(
    batches: Vec<Bytes>,
    decode: bool,
    from: Offset,
    high_watermark: Offset,
    log_start_offset: Offset,
    leader_epoch: i32,
) -> Result<pb::FetchResponse, ApiError> {
    let next_offset = match batches.last() {
        Some(last) => batch::BatchHeader::parse(last)
            .map_err(corrupt)?
            .next_offset(),
        None => from,
    };
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
        next_offset,
    })
}
