//! Records inside a batch: the encoding `BatchBuilder` appends and the bounds-checked decoding of
//! a whole batch. Decoded keys, values and headers are slices of one shared buffer, not copies.

use bytes::Bytes;

use super::compression::{MAX_DECOMPRESSED_LEN, decompress};
use super::header::{BATCH_HEADER_LEN, BatchHeader, validate, validate_stored};
use super::varint::{Reader, put_varint, put_varlong, varint_len, varlong_len};
use super::{BatchError, Compression};

/// A record as a producer hands it over, before offsets are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partitioning and compaction key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// Payload; `None` is a null value (a tombstone in Kafka's terms).
    pub value: Option<Bytes>,
    /// Ordered headers; keys may repeat, values may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A record read back from a batch, with its absolute offset, as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Position of the record in its partition.
    pub offset: i64,
    /// Create time, or the append time for log-append-time batches, in epoch milliseconds.
    pub timestamp_ms: i64,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value.
    pub value: Option<Bytes>,
    /// Headers in batch order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each. Bounds allocations driven by a hostile count.
const MIN_RECORD_LEN: usize = 7;

/// Lengths beyond `i32::MAX` cannot be represented; they saturate, and the batch that would hold
/// them is refused by `BatchBuilder::finish` as too large.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn nullable_len(b: Option<&Bytes>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(len_i32(b.len())) + b.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&Bytes>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, len_i32(b.len()));
            out.extend_from_slice(b);
        }
    }
}

/// Size of the record body (everything after its length prefix) at the given deltas.
pub(crate) fn body_len(record: &Record, timestamp_delta: i64, offset_delta: i32) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| varint_len(len_i32(k.len())) + k.len() + nullable_len(v.as_ref()))
        .sum();
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(record.key.as_ref())
        + nullable_len(record.value.as_ref())
        + varint_len(len_i32(record.headers.len()))
        + headers
}

/// Appends one record, length prefix included, exactly as Kafka lays it out.
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    record: &Record,
    timestamp_delta: i64,
    offset_delta: i32,
) {
    let body = body_len(record, timestamp_delta, offset_delta);
    out.reserve(varint_len(len_i32(body)) + body);
    put_varint(out, len_i32(body));
    out.push(0); // record attributes: unused by Kafka, always 0
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_nullable(out, record.key.as_ref());
    put_nullable(out, record.value.as_ref());
    put_varint(out, len_i32(record.headers.len()));
    for (k, v) in &record.headers {
        put_varint(out, len_i32(k.len()));
        out.extend_from_slice(k.as_bytes());
        put_nullable(out, v.as_ref());
    }
}

/// Decodes every record of one whole batch (validating CRC first), with absolute offsets. A
/// compacted batch (offset gaps between its records) decodes too.
pub fn decode_records(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let header = validate_stored(batch)?;
    let body = &batch[BATCH_HEADER_LEN..];
    let records = match header.compression()? {
        Compression::None => Bytes::copy_from_slice(body),
        codec => Bytes::from(decompress(codec, body, MAX_DECOMPRESSED_LEN)?),
    };
    decode_section(&header, &records)
}

/// Like [`decode_records`], but uncompressed records are sliced out of `batch` without copying;
/// for consumers that already hold the fetched bytes (from [`super::BatchIter`]).
pub fn decode_records_shared(batch: &Bytes) -> Result<Vec<DecodedRecord>, BatchError> {
    let header = validate_stored(batch)?;
    let body = &batch[BATCH_HEADER_LEN..];
    let records = match header.compression()? {
        Compression::None => batch.slice(BATCH_HEADER_LEN..),
        codec => Bytes::from(decompress(codec, body, MAX_DECOMPRESSED_LEN)?),
    };
    decode_section(&header, &records)
}

/// Decodes the (uncompressed) record section of a validated batch.
fn decode_section(header: &BatchHeader, records: &Bytes) -> Result<Vec<DecodedRecord>, BatchError> {
    let count = header.record_count.max(0) as usize;
    let mut out = Vec::with_capacity(count.min(records.len() / MIN_RECORD_LEN + 1));
    let mut r = Reader::new(records);
    for i in 0..count {
        let start = r.position();
        let record = decode_one(&mut r, header, records).map_err(|why| {
            BatchError::Corrupt(format!(
                "record {i} of {count} (at byte {start} of the records): {why}; re-send the batch"
            ))
        })?;
        out.push(record);
    }
    if r.remaining() != 0 {
        return Err(BatchError::Corrupt(format!(
            "{} bytes follow the {count} records the header declares; re-send the batch",
            r.remaining()
        )));
    }
    Ok(out)
}

fn decode_one(
    r: &mut Reader<'_>,
    header: &BatchHeader,
    records: &Bytes,
) -> Result<DecodedRecord, String> {
    let len = r.read_len("record length")?;
    let body = r.take(len, "record length")?;
    // Parse the body through its own reader so a field cannot spill into the next record.
    let mut b = Reader::new(&records[body.clone()]);
    let at = |range: std::ops::Range<usize>| {
        records.slice(body.start + range.start..body.start + range.end)
    };

    b.read_i8("record attributes")?;
    let timestamp_delta = b.read_varlong("timestamp delta")?;
    let offset_delta = b.read_varint("offset delta")?;
    let key = nullable(&mut b, "key length")?.map(at);
    let value = nullable(&mut b, "value length")?.map(at);
    let header_count = b.read_len("header count")?;
    // Each header takes at least two bytes, which bounds a hostile count.
    let mut headers = Vec::with_capacity(header_count.min(b.remaining() / 2));
    for h in 0..header_count {
        let key_len = b.read_len("header key length")?;
        let key_range = b.take(key_len, "header key length")?;
        let key =
            std::str::from_utf8(&records[body.start + key_range.start..body.start + key_range.end])
                .map_err(|e| format!("header {h} key is not valid UTF-8 ({e})"))?
                .to_string();
        let value = nullable(&mut b, "header value length")?.map(at);
        headers.push((key, value));
    }
    if b.remaining() != 0 {
        return Err(format!(
            "record length says {len} bytes but its fields end {} bytes earlier",
            b.remaining()
        ));
    }
    let timestamp_ms = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp.wrapping_add(timestamp_delta)
    };
    Ok(DecodedRecord {
        offset: header.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp_ms,
        key,
        value,
        headers,
    })
}

/// Reads a nullable length and the bytes it covers; returns their range within the record body.
fn nullable(b: &mut Reader<'_>, what: &str) -> Result<Option<std::ops::Range<usize>>, String> {
    match b.read_nullable_len(what)? {
        None => Ok(None),
        Some(len) => b.take(len, what).map(Some),
    }
}

/// Everything [`validate`] checks plus the records themselves: each parses within its length
/// and record `i` has offset delta `i`, so a stored batch can never yield duplicate or
/// out-of-range offsets. The storage node runs it on every produced batch (as Kafka's broker
/// does); compressed batches are decompressed to check them.
pub fn validate_records(batch: &Bytes) -> Result<BatchHeader, BatchError> {
    validate_records_keyed(batch, false)
}

/// [`validate_records`], and with `require_keys` every record must have a key (a compacted
/// topic's batch).
pub fn validate_records_keyed(
    batch: &Bytes,
    require_keys: bool,
) -> Result<BatchHeader, BatchError> {
    let header = validate(batch)?;
    for (i, r) in decode_records_shared(batch)?.iter().enumerate() {
        if require_keys && r.key.is_none() {
            return Err(BatchError::MissingKey(i));
        }
        let delta = r.offset.wrapping_sub(header.base_offset);
        if delta != i as i64 {
            return Err(BatchError::Corrupt(format!(
                "record {i} has offset delta {delta}, expected {i}; encode records with consecutive offset deltas from 0"
            )));
        }
    }
    Ok(header)
}

#[cfg(test)]
mod validate_records_tests {
    use super::*;
    use crate::batch::BatchBuilder;

    fn two_records() -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        for v in [b"a", b"b"] {
            b.push(&Record {
                key: None,
                value: Some(Bytes::from_static(v)),
                headers: Vec::new(),
                timestamp_ms: 5,
            });
        }
        b.finish(0).unwrap().to_vec()
    }

    #[test]
    fn well_formed_batches_pass() {
        let h = validate_records(&Bytes::from(two_records())).unwrap();
        assert_eq!(h.record_count, 2);
    }

    #[test]
    fn a_repeated_offset_delta_is_refused_even_with_a_valid_crc() {
        let mut raw = two_records();
        // Record 0: [len][attr][ts delta][offset delta]...; record 1 follows it.
        let len0 = (raw[BATCH_HEADER_LEN] >> 1) as usize;
        let second_delta = BATCH_HEADER_LEN + 1 + len0 + 3;
        assert_eq!(raw[second_delta], 2, "zigzag(1)");
        raw[second_delta] = 0;
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = validate_records(&Bytes::from(raw)).unwrap_err();
        assert!(err.to_string().contains("offset delta"), "{err}");
    }
}
