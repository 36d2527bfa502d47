//! How far each move under way has got, in bytes: the leader's log size against what each
//! new replica holds, asked of the storage nodes (`DescribeReplicas`) when a user lists the
//! moves. A node that does not answer in time leaves its figures at 0; the list still answers.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use sluice_metadata::cache::ClusterView;
use sluice_proto::model::NodeId;
use sluice_proto::pb::{self, log_client::LogClient};

/// How long one storage node may take to describe its replicas.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of each partition of `topic` that storage node `address` holds, by partition.
async fn replica_bytes(address: String, topic: String, partitions: Vec<i32>) -> BTreeMap<i32, i64> {
    let ask = async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect_timeout(ASK_TIMEOUT)
            .connect()
            .await
            .ok()?;
        let req = pb::DescribeReplicasRequest { topic, partitions };
        let answer = LogClient::new(channel).describe_replicas(req).await.ok()?;
        Some(
            answer
                .into_inner()
                .replicas
                .into_iter()
                .map(|r| (r.partition, r.size_bytes))
                .collect(),
        )
    };
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Fills `leader_bytes` and `adding_bytes` of every move in `list`.
pub async fn with_bytes(view: &ClusterView, list: &mut [pb::Reassignment], leaders: &[NodeId]) {
    // One question per (node, topic), for every partition of the topic the node is asked about.
    let mut asks: BTreeMap<(NodeId, String), Vec<i32>> = BTreeMap::new();
    for (r, leader) in list.iter().zip(leaders) {
        for n in std::iter::once(leader).chain(&r.adding) {
            asks.entry((*n, r.topic.clone()))
                .or_default()
                .push(r.partition);
        }
    }
    let keys: Vec<(NodeId, String)> = asks.keys().cloned().collect();
    let answers = join_all(asks.into_iter().map(|((n, topic), partitions)| {
        let address = view.nodes.get(&n).map(|r| r.address.clone());
        async move {
            match address {
                Some(a) => replica_bytes(a, topic, partitions).await,
                None => BTreeMap::new(),
            }
        }
    }))
    .await;
    let answers: BTreeMap<(NodeId, String), BTreeMap<i32, i64>> =
        keys.into_iter().zip(answers).collect();
    let bytes = |n: NodeId, topic: &str, p: i32| {
        answers
            .get(&(n, topic.to_string()))
            .and_then(|m| m.get(&p))
            .copied()
            .unwrap_or(0)
    };
    for (r, leader) in list.iter_mut().zip(leaders) {
        r.leader_bytes = bytes(*leader, &r.topic, r.partition);
        r.adding_bytes = r
            .adding
            .iter()
            .map(|n| pb::ReplicaBytes {
                node_id: *n,
                bytes: bytes(*n, &r.topic, r.partition),
            })
            .collect();
    }
}
