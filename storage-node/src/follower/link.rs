//! How a follower task reaches its leader: a sub-stream of the one `ReplicateMany` stream this
//! node keeps per leader node (a [`Session`]).
//!
//! A session's acknowledgements from every follower task go out together in one message, and
//! one task hands each incoming chunk to its partition's task in order. A sub-stream ends when
//! its task drops its [`AckSender`] (the leader is told), when the leader ends it, or with the
//! session; the task then reopens it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::error::ApiError;
use sluice_proto::model::NodeId;
use sluice_proto::pb::{self, log_client::LogClient};
use sluice_proto::transport;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// How long connecting to a leader may take before the follower retries.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Chunks queued for one follower task; the session's reader waits when it is full.
const QUEUED_CHUNKS: usize = 8;
/// Acknowledgements one message carries at most.
const MESSAGE_ACKS: usize = 1024;

/// Where a follower task sends its acknowledgements: sub-stream `id` of a session, ended when
/// dropped.
pub struct AckSender {
    id: u32,
    session: Arc<Session>,
}

/// Where a follower task reads its chunks: its sub-stream's, in order, from the session's
/// reader.
pub struct ChunkReceiver(mpsc::Receiver<Result<pb::ReplicaChunk, Status>>);

impl AckSender {
    /// Sends an acknowledgement; `false` once the stream is gone.
    pub async fn send(&self, ack: pb::ReplicaAck) -> bool {
        self.session.out.send(Out::Ack(self.id, ack)).is_ok()
    }
}

impl Drop for AckSender {
    fn drop(&mut self) {
        let session = &self.session;
        session
            .routes
            .lock()
            .expect("poisoned")
            .chunks
            .remove(&self.id);
        let _ = session.out.send(Out::End(self.id));
    }
}

impl ChunkReceiver {
    /// The next chunk; `None` once the leader ended the sub-stream.
    pub async fn next(&mut self) -> Result<Option<pb::ReplicaChunk>, Status> {
        self.0.recv().await.transpose()
    }
}

/// One leader address's session, locked while connecting.
type Slot = tokio::sync::Mutex<Option<Arc<Session>>>;

/// The streams this node keeps to its leaders, one per leader address.
#[derive(Default)]
pub struct Links {
    /// Per leader address, its live session (`None` before the first or after one failed).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Links {
    /// Opens replication of one partition at `addr`, sending `hello` (the follower's position)
    /// first.
    pub async fn open(
        &self,
        leader: NodeId,
        addr: &str,
        hello: pb::ReplicaAck,
    ) -> Result<(AckSender, ChunkReceiver), String> {
        let slot = self
            .slots
            .lock()
            .expect("poisoned")
            .entry(addr.to_string())
            .or_default()
            .clone();
        // Held while connecting, so partitions that find no session wait for one connection.
        let mut slot = slot.lock().await;
        if let Some(session) = &*slot
            && let Some(link) = session.open(hello.clone())
        {
            return Ok(link);
        }
        let session = Session::start(connect(leader, addr).await?).await?;
        let link = session.open(hello);
        *slot = Some(session);
        link.ok_or_else(|| format!("replication stream to leader {leader} ended at once"))
    }
}

async fn connect(
    leader: NodeId,
    addr: &str,
) -> Result<LogClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(transport::KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(transport::KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // Replicated batches stream at disk speed; h2's defaults would throttle them.
        .initial_stream_window_size(transport::STREAM_WINDOW)
        .initial_connection_window_size(transport::CONNECTION_WINDOW)
        .max_frame_size(transport::MAX_FRAME_SIZE)
        .connect()
        .await
        .map_err(|e| format!("connecting to leader {leader} at {addr}: {e}"))?;
    Ok(LogClient::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE))
}

/// What follower tasks put on a session's stream.
enum Out {
    Ack(u32, pb::ReplicaAck),
    End(u32),
}

/// One `ReplicateMany` stream to a leader node.
pub struct Session {
    out: mpsc::UnboundedSender<Out>,
    routes: Mutex<Routes>,
}

struct Routes {
    next_id: u32,
    /// Each open sub-stream's chunk queue, by id.
    chunks: HashMap<u32, mpsc::Sender<Result<pb::ReplicaChunk, Status>>>,
    /// The stream failed: no sub-stream opens on it any more.
    dead: bool,
}

impl Session {
    /// Opens the stream.
    async fn start(mut client: LogClient<tonic::transport::Channel>) -> Result<Arc<Self>, String> {
        let (out, queued) = mpsc::unbounded_channel();
        let outbound = futures::stream::unfold(queued, |mut queued| async move {
            let mut msg = pb::ReplicaAcks::default();
            let mut add = |item| match item {
                Out::Ack(id, ack) => msg.acks.push(pb::TaggedReplicaAck { id, ack: Some(ack) }),
                Out::End(id) => msg.end.push(id),
            };
            // Everything queued goes together.
            add(queued.recv().await?);
            for _ in 1..MESSAGE_ACKS {
                let Ok(item) = queued.try_recv() else { break };
                add(item);
            }
            Some((msg, queued))
        });
        let inbound = match client.replicate_many(outbound).await {
            Ok(resp) => resp.into_inner(),
            Err(s) => return Err(s.message().to_string()),
        };
        let session = Arc::new(Self {
            out,
            routes: Mutex::new(Routes {
                next_id: 0,
                chunks: HashMap::new(),
                dead: false,
            }),
        });
        tokio::spawn(deliver(session.clone(), inbound));
        Ok(session)
    }

    /// Opens a sub-stream with `hello`; `None` once the stream failed.
    fn open(self: &Arc<Self>, hello: pb::ReplicaAck) -> Option<(AckSender, ChunkReceiver)> {
        let mut routes = self.routes.lock().expect("poisoned");
        if routes.dead {
            return None;
        }
        let id = routes.next_id;
        routes.next_id += 1;
        // Sent under the lock: the leader sees sub-streams open in the order of their ids.
        self.out.send(Out::Ack(id, hello)).ok()?;
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        routes.chunks.insert(id, tx);
        Some((
            AckSender {
                id,
                session: self.clone(),
            },
            ChunkReceiver(rx),
        ))
    }
}

/// Hands every chunk to its sub-stream's task, in order, until the stream ends; then every
/// sub-stream ends with it.
async fn deliver(session: Arc<Session>, mut inbound: Streaming<pb::ReplicaChunks>) {
    while let Ok(Some(msg)) = inbound.message().await {
        for tagged in msg.chunks {
            let id = tagged.id;
            let route = session
                .routes
                .lock()
                .expect("poisoned")
                .chunks
                .get(&id)
                .cloned();
            let Some(route) = route else {
                // A push for a sub-stream whose task is gone: make sure the leader stops it.
                let _ = session.out.send(Out::End(id));
                continue;
            };
            let item = match (tagged.chunk, tagged.error) {
                (_, Some(detail)) => Some(Err(ApiError::from_detail(detail, tagged.message))),
                (Some(chunk), None) => Some(Ok(chunk)),
                (None, None) => None,
            };
            let last = !matches!(item, Some(Ok(_)));
            let delivered = match item {
                Some(item) => route.send(item.map_err(|e| e.to_status())).await.is_ok(),
                None => true,
            };
            if last || !delivered {
                session.routes.lock().expect("poisoned").chunks.remove(&id);
            }
        }
    }
    let mut routes = session.routes.lock().expect("poisoned");
    routes.dead = true;
    routes.chunks.clear();
}
