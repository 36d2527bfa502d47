//! Incompressible keys and values without a per-record allocation, and the send-time stamp the
//! latency workload carries in each value.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use rand::{RngCore, SeedableRng, rngs::StdRng};

/// Size of the random pool values are cut from: far larger than any batch, so no batch holds the
/// same bytes twice and compression finds nothing to squeeze.
const POOL: usize = 32 * 1024 * 1024;

/// Hands out keys and values as zero-copy slices of one random pool, walking it in order.
#[derive(Debug, Clone)]
pub struct Payloads {
    pool: Bytes,
    value_size: usize,
    key_size: usize,
    cursor: usize,
}

impl Payloads {
    /// A pool seeded by `seed`, so two runs with the same seed send the same bytes.
    pub fn new(value_size: usize, key_size: usize, seed: u64) -> Self {
        let len = POOL.max(2 * (value_size + key_size));
        let mut pool = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut pool);
        Self {
            pool: Bytes::from(pool),
            value_size,
            key_size,
            cursor: 0,
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        if self.cursor + n > self.pool.len() {
            self.cursor = 0;
        }
        let b = self.pool.slice(self.cursor..self.cursor + n);
        self.cursor += n;
        b
    }

    /// The next random key (`key_size` bytes; empty when keys are off).
    pub fn key(&mut self) -> Bytes {
        let n = self.key_size;
        self.take(n)
    }

    /// The next random value.
    pub fn value(&mut self) -> Bytes {
        let n = self.value_size;
        self.take(n)
    }

    /// A random value whose first 8 bytes are `stamp_ns` (big-endian), for latency runs.
    pub fn stamped_value(&mut self, stamp_ns: u64) -> Bytes {
        let rest = self.take(self.value_size.saturating_sub(8));
        let mut v = BytesMut::with_capacity(self.value_size);
        v.put_u64(stamp_ns);
        v.extend_from_slice(&rest);
        v.freeze()
    }
}

/// Wall-clock nanoseconds since the Unix epoch: producer and consumer share the host clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The send stamp of a latency-run value, `None` for a value too short to carry one.
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    value
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_distinct_sized_and_do_not_compress() {
        let mut p = Payloads::new(1024, 16, 7);
        let a = p.value();
        let b = p.value();
        assert_eq!(a.len(), 1024);
        assert_eq!(p.key().len(), 16);
        assert_ne!(a, b);
        let mut batch = Vec::new();
        for _ in 0..256 {
            batch.extend_from_slice(&p.value());
        }
        let packed = zstd_len(&batch);
        assert!(
            packed as f64 > 0.99 * batch.len() as f64,
            "random values must not compress: {packed} of {}",
            batch.len()
        );
    }

    fn zstd_len(b: &[u8]) -> usize {
        use sluice_proto::batch::{BatchBuilder, Compression, Record};
        let mut builder = BatchBuilder::new(Compression::Zstd);
        builder.push(&Record {
            key: None,
            value: Some(Bytes::copy_from_slice(b)),
            headers: Vec::new(),
            timestamp_ms: 0,
        });
        builder.finish(0).unwrap().len()
    }

    #[test]
    fn stamp_round_trips() {
        let mut p = Payloads::new(64, 0, 1);
        let v = p.stamped_value(123_456_789);
        assert_eq!(v.len(), 64);
        assert_eq!(read_stamp(&v), Some(123_456_789));
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn wraps_around_the_pool() {
        let mut p = Payloads::new(POOL / 3, 0, 1);
        for _ in 0..10 {
            assert_eq!(p.value().len(), POOL / 3);
        }
    }
}
