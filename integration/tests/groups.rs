//! Consumer groups across real processes: server-side assignment, committed offsets in
//! `__sluice_offsets`, fencing of zombies, lag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_integration::{ClusterSpec, TestCluster};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, groups_client::GroupsClient};

async fn groups_client(
    cluster: &TestCluster,
    group: &str,
) -> GroupsClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut admin =
            pb::admin_client::AdminClient::connect(format!("http://{}", cluster.bootstrap()[0]))
                .await
                .unwrap();
        if let Ok(c) = admin
            .find_coordinator(pb::FindCoordinatorRequest {
                group_id: group.into(),
            })
            .await
            && let Ok(client) =
                GroupsClient::connect(format!("http://{}", c.into_inner().address)).await
        {
            return client;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn heartbeat(
    group: &str,
    member: &str,
    epoch: i32,
    topics: &[&str],
    owned: Vec<pb::TopicPartitions>,
) -> pb::GroupHeartbeatRequest {
    pb::GroupHeartbeatRequest {
        group_id: group.into(),
        member_id: member.into(),
        member_epoch: epoch,
        subscribed_topics: topics.iter().map(|t| t.to_string()).collect(),
        owned,
        rebalance_timeout_ms: 5_000,
        session_timeout_ms: 1_500,
        ..Default::default()
    }
}

/// Heartbeats until the server's answer is stable, as a well-behaved member would.
async fn converge(
    client: &mut GroupsClient<tonic::transport::Channel>,
    group: &str,
    topics: &[&str],
) -> pb::GroupHeartbeatResponse {
    // The coordinator may still be loading the freshly created offsets partition: retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resp = loop {
        match client
            .heartbeat(heartbeat(group, "", 0, topics, Vec::new()))
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if ApiError::from_status(&s).is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("join failed: {s}"),
        }
    };
    for _ in 0..20 {
        let next = client
            .heartbeat(heartbeat(
                group,
                &resp.member_id,
                resp.member_epoch,
                topics,
                resp.assignment.clone(),
            ))
            .await
            .unwrap()
            .into_inner();
        if next.member_epoch == resp.member_epoch && next.assignment == resp.assignment {
            return next;
        }
        resp = next;
    }
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_member_past_its_session_cannot_commit() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("work", 4, 3, BTreeMap::new())
        .await
        .unwrap();
    let mut client = groups_client(&cluster, "zombies").await;
    let member = converge(&mut client, "zombies", &["work"]).await;
    assert!(!member.assignment.is_empty());
    let commit = |epoch: i32| pb::CommitOffsetsRequest {
        group_id: "zombies".into(),
        member_id: member.member_id.clone(),
        member_epoch: epoch,
        offsets: vec![pb::OffsetCommit {
            topic: "work".into(),
            partition: member.assignment[0].partitions[0],
            offset: 7,
            metadata: "m".into(),
        }],
    };
    client
        .commit_offsets(commit(member.member_epoch))
        .await
        .expect("a live member commits");
    // Paused past its session timeout (1.5 s), then resumed: fenced.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let err = ApiError::from_status(
        &client
            .commit_offsets(commit(member.member_epoch))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(
            err.code,
            ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch
        ),
        "{err}"
    );
    let fetched = client
        .fetch_offsets(pb::FetchOffsetsRequest {
            group_id: "zombies".into(),
            partitions: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.offsets.len(), 1);
    assert_eq!(
        (
            fetched.offsets[0].offset,
            fetched.offsets[0].metadata.as_str()
        ),
        (7, "m"),
        "only the live member's commit counts"
    );
}

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_client::{
    Acks, GroupConsumer, GroupConsumerConfig, GroupEvent, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};

type Tp = (String, i32);
type EventLog = Arc<Mutex<Vec<(Instant, usize, GroupEvent)>>>;

/// A group member running in its own task: it keeps calling `next()` (which applies
/// assignment changes), records its events as they happen, and publishes its assignment.
struct Member {
    assignment: Arc<Mutex<Vec<Tp>>>,
    stop: tokio::sync::watch::Sender<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

fn member_config(cluster: &TestCluster, group: &str, topic: &str) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client: cluster.client_config(),
        group_id: group.into(),
        topics: vec![topic.into()],
        session_timeout: Duration::from_secs(6),
        auto_offset_reset: OffsetReset::Earliest,
        ..Default::default()
    }
}

fn spawn_member(cfg: GroupConsumerConfig, idx: usize, log: EventLog) -> Member {
    let assignment = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(None::<bool>);
    let published = assignment.clone();
    let task = tokio::spawn(async move {
        let mut c = GroupConsumer::new(cfg).await.expect("join");
        // Events are timestamped as they are sent (a task waiting on them), not when the loop
        // below gets round to them: that can be ~50 ms later, enough to misorder a release and
        // the reassignment it allows on another member.
        let mut events = c.events();
        let closed_log = log.clone();
        let recorder = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => log.lock().unwrap().push((Instant::now(), idx, e)),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    Err(e) => panic!("member {idx} lost events: {e}"),
                }
            }
        });
        loop {
            tokio::select! {
                _ = stopped.changed() => {
                    let graceful = stopped.borrow().unwrap_or(true);
                    let owned = c.assignment();
                    if graceful { c.close().await.expect("close") } else { drop(c) }
                    // The sender is gone: the recorder ends once it has logged every event.
                    recorder.await.unwrap();
                    if graceful && !owned.is_empty() {
                        // A member that left owns nothing any more.
                        closed_log.lock().unwrap().push((Instant::now(), idx, GroupEvent::Revoked(owned)));
                    }
                    return;
                }
                _ = tokio::time::timeout(Duration::from_millis(50), c.next()) => {}
            }
            *published.lock().unwrap() = c.assignment();
        }
    });
    Member {
        assignment,
        stop,
        task,
    }
}

async fn wait_counts(members: &[&Member], want: &[usize], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut counts: Vec<usize> = members
            .iter()
            .map(|m| m.assignment.lock().unwrap().len())
            .collect();
        counts.sort_unstable();
        if counts == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: assignment sizes {counts:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replays the members' own events in time order: a partition is never assigned to a member
/// while another still owns it.
fn assert_exclusive(log: &EventLog) {
    let mut events = log.lock().unwrap().clone();
    events.sort_by_key(|(t, _, _)| *t);
    let start = events.first().map(|e| e.0).unwrap_or_else(Instant::now);
    let history = events
        .iter()
        .map(|(t, who, e)| format!("{:>6} ms member {who}: {e:?}", (*t - start).as_millis()))
        .collect::<Vec<_>>()
        .join("\n");
    let mut owner: HashMap<Tp, usize> = HashMap::new();
    for (_, who, e) in events {
        match e {
            GroupEvent::Assigned(tps) => {
                for tp in tps {
                    if let Some(other) = owner.insert(tp.clone(), who)
                        && other != who
                    {
                        panic!(
                            "{tp:?} assigned to member {who} while member {other} still owned it; events:\n{history}"
                        );
                    }
                }
            }
            GroupEvent::Revoked(tps) | GroupEvent::Lost(tps) => {
                for tp in tps {
                    owner.remove(&tp);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_exclusively_and_a_dead_members_partitions_move() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    cluster
        .admin()
        .await
        .unwrap()
        .create_topic("events", 12, 3, BTreeMap::new())
        .await
        .unwrap();
    let log: EventLog = Arc::default();
    let cfg = member_config(&cluster, "sharers", "events");
    let m: Vec<Member> = (0..3)
        .map(|i| spawn_member(cfg.clone(), i, log.clone()))
        .collect();
    wait_counts(&[&m[0], &m[1], &m[2]], &[4, 4, 4], "three members").await;
    let fourth = spawn_member(cfg.clone(), 3, log.clone());
    wait_counts(
        &[&m[0], &m[1], &m[2], &fourth],
        &[3, 3, 3, 3],
        "four members",
    )
    .await;
    // "SIGKILL" a member: it stops heartbeating without leaving.
    let killed_at = Instant::now();
    let dead: Vec<Tp> = fourth.assignment.lock().unwrap().clone();
    fourth.stop.send(Some(false)).unwrap();
    fourth.task.await.unwrap();
    log.lock()
        .unwrap()
        .push((Instant::now(), 3, GroupEvent::Lost(dead)));
    wait_counts(
        &[&m[0], &m[1], &m[2]],
        &[4, 4, 4],
        "after the session timeout",
    )
    .await;
    let moved_after = killed_at.elapsed();
    println!(
        "a killed member's partitions moved {moved_after:?} after it stopped (session timeout 6 s)"
    );
    assert!(
        moved_after >= Duration::from_secs(5),
        "moved only after the session timeout"
    );
    assert_exclusive(&log);
    let mut all: Vec<Tp> = m
        .iter()
        .flat_map(|x| x.assignment.lock().unwrap().clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 12, "every partition owned once");
    for x in m {
        x.stop.send(Some(true)).unwrap();
        x.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_process_survives_a_dead_member_and_a_dead_coordinator_without_skipping() {
    let mut cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic(
            "stream",
            6,
            3,
            BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
        )
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    let total = 3_000u64;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut pending = Vec::new();
    for i in 0..total {
        pending.push(
            producer
                .send(ProducerRecord::new("stream", Bytes::from(format!("r{i}"))))
                .await
                .unwrap(),
        );
    }
    for f in pending {
        let md = f.await.unwrap();
        let e = ends.entry(md.partition).or_insert(0);
        *e = (*e).max(md.offset + 1);
    }
    producer.close().await.unwrap();

    // Members process records and commit every 100, by hand.
    let processed: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let mut cfg = member_config(&cluster, "workers", "stream");
    cfg.auto_commit = false;
    let run = |idx: usize, kill_after: Option<usize>| {
        let (cfg, processed) = (cfg.clone(), processed.clone());
        tokio::spawn(async move {
            let mut c = GroupConsumer::new(cfg).await.expect("join");
            let mut since_commit = 0;
            let mut seen = 0usize;
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                let Ok(next) = tokio::time::timeout(Duration::from_millis(200), c.next()).await
                else {
                    if processed.lock().unwrap().len() as u64 >= total {
                        break;
                    }
                    continue;
                };
                let Some(Ok(r)) = next else { continue };
                processed.lock().unwrap().push((r.partition, r.offset));
                seen += 1;
                since_commit += 1;
                if kill_after.is_some_and(|k| seen >= k) {
                    println!("member {idx} dies after {seen} records, {since_commit} uncommitted");
                    drop(c);
                    return;
                }
                if since_commit >= 100 {
                    // Retriable failures (e.g. the coordinator moving) are retried at the next batch.
                    if c.commit().await.is_ok() {
                        since_commit = 0;
                    }
                }
            }
            let _ = c.commit().await;
            let _ = c.close().await;
        })
    };
    let workers = vec![run(0, Some(400)), run(1, None), run(2, None)];
    // Kill the leader of the group's offsets partition while they work.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut admin_rpc =
        pb::admin_client::AdminClient::connect(format!("http://{}", cluster.bootstrap()[0]))
            .await
            .unwrap();
    let coordinator = admin_rpc
        .find_coordinator(pb::FindCoordinatorRequest {
            group_id: "workers".into(),
        })
        .await
        .unwrap()
        .into_inner();
    cluster.kill_node(coordinator.node_id as usize);
    println!(
        "SIGKILLed node {} (coordinator of group workers)",
        coordinator.node_id
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart_node(coordinator.node_id as usize).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let processed = processed.lock().unwrap().clone();
    let mut seen: HashSet<(i32, i64)> = HashSet::new();
    let mut duplicates = 0;
    for tp in &processed {
        if !seen.insert(*tp) {
            duplicates += 1;
        }
    }
    for (p, end) in &ends {
        for o in 0..*end {
            assert!(
                seen.contains(&(*p, o)),
                "record {p}@{o} was never processed (skipped)"
            );
        }
    }
    println!(
        "processed {} records for {total} produced: {duplicates} duplicates",
        processed.len()
    );
    // Redelivery is bounded by what was processed but not yet committed when a member or the
    // coordinator died: at most a commit interval per member per disruption.
    assert!(
        duplicates <= 3 * 100 * 2 + 400,
        "{duplicates} duplicates is more than the commit intervals explain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_reports_lag_as_log_end_minus_committed() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    cluster
        .admin()
        .await
        .unwrap()
        .create_topic("lagged", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..100 {
        producer
            .send(ProducerRecord::new("lagged", Bytes::from(format!("l{i}"))).partition(i % 2))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    let mut cfg = member_config(&cluster, "laggards", "lagged");
    cfg.auto_commit = false;
    let mut c = GroupConsumer::new(cfg).await.unwrap();
    let mut read = 0;
    while read < 30 {
        if let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(20), c.next()).await {
            read += 1;
        }
    }
    c.commit_with_metadata("checkpoint-30").await.unwrap();
    c.close().await.unwrap();
    let mut groups = groups_client(&cluster, "laggards").await;
    let stored = groups
        .fetch_offsets(pb::FetchOffsetsRequest {
            group_id: "laggards".into(),
            partitions: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !stored.offsets.is_empty() && stored.offsets.iter().all(|o| o.metadata == "checkpoint-30"),
        "{stored:?}"
    );
    let out = std::process::Command::new(sluice_integration::bin_path("sluice"))
        .args(["group", "describe", "laggards"])
        .env("SLUICE_BOOTSTRAP", cluster.bootstrap().join(","))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("total lag: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a total lag line");
    // 100 records in the log, 30 committed as processed.
    assert_eq!(total, 70, "{text}");
    // The coordinator node exports the same lag as a Prometheus gauge (published every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = cluster.scrape(&cluster.nodes[0]).await.unwrap();
        if metrics.contains("sluice_consumer_group_lag_total{group=\"laggards\"} 70") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lag gauge of 70 for the group:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_and_regex_matched_topics_join_a_running_groups_assignment() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic("metrics-a", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let log: EventLog = Arc::default();
    let mut cfg = member_config(&cluster, "watchers", "metrics-a");
    cfg.topics.clear();
    cfg.topic_regex = Some("metrics-.*".into());
    let m = spawn_member(cfg, 0, log.clone());
    wait_counts(&[&m], &[2], "regex subscription").await;
    admin.create_partitions("metrics-a", 4).await.unwrap();
    wait_counts(&[&m], &[4], "after adding partitions").await;
    admin
        .create_topic("metrics-b", 3, 1, BTreeMap::new())
        .await
        .unwrap();
    wait_counts(&[&m], &[7], "after a matching topic appears").await;
    m.stop.send(Some(true)).unwrap();
    m.task.await.unwrap();
    assert_exclusive(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_that_restarts_within_its_session_gets_its_partitions_back() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    cluster
        .admin()
        .await
        .unwrap()
        .create_topic("tasks", 6, 1, BTreeMap::new())
        .await
        .unwrap();
    let log: EventLog = Arc::default();
    let cfg = |instance: &str| {
        let mut c = member_config(&cluster, "statics", "tasks");
        c.instance_id = Some(instance.into());
        c.assignor = "sticky".into();
        c
    };
    let a = spawn_member(cfg("a"), 0, log.clone());
    let b = spawn_member(cfg("b"), 1, log.clone());
    wait_counts(&[&a, &b], &[3, 3], "two static members").await;
    let before: Vec<Tp> = a.assignment.lock().unwrap().clone();
    a.stop.send(Some(true)).unwrap(); // close(): a static leave (epoch -2)
    a.task.await.unwrap();
    let again = spawn_member(cfg("a"), 2, log.clone());
    wait_counts(&[&again, &b], &[3, 3], "restarted static member").await;
    let mut after = again.assignment.lock().unwrap().clone();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(
        after, before,
        "the same instance gets the same partitions back"
    );
    for m in [again, b] {
        m.stop.send(Some(true)).unwrap();
        m.task.await.unwrap();
    }
    assert_exclusive(&log);
}
