//! A full data volume, for real: the storage node's data directory on a tmpfs mounted by the
//! test. Filled by produce, the node refuses with `STORAGE_FULL` (and a message saying what to
//! do) before the file system is full, keeps serving reads, accepts produce again once
//! retention frees space, and its log is intact throughout. With no free space kept, a write
//! that meets `ENOSPC` fails alone (`STORAGE_ERROR`), nothing acknowledged is lost, and writes
//! go on once DeleteRecords frees space. Needs root to mount; without it each test says it was
//! skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{OffsetReset, SeekTo};
use sluice_integration::{ClusterSpec, TestCluster, config};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient};

const TOPIC: &str = "disk";
const VALUE_BYTES: usize = 256 << 10;

/// A size-limited tmpfs, unmounted when dropped.
struct SmallVolume {
    dir: tempfile::TempDir,
}

impl SmallVolume {
    fn mount(mib: u64) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-small-volume-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn value(i: u64) -> Bytes {
    let mut v = format!("{i:08}").into_bytes();
    v.resize(VALUE_BYTES, b'z');
    Bytes::from(v)
}

fn request(i: u64) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: 1,
        timeout_ms: 5_000,
        payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
            records: vec![pb::Record {
                value: value(i),
                has_value: true,
                ..Default::default()
            }],
        })),
        leader_epoch: -1,
        ..Default::default()
    }
}

/// Reads `count` records from the log start and checks they are `first..first + count`.
async fn check_log(cluster: &TestCluster, first: u64, count: u64) {
    let start = read_to_end(cluster, first + count).await;
    assert_eq!(start, first, "the log starts where it should");
}

/// Reads the log from its start up to `end`, checking every record from there on is present
/// with its value; returns the first offset read (the log start then: retention may move it
/// later, which a forward read does not notice).
async fn read_to_end(cluster: &TestCluster, end: u64) -> u64 {
    let mut consumer = cluster
        .consumer_at(TOPIC, SeekTo::Earliest, OffsetReset::None)
        .await;
    let mut first = None;
    let mut next = 0;
    while first.is_none() || next < end {
        let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("every record is readable")
            .unwrap()
            .unwrap();
        let at = r.offset as u64;
        if first.is_none() {
            (first, next) = (Some(at), at);
        }
        assert_eq!((at, r.value), (next, Some(value(next))));
        next += 1;
    }
    first.expect("a record")
}

/// Creates the test's topic (2 MiB segments) and connects to the one storage node.
async fn topic_on_node(cluster: &TestCluster) -> LogClient<tonic::transport::Channel> {
    let segments = config(&[("segment.bytes", "2097152")]);
    let admin = cluster.admin().await.unwrap();
    admin.create_topic(TOPIC, 1, 1, segments).await.unwrap();
    let address = cluster.nodes[0].address();
    LogClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

/// Produces records 0, 1, … until one is refused (at most `most`); returns how many were
/// written and the refusal. `LEADER_NOT_AVAILABLE` while the new partition opens is waited out.
async fn fill(log: &mut LogClient<tonic::transport::Channel>, most: u64) -> (u64, ApiError) {
    let mut written = 0;
    loop {
        assert!(written < most, "never refused after {written} records");
        match log.produce(request(written)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().base_offset, written as i64);
                written += 1;
            }
            Err(status) => {
                let e = ApiError::from_status(&status);
                if e.code != ErrorCode::LeaderNotAvailable {
                    return (written, e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_refuses_produce_serves_reads_and_recovers_after_retention() {
    let volume = match SmallVolume::mount(160) {
        Ok(v) => v,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let root: PathBuf = volume.path().to_path_buf();
    let cluster = TestCluster::start(ClusterSpec {
        storage_nodes: 1,
        node_args: [
            "--min-free-bytes",
            "33554432",
            "--min-free-percent",
            "50",
            "--retention-check-interval-ms",
            "200",
        ]
        .map(String::from)
        .to_vec(),
        node_data_root: Some(root),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let mut log = topic_on_node(&cluster).await;

    // Fill it: at most 160 MiB of 256 KiB records.
    let (mut written, refusal) = fill(&mut log, 640).await;
    assert_eq!(refusal.code, ErrorCode::StorageFull, "{refusal}");
    assert!(refusal.message.contains("retention"), "{refusal}");
    assert!(written > 50, "refused after only {written} records");

    // Reads go on, and everything acknowledged is there.
    check_log(&cluster, 0, written).await;

    // Retention frees space; produce is accepted again by itself.
    admin
        .alter_topic_config(
            TOPIC,
            config(&[("retention.bytes", "8388608")]),
            vec![],
            false,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match log.produce(request(written)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().base_offset, written as i64);
                written += 1;
                break;
            }
            Err(status) => {
                let e = ApiError::from_status(&status);
                assert_eq!(e.code, ErrorCode::StorageFull, "{e}");
                assert!(Instant::now() < deadline, "still refused: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Retention may still be deleting: one forward read from the start to the end.
    let earliest = read_to_end(&cluster, written).await;
    assert!(earliest > 0, "retention deleted the oldest records");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_meets_enospc_fails_alone_and_the_log_stays_whole() {
    let volume = match SmallVolume::mount(96) {
        Ok(v) => v,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    // No free space is kept: the file system itself runs out under a write.
    let cluster = TestCluster::start(ClusterSpec {
        storage_nodes: 1,
        node_args: ["--min-free-bytes", "0", "--min-free-percent", "0"]
            .map(String::from)
            .to_vec(),
        node_data_root: Some(volume.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    let mut log = topic_on_node(&cluster).await;
    let (mut written, failure) = fill(&mut log, 400).await;
    assert_eq!(failure.code, ErrorCode::StorageError, "{failure}");
    assert!(failure.message.contains("No space left"), "{failure}");
    check_log(&cluster, 0, written).await;

    // Space freed by DeleteRecords; the next write lands right after the last good one.
    let low = admin
        .delete_records(TOPIC, 0, written as i64 / 2)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log.produce(request(written)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().base_offset, written as i64);
                written += 1;
                break;
            }
            Err(status) => {
                let e = ApiError::from_status(&status);
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    check_log(&cluster, low as u64, written - low as u64).await;
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
