//! The background `WatchMetadata` stream: one coordinator pushes a full snapshot at once and
//! after every change, so leader moves reach producers and consumers before their requests fail.
//!
//! On any failure (coordinator unreachable, stream broken or ended) the watcher backs off and
//! moves to the next bootstrap coordinator. It holds only a weak reference to the cache, and the
//! cache aborts it when dropped, so it never outlives the last client handle.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sluice_proto::pb::{self, metadata_client::MetadataClient};
use tokio::task::AbortHandle;

use super::Metadata;
use crate::connection::{MAX_MESSAGE_BYTES, Pool, with_timeout};
use crate::error::{ClientError, Result};
use crate::retry::RetryPolicy;

/// Wait before reconnecting: 100 ms, doubling up to a second while coordinators keep failing.
const RECONNECT: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    backoff: Duration::from_millis(100),
};

/// Starts watching; aborting the returned handle stops the task.
pub(super) fn spawn(meta: &Arc<Metadata>) -> AbortHandle {
    let watcher = Watcher {
        meta: Arc::downgrade(meta),
        pool: meta.pool.clone(),
        addresses: meta.coordinators.addresses().to_vec(),
        next: meta.coordinators.preferred(),
        timeout: meta.request_timeout,
    };
    tokio::spawn(watcher.run()).abort_handle()
}

struct Watcher {
    /// Weak: the watch must not keep the cache (and so itself) alive.
    meta: Weak<Metadata>,
    pool: Arc<Pool>,
    addresses: Vec<String>,
    /// Index of the coordinator to watch next.
    next: usize,
    timeout: Duration,
}

impl Watcher {
    async fn run(mut self) {
        let mut failures = 0u32;
        while self.meta.strong_count() > 0 && !self.addresses.is_empty() {
            let addr = self.addresses[self.next % self.addresses.len()].clone();
            let mut delivered = false;
            let err = match self.follow(&addr, &mut delivered).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if delivered {
                failures = 0;
            }
            failures += 1;
            if failures.is_multiple_of(30) {
                tracing::warn!(coordinator = %addr, failures, error = %err, "metadata watch keeps failing; leader changes are learnt from errors meanwhile");
            } else {
                tracing::debug!(coordinator = %addr, error = %err, "metadata watch interrupted; reconnecting");
            }
            self.next = (self.next + 1) % self.addresses.len();
            tokio::time::sleep(RECONNECT.backoff(failures)).await;
        }
    }

    /// Installs every message of one stream until it fails (`Err`) or the cache is gone (`Ok`).
    async fn follow(&self, addr: &str, delivered: &mut bool) -> Result<()> {
        let channel = self.pool.channel(addr)?;
        let mut client = MetadataClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        // Every topic: a watch of named topics would need restarting whenever the client uses a
        // new one. The cache still keeps only the topics in use. No deadline on the request: the
        // stream lives as long as the client; only opening it is timed.
        let req = pb::GetMetadataRequest {
            topics: Vec::new(),
            include_internal: true,
        };
        let mut stream = with_timeout(self.timeout, "WatchMetadata", client.watch_metadata(req))
            .await?
            .into_inner();
        while let Some(resp) = stream.message().await? {
            let Some(meta) = self.meta.upgrade() else {
                return Ok(());
            };
            meta.install_watched(resp);
            *delivered = true;
        }
        Err(ClientError::Transport(
            "the coordinator ended the metadata watch".into(),
        ))
    }
}
