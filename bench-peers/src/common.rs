//! What the NATS and Redis runs share: client settings, which stream a record goes to, how the
//! records are split between producers and readers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sluice_bench::{Report, Workload};
use tokio::sync::watch;

/// Client settings of a peer run (the workload's shape is in [`Workload`]).
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Server address (`nats://…` or `redis://…`).
    pub url: String,
    /// Producer connections, each sending `count / producers` records.
    pub producers: usize,
    /// Records awaiting acknowledgement per producer (the bounded window).
    pub window: usize,
    /// Records per Redis pipeline.
    pub pipeline: usize,
    /// Records asked for per pull request (NATS) or XRANGE/XREAD (Redis).
    pub fetch: usize,
    /// JetStream stream replicas when the run creates its streams.
    pub replicas: usize,
    /// Delete and recreate the streams (NATS) or keys (Redis) before producing.
    pub fresh: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

impl PeerOptions {
    /// The settings every peer report carries, whatever the system.
    pub fn base_settings(&self, w: &Workload, report: Report) -> Report {
        report
            .setting("topic", &w.topic)
            .setting("partitions", w.partitions)
            .setting("record_size", w.record_size)
            .setting("key_size", w.key_size)
            .setting("routing", "murmur2(key) % partitions, as Sluice")
    }
}

/// Picks each record's stream with Sluice's own partitioner (Kafka's murmur2) for keyed records
/// and round robin for unkeyed ones.
#[derive(Debug)]
pub struct Router {
    partitions: u32,
    next: u32,
}

impl Router {
    /// A router over `partitions` streams.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions: partitions.max(1),
            next: 0,
        }
    }

    /// The stream index of a record with this key.
    pub fn route(&mut self, key: &[u8]) -> usize {
        if key.is_empty() {
            self.next = (self.next + 1) % self.partitions;
            return self.next as usize;
        }
        let n = i32::try_from(self.partitions).unwrap_or(i32::MAX);
        sluice_client::partition_for_key(key, n) as usize
    }
}

/// Producer `i`'s share of `count` records split over `parts` producers.
pub fn share(count: u64, parts: usize, i: usize) -> u64 {
    let parts = parts.max(1) as u64;
    count / parts + u64::from((i as u64) < count % parts)
}

/// The records a run still expects, claimed by parallel readers so that together they count
/// exactly `--count`; tells every reader once the last one is in.
#[derive(Debug)]
pub struct Quota {
    left: AtomicU64,
    readers: AtomicUsize,
    done: watch::Sender<bool>,
}

impl Quota {
    /// A quota of `total` records.
    pub fn new(total: u64) -> Self {
        Self {
            left: AtomicU64::new(total),
            readers: AtomicUsize::new(0),
            done: watch::Sender::new(total == 0),
        }
    }

    /// Claims up to `n` records; returns how many of them count (0 once the quota is met).
    pub fn claim(&self, n: u64) -> u64 {
        let mut got = 0;
        let _ = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                got = n.min(left);
                Some(left - got)
            });
        if got > 0 && self.left.load(Ordering::Acquire) == 0 {
            self.done.send_replace(true);
        }
        got
    }

    /// Whether every expected record has been claimed.
    pub fn is_met(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }

    /// Resolves once the quota is met or every reader has given up.
    pub async fn met(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Registers a reader; [`Quota::reader_done`] when it stops.
    pub fn reader_started(&self) {
        self.readers.fetch_add(1, Ordering::AcqRel);
    }

    /// A reader stopped; the last one to stop ends the run even if records are missing.
    pub fn reader_done(&self) {
        if self.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let total: u64 = (0..3).map(|i| share(10, 3, i)).sum();
        assert_eq!(total, 10);
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn keyed_records_route_like_sluice_and_unkeyed_round_robin() {
        let mut r = Router::new(8);
        let key = b"some-key";
        let want = sluice_client::partition_for_key(key, 8) as usize;
        assert_eq!(r.route(key), want);
        assert_eq!(r.route(key), want);
        let spread: Vec<usize> = (0..8).map(|_| r.route(b"")).collect();
        let mut sorted = spread.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn quota_counts_exactly_and_signals() {
        let q = Quota::new(5);
        assert_eq!(q.claim(3), 3);
        assert!(!q.is_met());
        assert_eq!(q.claim(3), 2);
        assert_eq!(q.claim(1), 0);
        assert!(q.is_met());
        q.met().await;
    }

    #[tokio::test]
    async fn last_reader_ends_an_unmet_quota() {
        let q = Quota::new(5);
        q.reader_started();
        q.reader_started();
        q.reader_done();
        q.reader_done();
        q.met().await;
        assert!(!q.is_met());
    }
}
