//! Building one batch record by record. The header space is reserved up front so that an
//! uncompressed batch is finished in place, without copying its records.

use bytes::Bytes;

use super::compression::{MAX_DECOMPRESSED_LEN, compress};
use super::header::{BATCH_HEADER_LEN, BatchHeader, MAGIC_V2, compute_crc, store_crc};
use super::records::{Record, body_len, put_record};
use super::varint::{varint_len, varlong_len};
use super::{BatchError, Compression};

/// Producer fields of a batch from a non-idempotent producer (Kafka's "no producer id").
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Epoch producers write; the leader stamps its own with `set_partition_leader_epoch`.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Accumulates records and encodes one batch; used by the client producer (records appended one by one while a linger timer runs) and by the node for structured produce.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// `BATCH_HEADER_LEN` placeholder bytes, then the encoded records.
    buf: Vec<u8>,
    count: usize,
    /// First record's timestamp, the base of every timestamp delta.
    base_timestamp: i64,
    max_timestamp: i64,
    /// Offset delta of the next pushed record (records of a compacted batch have gaps).
    next_delta: i32,
    /// The batch's last offset delta when it is not the last record's (compaction keeps it).
    last_offset_delta: Option<i32>,
}

impl BatchBuilder {
    /// An empty batch whose records will be compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 0)
    }

    /// An empty batch with room for `capacity` bytes of records, so filling it to an expected
    /// size (a producer's batch size) never moves the bytes already pushed.
    pub fn with_capacity(compression: Compression, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + capacity);
        buf.resize(BATCH_HEADER_LEN, 0);
        Self {
            compression,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            next_delta: 0,
            last_offset_delta: None,
        }
    }

    /// Makes the batch cover offsets up to `base + delta` whatever its records' offsets, as a
    /// compacted batch does (a consumer's next offset after it stays the same).
    pub fn with_last_offset_delta(self, delta: i32) -> Self {
        Self {
            last_offset_delta: Some(delta),
            ..self
        }
    }

    /// Appends a record at offset delta `delta` (greater than the previous record's), leaving
    /// a gap where compaction removed records.
    pub fn push_at(&mut self, record: &Record, delta: i32) {
        self.next_delta = delta.max(self.next_delta);
        self.push(record);
    }

    /// Sets the idempotent-producer fields the leader deduplicates on (default -1, -1, -1).
    pub fn with_producer(self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        Self {
            producer_id,
            producer_epoch,
            base_sequence,
            ..self
        }
    }

    /// Appends one record, encoded at once into the internal buffer.
    pub fn push(&mut self, record: &Record) {
        if self.count == 0 {
            self.base_timestamp = record.timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp_ms);
        // Wrapping keeps extreme timestamps exact: decoding adds the delta back with wrapping.
        let timestamp_delta = record.timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = self.next_delta;
        put_record(&mut self.buf, record, timestamp_delta, offset_delta);
        self.count += 1;
        self.next_delta = offset_delta.saturating_add(1);
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record was pushed yet (`finish` would fail).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Header plus uncompressed record bytes so far, for batch-size decisions.
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// Upper bound of the bytes `push(record)` would add (timestamp and offset deltas are
    /// counted at their widest).
    pub fn record_size(record: &Record) -> usize {
        let widest = body_len(record, 0, 0) - varlong_len(0) - varint_len(0)
            + varlong_len(i64::MIN)
            + varint_len(i32::MIN);
        varint_len(i32::try_from(widest).unwrap_or(i32::MAX)) + widest
    }

    /// Compresses the records, fills the header and computes the CRC. Fails when no record was
    /// pushed (a v2 batch holds at least one), or when the batch is too large to encode or to be
    /// decoded again (records over `MAX_DECOMPRESSED_LEN` when compressed, or over 2 GiB).
    pub fn finish(self, base_offset: i64) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Corrupt(
                "cannot finish a batch without records: push at least one record first".into(),
            ));
        }
        let records_len = self.buf.len() - BATCH_HEADER_LEN;
        let too_large = |what: &str, limit: usize| {
            BatchError::Compression(format!(
                "batch of {} records has {records_len} bytes of records, over the {what} limit of \
                 {limit} bytes; send smaller batches (lower the producer's batch size)",
                self.count
            ))
        };
        let mut buf = match self.compression {
            Compression::None => self.buf,
            codec => {
                if records_len > MAX_DECOMPRESSED_LEN {
                    return Err(too_large("decompressed", MAX_DECOMPRESSED_LEN));
                }
                let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records_len / 2);
                out.resize(BATCH_HEADER_LEN, 0);
                compress(codec, &self.buf[BATCH_HEADER_LEN..], &mut out)?;
                out
            }
        };
        let batch_length = i32::try_from(buf.len() - 12)
            .map_err(|_| too_large("encodable", i32::MAX as usize - BATCH_HEADER_LEN))?;
        let record_count =
            i32::try_from(self.count).map_err(|_| too_large("record count", i32::MAX as usize))?;
        let last_offset_delta = self
            .last_offset_delta
            .unwrap_or(self.next_delta - 1)
            .max(self.next_delta - 1);
        let header = BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            magic: MAGIC_V2,
            crc: 0,
            attributes: self.compression.attribute_bits(),
            last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count,
        };
        buf[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
        let crc = compute_crc(&buf);
        store_crc(&mut buf, crc);
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, ts: i64) -> Record {
        Record {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![("h".into(), None)],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn sizes_track_what_push_appends() {
        let mut b = BatchBuilder::new(Compression::None);
        assert!(b.is_empty());
        assert_eq!(b.estimated_size(), BATCH_HEADER_LEN);
        for i in 0..3 {
            let r = record("value", 1000 + i);
            let before = b.estimated_size();
            b.push(&r);
            let added = b.estimated_size() - before;
            assert!(added <= BatchBuilder::record_size(&r), "{added}");
        }
        assert_eq!(b.len(), 3);
        let bytes = b.clone().finish(0).unwrap();
        assert_eq!(
            bytes.len(),
            b.estimated_size(),
            "uncompressed size is exact"
        );
    }

    #[test]
    fn finishing_an_empty_batch_is_refused() {
        let err = BatchBuilder::new(Compression::Zstd).finish(0).unwrap_err();
        assert!(
            err.to_string().contains("push at least one record"),
            "{err}"
        );
    }

    #[test]
    fn header_carries_producer_fields_timestamps_and_offsets() {
        let mut b = BatchBuilder::new(Compression::Lz4).with_producer(9, 2, 40);
        b.push(&record("a", 500));
        b.push(&record("b", 300));
        b.push(&record("c", 900));
        let bytes = b.finish(100).unwrap();
        let h = super::super::validate(&bytes).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (9, 2, 40)
        );
        assert_eq!((h.base_timestamp, h.max_timestamp), (500, 900));
        assert_eq!(
            (h.base_offset, h.last_offset(), h.record_count),
            (100, 102, 3)
        );
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(h.compression(), Ok(Compression::Lz4));
    }
}
