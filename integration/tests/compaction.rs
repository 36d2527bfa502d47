//! Key compaction on real processes: a compacted RF 3 topic's consumers see the latest value
//! of every key (and no deleted key) after its leader is killed; and `__sluice_offsets`, once
//! compacted, makes a group coordinator's takeover replay the live groups' offsets rather than
//! every commit ever made (20,000 against 200,000 commits, figures printed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{OffsetReset, Producer, ProducerRecord, SeekTo};
use sluice_integration::matrix::strip_ansi;
use sluice_integration::{ClusterSpec, TestCluster, config};
use sluice_proto::batch::{BatchIter, decode_records};
use sluice_proto::error::ApiError;
use sluice_proto::model::OFFSETS_TOPIC;
use sluice_proto::pb::{self, admin_client::AdminClient, groups_client::GroupsClient};

fn cleaner_args() -> Vec<String> {
    [
        "--cleaner-interval-ms",
        "200",
        "--cleaner-io-bytes-per-sec",
        "1000000000",
    ]
    .map(String::from)
    .to_vec()
}

/// Records in a node's own replica of a partition, from its log start.
async fn replica_records(
    cluster: &TestCluster,
    id: usize,
    topic: &str,
) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut start = 0;
    let log = loop {
        match cluster.replica_log_from(id, topic, 0, start).await {
            Ok(log) => break log,
            Err(e) => {
                let e = e.downcast_ref::<tonic::Status>().map(ApiError::from_status);
                let msg = e.map(|e| e.message).unwrap_or_default();
                // Below the log start: take it from the message's range.
                start = msg
                    .split("valid offsets are ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("reading node {id}'s {topic}: {msg}"));
            }
        }
    };
    let mut out = Vec::new();
    for b in BatchIter::new(log) {
        let (_, bytes) = b.unwrap();
        for r in decode_records(&bytes).unwrap() {
            out.push((r.offset, r.key, r.value));
        }
    }
    out
}

/// Writes one value for each key of `keys` (acks=all), recording it in `model`; returns how many.
async fn put_round(
    producer: &Producer,
    model: &mut BTreeMap<Bytes, Bytes>,
    round: usize,
    keys: std::ops::Range<usize>,
) -> usize {
    let mut acks = Vec::new();
    for k in keys {
        let key = Bytes::from(format!("k{k:02}"));
        let value = Bytes::from(format!("v{round}-{k}"));
        model.insert(key.clone(), value.clone());
        let r = ProducerRecord::new("kv", value).key(key).partition(0);
        acks.push(producer.send(r).await.unwrap());
    }
    let n = acks.len();
    for a in acks {
        a.await.unwrap();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_of_every_key_across_a_leader_change() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        node_args: cleaner_args(),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let compacted = config(&[
        ("cleanup.policy", "compact"),
        ("segment.bytes", "4096"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "0"),
        ("min.insync.replicas", "2"),
    ]);
    admin.create_topic("kv", 1, 3, compacted).await.unwrap();
    cluster
        .wait_full_isr("kv", 1, Duration::from_secs(30))
        .await;
    let producer = cluster.producer().await;
    let keyless = ProducerRecord::new("kv", Bytes::from_static(b"x")).partition(0);
    let e = producer.send(keyless).await.unwrap().await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(sluice_proto::pb::ErrorCode::InvalidRequest),
        "{e}"
    );
    assert!(e.to_string().contains("give every record a key"), "{e}");
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut sent = 0;
    for round in 0..30 {
        sent += put_round(&producer, &mut model, round, 0..20).await;
    }
    // Deletions, then enough writes to close the segment holding them.
    for k in 0..5 {
        let key = Bytes::from(format!("k{k:02}"));
        model.remove(&key);
        let mut r = ProducerRecord::new("kv", Bytes::new())
            .key(key)
            .partition(0);
        r.value = None;
        producer.send(r).await.unwrap().await.unwrap();
        sent += 1;
    }
    for round in 30..40 {
        sent += put_round(&producer, &mut model, round, 5..20).await;
    }

    // Every replica compacts its own log.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut counts = Vec::new();
        for id in 0..3 {
            counts.push(replica_records(&cluster, id, "kv").await.len());
        }
        if counts.iter().all(|c| *c < sent / 3) {
            println!("records per replica after compaction: {counts:?} of {sent} written");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {counts:?} of {sent}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A new leader; a consumer from the start sees each key's latest value, no deleted key.
    let leader = cluster.leader_of("kv", 0).await.unwrap() as usize;
    cluster.kill_node(leader);
    cluster
        .wait_partition("kv", 0, Duration::from_secs(20), |p| {
            p.leader as usize != leader && p.leader >= 0
        })
        .await
        .unwrap();
    let mut consumer = cluster
        .consumer_at("kv", SeekTo::Earliest, OffsetReset::None)
        .await;
    let mut seen: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut last = -1;
    while last + 1 < sent as i64 {
        let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("records up to the end")
            .unwrap()
            .unwrap();
        assert!(r.offset > last, "offsets only grow");
        last = r.offset;
        let key = r.key.unwrap();
        match r.value {
            Some(v) => seen.insert(key, v),
            None => seen.remove(&key),
        };
    }
    assert_eq!(seen, model);
    producer.close().await.unwrap();
}

/// Commits `rounds` rounds of 500 offsets for each of four groups (2,000 records a round),
/// as administrative commits on the groups' coordinator.
async fn commit_rounds(cluster: &TestCluster, rounds: std::ops::Range<i64>) {
    for round in rounds {
        for g in 0..4 {
            let group = format!("g{g}");
            let offsets: Vec<pb::OffsetCommit> = (0..500)
                .map(|p| pb::OffsetCommit {
                    topic: "t".into(),
                    partition: p,
                    offset: round,
                    metadata: String::new(),
                })
                .collect();
            let req = pb::CommitOffsetsRequest {
                group_id: group.clone(),
                member_id: String::new(),
                member_epoch: -1,
                offsets,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut groups =
                    GroupsClient::connect(format!("http://{}", coordinator(cluster, &group).await))
                        .await
                        .unwrap();
                match groups.commit_offsets(req.clone()).await {
                    Ok(_) => break,
                    Err(s) => {
                        let e = ApiError::from_status(&s);
                        assert!(e.is_retriable() && Instant::now() < deadline, "{e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}

/// The address of the node coordinating `group`.
async fn coordinator(cluster: &TestCluster, group: &str) -> String {
    let mut md = AdminClient::connect(format!("http://{}", cluster.bootstrap()[0]))
        .await
        .unwrap();
    loop {
        if let Ok(r) = md
            .find_coordinator(pb::FindCoordinatorRequest {
                group_id: group.into(),
            })
            .await
        {
            return r.into_inner().address;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn field(line: &str, name: &str) -> u64 {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in '{line}'"))
}

/// Kills the node coordinating the groups, waits until another one serves their offsets at
/// `round`, and returns what it replayed: (records, milliseconds), from its log.
async fn takeover(cluster: &mut TestCluster, round: i64) -> (u64, u64) {
    let leader = cluster.leader_of(OFFSETS_TOPIC, 0).await.unwrap() as usize;
    cluster.kill_node(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let address = coordinator(cluster, "g0").await;
        let served = async {
            let mut g = GroupsClient::connect(format!("http://{address}"))
                .await
                .ok()?;
            let r = g
                .fetch_offsets(pb::FetchOffsetsRequest {
                    group_id: "g0".into(),
                    partitions: vec![],
                })
                .await
                .ok()?;
            Some(r.into_inner().offsets)
        }
        .await;
        if let Some(offsets) = served
            && offsets.len() == 500
        {
            assert!(
                offsets.iter().all(|o| o.offset == round),
                "committed offsets are served"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator served the offsets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = cluster.leader_of(OFFSETS_TOPIC, 0).await.unwrap() as usize;
    let log = std::fs::read_to_string(&cluster.nodes[now].log).unwrap();
    let line = log
        .lines()
        .rev()
        .map(strip_ansi)
        .find(|l| l.contains("group coordinator shard loaded") && l.contains(" partition=0 "))
        .expect("the new coordinator logged its load");
    cluster.restart_node(leader).unwrap();
    cluster
        .wait_full_isr(OFFSETS_TOPIC, 1, Duration::from_secs(30))
        .await;
    (field(&line, "records"), field(&line, "took_ms"))
}

/// Waits until the coordinating replica's log holds at most `limit` records.
async fn wait_compacted(cluster: &TestCluster, limit: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.leader_of(OFFSETS_TOPIC, 0).await.unwrap() as usize;
        let n = replica_records(cluster, leader, OFFSETS_TOPIC).await.len();
        if n <= limit {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the offsets log still holds {n} records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_takeover_replays_the_live_offsets_not_every_commit() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        node_args: cleaner_args(),
        coordinator_args: vec!["--offsets-topic-partitions".into(), "1".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // The first lookup creates the offsets topic; small segments let compaction start early.
    coordinator(&cluster, "g0").await;
    let admin = cluster.admin().await.unwrap();
    admin
        .alter_topic_config(
            OFFSETS_TOPIC,
            config(&[("segment.bytes", "65536")]),
            vec![],
            false,
        )
        .await
        .unwrap();
    cluster
        .wait_full_isr(OFFSETS_TOPIC, 1, Duration::from_secs(30))
        .await;

    commit_rounds(&cluster, 0..10).await;
    let kept_20k = wait_compacted(&cluster, 8_000).await;
    let (records_20k, ms_20k) = takeover(&mut cluster, 9).await;
    commit_rounds(&cluster, 10..100).await;
    let kept_200k = wait_compacted(&cluster, 8_000).await;
    let (records_200k, ms_200k) = takeover(&mut cluster, 99).await;
    println!(
        "offsets takeover after 20,000 commits: {records_20k} records replayed in {ms_20k} ms \
         (log held {kept_20k}); after 200,000: {records_200k} in {ms_200k} ms (log held {kept_200k})"
    );
    assert!(records_200k <= 8_000 && records_20k <= 8_000);
    assert!(
        records_200k <= 2 * records_20k + 2_000,
        "takeover grows with history: {records_20k} then {records_200k} records"
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
