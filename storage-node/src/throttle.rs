//! The reassignment throttle: one token bucket per storage node that every push to a replica a
//! reassignment is adding draws from, at the cluster's `reassignment.throttle.bytes.per.second`
//! (read from the metadata view at each chunk, so a change applies within a chunk). Pushes to
//! the ISR and to followers catching up for other reasons (a restart) are never throttled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_metadata::cache::MetadataCache;
use sluice_proto::cluster_config::ClusterConfig;
use tokio::time::Instant;

/// Longest single sleep, so a raised (or removed) rate applies quickly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Bytes a bucket may save up, as time at the rate: bursts stay short.
const BURST: Duration = Duration::from_millis(100);

struct Bucket {
    /// Bytes that may be sent now (negative: owed).
    available: f64,
    refilled: Instant,
}

/// A node's reassignment throttle.
pub struct Throttle {
    cache: Arc<MetadataCache>,
    bucket: Mutex<Bucket>,
}

impl Throttle {
    /// A throttle reading its rate from `cache`.
    pub fn new(cache: Arc<MetadataCache>) -> Self {
        Self {
            cache,
            bucket: Mutex::new(Bucket {
                available: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    fn rate(&self) -> Option<u64> {
        ClusterConfig::from_stored(&self.cache.view().cluster_config).reassignment_throttle
    }

    /// Charges `bytes` that are about to be sent and waits until the bucket is out of debt.
    pub async fn take(&self, bytes: usize) {
        let Some(rate) = self.rate() else { return };
        self.refill(rate as f64).available -= bytes as f64;
        loop {
            let Some(rate) = self.rate() else { return };
            let owed = -self.refill(rate as f64).available;
            if owed <= 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64(owed / rate as f64).min(MAX_SLEEP)).await;
        }
    }

    fn refill(&self, rate: f64) -> std::sync::MutexGuard<'_, Bucket> {
        let mut b = self.bucket.lock().expect("poisoned");
        let now = Instant::now();
        let cap = rate * BURST.as_secs_f64();
        b.available = (b.available + now.duration_since(b.refilled).as_secs_f64() * rate).min(cap);
        b.refilled = now;
        b
    }
}
