//! Splitting a buffer of concatenated batches (a fetch response, a log segment read) into whole
//! batches, as shared slices of the input.

use bytes::Bytes;

use super::BatchError;
use super::header::{BATCH_HEADER_LEN, BatchHeader, MAGIC_V2};

/// Iterates whole batches in a buffer of concatenated batches (what Fetch returns); a trailing
/// partial batch ends iteration without error; zero-copy slices of the input.
///
/// Only the header is checked (magic and length); call `validate` or `decode_records` on each
/// batch for the CRC. After an error the iterator is exhausted, since the next batch's start is
/// unknown.
#[derive(Debug, Clone)]
pub struct BatchIter {
    buf: Bytes,
    failed: bool,
}

impl BatchIter {
    /// Iterates over `buf`, starting at its first byte.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, failed: false }
    }

    /// Bytes not yet returned: a trailing partial batch once iteration has ended.
    pub fn remaining(&self) -> &Bytes {
        &self.buf
    }

    fn fail(&mut self, e: BatchError) -> Option<Result<(BatchHeader, Bytes), BatchError>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl Iterator for BatchIter {
    type Item = Result<(BatchHeader, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.len() < BATCH_HEADER_LEN {
            return None;
        }
        let header = match BatchHeader::parse(&self.buf) {
            Ok(h) => h,
            Err(e) => return self.fail(e),
        };
        if header.magic != MAGIC_V2 {
            return self.fail(BatchError::BadMagic(header.magic));
        }
        let total = header.total_len();
        if total < BATCH_HEADER_LEN {
            return self.fail(BatchError::Corrupt(format!(
                "batch at this position declares length {}, below the 61-byte header; \
                 the fetched data is corrupt, fetch again",
                header.batch_length
            )));
        }
        if total > self.buf.len() {
            // Fetch responses may end with a cut batch; the next fetch starts at it.
            return None;
        }
        Some(Ok((header, self.buf.split_to(total))))
    }
}
