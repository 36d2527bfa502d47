//! Rewriting a stored batch with some of its records removed, as key compaction does: the
//! batch keeps its base offset, last offset delta (so it covers the same offsets and the offset
//! after it stays the same), producer fields, leader epoch and codec; each kept record keeps its
//! offset and timestamp; the CRC is computed anew.

use bytes::Bytes;

use super::header::set_partition_leader_epoch;
use super::records::decode_records_shared;
use super::{BatchBuilder, BatchError, BatchHeader, DecodedRecord, Record};

/// `batch` with only the records `keep` accepts: the same bytes when it accepts all, `None`
/// when it accepts none.
pub fn retain_records(
    batch: &Bytes,
    mut keep: impl FnMut(&DecodedRecord) -> bool,
) -> Result<Option<Bytes>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let records = decode_records_shared(batch)?;
    let total = records.len();
    let kept: Vec<DecodedRecord> = records.into_iter().filter(|r| keep(r)).collect();
    if kept.len() == total {
        return Ok(Some(batch.clone()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let mut b = BatchBuilder::new(h.compression()?)
        .with_producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .with_last_offset_delta(h.last_offset_delta);
    for r in kept {
        let delta = i32::try_from(r.offset - h.base_offset).map_err(|_| {
            BatchError::Corrupt(format!("record offset {} outside its batch", r.offset))
        })?;
        let record = Record {
            key: r.key,
            value: r.value,
            headers: r.headers,
            timestamp_ms: r.timestamp_ms,
        };
        b.push_at(&record, delta);
    }
    let mut out = b.finish(h.base_offset)?.to_vec();
    set_partition_leader_epoch(&mut out, h.partition_leader_epoch);
    Ok(Some(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Compression, decode_records, validate, validate_stored};

    fn batch(codec: Compression) -> Bytes {
        let mut b = BatchBuilder::new(codec).with_producer(7, 1, 40);
        for i in 0..5 {
            b.push(&Record {
                key: Some(Bytes::from(format!("k{}", i % 2))),
                value: (i != 3).then(|| Bytes::from(format!("v{i}"))),
                headers: vec![],
                timestamp_ms: 100 + i,
            });
        }
        let mut v = b.finish(50).unwrap().to_vec();
        set_partition_leader_epoch(&mut v, 4);
        Bytes::from(v)
    }

    #[test]
    fn kept_records_keep_their_offsets_and_the_batch_its_range() {
        for codec in [Compression::None, Compression::Zstd] {
            let b = batch(codec);
            let out = retain_records(&b, |r| r.offset == 51 || r.offset == 53)
                .unwrap()
                .unwrap();
            assert!(validate(&out).is_err(), "a producer may not send it");
            let h = validate_stored(&out).unwrap();
            let orig = BatchHeader::parse(&b).unwrap();
            assert_eq!(
                (h.base_offset, h.next_offset(), h.record_count),
                (50, 55, 2)
            );
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 1, 40)
            );
            assert_eq!(h.partition_leader_epoch, orig.partition_leader_epoch);
            let rs = decode_records(&out).unwrap();
            let got: Vec<(i64, i64, Option<Bytes>)> = rs
                .into_iter()
                .map(|r| (r.offset, r.timestamp_ms, r.value))
                .collect();
            assert_eq!(
                got,
                vec![(51, 101, Some(Bytes::from("v1"))), (53, 103, None)]
            );
        }
    }

    #[test]
    fn all_kept_is_the_same_bytes_and_none_kept_is_nothing() {
        let b = batch(Compression::None);
        assert_eq!(retain_records(&b, |_| true).unwrap(), Some(b.clone()));
        assert_eq!(retain_records(&b, |_| false).unwrap(), None);
    }
}
