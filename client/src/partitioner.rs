//! Which partition a record goes to. Keyed records use Kafka's default partitioner exactly
//! (`toPositive(murmur2(key)) % partitions`), so Sluice and Kafka clients agree on where a key
//! lives; records without a key stick to one partition until its batch is sent, which fills
//! batches instead of scattering tiny ones (Kafka's sticky partitioner, KIP-480).

use std::collections::HashMap;

use rand::Rng;

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed `0x9747b28c`, with Kafka's tail handling.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner picks for a non-null key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    to_positive(murmur2(key)) % partitions
}

/// Sticky partition per topic for records without a key. The producer's accumulator reports
/// each batch it closes; closing the sticky partition's batch moves the topic to another one.
#[derive(Debug, Default)]
pub(crate) struct StickyPartitioner {
    /// Current sticky partition, and the partition count it was chosen among.
    current: HashMap<String, (i32, i32)>,
    /// The partition whose closed batch ended the last stickiness, avoided by the next choice.
    previous: HashMap<String, i32>,
}

impl StickyPartitioner {
    /// The partition for the next keyless record of `topic`.
    pub(crate) fn partition(&mut self, topic: &str, partitions: i32, rng: &mut impl Rng) -> i32 {
        if let Some(&(p, n)) = self.current.get(topic)
            && n == partitions
        {
            return p;
        }
        let avoid = self.previous.get(topic).copied();
        let p = choose_other(partitions, avoid, rng);
        self.current.insert(topic.to_string(), (p, partitions));
        p
    }

    /// A batch of `topic`/`partition` was closed (full, or taken for sending): if it was the
    /// sticky one, the next keyless record starts a batch elsewhere.
    pub(crate) fn on_batch_closed(&mut self, topic: &str, partition: i32) {
        if let Some(&(p, _)) = self.current.get(topic)
            && p == partition
        {
            self.current.remove(topic);
            self.previous.insert(topic.to_string(), partition);
        }
    }

    /// The sticky partition of `topic`, if one is chosen.
    #[cfg(test)]
    pub(crate) fn current(&self, topic: &str) -> Option<i32> {
        self.current.get(topic).map(|&(p, _)| p)
    }
}

/// A random partition in `0..partitions`, other than `avoid` when there is a choice.
fn choose_other(partitions: i32, avoid: Option<i32>, rng: &mut impl Rng) -> i32 {
    match avoid {
        Some(a) if partitions > 1 && (0..partitions).contains(&a) => {
            let p = rng.random_range(0..partitions - 1);
            if p >= a { p + 1 } else { p }
        }
        _ => rng.random_range(0..partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()), *want, "murmur2({input:?})");
        }
    }

    #[test]
    fn keyed_partition_is_positive_and_stable() {
        // toPositive, not abs: a negative hash keeps its low 31 bits.
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        let p = partition_for_key(b"foobar", 10);
        assert_eq!(p, to_positive(-790_332_482) % 10);
        for n in 1..50 {
            let p = partition_for_key(b"some key", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_key(b"some key", n));
        }
    }

    #[test]
    fn keyless_records_stick_to_one_partition_until_its_batch_closes() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = StickyPartitioner::default();
        let first = s.partition("t", 8, &mut rng);
        for _ in 0..100 {
            assert_eq!(s.partition("t", 8, &mut rng), first);
        }
        // Closing some other partition's batch changes nothing.
        s.on_batch_closed("t", (first + 1) % 8);
        assert_eq!(s.partition("t", 8, &mut rng), first);
        // Closing the sticky batch moves on, never to the partition just closed.
        for _ in 0..50 {
            let cur = s.partition("t", 8, &mut rng);
            s.on_batch_closed("t", cur);
            let next = s.partition("t", 8, &mut rng);
            assert_ne!(next, cur);
            assert!((0..8).contains(&next));
        }
    }

    #[test]
    fn sticky_choice_spreads_over_partitions_and_handles_one_partition() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = StickyPartitioner::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = s.partition("t", 4, &mut rng);
            seen.insert(p);
            s.on_batch_closed("t", p);
        }
        assert_eq!(seen.len(), 4);
        let p = s.partition("one", 1, &mut rng);
        s.on_batch_closed("one", p);
        assert_eq!(s.partition("one", 1, &mut rng), 0);
    }

    #[test]
    fn sticky_partition_is_rechosen_when_the_partition_count_changes() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = StickyPartitioner::default();
        let _ = s.partition("t", 1, &mut rng);
        assert_eq!(s.current("t"), Some(0));
        for _ in 0..20 {
            let p = s.partition("t", 3, &mut rng);
            assert!((0..3).contains(&p));
        }
    }
}
