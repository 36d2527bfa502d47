//! A lease kept alive in the background: storage nodes register `nodes/<id>` under one, and the
//! controller election holds `controller` under one. Whoever holds a [`LeaseKeeper`] watches
//! [`LeaseKeeper::lost`] and stops acting on the lease's authority as soon as it flips.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{LeaseId, MetaStore, StoreError};

/// Holds a lease and refreshes it every `ttl / 3`.
pub struct LeaseKeeper {
    id: LeaseId,
    store: Arc<dyn MetaStore>,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and starts refreshing it. The lease counts from the grant's
    /// answer: a grant that waited for an unreachable store (a node cut from etcd asks again
    /// and again) starts its ttl when the store granted it, not when it was asked for, or it
    /// would be presumed lost at once and the node would rejoin a ttl late.
    pub async fn start(store: Arc<dyn MetaStore>, ttl: Duration) -> Result<Self, StoreError> {
        let id = store.grant_lease(ttl).await?;
        let granted = Instant::now();
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn(refresh(Arc::clone(&store), id, ttl, granted, lost_tx));
        Ok(Self {
            id,
            store,
            lost,
            task,
        })
    }

    /// The lease id, to put keys under.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Turns `true` (once, for good) when the lease is known or presumed gone: the store said it
    /// expired, or no keep-alive succeeded for a whole ttl. The sender is dropped when the
    /// keeper is dropped or revoked, so `changed()` then returns an error.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stops refreshing and revokes the lease, deleting its keys at once (rather than a ttl
    /// later). `LeaseExpired` means it was already gone.
    pub async fn revoke(self) -> Result<(), StoreError> {
        self.task.abort();
        self.store.revoke_lease(self.id).await
    }
}

impl Drop for LeaseKeeper {
    /// Stops refreshing; the lease then lapses after its ttl.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Refreshes every `ttl / 3`, retrying faster after a failure, until the lease is lost.
/// A renewal counts from when it was asked for (the store renewed it no earlier), so `lost`
/// flips before the store expires the lease, not after; the first period counts from the
/// grant's answer (see [`LeaseKeeper::start`]), which may be late by the answer's one-way
/// delay.
async fn refresh(
    store: Arc<dyn MetaStore>,
    id: LeaseId,
    ttl: Duration,
    granted: Instant,
    lost: watch::Sender<bool>,
) {
    let period = ttl / 3;
    let retry = (ttl / 10).max(Duration::from_millis(20));
    let mut valid_until = granted + ttl;
    let mut next = granted + period;
    loop {
        tokio::time::sleep_until(next).await;
        let asked = Instant::now();
        match tokio::time::timeout_at(valid_until, store.keep_alive(id)).await {
            Ok(Ok(())) => {
                valid_until = asked + ttl;
                next = asked + period;
            }
            Ok(Err(StoreError::LeaseExpired(_))) => {
                tracing::warn!(lease = id, "lease expired");
                break;
            }
            Ok(Err(error)) if Instant::now() < valid_until => {
                tracing::warn!(lease = id, %error, "lease keep-alive failed, retrying");
                next = (Instant::now() + retry).min(valid_until);
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = id, %error, "lease keep-alive failed for a whole ttl");
                break;
            }
            Err(_elapsed) => {
                tracing::warn!(
                    lease = id,
                    ?ttl,
                    "no lease keep-alive succeeded for a whole ttl"
                );
                break;
            }
        }
    }
    lost.send_replace(true);
    // Keep the sender alive until the keeper goes, so `lost` stays readable and `changed()`
    // does not report a closed channel before the owner has seen `true`.
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    #[tokio::test]
    async fn keeps_the_lease_alive_past_its_ttl() {
        let store = EmbeddedStore::in_memory();
        let keeper = LeaseKeeper::start(store.clone(), Duration::from_millis(300))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!*keeper.lost().borrow());
        store.keep_alive(keeper.id()).await.unwrap();
    }

    #[tokio::test]
    async fn reports_lost_when_the_lease_is_revoked_behind_its_back() {
        let store = EmbeddedStore::in_memory();
        let keeper = LeaseKeeper::start(store.clone(), Duration::from_millis(300))
            .await
            .unwrap();
        let mut lost = keeper.lost();
        store.revoke_lease(keeper.id()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), lost.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn dropping_stops_refreshing_and_revoke_deletes_at_once() {
        let store = EmbeddedStore::in_memory();
        let dropped = LeaseKeeper::start(store.clone(), Duration::from_millis(200))
            .await
            .unwrap();
        let id = dropped.id();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(matches!(
            store.keep_alive(id).await,
            Err(StoreError::LeaseExpired(_))
        ));

        let revoked = LeaseKeeper::start(store.clone(), Duration::from_secs(30))
            .await
            .unwrap();
        let id = revoked.id();
        revoked.revoke().await.unwrap();
        assert!(matches!(
            store.keep_alive(id).await,
            Err(StoreError::LeaseExpired(_))
        ));
    }
}
