//! The one test suite every [`MetaStore`] backend passes unchanged.
//!
//! [`metastore_test_suite!`](crate::metastore_test_suite) turns it into one `#[tokio::test]` per
//! case for a given store factory, so a failure names its case:
//!
//! ```ignore
//! async fn new_store() -> Arc<dyn MetaStore> { EmbeddedStore::in_memory() }
//! sluice_metadata::metastore_test_suite!(new_store);
//! ```
//!
//! Each case works under its own random prefix, so all cases can share one store (one etcd).
//! Lease cases use 1 s ttls (etcd's granularity) and take a few seconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::lease::LeaseKeeper;
use crate::store::{
    Compare, LeaseId, MetaStore, Op, PrefixWatch, StoreError, Txn, TxnOutcome, WatchEvent,
};

/// Generates one `#[tokio::test]` per conformance case. `$factory` names an `async fn()` returning
/// `Arc<dyn MetaStore>`, called once per case. The calling crate needs `tokio` (with `macros`).
#[macro_export]
macro_rules! metastore_test_suite {
    ($factory:path) => {
        $crate::metastore_test_suite!(@cases $factory;
            get_of_missing_key_is_none,
            put_get_list_sorted_with_monotonic_revisions,
            create_if_absent_succeeds_once,
            compare_and_swap_on_mod_revision,
            create_revision_fences_a_recreated_key,
            delete_and_delete_prefix_remove_only_their_keys,
            txn_without_effect_keeps_the_revision,
            failed_compare_applies_nothing,
            txn_applies_all_ops_at_one_revision,
            txn_may_not_touch_a_key_twice,
            concurrent_create_has_one_winner,
            leased_keys_vanish_after_expiry_with_delete_events,
            revoke_deletes_leased_keys_with_delete_events,
            keep_alive_keeps_leased_keys,
            expired_or_revoked_lease_is_refused,
            lease_keeper_keeps_the_lease_and_revoke_releases_it,
            watch_gives_snapshot_then_later_changes_in_order_exactly_once,
            watch_ignores_keys_outside_its_prefix,
            watch_delivers_a_txn_as_one_batch,
            every_watcher_sees_every_change,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::MetaStore> = $factory().await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// Longest wait for something that should happen (lease expiry included).
const EVENTUALLY: Duration = Duration::from_secs(10);
/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// The shortest ttl etcd grants.
const TTL: Duration = Duration::from_secs(1);

fn prefix(case: &str) -> String {
    format!(
        "/sluice-conformance/{case}/{}/",
        uuid::Uuid::new_v4().simple()
    )
}

fn put_op(key: &str, value: &str, lease: LeaseId) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        lease,
    }
}

async fn put(store: &dyn MetaStore, key: &str, value: &str) -> TxnOutcome {
    let outcome = store
        .txn(Txn::new().then(put_op(key, value, 0)))
        .await
        .unwrap();
    assert!(outcome.succeeded);
    outcome
}

async fn create_if_absent(store: &dyn MetaStore, key: &str, value: &str) -> TxnOutcome {
    let txn = Txn::new()
        .when(Compare::ModRevision(key.to_owned(), 0))
        .then(put_op(key, value, 0));
    store.txn(txn).await.unwrap()
}

async fn next_batch(watch: &mut PrefixWatch) -> Vec<WatchEvent> {
    match tokio::time::timeout(EVENTUALLY, watch.events.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENTUALLY:?}"),
    }
}

async fn next_event(watch: &mut PrefixWatch) -> WatchEvent {
    let mut batch = next_batch(watch).await;
    assert_eq!(batch.len(), 1, "expected a single event: {batch:?}");
    batch.remove(0)
}

async fn assert_quiet(watch: &mut PrefixWatch) {
    if let Ok(item) = tokio::time::timeout(QUIET, watch.events.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn assert_put(event: &WatchEvent, key: &str, value: &str) -> i64 {
    match event {
        WatchEvent::Put(v) if v.key == key && v.value == value.as_bytes() => v.mod_revision,
        other => panic!("expected Put({key}={value}), got {other:?}"),
    }
}

fn assert_delete(event: &WatchEvent, key: &str) -> i64 {
    match event {
        WatchEvent::Delete {
            key: k,
            mod_revision,
        } if k == key => *mod_revision,
        other => panic!("expected Delete({key}), got {other:?}"),
    }
}

async fn wait_until_absent(store: &dyn MetaStore, key: &str) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while store.get(key).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} still present after {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `get` of a key never written is `None`.
pub async fn get_of_missing_key_is_none(store: Arc<dyn MetaStore>) {
    let p = prefix("missing");
    assert_eq!(store.get(&format!("{p}nothing")).await.unwrap(), None);
    assert!(store.list(&p).await.unwrap().0.is_empty());
}

/// Writes read back with their revisions; revisions grow; updates keep the create revision;
/// `list` is sorted, limited to the prefix and at least as new as the last write.
pub async fn put_get_list_sorted_with_monotonic_revisions(store: Arc<dyn MetaStore>) {
    let p = prefix("put-get-list");
    let (b, a, c) = (format!("{p}b"), format!("{p}a"), format!("{p}c/1"));
    let r1 = put(&*store, &b, "1").await.revision;
    let r2 = put(&*store, &a, "2").await.revision;
    let r3 = put(&*store, &c, "3").await.revision;
    put(&*store, &format!("{}x", p.trim_end_matches('/')), "outside").await;
    assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");

    let got = store.get(&b).await.unwrap().unwrap();
    assert_eq!(
        (
            got.value.as_ref(),
            got.create_revision,
            got.mod_revision,
            got.lease
        ),
        (&b"1"[..], r1, r1, 0)
    );

    let r4 = put(&*store, &b, "1b").await.revision;
    assert!(r4 > r3);
    let got = store.get(&b).await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_ref(), got.create_revision, got.mod_revision),
        (&b"1b"[..], r1, r4)
    );

    let (items, revision) = store.list(&p).await.unwrap();
    let keys: Vec<&str> = items.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, [a.as_str(), b.as_str(), c.as_str()]);
    assert!(
        revision >= r4,
        "list revision {revision} older than write {r4}"
    );
}

/// `Compare::ModRevision(key, 0)` creates a key once; the second attempt fails and changes nothing.
pub async fn create_if_absent_succeeds_once(store: Arc<dyn MetaStore>) {
    let key = format!("{}k", prefix("create-once"));
    let first = create_if_absent(&*store, &key, "first").await;
    assert!(first.succeeded);
    let second = create_if_absent(&*store, &key, "second").await;
    assert!(!second.succeeded);
    assert!(second.revision >= first.revision);
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "first");
}

/// A write conditioned on a stale mod revision fails; on the current one it succeeds.
pub async fn compare_and_swap_on_mod_revision(store: Arc<dyn MetaStore>) {
    let key = format!("{}k", prefix("cas"));
    let r1 = put(&*store, &key, "1").await.revision;
    let r2 = put(&*store, &key, "2").await.revision;
    let cas = |rev: i64, value: &str| {
        Txn::new()
            .when(Compare::ModRevision(key.clone(), rev))
            .then(put_op(&key, value, 0))
    };
    assert!(!store.txn(cas(r1, "stale")).await.unwrap().succeeded);
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "2");
    let ok = store.txn(cas(r2, "3")).await.unwrap();
    assert!(ok.succeeded && ok.revision > r2);
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().mod_revision,
        ok.revision
    );
}

/// A fence on a key's create revision survives updates of that key but not its re-creation.
pub async fn create_revision_fences_a_recreated_key(store: Arc<dyn MetaStore>) {
    let p = prefix("fence");
    let (fence, data) = (format!("{p}controller"), format!("{p}data"));
    let created = put(&*store, &fence, "me").await.revision;
    put(&*store, &fence, "me, refreshed").await;
    let fenced = |value: &str, rev: i64| {
        Txn::new()
            .when(Compare::CreateRevision(fence.clone(), rev))
            .then(put_op(&data, value, 0))
    };
    assert!(store.txn(fenced("ok", created)).await.unwrap().succeeded);

    store
        .txn(Txn::new().then(Op::Delete(fence.clone())))
        .await
        .unwrap();
    assert!(
        !store
            .txn(fenced("absent", created))
            .await
            .unwrap()
            .succeeded
    );
    let recreated = put(&*store, &fence, "someone else").await.revision;
    assert!(
        !store
            .txn(fenced("deposed", created))
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(store.get(&data).await.unwrap().unwrap().value, "ok");
    assert!(
        store
            .txn(fenced("new owner", recreated))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !store
            .txn(Txn::new().when(Compare::CreateRevision(format!("{p}none"), created)))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        store
            .txn(Txn::new().when(Compare::CreateRevision(format!("{p}none"), 0)))
            .await
            .unwrap()
            .succeeded
    );
}

/// `Delete` removes one key (absent is fine); `DeletePrefix` removes exactly the keys under it.
pub async fn delete_and_delete_prefix_remove_only_their_keys(store: Arc<dyn MetaStore>) {
    let p = prefix("delete");
    for k in ["a", "t/1", "t/2", "t/3/x", "tz"] {
        put(&*store, &format!("{p}{k}"), k).await;
    }
    let one = store
        .txn(Txn::new().then(Op::Delete(format!("{p}a"))))
        .await
        .unwrap();
    assert!(one.succeeded);
    assert_eq!(store.get(&format!("{p}a")).await.unwrap(), None);

    let all = store
        .txn(Txn::new().then(Op::DeletePrefix(format!("{p}t/"))))
        .await
        .unwrap();
    assert!(all.succeeded && all.revision > one.revision);
    let (left, _) = store.list(&p).await.unwrap();
    assert_eq!(
        left.iter().map(|v| v.key.clone()).collect::<Vec<_>>(),
        [format!("{p}tz")]
    );
}

/// A transaction that changes nothing (deleting absent keys) or fails leaves the revision alone.
pub async fn txn_without_effect_keeps_the_revision(store: Arc<dyn MetaStore>) {
    let p = prefix("no-effect");
    let before = put(&*store, &format!("{p}k"), "v").await.revision;
    let mut watch = store.watch_prefix(&p).await.unwrap();
    let noop = Txn::new()
        .then(Op::Delete(format!("{p}absent")))
        .then(Op::DeletePrefix(format!("{p}none/")));
    let outcome = store.txn(noop).await.unwrap();
    assert!(outcome.succeeded);
    let failed = store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(format!("{p}k"), 0))
                .then(put_op(&format!("{p}k"), "x", 0)),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    // Other cases may write concurrently on a shared store, so compare with our own key.
    assert_eq!(
        store
            .get(&format!("{p}k"))
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        before
    );
    assert!(outcome.revision >= before && failed.revision >= before);
    assert_quiet(&mut watch).await;
}

/// When one compare of several fails, none of the ops apply.
pub async fn failed_compare_applies_nothing(store: Arc<dyn MetaStore>) {
    let p = prefix("atomic");
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let ra = put(&*store, &a, "a").await.revision;
    let rb = put(&*store, &b, "b").await.revision;
    let txn = Txn::new()
        .when(Compare::ModRevision(a.clone(), ra))
        .when(Compare::ModRevision(b.clone(), rb - 1))
        .then(put_op(&a, "changed", 0))
        .then(Op::Delete(b.clone()))
        .then(put_op(&c, "new", 0));
    assert!(!store.txn(txn).await.unwrap().succeeded);
    let (items, _) = store.list(&p).await.unwrap();
    let seen: Vec<(&str, &[u8], i64)> = items
        .iter()
        .map(|v| (v.key.as_str(), v.value.as_ref(), v.mod_revision))
        .collect();
    assert_eq!(
        seen,
        [(a.as_str(), &b"a"[..], ra), (b.as_str(), &b"b"[..], rb)]
    );
}

/// Every op of a transaction lands at the transaction's single new revision.
pub async fn txn_applies_all_ops_at_one_revision(store: Arc<dyn MetaStore>) {
    let p = prefix("one-revision");
    put(&*store, &format!("{p}old"), "x").await;
    let txn = Txn::new()
        .then(put_op(&format!("{p}a"), "1", 0))
        .then(put_op(&format!("{p}b"), "2", 0))
        .then(Op::Delete(format!("{p}old")));
    let outcome = store.txn(txn).await.unwrap();
    assert!(outcome.succeeded);
    let (items, _) = store.list(&p).await.unwrap();
    assert_eq!(items.len(), 2);
    for v in items {
        assert_eq!(
            (v.create_revision, v.mod_revision),
            (outcome.revision, outcome.revision)
        );
    }
}

/// Putting one key twice, or deleting a key the same transaction puts, is refused (etcd does).
pub async fn txn_may_not_touch_a_key_twice(store: Arc<dyn MetaStore>) {
    let p = prefix("twice");
    let key = format!("{p}k");
    let twice = Txn::new()
        .then(put_op(&key, "1", 0))
        .then(put_op(&key, "2", 0));
    assert!(matches!(store.txn(twice).await, Err(StoreError::Other(_))));
    let put_and_delete = Txn::new()
        .then(put_op(&key, "1", 0))
        .then(Op::DeletePrefix(p.clone()));
    assert!(matches!(
        store.txn(put_and_delete).await,
        Err(StoreError::Other(_))
    ));
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// Racing create-if-absent transactions: exactly one wins.
pub async fn concurrent_create_has_one_winner(store: Arc<dyn MetaStore>) {
    let key = format!("{}k", prefix("race"));
    let racers = (0..8).map(|i| {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::spawn(async move {
            create_if_absent(&*store, &key, &i.to_string())
                .await
                .succeeded
        })
    });
    let wins = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
}

/// Keys under a lease that is not kept alive vanish, with Delete events; others stay.
pub async fn leased_keys_vanish_after_expiry_with_delete_events(store: Arc<dyn MetaStore>) {
    let p = prefix("expiry");
    let (leased, kept) = (format!("{p}leased"), format!("{p}kept"));
    let lease = store.grant_lease(TTL).await.unwrap();
    store
        .txn(Txn::new().then(put_op(&leased, "x", lease)))
        .await
        .unwrap();
    put(&*store, &kept, "y").await;
    assert_eq!(store.get(&leased).await.unwrap().unwrap().lease, lease);
    let mut watch = store.watch_prefix(&p).await.unwrap();
    assert_eq!(watch.snapshot.len(), 2);

    let deleted = assert_delete(&next_event(&mut watch).await, &leased);
    assert!(deleted > watch.revision);
    assert_eq!(store.get(&leased).await.unwrap(), None);
    assert!(store.get(&kept).await.unwrap().is_some());
}

/// Revoking a lease deletes its keys at once, with Delete events.
pub async fn revoke_deletes_leased_keys_with_delete_events(store: Arc<dyn MetaStore>) {
    let p = prefix("revoke");
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let txn = Txn::new()
        .then(put_op(&format!("{p}a"), "1", lease))
        .then(put_op(&format!("{p}b"), "2", lease));
    store.txn(txn).await.unwrap();
    let mut watch = store.watch_prefix(&p).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.len(), 2, "{batch:?}");
    assert_delete(&batch[0], &format!("{p}a"));
    assert_delete(&batch[1], &format!("{p}b"));
    assert!(store.list(&p).await.unwrap().0.is_empty());
}

/// Keys live on while their lease is kept alive, well past the ttl.
pub async fn keep_alive_keeps_leased_keys(store: Arc<dyn MetaStore>) {
    let key = format!("{}k", prefix("keep-alive"));
    let lease = store.grant_lease(TTL).await.unwrap();
    store
        .txn(Txn::new().then(put_op(&key, "x", lease)))
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(TTL / 4).await;
        store.keep_alive(lease).await.unwrap();
    }
    assert!(store.get(&key).await.unwrap().is_some());
}

/// A lapsed or revoked lease cannot be kept alive, revoked or written under.
pub async fn expired_or_revoked_lease_is_refused(store: Arc<dyn MetaStore>) {
    let p = prefix("dead-lease");
    let expired = store.grant_lease(TTL).await.unwrap();
    store
        .txn(Txn::new().then(put_op(&format!("{p}e"), "x", expired)))
        .await
        .unwrap();
    wait_until_absent(&*store, &format!("{p}e")).await;
    assert!(
        matches!(store.keep_alive(expired).await, Err(StoreError::LeaseExpired(id)) if id == expired)
    );

    let revoked = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.revoke_lease(revoked).await.unwrap();
    assert!(matches!(
        store.keep_alive(revoked).await,
        Err(StoreError::LeaseExpired(_))
    ));
    assert!(matches!(
        store.revoke_lease(revoked).await,
        Err(StoreError::LeaseExpired(_))
    ));
    let put = store
        .txn(Txn::new().then(put_op(&format!("{p}r"), "x", revoked)))
        .await;
    assert!(
        matches!(put, Err(StoreError::LeaseExpired(id)) if id == revoked),
        "{put:?}"
    );
    assert_eq!(store.get(&format!("{p}r")).await.unwrap(), None);
}

/// A [`LeaseKeeper`] holds its lease past the ttl and `revoke` releases its keys at once.
pub async fn lease_keeper_keeps_the_lease_and_revoke_releases_it(store: Arc<dyn MetaStore>) {
    let key = format!("{}node", prefix("keeper"));
    let keeper = LeaseKeeper::start(Arc::clone(&store), TTL).await.unwrap();
    store
        .txn(Txn::new().then(put_op(&key, "x", keeper.id())))
        .await
        .unwrap();
    tokio::time::sleep(TTL * 5 / 2).await;
    assert!(!*keeper.lost().borrow());
    assert!(store.get(&key).await.unwrap().is_some());
    keeper.revoke().await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// The snapshot holds the prefix at its revision; the stream then carries every later change,
/// in revision order, once.
pub async fn watch_gives_snapshot_then_later_changes_in_order_exactly_once(
    store: Arc<dyn MetaStore>,
) {
    let p = prefix("watch");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let ra = put(&*store, &a, "1").await.revision;
    let mut watch = store.watch_prefix(&p).await.unwrap();
    assert!(watch.revision >= ra);
    let keys: Vec<&str> = watch.snapshot.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, [a.as_str()]);

    let writes = [
        put(&*store, &b, "2").await.revision,
        put(&*store, &a, "3").await.revision,
    ];
    let deleted = store
        .txn(Txn::new().then(Op::Delete(b.clone())))
        .await
        .unwrap()
        .revision;
    let r1 = assert_put(&next_event(&mut watch).await, &b, "2");
    let r2 = assert_put(&next_event(&mut watch).await, &a, "3");
    let r3 = assert_delete(&next_event(&mut watch).await, &b);
    assert_eq!([r1, r2, r3], [writes[0], writes[1], deleted]);
    assert!(watch.revision < r1);
    assert_quiet(&mut watch).await;
}

/// A watch sees nothing of keys outside its prefix, even ones sharing its first characters.
pub async fn watch_ignores_keys_outside_its_prefix(store: Arc<dyn MetaStore>) {
    let p = prefix("watch-scope");
    let mut watch = store.watch_prefix(&format!("{p}in/")).await.unwrap();
    put(&*store, &format!("{p}in"), "no").await;
    put(&*store, &format!("{p}inx/1"), "no").await;
    put(&*store, &format!("{p}other/1"), "no").await;
    put(&*store, &format!("{p}in/1"), "yes").await;
    assert_put(&next_event(&mut watch).await, &format!("{p}in/1"), "yes");
    assert_quiet(&mut watch).await;
}

/// All changes of one transaction arrive together, in one batch.
pub async fn watch_delivers_a_txn_as_one_batch(store: Arc<dyn MetaStore>) {
    let p = prefix("watch-batch");
    put(&*store, &format!("{p}old"), "x").await;
    let mut watch = store.watch_prefix(&p).await.unwrap();
    let txn = Txn::new()
        .then(put_op(&format!("{p}a"), "1", 0))
        .then(put_op(&format!("{p}b"), "2", 0))
        .then(Op::Delete(format!("{p}old")));
    let revision = store.txn(txn).await.unwrap().revision;
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert_eq!(assert_put(&batch[0], &format!("{p}a"), "1"), revision);
    assert_eq!(assert_put(&batch[1], &format!("{p}b"), "2"), revision);
    assert_eq!(assert_delete(&batch[2], &format!("{p}old")), revision);
}

/// Several watchers of overlapping prefixes each get every change they cover.
pub async fn every_watcher_sees_every_change(store: Arc<dyn MetaStore>) {
    let p = prefix("watchers");
    let mut wide = store.watch_prefix(&p).await.unwrap();
    let mut narrow = store.watch_prefix(&format!("{p}n/")).await.unwrap();
    let mut twin = store.watch_prefix(&format!("{p}n/")).await.unwrap();
    put(&*store, &format!("{p}w"), "1").await;
    put(&*store, &format!("{p}n/1"), "2").await;
    assert_put(&next_event(&mut wide).await, &format!("{p}w"), "1");
    assert_put(&next_event(&mut wide).await, &format!("{p}n/1"), "2");
    for watch in [&mut narrow, &mut twin] {
        assert_put(&next_event(watch).await, &format!("{p}n/1"), "2");
        assert_quiet(watch).await;
    }
}
