//! Kafka's zigzag varints (LEB128, at most 5 bytes for 32 bits, 10 for 64) and a bounds-checked
//! cursor over record bytes. Every read checks the remaining length, so arbitrary input yields an
//! error message, never a panic.

/// Bytes `put_varint` writes for `v`.
pub(crate) fn varint_len(v: i32) -> usize {
    varlong_len(i64::from(v))
}

/// Bytes `put_varlong` writes for `v`.
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = zigzag64(v);
    // One byte per started group of 7 significant bits; zero still takes one byte.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Zigzag-encodes `v` so that small negative numbers stay short. A 32-bit value encoded through
/// 64 bits gives the same bytes as Kafka's 32-bit varint, because both zigzags agree on i32 range.
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag64(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A cursor over one record section. Failures are plain strings; the caller adds which record and
/// what to do, because only it knows.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn read_i8(&mut self, what: &str) -> Result<i8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| format!("{what} runs past the end of the record"))?;
        self.pos += 1;
        Ok(b as i8)
    }

    /// Reads a 32-bit zigzag varint. Like Kafka's reader, bits above 32 in the fifth byte are
    /// dropped, but a sixth byte is refused.
    pub(crate) fn read_varint(&mut self, what: &str) -> Result<i32, String> {
        let z = self.read_leb128(5, what)?;
        let z = z as u32;
        Ok(((z >> 1) as i32) ^ -((z & 1) as i32))
    }

    /// Reads a 64-bit zigzag varint of at most 10 bytes.
    pub(crate) fn read_varlong(&mut self, what: &str) -> Result<i64, String> {
        Ok(unzigzag64(self.read_leb128(10, what)?))
    }

    fn read_leb128(&mut self, max_bytes: usize, what: &str) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("{what} (a varint) runs past the end of the record"))?;
            self.pos += 1;
            // checked_shl cannot fail (i * 7 <= 63), and bits shifted out are dropped on purpose.
            value |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("{what} is a varint longer than {max_bytes} bytes"))
    }

    /// Takes the next `len` bytes and returns their position in the buffer, so the caller can
    /// slice a shared `Bytes` without copying.
    pub(crate) fn take(
        &mut self,
        len: usize,
        what: &str,
    ) -> Result<std::ops::Range<usize>, String> {
        if len > self.remaining() {
            return Err(format!(
                "{what} claims {len} bytes but only {} remain",
                self.remaining()
            ));
        }
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }

    /// Reads a length or count that may not be null: any negative value is corrupt.
    pub(crate) fn read_len(&mut self, what: &str) -> Result<usize, String> {
        match self.read_varint(what)? {
            n if n < 0 => Err(format!("{what} is {n}; it must be 0 or more")),
            n => Ok(n as usize),
        }
    }

    /// Reads a nullable length prefix: -1 means null (`None`), other negative values are corrupt.
    pub(crate) fn read_nullable_len(&mut self, what: &str) -> Result<Option<usize>, String> {
        match self.read_varint(what)? {
            -1 => Ok(None),
            n if n < 0 => Err(format!("{what} is {n}; it must be -1 (null) or more")),
            n => Ok(Some(n as usize)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode32(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varints_match_kafka_zigzag_bytes() {
        // Values and encodings as in Kafka's ByteUtils tests.
        assert_eq!(encode32(0), [0x00]);
        assert_eq!(encode32(-1), [0x01]);
        assert_eq!(encode32(1), [0x02]);
        assert_eq!(encode32(63), [0x7e]);
        assert_eq!(encode32(-64), [0x7f]);
        assert_eq!(encode32(64), [0x80, 0x01]);
        assert_eq!(encode32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(encode32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn varint_round_trips_at_the_edges_and_lengths_are_exact() {
        for v in [0, 1, -1, 63, -64, 64, -65, 8191, 8192, i32::MAX, i32::MIN] {
            let bytes = encode32(v);
            assert_eq!(bytes.len(), varint_len(v), "{v}");
            assert_eq!(Reader::new(&bytes).read_varint("x").unwrap(), v);
        }
        for v in [0, -1, i64::from(i32::MAX) + 1, i64::MAX, i64::MIN] {
            let mut bytes = Vec::new();
            put_varlong(&mut bytes, v);
            assert_eq!(bytes.len(), varlong_len(v), "{v}");
            assert_eq!(Reader::new(&bytes).read_varlong("x").unwrap(), v);
        }
    }

    #[test]
    fn truncated_or_overlong_varints_are_errors() {
        assert!(Reader::new(&[0x80]).read_varint("key length").is_err());
        assert!(Reader::new(&[0xff; 6]).read_varint("key length").is_err());
        assert!(Reader::new(&[0xff; 11]).read_varlong("timestamp").is_err());
        assert!(
            Reader::new(&[0x03])
                .read_nullable_len("key length")
                .is_err()
        );
        assert!(Reader::new(&[0x01]).read_len("header key length").is_err());
        assert!(Reader::new(&[1, 2]).take(3, "value").is_err());
    }
}
