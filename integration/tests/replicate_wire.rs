//! `ReplicateMany` as a follower sees it on the wire, against real nodes: each partition's
//! sub-stream is independent (a refused one ends alone, the others go on pushing).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_integration::{ClusterSpec, TestCluster};
use sluice_proto::batch::BatchHeader;
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient};
use tokio::sync::mpsc;
use tonic::Streaming;

const TOPIC: &str = "wire";
const WAIT: Duration = Duration::from_secs(20);

/// A follower's opening position for `partition`: an empty log at `epoch`.
fn hello(partition: i32, follower: i32, epoch: i32) -> pb::ReplicaAck {
    pb::ReplicaAck {
        topic: TOPIC.into(),
        partition,
        topic_id: Bytes::new(),
        follower_id: follower,
        leader_epoch: epoch,
        log_end_offset: 0,
        last_epoch: -1,
        incarnation: String::new(),
        leader_id: -1,
    }
}

fn open_msg(entries: &[(u32, pb::ReplicaAck)]) -> pb::ReplicaAcks {
    pb::ReplicaAcks {
        acks: entries
            .iter()
            .map(|(id, ack)| pb::TaggedReplicaAck {
                id: *id,
                ack: Some(ack.clone()),
            })
            .collect(),
        end: Vec::new(),
    }
}

/// The leader's side of a `ReplicateMany`, with entries read but not yet asked for.
struct Inbox {
    stream: Streaming<pb::ReplicaChunks>,
    unread: VecDeque<pb::TaggedReplicaChunk>,
}

impl Inbox {
    /// The next entry of sub-stream `id`, keeping the other sub-streams' entries for later.
    async fn next_for(&mut self, id: u32) -> pb::TaggedReplicaChunk {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(i) = self.unread.iter().position(|c| c.id == id) {
                    return self.unread.remove(i).unwrap();
                }
                let msg = self.stream.message().await.unwrap().expect("stream open");
                self.unread.extend(msg.chunks);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing for sub-stream {id} within {WAIT:?}"))
    }
}

/// Reads sub-stream `id` until its pushed batches reach offset `to`, checking that each chunk
/// continues where the previous one ended (`from`).
async fn read_until(inbound: &mut Inbox, id: u32, mut from: i64, to: i64) {
    while from < to {
        let c = inbound.next_for(id).await;
        assert!(c.error.is_none(), "sub-stream {id} refused: {}", c.message);
        let chunk = c.chunk.expect("a chunk");
        if chunk.batches.is_empty() {
            continue;
        }
        let base = BatchHeader::parse(&chunk.batches).unwrap().base_offset;
        assert_eq!(base, from, "sub-stream {id} skipped or repeated offsets");
        from = last_next_offset(&chunk.batches);
    }
    assert_eq!(from, to, "sub-stream {id} pushed past the log end");
}

fn last_next_offset(mut batches: &[u8]) -> i64 {
    let mut end = 0;
    while !batches.is_empty() {
        let h = BatchHeader::parse(batches).unwrap();
        end = h.next_offset();
        batches = &batches[h.total_len()..];
    }
    end
}

async fn produce(producer: &Producer, partition: i32, n: usize) {
    for i in 0..n {
        producer
            .send(ProducerRecord::new(TOPIC, format!("v{i}")).partition(partition))
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_sub_streams_end_alone() {
    let cluster = TestCluster::start(ClusterSpec {
        coordinators: 1,
        storage_nodes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topic(TOPIC, 4, 2, BTreeMap::new())
        .await
        .unwrap();
    let mut states = Vec::new();
    for p in 0..4 {
        states.push(
            cluster
                .wait_partition(TOPIC, p, WAIT, |s| s.leader >= 0 && s.isr.len() == 2)
                .await
                .unwrap(),
        );
    }
    // A partition node `leader` leads, and one it does not (placement spreads leaders).
    let led = states[0].clone();
    let leader = led.leader;
    let other = states
        .iter()
        .find(|s| s.leader != leader)
        .expect("leaders spread over both nodes")
        .clone();
    let follower = 1 - leader;
    let producer = Producer::new(ProducerConfig {
        client: cluster.client_config(),
        acks: Acks::All,
        ..Default::default()
    })
    .await
    .unwrap();
    produce(&producer, led.partition, 3).await;

    let mut client = LogClient::connect(format!(
        "http://{}",
        cluster.nodes[leader as usize].address()
    ))
    .await
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) });
    let mut inbound = Inbox {
        stream: client.replicate_many(outbound).await.unwrap().into_inner(),
        unread: VecDeque::new(),
    };
    // Sub-stream 0 follows a partition the node leads; 1 names one it does not lead; 2 has a
    // stale epoch. Only 0 is served, from offset 0.
    tx.send(open_msg(&[
        (0, hello(led.partition, follower, led.leader_epoch)),
        (1, hello(other.partition, follower, other.leader_epoch)),
        (2, hello(led.partition, follower, led.leader_epoch - 1)),
    ]))
    .unwrap();
    read_until(&mut inbound, 0, 0, 3).await;
    let refused = inbound.next_for(1).await;
    let e = ApiError::from_detail(refused.error.expect("refused"), refused.message);
    assert_eq!(e.code, ErrorCode::NotLeader, "{}", e.message);
    let fenced = inbound.next_for(2).await;
    let e = ApiError::from_detail(fenced.error.expect("refused"), fenced.message);
    assert_eq!(e.code, ErrorCode::FencedLeaderEpoch, "{}", e.message);

    // Sub-stream 0 goes on: new records are pushed on the same stream.
    produce(&producer, led.partition, 2).await;
    read_until(&mut inbound, 0, 3, 5).await;
    // A late acknowledgement for an ended id does not reopen it.
    tx.send(open_msg(&[(
        1,
        hello(led.partition, follower, led.leader_epoch),
    )]))
    .unwrap();
    // Ended by the follower, sub-stream 0 stops; a new id for the same partition starts over.
    tx.send(pb::ReplicaAcks {
        acks: vec![pb::TaggedReplicaAck {
            id: 3,
            ack: Some(hello(led.partition, follower, led.leader_epoch)),
        }],
        end: vec![0],
    })
    .unwrap();
    read_until(&mut inbound, 3, 0, 5).await;
    // Sub-stream 3 carries what is produced next; the ended sub-stream 0 gets no batches (a
    // high-watermark chunk already on its way may still come, and its end marker) and the late
    // ack's id 1 nothing.
    produce(&producer, led.partition, 1).await;
    read_until(&mut inbound, 3, 5, 6).await;
    let strays: Vec<_> = inbound.unread.iter().filter(|c| c.id != 3).collect();
    assert!(
        strays.iter().all(|c| c.id == 0
            && c.error.is_none()
            && c.chunk.as_ref().is_none_or(|c| c.batches.is_empty())),
        "only high-watermark chunks and the end marker of sub-stream 0 may follow its end: {strays:?}"
    );
}
