//! Retention and DeleteRecords on a real RF 3 cluster with small segments: `retention.bytes`
//! and then `retention.ms`, changed live, delete old segment files on the leader and both
//! followers (asserted from the files on disk, each replica's log start and the metrics); a
//! consumer below the log start resets as configured; DeleteRecords moves every replica's log
//! start; a follower that was down while everything it had was deleted restarts at the
//! leader's log start; nothing at or after the log start is lost or reordered.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{OffsetReset, Producer, ProducerRecord, SeekTo};
use sluice_integration::{ClusterSpec, TestCluster, config};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient};

const TOPIC: &str = "ret";
/// Records per produce round: one batch of about 10 KiB, so every round fills a segment.
const ROUND: u64 = 20;

fn value(i: u64) -> Bytes {
    Bytes::from(format!("r{i:06}-{}", "x".repeat(500)))
}

/// Produces records `from..to` in rounds of [`ROUND`], waiting for each round's acks.
async fn produce(producer: &Producer, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let mut acks = Vec::new();
        for j in i..(i + ROUND).min(to) {
            let r = ProducerRecord::new(TOPIC, value(j)).partition(0);
            acks.push(producer.send(r).await.unwrap());
        }
        for (k, a) in acks.into_iter().enumerate() {
            assert_eq!(a.await.unwrap().offset, (i + k as u64) as i64);
        }
        i += ROUND;
    }
}

/// Bytes and number of segment files under a node's data directory.
fn segment_files(dir: &Path) -> (u64, usize) {
    let mut out = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.0 += e.metadata().map(|m| m.len()).unwrap_or(0);
                out.1 += 1;
            }
        }
    }
    out
}

/// A node's own replica's log start and end, as its replica read says ((-1, -1) while the
/// node does not answer: it is restarting).
async fn bounds(cluster: &TestCluster, id: usize) -> (i64, i64) {
    let address = cluster.nodes[id].address();
    let Ok(mut log) = LogClient::connect(format!("http://{address}")).await else {
        return (-1, -1);
    };
    let req = pb::FetchRequest {
        topic: TOPIC.into(),
        partition: 0,
        offset: i64::MAX,
        max_bytes: 1,
        leader_epoch: -1,
        replica_read: true,
        ..Default::default()
    };
    // Past the end: the answer names the valid range.
    let status = log.fetch(req).await.unwrap_err();
    let e = ApiError::from_status(&status);
    if e.code != ErrorCode::OffsetOutOfRange {
        return (-1, -1);
    }
    let range = e
        .message
        .split("valid offsets are ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no range in '{}'", e.message));
    let (start, end) = range.split_once(" to ").unwrap();
    (start.parse().unwrap(), end.parse().unwrap())
}

/// Waits until `ok` holds for every node's (log start, log end, segment bytes, segment files).
async fn wait_replicas(
    cluster: &TestCluster,
    what: &str,
    ok: impl Fn(usize, (i64, i64), (u64, usize)) -> bool,
) -> Vec<((i64, i64), (u64, usize))> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        for id in 0..cluster.nodes.len() {
            let b = bounds(cluster, id).await;
            let files = segment_files(&cluster.node_data_dir(id));
            states.push((b, files));
        }
        if states.iter().enumerate().all(|(id, (b, f))| ok(id, *b, *f)) {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: replicas are at (start, end), (bytes, files) = {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `count` records from `from` with a consumer that resets as `reset` says.
async fn read(
    cluster: &TestCluster,
    reset: OffsetReset,
    from: i64,
    count: usize,
) -> Vec<(i64, Bytes)> {
    let mut consumer = cluster
        .consumer_at(TOPIC, SeekTo::Offset(from), reset)
        .await;
    let mut out = Vec::new();
    while out.len() < count {
        let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("records arrive")
            .unwrap()
            .unwrap();
        out.push((r.offset, r.value.unwrap_or_default()));
    }
    out
}

fn expected(from: i64, to: i64) -> Vec<(i64, Bytes)> {
    (from..to).map(|i| (i, value(i as u64))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_delete_records_free_space_on_every_replica_and_keep_the_rest() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        node_args: vec!["--retention-check-interval-ms".into(), "100".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let topic_config = config(&[("segment.bytes", "12000"), ("min.insync.replicas", "2")]);
    admin.create_topic(TOPIC, 1, 3, topic_config).await.unwrap();
    cluster
        .wait_full_isr(TOPIC, 1, Duration::from_secs(30))
        .await;
    let producer = cluster.producer().await;
    let mut end = 400;
    produce(&producer, 0, end).await;
    let full = wait_replicas(&cluster, "replicated", |_, b, _| b == (0, end as i64)).await;
    for (_, (bytes, files)) in &full {
        assert!(*files >= 15 && *bytes > 200_000, "{full:?}");
    }

    // retention.bytes, set live: each replica keeps at least 30,000 bytes, and no more than
    // it needs to (one more segment would take it below the limit).
    admin
        .alter_topic_config(
            TOPIC,
            config(&[("retention.bytes", "30000")]),
            vec![],
            false,
        )
        .await
        .unwrap();
    let sized = wait_replicas(&cluster, "retention.bytes", |_, (start, _), (bytes, _)| {
        start > 0 && bytes < 30_000 + 12_000
    })
    .await;
    for (id, ((start, e), (bytes, _))) in sized.iter().enumerate() {
        assert_eq!(*e, end as i64);
        assert!(*bytes >= 30_000, "node {id} keeps the limit: {sized:?}");
        assert!(*start > 300, "node {id}: {sized:?}");
    }
    let leader = cluster.leader_of(TOPIC, 0).await.unwrap() as usize;
    let (start, _) = sized[leader].0;
    let metrics = cluster.scrape(&cluster.nodes[leader]).await.unwrap();
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("sluice_partition_bytes") && l.contains("topic=\"ret\""))
        .unwrap_or_else(|| panic!("no partition size gauge in:\n{metrics}"));
    let reported: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(reported < 42_000.0, "{gauge}");
    assert!(metrics.contains("sluice_retention_deleted_bytes_total"));

    // A consumer below the log start: earliest resets to it, none fails with the code.
    let got = read(
        &cluster,
        OffsetReset::Earliest,
        0,
        (end as i64 - start) as usize,
    )
    .await;
    assert_eq!(
        got,
        expected(start, end as i64),
        "nothing at or after the start is lost"
    );
    let mut strict = cluster
        .consumer_at(TOPIC, SeekTo::Offset(5), OffsetReset::None)
        .await;
    let e = tokio::time::timeout(Duration::from_secs(10), strict.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange), "{e}");

    // retention.ms instead: every closed segment is older than a second; the active one stays.
    admin
        .alter_topic_config(
            TOPIC,
            config(&[("retention.ms", "1000")]),
            vec!["retention.bytes".into()],
            false,
        )
        .await
        .unwrap();
    let timed = wait_replicas(&cluster, "retention.ms", |_, _, (_, files)| files == 1).await;
    let (start, _) = timed[leader].0;
    assert!(start > sized[leader].0.0);
    assert_eq!(
        read(
            &cluster,
            OffsetReset::Earliest,
            0,
            (end as i64 - start) as usize
        )
        .await,
        expected(start, end as i64)
    );

    // DeleteRecords: past the high watermark is refused; below it, every replica follows.
    let e = admin
        .delete_records(TOPIC, 0, end as i64 + 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange), "{e}");
    let low = admin
        .delete_records(TOPIC, 0, end as i64 - 5)
        .await
        .unwrap();
    assert_eq!(low, end as i64 - 5);
    wait_replicas(&cluster, "delete-records", |_, (s, _), _| s == low).await;
    assert_eq!(
        read(&cluster, OffsetReset::Earliest, 0, 5).await,
        expected(low, end as i64)
    );

    // A follower that was down while the leader deleted everything it had restarts at the
    // leader's log start and catches up; the replicas hold the same records.
    let follower = (0..3).find(|n| *n != leader).unwrap();
    cluster.kill_node(follower);
    produce(&producer, end, end + 60).await;
    end += 60;
    let low = admin.delete_records(TOPIC, 0, -1).await.unwrap();
    assert_eq!(low, end as i64);
    produce(&producer, end, end + 20).await;
    end += 20;
    cluster.restart_node(follower).unwrap();
    wait_replicas(&cluster, "restarted follower", |_, b, _| {
        b == (low, end as i64)
    })
    .await;
    cluster
        .wait_full_isr(TOPIC, 1, Duration::from_secs(30))
        .await;
    assert_eq!(
        read(&cluster, OffsetReset::Earliest, 0, 20).await,
        expected(low, end as i64)
    );
    let leader_log = cluster
        .replica_log_from(leader, TOPIC, 0, low)
        .await
        .unwrap();
    for id in 0..3 {
        let log = cluster.replica_log_from(id, TOPIC, 0, low).await.unwrap();
        assert_eq!(log, leader_log, "node {id} holds the leader's batches");
    }
    producer.close().await.unwrap();
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
