//! Why a batch was refused. Messages reach users (through `CORRUPT_BATCH`), so each one says what is
//! wrong and what to do about it.

use crate::error::ApiError;
use crate::pb::ErrorCode;

/// A record batch that cannot be accepted or decoded; callers branch on the variant (for example
/// the storage node counts CRC failures separately) and show the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the fixed header or the declared length needs.
    #[error(
        "record batch is truncated: need at least {need} bytes, have {have}; send whole batches only"
    )]
    TooShort {
        /// Bytes needed to go on.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The batch length field disagrees with the bytes given.
    #[error(
        "record batch length field says {declared} bytes but {actual} were given: the batch is \
         truncated or has trailing bytes; send exactly one whole batch"
    )]
    LengthMismatch {
        /// Total length implied by the header (`batchLength + 12`).
        declared: usize,
        /// Bytes actually given.
        actual: usize,
    },
    /// Not a v2 batch (an old message-set format or not a batch at all).
    #[error(
        "unsupported record batch magic {0} (expected 2): only Kafka's v2 record batch format \
         (Kafka 0.11 and later) is accepted; upgrade the client or re-encode the batch"
    )]
    BadMagic(i8),
    /// The CRC-32C over attributes..end does not match the stored one.
    #[error(
        "record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x}): the batch \
         was corrupted in transit or on disk; re-send it"
    )]
    CrcMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Compression bits 5, 6 or 7, which no Kafka version defines (carries the codec bits).
    #[error(
        "unknown compression codec {0} in record batch attributes: supported codecs are none, \
         gzip, snappy, lz4 and zstd; configure the producer with one of them"
    )]
    UnknownCompression(i16),
    /// Compressing or decompressing the records failed (bad data or over the size cap).
    #[error("record batch compression error: {0}")]
    Compression(String),
    /// Header or record fields are inconsistent or malformed.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A record without a key sent to a compacted topic, which keeps each key's last record
    /// (Kafka refuses these too).
    #[error(
        "record {0} of the batch has no key, but the topic is compacted (cleanup.policy=compact) \
         and keeps each key's last record: give every record a key"
    )]
    MissingKey(usize),
}

/// Every batch error is the sender's problem: the batch as sent cannot be stored or read
/// (`CORRUPT_BATCH`), or, for a keyless record on a compacted topic, not there
/// (`INVALID_REQUEST`).
impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let code = match e {
            BatchError::MissingKey(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::CorruptBatch,
        };
        ApiError::new(code, e.to_string())
    }
}
