//! Reusable buffers for segment reads. A consumer reading a backlog makes the node read up to
//! `max_bytes` (MiBs) per partition per fetch; a fresh buffer each time is zeroed, then freed on
//! another thread once the response is encoded, and glibc keeps freed memory in its arenas, so
//! fresh buffers per read leave large freed ones behind and swell the node's RSS. Buffers that
//! come back are handed out again instead, up to a fixed total.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Reads smaller than this are not pooled: the allocator serves them well as they are.
const MIN_POOLED: usize = 64 << 10;
/// Pooled buffers are sized in steps of this, so reads of slightly different sizes share them.
const STEP: usize = 1 << 20;

/// Free read buffers, at most `max_kept_bytes` of them.
pub struct ReadBuffers {
    free: Mutex<Free>,
    max_kept_bytes: usize,
}

#[derive(Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// A read's bytes in a pooled buffer; the buffer goes back to its pool when the last
/// [`Bytes`] slice of it is dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl ReadBuffers {
    /// A pool that keeps at most `max_kept_bytes` of free buffers.
    pub fn new(max_kept_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Free::default()),
            max_kept_bytes,
        })
    }

    /// Fills `len` bytes with `fill` (which gets exactly `len` bytes to overwrite) and returns
    /// them; large reads use a pooled buffer, returned when the result is dropped.
    pub fn read<E>(
        self: &Arc<Self>,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Bytes, E> {
        if len < MIN_POOLED {
            let mut buf = vec![0u8; len];
            fill(&mut buf)?;
            return Ok(Bytes::from(buf));
        }
        let mut buf = self.take(len);
        if let Err(e) = fill(&mut buf[..len]) {
            self.give_back(buf);
            return Err(e);
        }
        Ok(Bytes::from_owner(Pooled {
            buf,
            len,
            pool: self.clone(),
        }))
    }

    /// Free bytes the pool holds now.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.free.lock().unwrap().bytes
    }

    /// The smallest free buffer that holds `len` bytes, else a new one (rounded up to a step).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap();
        let best = (free.buffers.iter().enumerate())
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let buf = free.buffers.swap_remove(i);
            free.bytes -= buf.len();
            return buf;
        }
        drop(free);
        vec![0u8; len.div_ceil(STEP) * STEP]
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap();
        if free.bytes + buf.len() <= self.max_kept_bytes {
            free.bytes += buf.len();
            free.buffers.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_with(byte: u8) -> impl FnOnce(&mut [u8]) -> Result<(), ()> {
        move |b| {
            b.fill(byte);
            Ok(())
        }
    }

    #[test]
    fn a_dropped_read_lends_its_buffer_to_the_next_and_the_bytes_are_the_reads_own() {
        let pool = ReadBuffers::new(8 << 20);
        let first = pool.read(3 << 20, fill_with(1)).unwrap();
        assert_eq!(first.len(), 3 << 20);
        assert_eq!(pool.kept_bytes(), 0);
        let slice = first.slice(10..20);
        drop(first);
        assert_eq!(pool.kept_bytes(), 0, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(pool.kept_bytes(), 3 << 20);
        let second = pool.read((2 << 20) + 5, fill_with(2)).unwrap();
        assert_eq!(pool.kept_bytes(), 0, "the free buffer was reused");
        assert_eq!(second.len(), (2 << 20) + 5);
        assert!(second.iter().all(|&b| b == 2));
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_cap_small_reads_skip_it_and_failed_ones_give_back() {
        let pool = ReadBuffers::new(4 << 20);
        let reads: Vec<Bytes> = (0..3)
            .map(|_| pool.read(2 << 20, fill_with(0)).unwrap())
            .collect();
        drop(reads);
        assert_eq!(pool.kept_bytes(), 4 << 20);
        let small = pool.read(100, fill_with(3)).unwrap();
        assert_eq!(&small[..], &[3u8; 100][..]);
        assert_eq!(pool.kept_bytes(), 4 << 20);
        let failed: Result<Bytes, &str> = pool.read(1 << 20, |_| Err("disk"));
        assert_eq!(failed.unwrap_err(), "disk");
        assert_eq!(
            pool.kept_bytes(),
            4 << 20,
            "the failed read's buffer came back"
        );
    }
}
