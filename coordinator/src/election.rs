//! Controller election through the metadata store: lease + create-if-absent on the
//! `controller` key. The winner's fencing token is the key's create revision; every controller
//! write compares it, so a deposed controller (lease lapsed, key re-created by another) can
//! never write.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::cache::MetadataCache;
use sluice_metadata::keys::Keys;
use sluice_metadata::lease::LeaseKeeper;
use sluice_metadata::{Compare, MetaStore, Op, Txn};
use sluice_proto::pb::ControllerRecord;
use tokio::sync::watch;

/// This coordinator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serving reads; forwarding writes to the active controller.
    Standby,
    /// The active controller; `fence` is the create revision of its `controller` key.
    Active {
        /// Compared by every controller write.
        fence: i64,
    },
}

/// Settings of the election loop.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// This coordinator's id and advertised address.
    pub me: ControllerRecord,
    /// TTL of the lease that owns the controller key: the failover time after a crash.
    pub lease_ttl: Duration,
}

/// Runs the election until `shutdown` flips to true, publishing the role. On shutdown an
/// active controller resigns (deletes its key, revokes its lease) so a standby takes over at once.
pub async fn run_election(
    store: Arc<dyn MetaStore>,
    keys: Keys,
    cache: Arc<MetadataCache>,
    cfg: ElectionConfig,
    role: watch::Sender<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    let record = cfg.me.encode_to_vec();
    while !*shutdown.borrow() {
        let lease = match LeaseKeeper::start(store.clone(), cfg.lease_ttl).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot get a lease for the election; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let mut lost = lease.lost();
        let registered = store
            .txn(Txn::new().then(Op::Put {
                key: keys.coordinator(&cfg.me.coordinator_id),
                value: record.clone().into(),
                lease: lease.id(),
            }))
            .await;
        if let Err(error) = registered {
            tracing::warn!(%error, "cannot register coordinator; retrying");
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        loop {
            let elected = ControllerRecord {
                elected_at_ms: now_ms(),
                ..cfg.me.clone()
            }
            .encode_to_vec();
            let attempt = store
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(keys.controller(), 0))
                        .then(Op::Put {
                            key: keys.controller(),
                            value: elected.into(),
                            lease: lease.id(),
                        }),
                )
                .await;
            // When the create's outcome is unknown (a timeout) or it lost, re-read rather than
            // guess: a key owned by our own lease means we won an earlier attempt.
            let attempt = match attempt {
                Ok(o) if o.succeeded => Ok(Some(o.revision)),
                Ok(_) => match store.get(&keys.controller()).await {
                    Ok(Some(v)) if v.lease == lease.id() => Ok(Some(v.create_revision)),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match attempt {
                Ok(Some(fence)) => {
                    tracing::info!(coordinator = %cfg.me.coordinator_id, fence, "became the active controller");
                    role.send_replace(Role::Active { fence });
                    metrics::gauge!("sluice_controller_active").set(1.0);
                    let mut view = cache.subscribe();
                    let deposed = async {
                        loop {
                            {
                                let v = view.borrow_and_update();
                                let ours = v.controller.as_ref().map(|c| c.create_revision);
                                if v.revision >= fence && ours != Some(fence) {
                                    return;
                                }
                            }
                            if view.changed().await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = until(&mut lost, |l| *l) => tracing::warn!("controller lease lost; stepping down"),
                        _ = deposed => tracing::warn!("controller key taken over; stepping down"),
                        _ = until(&mut shutdown, |s| *s) => {
                            role.send_replace(Role::Standby);
                            let resign = Txn::new()
                                .when(Compare::CreateRevision(keys.controller(), fence))
                                .then(Op::Delete(keys.controller()));
                            if let Err(error) = store.txn(resign).await {
                                tracing::warn!(%error, "could not resign the controller key");
                            }
                            let _ = lease.revoke().await;
                            return;
                        }
                    }
                    role.send_replace(Role::Standby);
                    metrics::gauge!("sluice_controller_active").set(0.0);
                    break;
                }
                Ok(None) => {
                    role.send_replace(Role::Standby);
                    let mut view = cache.subscribe();
                    tokio::select! {
                        _ = until(&mut view, |v| v.controller.is_none()) => {}
                        _ = watch_controller_alive(store.as_ref(), &keys, &cache) => {}
                        _ = until(&mut lost, |l| *l) => break,
                        _ = until(&mut shutdown, |s| *s) => {
                            let _ = lease.revoke().await;
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "election attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if *lost.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits until `rx`'s value satisfies `f` (or its sender is gone), without holding the borrow
/// guard across later awaits.
async fn until<T>(rx: &mut watch::Receiver<T>, f: impl FnMut(&T) -> bool) {
    let _ = rx.wait_for(f).await;
}

/// Probes the active controller's port while this coordinator stands by; when it refuses
/// connections [`crate::probe::REFUSALS`] times in a row (the process is gone), revokes the
/// controller's lease so the election runs now instead of after the lease TTL. Returns after
/// revoking; never returns while the controller answers.
async fn watch_controller_alive(store: &dyn MetaStore, keys: &Keys, cache: &MetadataCache) {
    let mut strikes = 0;
    loop {
        tokio::time::sleep(crate::probe::PROBE_INTERVAL).await;
        let Some(address) = cache
            .view()
            .controller
            .as_ref()
            .map(|c| c.record.address.clone())
        else {
            return;
        };
        if !crate::probe::refused(&address).await {
            strikes = 0;
            continue;
        }
        strikes += 1;
        if strikes < crate::probe::REFUSALS {
            continue;
        }
        if let Ok(Some(v)) = store.get(&keys.controller()).await
            && v.lease != 0
            && store.revoke_lease(v.lease).await.is_ok()
        {
            tracing::warn!(%address, "active controller refuses connections; revoked its lease");
        }
        return;
    }
}
