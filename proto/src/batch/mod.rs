//! Record batches in Kafka's v2 layout (magic 2), the unit Sluice stores, replicates and serves.
//!
//! Our own codec rather than a full Kafka protocol crate because the two hot paths never decode
//! records: the storage node validates a produced batch ([`validate`]) and rewrites its offset and
//! leader epoch in place ([`set_base_offset`], [`set_partition_leader_epoch`], both outside the
//! CRC), and the fetch path returns stored bytes as they are. Only clients (and structured
//! produce) build ([`BatchBuilder`]) and decode ([`decode_records`], [`BatchIter`]) records.
//!
//! Layout, big-endian: baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 (CRC-32C of the rest) | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 |
//! records (compressed as one block when attributes say so).
//!
//! Decoding never panics on arbitrary input: every length is bounds-checked, allocations are
//! bounded by the input size, and decompression stops at [`MAX_DECOMPRESSED_LEN`].

mod builder;
mod compact;
mod compression;
mod error;
mod header;
mod iter;
mod records;
mod varint;

pub use builder::BatchBuilder;
pub use compact::retain_records;
pub use compression::{Compression, MAX_DECOMPRESSED_LEN};
pub use error::BatchError;
pub use header::{
    BATCH_HEADER_LEN, BatchHeader, MAGIC_V2, set_base_offset, set_partition_leader_epoch, validate,
    validate_stored,
};
pub use iter::BatchIter;
pub use records::{
    DecodedRecord, Record, decode_records, decode_records_shared, validate_records,
    validate_records_keyed,
};

#[cfg(test)]
mod tests;
