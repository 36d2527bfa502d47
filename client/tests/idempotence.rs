//! The idempotent producer's side of the de-duplication contract, against the fake cluster
//! (whose nodes de-duplicate and check sequences as a real leader does; see `support`).

mod support;

use std::time::Duration;

use sluice_client::{Acks, ApiError, ClientError, Producer, ProducerConfig, ProducerRecord};
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

async fn send(producer: &Producer, value: &str) -> sluice_client::Result<i64> {
    let delivery = producer
        .send(ProducerRecord::new("t", value.to_string()).partition(0))
        .await?;
    Ok(delivery.await?.offset)
}

#[tokio::test]
async fn batches_carry_the_granted_producer_id_and_consecutive_sequences() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let cfg = ProducerConfig {
        batch_size: 200,
        ..producer_config(&cluster)
    };
    let producer = Producer::new(cfg).await.unwrap();
    assert_eq!(
        producer.producer_id(),
        Some(1000),
        "granted by InitProducerId"
    );
    let mut deliveries = Vec::new();
    for i in 0..30 {
        let r = ProducerRecord::new("t", format!("{i:04}")).partition(0);
        deliveries.push(producer.send(r).await.unwrap());
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as i64);
    }
    let accepted = cluster.accepted();
    assert!(accepted.len() > 1, "several batches");
    let mut next_sequence = 0;
    for batch in &accepted {
        assert_eq!(batch.producer_id, 1000);
        assert_eq!(batch.base_sequence, next_sequence, "{accepted:?}");
        next_sequence += batch.records as i32;
    }
    assert_eq!(next_sequence, 30);
    for req in cluster.requests() {
        assert_eq!(req.acks, -1, "idempotence produces with acks=all");
        assert_eq!(
            req.timeout_ms, 5_000,
            "the leader waits up to the request timeout"
        );
    }
    assert_eq!(cluster.state.lock().unwrap().init_calls, 1);
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_resends_the_same_sequence_and_is_not_appended_twice() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    {
        let mut st = cluster.state.lock().unwrap();
        // The batch is appended, then the answer is lost twice: once with the connection, once
        // as a leader that gave up waiting for its followers.
        st.faults_after_append
            .push_back(tonic::Status::unavailable("connection reset"));
        st.faults_after_append
            .push_back(ApiError::new(ErrorCode::RequestTimedOut, "followers slow").to_status());
    }
    assert_eq!(send(&producer, "once").await.unwrap(), 0);
    let requests = cluster.requests();
    assert_eq!(requests.len(), 3, "two retries");
    for r in &requests {
        assert_eq!((r.producer_id, r.base_sequence, r.records), (1000, 0, 1));
    }
    assert_eq!(cluster.accepted().len(), 1, "appended once");
    assert_eq!(cluster.state.lock().unwrap().duplicates, 2);
    assert_eq!(send(&producer, "next").await.unwrap(), 1);
    assert_eq!(cluster.accepted().last().unwrap().base_sequence, 1);
}

#[tokio::test]
async fn idempotence_with_acks_one_is_refused_with_a_config_error() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let cfg = ProducerConfig {
        acks: Acks::Leader,
        ..producer_config(&cluster)
    };
    let err = Producer::new(cfg.clone()).await.unwrap_err();
    let ClientError::Config(msg) = &err else {
        panic!("expected a config error, got {err}");
    };
    assert!(msg.contains("acks=all"), "{msg}");
    assert_eq!(cluster.state.lock().unwrap().init_calls, 0);

    let producer = Producer::new(ProducerConfig {
        enable_idempotence: false,
        ..cfg
    })
    .await
    .unwrap();
    assert_eq!(producer.producer_id(), None);
    assert_eq!(send(&producer, "x").await.unwrap(), 0);
    let req = cluster.requests().pop().unwrap();
    assert_eq!((req.acks, req.producer_id, req.base_sequence), (1, -1, -1));
    assert_eq!(cluster.state.lock().unwrap().init_calls, 0);
}

#[tokio::test]
async fn a_batch_refused_before_the_append_gives_its_sequence_to_the_next_batch() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    cluster
        .state
        .lock()
        .unwrap()
        .produce_faults
        .push_back(ApiError::new(ErrorCode::BatchTooLarge, "too large"));
    let err = send(&producer, "big").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BatchTooLarge));
    assert_eq!(send(&producer, "small").await.unwrap(), 0);
    let batch = cluster.accepted().pop().unwrap();
    assert_eq!((batch.producer_id, batch.base_sequence), (1000, 0));
    assert_eq!(producer.producer_id(), Some(1000));
}

#[tokio::test]
async fn a_batch_that_may_have_been_written_moves_its_partition_to_a_new_producer_id() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        ..producer_config(&cluster)
    })
    .await
    .unwrap();
    assert_eq!(send(&producer, "a").await.unwrap(), 0);
    {
        let mut st = cluster.state.lock().unwrap();
        for _ in 0..1000 {
            st.produce_faults
                .push_back(ApiError::new(ErrorCode::RequestTimedOut, "followers slow"));
        }
    }
    let err = send(&producer, "unknown outcome").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RequestTimedOut));
    cluster.state.lock().unwrap().produce_faults.clear();
    // The leader's next expected sequence is unknown (1 or 2): start over under a new id.
    assert_eq!(send(&producer, "b").await.unwrap(), 1);
    let batch = cluster.accepted().pop().unwrap();
    assert_eq!((batch.producer_id, batch.base_sequence), (1001, 0));
    assert_eq!(producer.producer_id(), Some(1001));
}

#[tokio::test]
async fn out_of_order_sequence_fails_the_batch_without_retry_and_the_next_gets_a_new_id() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    cluster
        .state
        .lock()
        .unwrap()
        .produce_faults
        .push_back(ApiError::new(ErrorCode::OutOfOrderSequence, "gap"));
    let err = send(&producer, "a").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OutOfOrderSequence));
    assert!(!err.is_retriable());
    assert_eq!(cluster.requests().len(), 1, "not retried");
    assert_eq!(send(&producer, "b").await.unwrap(), 0);
    let batch = cluster.accepted().pop().unwrap();
    assert_eq!((batch.producer_id, batch.base_sequence), (1001, 0));
}

#[tokio::test]
async fn producer_id_request_retries_retriable_errors_and_gives_up_on_others() {
    let cluster = FakeCluster::start(1).await;
    cluster.create_topic("t", 1, 1);
    {
        let mut st = cluster.state.lock().unwrap();
        st.init_faults
            .push_back(ApiError::new(ErrorCode::NotController, "electing"));
        st.init_faults
            .push_back(ApiError::new(ErrorCode::MetadataUnavailable, "etcd away"));
    }
    let producer = Producer::new(producer_config(&cluster)).await.unwrap();
    assert_eq!(producer.producer_id(), Some(1000));
    assert_eq!(cluster.state.lock().unwrap().init_calls, 3);

    cluster
        .state
        .lock()
        .unwrap()
        .init_faults
        .push_back(ApiError::new(ErrorCode::InvalidRequest, "no"));
    let err = Producer::new(producer_config(&cluster)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
}
