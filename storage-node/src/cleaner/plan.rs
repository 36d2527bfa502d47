//! What key compaction keeps of a section of a log: a pure function of its batches, tested
//! against a model. A record stays when it is the section's last record of its key, unless
//! it is a tombstone (no value) older than `delete.retention.ms`; records without a key (written
//! before the topic became compacted: produce refuses them now) stay. The last batch of
//! each idempotent producer stays whole, so a restarted leader still finds the producer's
//! last sequence. Kept records keep their offsets; each batch keeps the offsets it covers.

use std::collections::HashMap;

use bytes::Bytes;
use sluice_proto::batch::{self, BatchError, BatchHeader};
use sluice_proto::model::Offset;

/// The cleaning rules of one pass.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// Now, in ms since the Unix epoch.
    pub now_ms: i64,
}

/// What the cleaner learns of a section in its first pass: each key's last offset and where
/// each producer's last batch starts. Only keys are held, so a large section fits.
#[derive(Debug, Default)]
pub struct OffsetMap {
    latest: HashMap<Bytes, Offset>,
    last_of_producer: HashMap<i64, Offset>,
}

impl OffsetMap {
    /// Takes in the next batches of the section, in order.
    pub fn add(&mut self, batches: &[Bytes]) -> Result<(), BatchError> {
        for b in batches {
            let h = BatchHeader::parse(b)?;
            if h.producer_id >= 0 {
                self.last_of_producer.insert(h.producer_id, h.base_offset);
            }
            for r in batch::decode_records_shared(b)? {
                if let Some(k) = r.key {
                    self.latest.insert(k, r.offset);
                }
            }
        }
        Ok(())
    }

    /// Keys seen.
    pub fn keys(&self) -> usize {
        self.latest.len()
    }

    /// The cleaned form of `batches`, a run of the section this map has seen whole.
    pub fn clean(&self, batches: &[Bytes], rules: &Rules) -> Result<Vec<Bytes>, BatchError> {
        let horizon = rules
            .now_ms
            .saturating_sub(i64::try_from(rules.delete_retention_ms).unwrap_or(i64::MAX));
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let h = BatchHeader::parse(b)?;
            if h.producer_id >= 0
                && self.last_of_producer.get(&h.producer_id) == Some(&h.base_offset)
            {
                out.push(b.clone());
                continue;
            }
            let kept = batch::retain_records(b, |r| match &r.key {
                None => true,
                Some(k) => {
                    self.latest.get(k) == Some(&r.offset)
                        && (r.value.is_some() || r.timestamp_ms >= horizon)
                }
            })?;
            out.extend(kept);
        }
        Ok(out)
    }
}

/// The cleaned batches of `batches` (a whole section of a log, in order).
pub fn clean(batches: &[Bytes], rules: &Rules) -> Result<Vec<Bytes>, BatchError> {
    let mut map = OffsetMap::default();
    map.add(batches)?;
    map.clean(batches, rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_proto::batch::{BatchBuilder, Compression, Record, decode_records};
    use std::collections::BTreeMap;

    /// One record of a generated log: key index, value (None: tombstone), timestamp.
    type Gen = (u8, Option<u8>, i64);

    fn build(records: &[Gen], splits: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = 0i64;
        let mut rest = records;
        let mut cuts = splits.iter().cycle();
        while !rest.is_empty() {
            let n = (*cuts.next().unwrap()).clamp(1, rest.len());
            let (now, later) = rest.split_at(n);
            let mut b = BatchBuilder::new(Compression::None);
            for (k, v, ts) in now {
                b.push(&Record {
                    key: Some(Bytes::from(vec![*k])),
                    value: v.map(|v| Bytes::from(vec![v])),
                    headers: vec![],
                    timestamp_ms: *ts,
                });
            }
            out.push(b.finish(offset).unwrap());
            offset += n as i64;
            rest = later;
        }
        out
    }

    proptest! {
        #[test]
        fn the_cleaned_log_is_the_last_value_of_each_key(
            records in proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, any::<u8>()), 0i64..1000), 1..80),
            splits in proptest::collection::vec(1usize..7, 1..5),
            now in 0i64..2000,
            retention in 0u64..1500,
        ) {
            let batches = build(&records, &splits);
            let cleaned = clean(&batches, &Rules { delete_retention_ms: retention, now_ms: now }).unwrap();
            // The model: each key's last record, without tombstones past the horizon.
            let mut model: BTreeMap<i64, (u8, Option<u8>)> = BTreeMap::new();
            let mut last: BTreeMap<u8, usize> = BTreeMap::new();
            for (i, (k, _, _)) in records.iter().enumerate() {
                last.insert(*k, i);
            }
            for (k, i) in last {
                let (_, v, ts) = records[i];
                if v.is_some() || ts >= now - retention as i64 {
                    model.insert(i as i64, (k, v));
                }
            }
            let mut got: BTreeMap<i64, (u8, Option<u8>)> = BTreeMap::new();
            for b in &cleaned {
                for r in decode_records(b).unwrap() {
                    let k = r.key.unwrap()[0];
                    let v = r.value.map(|v| v[0]);
                    let (rk, rv, _) = records[r.offset as usize];
                    prop_assert_eq!((k, v), (rk, rv), "offsets keep their records");
                    got.insert(r.offset, (k, v));
                }
            }
            prop_assert_eq!(got, model);
            // Every output batch covers exactly the offsets of an input batch.
            let ranges: Vec<(i64, i64)> = batches.iter().map(|b| { let h = BatchHeader::parse(b).unwrap(); (h.base_offset, h.next_offset()) }).collect();
            for b in &cleaned {
                let h = BatchHeader::parse(b).unwrap();
                prop_assert!(ranges.contains(&(h.base_offset, h.next_offset())));
            }
        }
    }

    #[test]
    fn the_last_batch_of_each_producer_stays_whole_and_keyless_records_stay() {
        let mut a = BatchBuilder::new(Compression::None).with_producer(9, 0, 0);
        for v in ["a", "b"] {
            a.push(&Record {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from(v)),
                headers: vec![],
                timestamp_ms: 1,
            });
        }
        let mut c = BatchBuilder::new(Compression::None);
        c.push(&Record {
            key: None,
            value: Some(Bytes::from_static(b"x")),
            headers: vec![],
            timestamp_ms: 1,
        });
        c.push(&Record {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"c")),
            headers: vec![],
            timestamp_ms: 1,
        });
        let batches = vec![a.finish(0).unwrap(), c.finish(2).unwrap()];
        let out = clean(
            &batches,
            &Rules {
                delete_retention_ms: 0,
                now_ms: 10,
            },
        )
        .unwrap();
        assert_eq!(
            out[0], batches[0],
            "the producer's last batch, superseded records and all"
        );
        assert_eq!(out[1], batches[1]);
    }
}
