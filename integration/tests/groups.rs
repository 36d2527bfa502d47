//! Consumer groups across real processes: server-side assignment, committed offsets in
//! `__sluice_offsets`, fencing of zombies, lag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_integration::{ClusterSpec, TestCluster};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, groups_client::GroupsClient};

async fn groups_client(cluster: &TestCluster, group: &str) -> GroupsClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut admin = pb::admin_client::AdminClient::connect(format!("http://{}", cluster.bootstrap()[0])).await.unwrap();
        if let Ok(c) = admin.find_coordinator(pb::FindCoordinatorRequest { group_id: group.into() }).await
            && let Ok(client) = GroupsClient::connect(format!("http://{}", c.into_inner().address)).await
        {
            return client;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn heartbeat(group: &str, member: &str, epoch: i32, topics: &[&str], owned: Vec<pb::TopicPartitions>) -> pb::GroupHeartbeatRequest {
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
async fn converge(client: &mut GroupsClient<tonic::transport::Channel>, group: &str, topics: &[&str]) -> pb::GroupHeartbeatResponse {
    // The coordinator may still be loading the freshly created offsets partition: retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resp = loop {
        match client.heartbeat(heartbeat(group, "", 0, topics, Vec::new())).await {
            Ok(r) => break r.into_inner(),
            Err(s) if ApiError::from_status(&s).is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("join failed: {s}"),
        }
    };
    for _ in 0..20 {
        let next = client
            .heartbeat(heartbeat(group, &resp.member_id, resp.member_epoch, topics, resp.assignment.clone()))
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
    let cluster = TestCluster::start(ClusterSpec { coordinators: 1, storage_nodes: 3, ..Default::default() }).await.unwrap();
    let admin = cluster.admin().await.unwrap();
    admin.create_topic("work", 4, 3, BTreeMap::new()).await.unwrap();
    let mut client = groups_client(&cluster, "zombies").await;
    let member = converge(&mut client, "zombies", &["work"]).await;
    assert!(!member.assignment.is_empty());
    let commit = |epoch: i32| pb::CommitOffsetsRequest {
        group_id: "zombies".into(),
        member_id: member.member_id.clone(),
        member_epoch: epoch,
        offsets: vec![pb::OffsetCommit { topic: "work".into(), partition: member.assignment[0].partitions[0], offset: 7, metadata: "m".into() }],
    };
    client.commit_offsets(commit(member.member_epoch)).await.expect("a live member commits");
    // Paused past its session timeout (1.5 s), then resumed: fenced.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let err = ApiError::from_status(&client.commit_offsets(commit(member.member_epoch)).await.unwrap_err());
    assert!(matches!(err.code, ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch), "{err}");
    let fetched = client
        .fetch_offsets(pb::FetchOffsetsRequest { group_id: "zombies".into(), partitions: Vec::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.offsets.len(), 1);
    assert_eq!((fetched.offsets[0].offset, fetched.offsets[0].metadata.as_str()), (7, "m"), "only the live member's commit counts");
}
