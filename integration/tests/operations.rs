//! Operations: a rolling restart of every storage node with SIGTERM (controlled shutdown) under
//! `acks=all` load loses nothing and fails no request permanently.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{Acks, ConsumerConfig, ProducerConfig};
use sluice_integration::workload::{self, Ledger};
use sluice_integration::{ClusterSpec, TestCluster};

/// How long a topic's ISRs may take to fill (a restarted node catching up).
const ISR_WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_under_acks_all_load_loses_and_fails_nothing() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let config = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    admin.create_topic("roll", 6, 3, config).await.unwrap();
    cluster.wait_full_isr("roll", 6, ISR_WAIT).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    };
    let producer = workload::spawn_producer(cfg, "roll", 6, 16, ledger.clone(), stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in 0..3 {
        let started = Instant::now();
        let status = tokio::task::block_in_place(|| {
            cluster.stop_node_gracefully(id, Duration::from_secs(45))
        });
        let status = status.unwrap_or_else(|| {
            panic!(
                "node {id} did not stop within 45 s:\n{}",
                cluster.nodes[id].tail(30)
            )
        });
        assert!(
            status.success(),
            "node {id} exited with {status}:\n{}",
            cluster.nodes[id].tail(30)
        );
        let log = std::fs::read_to_string(&cluster.nodes[id].log).unwrap_or_default();
        assert!(
            log.contains("drained"),
            "node {id} handed its leaderships over before stopping"
        );
        println!(
            "node {id}: SIGTERM -> drained and exited in {:?}",
            started.elapsed()
        );
        cluster.restart_node(id).unwrap();
        cluster.wait_full_isr("roll", 6, ISR_WAIT).await;
    }
    stop_tx.send(true).unwrap();
    producer.await.unwrap().unwrap();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let failed: usize = ledger.failed.values().map(Vec::len).sum();
    let report = workload::check(
        ConsumerConfig {
            client: cluster.client_config(),
            ..Default::default()
        },
        "roll",
        6,
        &ledger,
    )
    .await
    .unwrap();
    println!(
        "rolling restart: {} acknowledged records checked, {} read, {failed} failed sends",
        report.acked, report.read
    );
    assert!(
        report.violations.is_empty(),
        "{}",
        report.violations.join("\n")
    );
    assert_eq!(failed, 0, "no acks=all request failed permanently");
    assert!(report.acked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_serve_prometheus_metrics_and_grpc_readiness() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let config = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    admin.create_topic("seen", 3, 3, config).await.unwrap();
    cluster.wait_full_isr("seen", 3, ISR_WAIT).await;
    let producer = sluice_client::Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..30 {
        producer
            .send(sluice_client::ProducerRecord::new(
                "seen",
                bytes::Bytes::from(format!("m{i}")),
            ))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    // Gauges are published every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut text = String::new();
    for n in &cluster.nodes {
        text.push_str(&cluster.scrape(n).await.unwrap());
    }
    for needle in [
        // The producer's requests travel on its produce stream.
        "sluice_requests_total{api=\"ProduceStream\",code=\"OK\"}",
        "sluice_request_duration_seconds_bucket{api=\"ProduceStream\"",
        "sluice_produce_streams_total 1",
        "sluice_produce_bytes_total{topic=\"seen\"}",
        "sluice_partition_isr_size{topic=\"seen\"",
        "sluice_partition_high_watermark{topic=\"seen\"",
        "sluice_under_replicated_partitions 0",
        "sluice_rocksdb_memtable_bytes",
        "sluice_data_volume_free_bytes",
        "sluice_data_volume_bytes",
        "sluice_metadata_store_duration_seconds_bucket",
    ] {
        assert!(
            text.contains(needle),
            "storage-node metrics lack {needle}:\n{text}"
        );
    }
    let coordinator = cluster.scrape(&cluster.coordinators[0]).await.unwrap();
    for needle in [
        "sluice_controller_active 1",
        "sluice_requests_total{api=\"CreateTopic\",code=\"OK\"} 1",
        "sluice_request_duration_seconds_bucket{api=\"GetMetadata\"",
    ] {
        assert!(
            coordinator.contains(needle),
            "coordinator metrics lack {needle}:\n{coordinator}"
        );
    }
    for n in &cluster.nodes {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", n.address()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "readiness"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::Serving as i32,
                "{} service {service:?}",
                n.name
            );
        }
    }
}
