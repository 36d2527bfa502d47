//! A whole coordinator (`run`) on the in-memory store, seen through gRPC: metadata watches
//! learn topic creations and leader changes, and producer ids are unique.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_coordinator::CoordinatorConfig;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::keys::Keys;
use sluice_metadata::{LeaseId, MetaStore, Op, Txn};
use sluice_proto::pb::admin_client::AdminClient;
use sluice_proto::pb::metadata_client::MetadataClient;
use sluice_proto::pb::{self, GetMetadataResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

const WITHIN: Duration = Duration::from_secs(5);

struct Running {
    store: Arc<dyn MetaStore>,
    leases: Vec<LeaseId>,
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Running {
    let store: Arc<dyn MetaStore> = EmbeddedStore::in_memory();
    let keys = Keys::for_cluster("t");
    let mut leases = Vec::new();
    for id in 0..3 {
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let rec = pb::NodeRecord {
            node_id: id,
            address: format!("127.0.0.1:{}", 9000 + id),
            ..Default::default()
        };
        store
            .txn(Txn::new().then(Op::Put {
                key: keys.node(id),
                value: rec.encode_to_vec().into(),
                lease,
            }))
            .await
            .unwrap();
        leases.push(lease);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let cfg = CoordinatorConfig {
        id: "c0".into(),
        advertised_address: addr.to_string(),
        cluster_name: "t".into(),
        lease_ttl: Duration::from_secs(3),
        default_replication_factor: 3,
        ..Default::default()
    };
    let task = tokio::spawn(sluice_coordinator::run(
        cfg,
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        store,
        leases,
        channel,
        stop,
        task,
    }
}

/// Reads the stream until a message satisfies `f`; checks that no message repeats the one before.
async fn next_matching(
    stream: &mut Streaming<GetMetadataResponse>,
    last: &mut Option<GetMetadataResponse>,
    what: &str,
    f: impl Fn(&GetMetadataResponse) -> bool,
) -> GetMetadataResponse {
    let read = async {
        loop {
            let msg = stream.message().await.unwrap().expect("stream still open");
            assert_ne!(last.as_ref(), Some(&msg), "an unchanged view is not resent");
            *last = Some(msg.clone());
            if f(&msg) {
                return msg;
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("no message with {what}"))
}

#[tokio::test]
async fn a_watch_follows_topic_creation_and_leader_changes_and_ends_at_shutdown() {
    let r = start().await;
    let mut metadata = MetadataClient::new(r.channel.clone());
    let mut stream = metadata
        .watch_metadata(pb::GetMetadataRequest {
            topics: vec!["later".into(), "never".into()],
            include_internal: false,
        })
        .await
        .expect("unknown topics do not fail a watch")
        .into_inner();
    let mut last = None;
    let first = next_matching(&mut stream, &mut last, "the first snapshot", |_| true).await;
    assert!(first.topics.is_empty());
    assert_eq!(first.nodes.len(), 3);

    AdminClient::new(r.channel.clone())
        .create_topic(pb::CreateTopicRequest {
            name: "later".into(),
            partitions: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let created = next_matching(&mut stream, &mut last, "topic 'later'", |m| {
        m.topics.iter().any(|t| t.name == "later")
    })
    .await;
    assert_eq!(created.topics.len(), 1, "'never' is left out");
    let p0 = created.topics[0].partitions[0].clone();
    assert_eq!(p0.isr.len(), 3);

    r.store
        .revoke_lease(r.leases[p0.leader as usize])
        .await
        .unwrap();
    let moved = next_matching(&mut stream, &mut last, "a new leader of partition 0", |m| {
        m.topics[0].partitions[0].leader != p0.leader
    })
    .await;
    let now = &moved.topics[0].partitions[0];
    assert!(p0.isr.contains(&now.leader));
    assert_eq!(now.leader_epoch, p0.leader_epoch + 1);

    let _ = r.stop.send(());
    let ended = tokio::time::timeout(WITHIN, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch ends when the server shuts down");
    tokio::time::timeout(WITHIN, r.task)
        .await
        .expect("an open watch does not hold up shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn producer_ids_are_unique_across_requests_and_coordinator_restarts() {
    let r = start().await;
    let mut ids = BTreeSet::new();
    let mut metadata = MetadataClient::new(r.channel.clone());
    for _ in 0..5 {
        let resp = metadata
            .init_producer_id(pb::InitProducerIdRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.producer_epoch, 0);
        assert!(ids.insert(resp.producer_id));
    }
    let _ = r.stop.send(());
    r.task.await.unwrap().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let cfg = CoordinatorConfig {
        advertised_address: addr.to_string(),
        cluster_name: "t".into(),
        ..Default::default()
    };
    let task = tokio::spawn(sluice_coordinator::run(
        cfg,
        r.store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let mut restarted = MetadataClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let id = restarted
        .init_producer_id(pb::InitProducerIdRequest {})
        .await
        .unwrap()
        .into_inner()
        .producer_id;
    assert!(
        !ids.contains(&id),
        "a restarted coordinator never reuses an id"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
