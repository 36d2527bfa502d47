//! The five codecs of attributes bits 0-2, in the exact framings Kafka clients read and write:
//! gzip (RFC 1952, concatenated members accepted), snappy (xerial framing as the Java client
//! writes it; raw snappy as librdkafka writes it is accepted too), lz4 (the LZ4 *frame* format),
//! zstd (frames). Decompression is capped at [`MAX_DECOMPRESSED_LEN`] against zip bombs.

use std::fmt;
use std::io::{Read, Write};

use super::BatchError;

/// Largest decompressed record section accepted (64 MiB). A batch that inflates beyond this is
/// refused rather than allowed to exhaust memory; producers never build larger ones.
pub const MAX_DECOMPRESSED_LEN: usize = 64 << 20;

/// The codec of a batch's records, from attributes bits 0-2; also a topic and producer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// gzip (codec 1).
    Gzip,
    /// snappy (codec 2).
    Snappy,
    /// LZ4 frame format (codec 3).
    Lz4,
    /// zstd (codec 4).
    Zstd,
}

/// Bits 0-2 of the batch attributes.
const CODEC_MASK: i16 = 0x07;
/// zstd level Kafka's producer uses by default.
const ZSTD_LEVEL: i32 = 3;
/// Header of snappy-java's stream format: magic, then version 1 and minimum compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block, snappy-java's default.
const XERIAL_BLOCK: usize = 32 * 1024;

impl Compression {
    /// Reads the codec from batch attributes; codecs 5-7 are refused with the codec number.
    pub fn from_attributes(attr: i16) -> Result<Self, BatchError> {
        match attr & CODEC_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    /// The attribute bits (0-2) that select this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// Parses a config value ("none", "gzip", "snappy", "lz4", "zstd"; ASCII case ignored).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::None, Self::Gzip, Self::Snappy, Self::Lz4, Self::Zstd]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }

    /// The config name of this codec, as `parse` accepts it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends `data` compressed with `codec` to `out` (`None` copies it).
pub(crate) fn compress(
    codec: Compression,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let fail = |e: &dyn fmt::Display| {
        BatchError::Compression(format!(
            "cannot {codec}-compress {} bytes of records: {e}; retry with another codec",
            data.len()
        ))
    };
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(data).map_err(|e| fail(&e))?;
            enc.finish().map_err(|e| fail(&e))?;
        }
        Compression::Snappy => snappy_xerial_compress(data, out).map_err(|e| fail(&e))?,
        Compression::Lz4 => {
            // Independent 64 KiB blocks and no content checksum: what Kafka's own LZ4 stream
            // writes and every Kafka LZ4 reader accepts.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(data).map_err(|e| fail(&e))?;
            enc.finish().map_err(|e| fail(&e))?;
        }
        Compression::Zstd => {
            zstd::stream::copy_encode(data, out, ZSTD_LEVEL).map_err(|e| fail(&e))?
        }
    }
    Ok(())
}

/// Decompresses a record section, refusing output beyond `limit` bytes.
pub(crate) fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let fail = |e: &dyn fmt::Display| {
        BatchError::Compression(format!(
            "cannot decompress {codec} records: {e}; the batch is corrupt, re-send it"
        ))
    };
    let mut out = Vec::new();
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), limit, &mut out)
            .map_err(|e| fail(&e))?,
        Compression::Snappy => snappy_decompress(data, limit, &mut out).map_err(|e| fail(&e))?,
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), limit, &mut out)
            .map_err(|e| fail(&e))?,
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| fail(&e))?;
            read_capped(dec, limit, &mut out).map_err(|e| fail(&e))?
        }
    }
    if out.len() > limit {
        return Err(too_big(codec, limit));
    }
    Ok(out)
}

fn too_big(codec: Compression, limit: usize) -> BatchError {
    BatchError::Compression(format!(
        "{codec} records inflate to more than {limit} bytes, the most a batch may hold; \
         send smaller batches (lower the producer's batch size)"
    ))
}

/// Reads at most `limit + 1` bytes, so that an over-limit stream is detected without reading it
/// all.
fn read_capped(r: impl Read, limit: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    r.take(limit as u64 + 1).read_to_end(out).map(drop)
}

/// snappy-java's stream format: 16-byte header, then blocks of `[u32 BE length][raw snappy]`.
fn snappy_xerial_compress(data: &[u8], out: &mut Vec<u8>) -> Result<(), snap::Error> {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut enc = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let len_at = out.len();
        out.resize(len_at + 4 + snap::raw::max_compress_len(chunk.len()), 0);
        let n = enc.compress(chunk, &mut out[len_at + 4..])?;
        out.truncate(len_at + 4 + n);
        // n <= max_compress_len(32 KiB), far below u32::MAX.
        out[len_at..len_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
    }
    Ok(())
}

/// Accepts both xerial-framed snappy (Java client) and one raw snappy block (librdkafka), told
/// apart by the xerial magic as Kafka's own reader does.
fn snappy_decompress(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let mut dec = snap::raw::Decoder::new();
    let mut append = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if out.len() + n > limit {
            return Err(format!("snappy records inflate to more than {limit} bytes"));
        }
        let start = out.len();
        out.resize(start + n, 0);
        let written = dec
            .decompress(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + written);
        Ok(())
    };
    if !data.starts_with(&XERIAL_MAGIC) {
        return append(data, out);
    }
    if data.len() < XERIAL_HEADER_LEN {
        return Err("xerial snappy header is truncated".into());
    }
    let mut rest = &data[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        let (len, tail) = match rest.split_first_chunk::<4>() {
            Some((len, tail)) => (u32::from_be_bytes(*len) as usize, tail),
            None => return Err("xerial snappy block length is truncated".into()),
        };
        if len > tail.len() {
            return Err(format!(
                "xerial snappy block claims {len} bytes but only {} remain",
                tail.len()
            ));
        }
        append(&tail[..len], out)?;
        rest = &tail[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn names_and_attribute_bits_round_trip() {
        for c in ALL {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
            assert_eq!(Compression::from_attributes(c.attribute_bits()), Ok(c));
            // Other attribute bits (timestamp type, transactional, control) do not matter.
            assert_eq!(
                Compression::from_attributes(0x38 | c.attribute_bits()),
                Ok(c)
            );
        }
        assert_eq!(Compression::parse("GZIP"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("brotli"), None);
        assert_eq!(
            Compression::from_attributes(0x0d),
            Err(BatchError::UnknownCompression(5))
        );
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_multi_block_data() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in ALL {
            for data in [&b""[..], b"hello hello hello", &big] {
                let mut packed = Vec::new();
                compress(c, data, &mut packed).unwrap();
                let unpacked = decompress(c, &packed, MAX_DECOMPRESSED_LEN).unwrap();
                assert_eq!(unpacked, data, "{c}");
            }
        }
    }

    #[test]
    fn snappy_is_written_xerial_framed_and_raw_snappy_is_accepted() {
        let data = vec![7u8; 100_000];
        let mut framed = Vec::new();
        compress(Compression::Snappy, &data, &mut framed).unwrap();
        assert!(framed.starts_with(&XERIAL_MAGIC));
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let unpacked = decompress(Compression::Snappy, &raw, MAX_DECOMPRESSED_LEN).unwrap();
        assert_eq!(unpacked, data);
    }

    #[test]
    fn output_over_the_cap_is_refused_for_every_codec() {
        let data = vec![0u8; 10_000];
        for c in ALL {
            let mut packed = Vec::new();
            compress(c, &data, &mut packed).unwrap();
            let err = decompress(c, &packed, 9_999).unwrap_err();
            assert!(matches!(err, BatchError::Compression(_)), "{c}: {err}");
            assert!(decompress(c, &packed, 10_000).is_ok(), "{c}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in ALL.into_iter().skip(1) {
            for data in [
                &b""[..],
                b"\x00",
                b"\xff\xff\xff\xff\xff",
                &XERIAL_MAGIC,
                b"garbage!!",
            ] {
                // Some codecs legitimately decode empty input to nothing; only panics matter.
                let _ = decompress(c, data, 1 << 20);
            }
        }
        let mut bad_block = XERIAL_MAGIC.to_vec();
        bad_block.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1]);
        assert!(decompress(Compression::Snappy, &bad_block, 1 << 20).is_err());
    }
}
