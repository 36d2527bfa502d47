//! The 61-byte v2 batch header: parsing, whole-batch validation without decoding records, and the
//! in-place rewrites a leader makes (offset, epoch) that the CRC deliberately does not cover.

use super::{BatchError, Compression};

/// Length of the fixed v2 batch header; records start right after it.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only record format Sluice accepts: Kafka's v2 record batch.
pub const MAGIC_V2: i8 = 2;

/// Bytes before the CRC-covered part that `batchLength` does not count (offset and length).
const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with no record bytes.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

// Field positions, all big-endian.
const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
pub(crate) const CRC_START: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

/// Attribute bit 3: timestamps are the broker's append time (`maxTimestamp`), not the producer's.
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// The fixed fields of a v2 batch, read without touching the records, so the storage node can
/// index and route batches it never decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; assigned by the partition leader.
    pub base_offset: i64,
    /// Bytes after this field (total length minus 12).
    pub batch_length: i32,
    /// Leader epoch stamped by the leader that appended the batch; -1 from producers.
    pub partition_leader_epoch: i32,
    /// Format version; always [`MAGIC_V2`] once validated.
    pub magic: i8,
    /// CRC-32C (Castagnoli) of the bytes from `attributes` to the end.
    pub crc: u32,
    /// Codec (bits 0-2), timestamp type (3), transactional (4), control (5).
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the append time for log-append-time batches).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when not idempotent.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 when not idempotent.
    pub producer_epoch: i16,
    /// Sequence number of the first record for deduplication, -1 when not idempotent.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

impl BatchHeader {
    /// Reads the header fields of the batch at the start of `buf` (at least 61 bytes); checks
    /// nothing else, not even the magic or CRC: use [`validate`] for that.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort {
                need: BATCH_HEADER_LEN,
                have: buf.len(),
            });
        }
        Ok(Self {
            base_offset: i64::from_be_bytes(be(buf, BASE_OFFSET)),
            batch_length: i32::from_be_bytes(be(buf, BATCH_LENGTH)),
            partition_leader_epoch: i32::from_be_bytes(be(buf, PARTITION_LEADER_EPOCH)),
            magic: buf[MAGIC] as i8,
            crc: u32::from_be_bytes(be(buf, CRC)),
            attributes: i16::from_be_bytes(be(buf, CRC_START)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT)),
        })
    }

    /// The header as it appears on the wire (the inverse of [`BatchHeader::parse`]).
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(BASE_OFFSET, &self.base_offset.to_be_bytes());
        put(BATCH_LENGTH, &self.batch_length.to_be_bytes());
        put(
            PARTITION_LEADER_EPOCH,
            &self.partition_leader_epoch.to_be_bytes(),
        );
        put(MAGIC, &self.magic.to_be_bytes());
        put(CRC, &self.crc.to_be_bytes());
        put(CRC_START, &self.attributes.to_be_bytes());
        put(LAST_OFFSET_DELTA, &self.last_offset_delta.to_be_bytes());
        put(BASE_TIMESTAMP, &self.base_timestamp.to_be_bytes());
        put(MAX_TIMESTAMP, &self.max_timestamp.to_be_bytes());
        put(PRODUCER_ID, &self.producer_id.to_be_bytes());
        put(PRODUCER_EPOCH, &self.producer_epoch.to_be_bytes());
        put(BASE_SEQUENCE, &self.base_sequence.to_be_bytes());
        put(RECORD_COUNT, &self.record_count.to_be_bytes());
        out
    }

    /// Whole size of the batch in bytes (`batch_length + 12`); a negative length counts as 0.
    pub fn total_len(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Offset the next batch of the partition gets.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The codec of the records; fails for codecs 5-7.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// Whether record timestamps are the broker's append time (`max_timestamp`) rather than the
    /// producer's create time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// Whether the batch belongs to a transaction (consumers may have to skip aborted ones).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers), not user data.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// CRC-32C of a whole batch as the header should store it.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Writes `crc` into the CRC field of a batch of at least 61 bytes.
pub(crate) fn store_crc(batch: &mut [u8], crc: u32) {
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Checks that `buf` is exactly one whole v2 batch: length field matches buf.len(), magic 2, CRC
/// matches, record_count >= 1 and == last_offset_delta + 1, known compression; does not
/// decompress. Compacted batches (offset gaps) are refused: a producer never sends one (see
/// [`validate_stored`]).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    if h.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(h.magic));
    }
    if h.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::Corrupt(format!(
            "batch length field is {}, below the {MIN_BATCH_LENGTH} bytes of a v2 header; \
             re-send the batch",
            h.batch_length
        )));
    }
    if h.total_len() != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: h.total_len(),
            actual: buf.len(),
        });
    }
    let computed = compute_crc(buf);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    h.compression()?;
    if h.record_count < 1 {
        return Err(BatchError::Corrupt(format!(
            "batch declares {} records; a batch holds at least one, so do not send empty batches",
            h.record_count
        )));
    }
    if i64::from(h.last_offset_delta) + 1 != i64::from(h.record_count) {
        return Err(BatchError::Corrupt(format!(
            "batch declares {} records but a last offset delta of {} (expected {}); \
             the producer built it wrongly, re-send it",
            h.record_count,
            h.last_offset_delta,
            i64::from(h.record_count) - 1
        )));
    }
    Ok(h)
}

/// [`validate`] for a batch as stored: a compacted batch holds fewer records than the offsets
/// it covers, so only `record_count <= last_offset_delta + 1` is required.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = match validate(buf) {
        Ok(h) => return Ok(h),
        Err(BatchError::Corrupt(_)) => BatchHeader::parse(buf)?,
        Err(e) => return Err(e),
    };
    if h.record_count < 1
        || h.batch_length < MIN_BATCH_LENGTH
        || h.total_len() != buf.len()
        || compute_crc(buf) != h.crc
    {
        return validate(buf);
    }
    if i64::from(h.last_offset_delta) + 1 < i64::from(h.record_count) {
        return Err(BatchError::Corrupt(format!(
            "batch declares {} records but covers only {} offsets",
            h.record_count,
            i64::from(h.last_offset_delta) + 1
        )));
    }
    Ok(h)
}

/// Rewrite fields not covered by the CRC, in place (the leader assigns offsets and stamps its epoch).
///
/// `buf` must start with a batch header (at least 8 bytes); shorter input panics, so validate first.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the appending leader's epoch, in place and without touching the CRC (the field is not
/// covered). `buf` must hold at least the first 16 header bytes; shorter input panics.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchHeader {
        BatchHeader {
            base_offset: 0x0102_0304_0506_0708,
            batch_length: 49,
            partition_leader_epoch: 7,
            magic: MAGIC_V2,
            crc: 0xdead_beef,
            attributes: 0x12,
            last_offset_delta: 4,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_500,
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 100,
            record_count: 5,
        }
    }

    #[test]
    fn header_encode_and_parse_are_inverse_at_kafka_field_positions() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(BatchHeader::parse(&bytes), Ok(h));
        assert_eq!(bytes[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes[16], 2, "magic sits at byte 16");
        assert_eq!(
            bytes[17..21],
            [0xde, 0xad, 0xbe, 0xef],
            "CRC sits at bytes 17..21"
        );
        assert_eq!(bytes[57..61], [0, 0, 0, 5], "record count ends the header");
    }

    #[test]
    fn offsets_and_attribute_flags_derive_from_the_header() {
        let h = sample();
        assert_eq!(h.total_len(), 61);
        assert_eq!(h.last_offset(), h.base_offset + 4);
        assert_eq!(h.next_offset(), h.base_offset + 5);
        assert_eq!(h.compression(), Ok(Compression::Snappy));
        assert!(h.is_transactional());
        assert!(!h.is_control());
        assert!(!h.is_log_append_time());
    }

    #[test]
    fn parse_refuses_fewer_than_61_bytes() {
        assert_eq!(
            BatchHeader::parse(&[0; 60]),
            Err(BatchError::TooShort { need: 61, have: 60 })
        );
    }

    #[test]
    fn validate_refuses_a_batch_length_below_the_header() {
        let mut h = sample();
        h.batch_length = -5;
        let mut bytes = h.encode();
        let crc = compute_crc(&bytes);
        store_crc(&mut bytes, crc);
        assert!(matches!(validate(&bytes), Err(BatchError::Corrupt(_))));
    }
}
