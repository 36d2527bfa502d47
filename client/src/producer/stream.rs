//! One `ProduceStream` per node: the producer's `ProduceMany` requests to a node travel as
//! messages on one long-lived stream, each with an id, and come back as answers with that id in
//! whatever order the node finishes them. A unary call costs an HTTP/2 stream (headers, trailers)
//! and a task on each side per request; at W3's rate nearly every request carries one small
//! batch, so that cost was most of a request's.
//!
//! A session task per node reads the answers and hands each to its waiting request. When the
//! stream breaks (the node went away), every request still waiting fails with a transport error,
//! retried like any other, and the next request opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, log_client::LogClient};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::connection::with_timeout;
use crate::error::{ClientError, Result};

type Answer = Result<pb::ProduceManyResponse>;

/// One address's stream, `None` until it first opens.
type Slot = tokio::sync::Mutex<Option<Arc<Session>>>;

/// The producer's streams, one per node address.
#[derive(Default)]
pub(crate) struct ProduceStreams {
    /// Per address, the stream (or `None` before the first one opens). Opening holds only that
    /// address's lock, so a node that is slow to answer delays no other node's requests.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for ProduceStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceStreams").finish_non_exhaustive()
    }
}

/// One node's stream and the requests waiting for their answers.
struct Session {
    requests: mpsc::UnboundedSender<pb::ProduceStreamRequest>,
    next_id: AtomicU64,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    by_id: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why the stream ended; nothing waits on it after that.
    ended: Option<ClientError>,
}

impl ProduceStreams {
    /// Sends `request` on the stream to `address` and waits up to `timeout` for its answer.
    pub(crate) async fn call(
        &self,
        client: impl FnOnce() -> Result<LogClient<tonic::transport::Channel>>,
        address: &str,
        request: pb::ProduceManyRequest,
        timeout: Duration,
    ) -> Result<pb::ProduceManyResponse> {
        let session = self.session(client, address, timeout).await?;
        let (tx, rx) = oneshot::channel();
        let id = session.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = session.waiting.lock().unwrap();
            if let Some(e) = &waiting.ended {
                return Err(e.clone());
            }
            waiting.by_id.insert(id, tx);
        }
        // Forgets the request if this call is dropped or times out before its answer (a request
        // abandoned because its leader moved, say); the late answer is then discarded.
        let _forget = Forget {
            session: &session,
            id,
        };
        let msg = pb::ProduceStreamRequest {
            id,
            request: Some(request),
        };
        if session.requests.send(msg).is_err() {
            return Err(ClientError::Transport(format!(
                "the produce stream to {address} closed"
            )));
        }
        with_timeout(timeout, "produce", async {
            Ok(rx.await.unwrap_or_else(|_| {
                Err(ClientError::Transport(format!(
                    "the produce stream to {address} ended"
                )))
            }))
        })
        .await?
    }

    /// The open stream to `address`, opening one when there is none (or it ended).
    async fn session(
        &self,
        client: impl FnOnce() -> Result<LogClient<tonic::transport::Channel>>,
        address: &str,
        timeout: Duration,
    ) -> Result<Arc<Session>> {
        let slot = self
            .slots
            .lock()
            .unwrap()
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref()
            && s.waiting.lock().unwrap().ended.is_none()
        {
            return Ok(s.clone());
        }
        let mut client = client()?;
        let (requests, rx) = mpsc::unbounded_channel();
        let opening = client.produce_stream(UnboundedReceiverStream::new(rx));
        let answers = with_timeout(timeout, "opening a produce stream", opening).await?;
        let session = Arc::new(Session {
            requests,
            next_id: AtomicU64::new(0),
            waiting: Mutex::new(Waiting::default()),
        });
        tokio::spawn(read_answers(session.clone(), answers.into_inner()));
        *slot = Some(session.clone());
        Ok(session)
    }
}

/// Removes a request's entry when its call ends, answered or not.
struct Forget<'a> {
    session: &'a Session,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.session.waiting.lock().unwrap().by_id.remove(&self.id);
    }
}

/// Hands every answer to its request until the stream ends, then fails whoever still waits.
async fn read_answers(
    session: Arc<Session>,
    mut answers: tonic::Streaming<pb::ProduceStreamResponse>,
) {
    let ended = loop {
        match answers.message().await {
            Ok(Some(msg)) => {
                let waiter = session.waiting.lock().unwrap().by_id.remove(&msg.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer(msg));
                }
            }
            Ok(None) => break ClientError::Transport("the node ended the produce stream".into()),
            Err(status) => break ClientError::from(status),
        }
    };
    let waiters = {
        let mut waiting = session.waiting.lock().unwrap();
        waiting.ended = Some(ended.clone());
        std::mem::take(&mut waiting.by_id)
    };
    for (_, waiter) in waiters {
        let _ = waiter.send(Err(ended.clone()));
    }
}

fn answer(msg: pb::ProduceStreamResponse) -> Answer {
    match (msg.response, msg.error) {
        (_, Some(detail)) => Err(ClientError::Api(ApiError::from_detail(detail, msg.message))),
        (Some(response), None) => Ok(response),
        (None, None) => Err(ClientError::api(
            pb::ErrorCode::Internal,
            "the node answered a produce stream message with neither a result nor an error",
        )),
    }
}
