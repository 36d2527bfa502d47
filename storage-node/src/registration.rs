//! Registration of this node under `nodes/<id>`, owned by a lease kept alive in the background.
//! A node that restarts quickly waits for its previous registration to expire rather than
//! overwrite a key that might belong to another live process with the same id.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_metadata::keys::Keys;
use sluice_metadata::lease::LeaseKeeper;
use sluice_metadata::{Compare, MetaStore, Op, Txn};
use sluice_proto::pb::NodeRecord;
use tokio::sync::watch;

/// What registration reports to the rest of the node.
pub struct Reports {
    /// Whether the key is ours now.
    pub registered: watch::Sender<bool>,
    /// Set once, to the create revision of this process's first registration (which every
    /// later registration of the process carries as `boot_revision`).
    pub boot: watch::Sender<Option<i64>>,
}

/// Keeps `nodes/<id>` registered until `shutdown` flips, then revokes the lease so the node
/// disappears from the cluster at once, publishing its state in [`Reports`]. When
/// `draining` flips to true (controlled shutdown) the record is rewritten with `draining` set,
/// so the controller moves this node's leaderships away.
pub async fn run_registration(
    store: Arc<dyn MetaStore>,
    keys: Keys,
    mut record: NodeRecord,
    ttl: Duration,
    reports: Reports,
    mut draining: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Reports { registered, boot } = reports;
    let key = keys.node(record.node_id);
    let mut waited_logged = false;
    while !*shutdown.borrow() {
        let lease = match LeaseKeeper::start(store.clone(), ttl).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot get a lease to register; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        record.draining = *draining.borrow();
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), 0))
            .then(Op::Put {
                key: key.clone(),
                value: record.encode_to_vec().into(),
                lease: lease.id(),
            });
        match store.txn(txn).await {
            Ok(o) if o.succeeded => {
                tracing::info!(node_id = record.node_id, address = %record.address, incarnation = %record.incarnation, revision = o.revision, "registered");
                if boot.borrow().is_none() {
                    boot.send_replace(Some(o.revision));
                    record.boot_revision = o.revision;
                }
                registered.send_replace(true);
                let mut lost = lease.lost();
                let mark_draining = async {
                    if !record.draining {
                        until(&mut draining, |d| *d).await;
                        let marked = NodeRecord {
                            draining: true,
                            ..record.clone()
                        };
                        let put = Txn::new().then(Op::Put {
                            key: key.clone(),
                            value: marked.encode_to_vec().into(),
                            lease: lease.id(),
                        });
                        match store.txn(put).await {
                            Ok(_) => tracing::info!(
                                node_id = record.node_id,
                                "draining: asked the controller to move leaderships away"
                            ),
                            Err(error) => {
                                tracing::warn!(%error, "could not mark the node draining")
                            }
                        }
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    _ = mark_draining => {}
                    _ = until(&mut lost, |l| *l) => {
                        tracing::warn!(node_id = record.node_id, "registration lease lost; registering again");
                        registered.send_replace(false);
                    }
                    _ = until(&mut shutdown, |s| *s) => {
                        registered.send_replace(false);
                        let _ = lease.revoke().await;
                        return;
                    }
                }
            }
            Ok(_) => {
                if !waited_logged {
                    tracing::info!(
                        node_id = record.node_id,
                        "waiting for the previous registration of this node id to expire"
                    );
                    waited_logged = true;
                }
                let _ = lease.revoke().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = until(&mut shutdown, |s| *s) => return,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "registration failed; retrying");
                let _ = lease.revoke().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Waits until `rx`'s value satisfies `f` (or its sender is gone), without holding the borrow
/// guard across later awaits.
async fn until<T>(rx: &mut watch::Receiver<T>, f: impl FnMut(&T) -> bool) {
    let _ = rx.wait_for(f).await;
}
