//! Start-up recovery on real processes and files: a follower killed with SIGKILL whose last
//! segment then loses bytes at its end and has a batch corrupted comes back, cuts its log at
//! the last valid batch, re-fetches the rest from its leader and holds the leader's batches
//! byte for byte, with every acknowledged record of the RF 3 topic readable; a node that was
//! down while a topic was deleted removes that topic's data when it returns.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{OffsetReset, Producer, ProducerRecord, SeekTo};
use sluice_integration::{ClusterSpec, TestCluster, config};

fn value(i: u64) -> Bytes {
    Bytes::from(format!("v{i:06}-{}", "y".repeat(200)))
}

async fn produce(producer: &Producer, topic: &str, from: u64, to: u64) {
    for round in (from..to).step_by(10) {
        let mut acks = Vec::new();
        for i in round..(round + 10).min(to) {
            let r = ProducerRecord::new(topic, value(i)).partition(0);
            acks.push(producer.send(r).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
    }
}

/// The per-replica directories (one per hosted partition) under a node's segment store.
fn replica_dirs(data: &Path) -> Vec<PathBuf> {
    let root = data.join("rocksdb").join("segments");
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_tail_is_cut_and_refetched_and_data_of_deleted_topics_is_removed() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        // No checkpoint during the test: every batch is verified after the crash.
        node_args: vec!["--recovery-checkpoint-interval-ms".into(), "3600000".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let min_isr = config(&[("min.insync.replicas", "2")]);
    admin
        .create_topic("rec", 1, 3, min_isr.clone())
        .await
        .unwrap();
    admin.create_topic("gone", 1, 3, min_isr).await.unwrap();
    cluster
        .wait_full_isr("rec", 1, Duration::from_secs(30))
        .await;
    cluster
        .wait_full_isr("gone", 1, Duration::from_secs(30))
        .await;
    let producer = cluster.producer().await;
    produce(&producer, "rec", 0, 200).await;
    produce(&producer, "gone", 0, 20).await;
    let leader = cluster.leader_of("rec", 0).await.unwrap() as usize;
    let follower = (leader + 1) % 3;
    let full = cluster.replica_log(leader, "rec", 0).await.unwrap();
    wait_for("the follower holds every batch", async || {
        cluster.replica_log(follower, "rec", 0).await.ok() == Some(full.clone())
    })
    .await;
    let data = cluster.node_data_dir(follower);
    let before = replica_dirs(&data);
    assert_eq!(before.len(), 2, "{before:?}");
    cluster.kill_node(follower);

    // The topic goes while the follower is down.
    admin.delete_topic("gone").await.unwrap();

    // Damage "rec"'s last segment on the follower: a flipped byte in the middle and the last
    // 40 bytes cut off. "rec" was created first, so its replica has the lower uid.
    let dir = before
        .iter()
        .min_by_key(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .unwrap();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    segments.sort();
    let last = segments.pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    bytes.truncate(bytes.len() - 40);
    std::fs::write(&last, &bytes).unwrap();

    produce(&producer, "rec", 200, 260).await;
    cluster.restart_node(follower).unwrap();
    cluster
        .wait_full_isr("rec", 1, Duration::from_secs(30))
        .await;
    let full = cluster.replica_log(leader, "rec", 0).await.unwrap();
    wait_for("the follower re-fetched the cut tail", async || {
        cluster.replica_log(follower, "rec", 0).await.ok() == Some(full.clone())
    })
    .await;
    let log = std::fs::read_to_string(&cluster.nodes[follower].log).unwrap();
    assert!(
        log.contains("damaged log tail"),
        "the follower said what it cut"
    );
    assert!(
        log.contains("removed the data of a replica"),
        "and what it removed"
    );
    assert_eq!(
        replica_dirs(&data).len(),
        1,
        "the deleted topic's files are gone"
    );

    let mut consumer = cluster
        .consumer_at("rec", SeekTo::Earliest, OffsetReset::None)
        .await;
    for i in 0..260 {
        let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("every acknowledged record")
            .unwrap()
            .unwrap();
        assert_eq!((r.offset, r.value), (i as i64, Some(value(i))));
    }
    producer.close().await.unwrap();
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
