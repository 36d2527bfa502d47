//! The conformance suite against a real etcd (one process shared by every case of this file), and
//! how the etcd store behaves when etcd goes away.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sluice_metadata::etcd::{DEFAULT_TIMEOUT, EtcdStore};
use sluice_metadata::testing::EtcdProcess;
use sluice_metadata::{MetaStore, Op, StoreError, Txn};
use tokio::sync::OnceCell;

/// Shared by all cases; its supervisor kills it when the test binary exits.
static ETCD: OnceCell<EtcdProcess> = OnceCell::const_new();

async fn new_store() -> Arc<dyn MetaStore> {
    let etcd = ETCD
        .get_or_init(|| async { EtcdProcess::start().await.unwrap() })
        .await;
    EtcdStore::connect(&[etcd.endpoint()], DEFAULT_TIMEOUT)
        .await
        .unwrap()
}

sluice_metadata::metastore_test_suite!(new_store);

fn put(key: &str) -> Txn {
    Txn::new().then(Op::Put {
        key: key.into(),
        value: Bytes::from_static(b"v"),
        lease: 0,
    })
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let result = EtcdStore::connect(
        &[format!("http://127.0.0.1:{port}")],
        Duration::from_millis(500),
    )
    .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn losing_etcd_ends_watches_and_fails_calls_fast_then_recovers() {
    let mut etcd = EtcdProcess::start().await.unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()], Duration::from_millis(500))
        .await
        .unwrap();
    store.txn(put("k/1")).await.unwrap();
    let mut watch = store.watch_prefix("k/").await.unwrap();
    assert_eq!(watch.snapshot.len(), 1);

    etcd.kill();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.events.next())
        .await
        .unwrap();
    assert!(
        matches!(ended, Some(Err(StoreError::Unavailable(_)))),
        "{ended:?}"
    );
    let started = std::time::Instant::now();
    assert!(matches!(
        store.get("k/1").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));

    etcd.restart().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        match store.get("k/1").await {
            Ok(got) => break got,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(%e, "etcd not back yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    assert!(got.is_some(), "data lost across an etcd restart");
}

#[tokio::test]
async fn a_paused_etcd_times_calls_out() {
    let mut etcd = EtcdProcess::start().await.unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()], Duration::from_millis(300))
        .await
        .unwrap();
    store.txn(put("p/1")).await.unwrap();
    etcd.pause();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    assert!(matches!(
        store.txn(put("p/2")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    etcd.resume();
    assert!(store.get("p/1").await.unwrap().is_some());
}
