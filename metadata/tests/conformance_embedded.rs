//! The conformance suite against the embedded store, in memory and on file, and what only the
//! embedded store promises: its file survives a reopen, minus the keys of leases.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::{
    LeaseId, MetaStore, Op, PrefixWatch, StoreError, Txn, TxnOutcome, Versioned,
};

mod in_memory {
    use super::*;

    async fn new_store() -> Arc<dyn MetaStore> {
        EmbeddedStore::in_memory()
    }

    sluice_metadata::metastore_test_suite!(new_store);
}

mod on_file {
    use super::*;

    async fn new_store() -> Arc<dyn MetaStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("meta.db")).unwrap();
        Arc::new(FileBacked { store, _dir: dir })
    }

    sluice_metadata::metastore_test_suite!(new_store);

    /// Keeps the store's directory until the store goes.
    struct FileBacked {
        store: Arc<EmbeddedStore>,
        _dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl MetaStore for FileBacked {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.store.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, i64), StoreError> {
            self.store.list(prefix).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
            self.store.txn(txn).await
        }
        async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
            self.store.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
            self.store.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
            self.store.revoke_lease(lease).await
        }
        async fn watch_prefix(&self, prefix: &str) -> Result<PrefixWatch, StoreError> {
            self.store.watch_prefix(prefix).await
        }
    }
}

fn put(key: &str, value: &'static str, lease: LeaseId) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        lease,
    }
}

#[tokio::test]
async fn data_survives_reopen_but_leased_keys_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("meta.db");
    let store = EmbeddedStore::open(&path).unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let first = store
        .txn(Txn::new().then(put("topics/a", "1", 0)))
        .await
        .unwrap();
    store
        .txn(Txn::new().then(put("topics/b", "2", 0)))
        .await
        .unwrap();
    store
        .txn(Txn::new().then(put("topics/a", "1b", 0)))
        .await
        .unwrap();
    store
        .txn(Txn::new().then(put("nodes/1", "up", lease)))
        .await
        .unwrap();
    let (before, revision) = store.list("").await.unwrap();
    assert_eq!(before.len(), 3);
    drop(store);

    let reopened = EmbeddedStore::open(&path).unwrap();
    let (after, reopened_revision) = reopened.list("").await.unwrap();
    let unleased: Vec<Versioned> = before.into_iter().filter(|v| v.lease == 0).collect();
    assert_eq!(after, unleased);
    assert_eq!(after[0].create_revision, first.revision);
    assert!(
        reopened_revision > revision,
        "{reopened_revision} <= {revision}"
    );
    assert!(matches!(
        reopened.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(_))
    ));

    let next = reopened
        .txn(Txn::new().then(put("topics/c", "3", 0)))
        .await
        .unwrap();
    assert!(next.revision > reopened_revision);
}

#[tokio::test]
async fn deletions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = EmbeddedStore::open(&path).unwrap();
    store
        .txn(Txn::new().then(put("t/a", "1", 0)).then(put("t/b", "2", 0)))
        .await
        .unwrap();
    store
        .txn(Txn::new().then(Op::DeletePrefix("t/".into())))
        .await
        .unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(&path).unwrap();
    assert!(reopened.list("").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn a_corrupt_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    std::fs::write(&path, b"\xff\xff\xff\xff not a snapshot").unwrap();
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::Other(_))
    ));
}

#[tokio::test]
async fn a_txn_without_effect_does_not_bump_the_revision() {
    let store = EmbeddedStore::in_memory();
    let before = store
        .txn(Txn::new().then(put("k", "v", 0)))
        .await
        .unwrap()
        .revision;
    let noop = store
        .txn(Txn::new().then(Op::Delete("absent".into())))
        .await
        .unwrap();
    assert!(noop.succeeded);
    assert_eq!(noop.revision, before);
    assert_eq!(store.list("").await.unwrap().1, before);
}
