//! Leader changes as the client lives them: pushed by the metadata watch, or discovered through
//! the errors of a failover (node gone, `NOT_LEADER`, `LEADER_NOT_AVAILABLE`, ...), against the
//! fake cluster (see `support`).

mod support;

use std::time::{Duration, Instant};

use sluice_client::{
    ApiError, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use sluice_proto::pb::ErrorCode;
use support::FakeCluster;

fn producer_config(cluster: &FakeCluster) -> ProducerConfig {
    ProducerConfig {
        client: cluster.client_config(),
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(10),
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    }
}

fn consumer_config(cluster: &FakeCluster) -> ConsumerConfig {
    ConsumerConfig {
        client: cluster.client_config(),
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    }
}

async fn send(producer: &Producer, value: String) -> DeliveryFuture {
    producer
        .send(ProducerRecord::new("t", value).partition(0))
        .await
        .unwrap()
}

/// Waits until a message published after `before` has been sent on the watch, and a little
/// longer for the client to install it.
async fn watch_delivered(cluster: &FakeCluster, before: usize) {
    cluster
        .eventually("the watch sent the change", |c| c.watch_messages() > before)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_watch_message_moving_the_leader_reroutes_the_next_produce_without_get_metadata() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    assert_eq!(send(&producer, "a".into()).await.await.unwrap().offset, 0);
    cluster
        .eventually("a watch is open", |c| c.open_watches() == 1)
        .await;
    let (calls, requests) = (cluster.calls(), cluster.requests().len());

    let sent = cluster.watch_messages();
    cluster.move_leader("t", 2);
    watch_delivered(&cluster, sent).await;
    assert_eq!(send(&producer, "b".into()).await.await.unwrap().offset, 1);
    let nodes: Vec<i32> = cluster.requests()[requests..]
        .iter()
        .map(|r| r.node)
        .collect();
    assert_eq!(
        nodes,
        vec![2],
        "straight to the new leader, no NOT_LEADER detour"
    );
    assert_eq!(cluster.calls(), calls, "no GetMetadata");
}

#[tokio::test]
async fn the_watch_reconnects_past_an_unreachable_coordinator_after_its_stream_ends() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        client: ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new([cluster.coordinator.clone(), "127.0.0.1:1".to_string()])
        },
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    send(&producer, "a".into()).await.await.unwrap();
    cluster
        .eventually("a watch is open", |c| c.open_watches() == 1)
        .await;

    // The stream ends; the next address is dead, so the watch comes back to the live one.
    cluster.end_watches();
    cluster
        .eventually("the watch ended", |c| c.open_watches() == 0)
        .await;
    cluster
        .eventually("the watch is back", |c| c.open_watches() == 1)
        .await;
    let (calls, requests) = (cluster.calls(), cluster.requests().len());
    let sent = cluster.watch_messages();
    cluster.move_leader("t", 2);
    watch_delivered(&cluster, sent).await;
    send(&producer, "b".into()).await.await.unwrap();
    assert_eq!(cluster.requests()[requests].node, 2);
    assert_eq!(cluster.calls(), calls);
}

#[tokio::test]
async fn the_watch_stops_when_the_last_client_handle_is_dropped() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    send(&producer, "a".into()).await.await.unwrap();
    cluster
        .eventually("a watch is open", |c| c.open_watches() == 1)
        .await;
    producer.close().await.unwrap();
    cluster
        .eventually("the producer's watch closed", |c| c.open_watches() == 0)
        .await;

    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap();
    consumer.next().await.unwrap().unwrap();
    cluster
        .eventually("a watch is open", |c| c.open_watches() == 1)
        .await;
    drop(consumer);
    cluster
        .eventually("the consumer's watch closed", |c| c.open_watches() == 0)
        .await;
}

#[tokio::test]
async fn produce_and_consume_ride_out_a_leader_node_dying_in_order_and_without_duplicates() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        batch_size: 150,
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    for i in 0..10 {
        send(&producer, format!("{i:03}")).await.await.unwrap();
    }
    let mut consumer = Consumer::new(consumer_config(&cluster)).await.unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(consumer.next().await.unwrap().unwrap().offset, i);
    }

    let started = Instant::now();
    cluster.stop_node(1).await;
    let mut deliveries = Vec::new();
    for i in 10..40 {
        deliveries.push(send(&producer, format!("{i:03}")).await);
    }
    // Requests fail against the dead node until the election is announced.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.move_leader("t", 2);
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(
            d.await.unwrap().offset,
            10 + i as i64,
            "send order is log order"
        );
    }
    for i in 10..40 {
        let record = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("the consumer follows the new leader")
            .unwrap()
            .unwrap();
        assert_eq!(record.offset, i);
        assert_eq!(record.value.unwrap(), format!("{i:03}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "failover took {:?}",
        started.elapsed()
    );
    let st = cluster.state.lock().unwrap();
    assert_eq!(st.topics["t"].logs[0].end, 40, "every record stored once");
    assert!(st.requests.iter().any(|r| r.node == 2));
}

#[tokio::test]
async fn every_failover_error_is_retried_in_order_until_delivery() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    {
        let mut st = cluster.state.lock().unwrap();
        for code in [
            ErrorCode::LeaderNotAvailable,
            ErrorCode::PartitionOffline,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::RequestTimedOut,
            ErrorCode::FencedLeaderEpoch,
        ] {
            st.produce_faults
                .push_back(ApiError::new(code, "failing over"));
        }
        st.produce_faults
            .push_back(ApiError::not_leader("moved", None));
    }
    let producer = Producer::new(ProducerConfig {
        batch_size: 150,
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..20 {
        deliveries.push(send(&producer, format!("{i:03}")).await);
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as i64);
    }
    assert!(cluster.state.lock().unwrap().produce_faults.is_empty());
}

#[tokio::test]
async fn a_restarted_node_is_reached_again_through_the_cached_connection() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    send(&producer, "a".into()).await.await.unwrap();
    cluster.stop_node(1).await;
    let address = cluster.state.lock().unwrap().nodes[&1].clone();
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "node 1 is down"
    );
    let pending = send(&producer, "b".into()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart_node(1).await;
    let md = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("delivered once the node is back")
        .unwrap();
    assert_eq!(md.offset, 1);
}

/// Client settings under which a request to a hung node waits 30 s before it times out, so only
/// following the leader move can deliver within a couple of seconds.
fn patient(cluster: &FakeCluster) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..cluster.client_config()
    }
}

#[tokio::test]
async fn a_produce_hung_on_a_paused_leader_is_resent_to_the_new_leader_once_the_watch_names_it() {
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        client: patient(&cluster),
        delivery_timeout: Duration::from_secs(60),
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    cluster.pause_node(1);
    let first = send(&producer, "a".into()).await;
    cluster
        .eventually("node 1 holds the first batch", |c| {
            c.stalled() == vec![(1, "produce")]
        })
        .await;
    cluster
        .eventually("a watch is open", |c| c.open_watches() == 1)
        .await;
    // One batch in flight per partition: these wait behind the hung one.
    let later = [
        send(&producer, "b".into()).await,
        send(&producer, "c".into()).await,
    ];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cluster.accepted().is_empty());

    let moved = Instant::now();
    cluster.move_leader("t", 2);
    let md = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("acknowledged by the new leader")
        .unwrap();
    let took = moved.elapsed();
    assert_eq!(md.offset, 0);
    assert!(
        took < Duration::from_secs(2),
        "acknowledged {took:?} after the move"
    );
    for (i, d) in later.into_iter().enumerate() {
        assert_eq!(
            d.await.unwrap().offset,
            1 + i as i64,
            "later records follow"
        );
    }

    let producer_id = producer.producer_id().unwrap();
    let st = cluster.state.lock().unwrap();
    let first = &st.accepted[0];
    assert_eq!(
        (
            first.node,
            first.producer_id,
            first.base_sequence,
            first.records
        ),
        (2, producer_id, 0, 1),
        "the same batch, resent to node 2"
    );
    assert!(st.accepted.iter().all(|a| a.node == 2));
    assert_eq!(st.topics["t"].logs[0].end, 3, "each record stored once");
    assert_eq!(st.duplicates, 0);
    assert_eq!(st.init_calls, 1, "the resend kept its producer id");
    assert_eq!(
        st.stalled,
        vec![(1, "produce")],
        "nothing else went to node 1"
    );
}

#[tokio::test]
async fn a_fetch_hung_on_a_paused_leader_is_abandoned_and_the_new_leaders_records_arrive_promptly()
{
    let cluster = FakeCluster::start(2).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        client: patient(&cluster),
        delivery_timeout: Duration::from_secs(60),
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    send(&producer, "a".into()).await.await.unwrap();
    let mut consumer = Consumer::new(ConsumerConfig {
        client: patient(&cluster),
        ..consumer_config(&cluster)
    })
    .await
    .unwrap();
    consumer
        .assign(vec![("t".into(), 0)], SeekTo::Earliest)
        .await
        .unwrap();
    assert_eq!(consumer.next().await.unwrap().unwrap().offset, 0);
    cluster
        .eventually("both watches are open", |c| c.open_watches() == 2)
        .await;

    cluster.pause_node(1);
    cluster
        .eventually("node 1 holds a fetch", |c| {
            c.stalled().contains(&(1, "fetch"))
        })
        .await;
    let moved = Instant::now();
    cluster.move_leader("t", 2);
    let md = send(&producer, "b".into()).await.await.unwrap();
    assert_eq!(md.offset, 1);
    let record = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the consumer follows the new leader")
        .unwrap()
        .unwrap();
    let took = moved.elapsed();
    assert_eq!((record.offset, record.value.unwrap()), (1, "b".into()));
    assert!(
        took < Duration::from_secs(2),
        "read {took:?} after the move"
    );
}
