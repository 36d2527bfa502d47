//! The client side of a [`Protocol`]: one stream per node address, opened on first use and
//! again after it ended; sub-streams on it with their own bounded queues.
//!
//! One task per stream reads the node's messages and hands each item to its sub-stream in
//! order, waiting while that sub-stream's queue is full (HTTP/2 flow control then holds the
//! node back). When the stream ends, every sub-stream still open ends with it, with the reason.
//! What sub-streams send is gathered: everything queued when the stream can take a message goes
//! in that message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{Down, Protocol, Up};
use crate::error::ApiError;

/// How a sub-stream ended, when not by the node's plain end.
#[derive(Debug, Clone)]
pub enum MuxError {
    /// The node refused or stopped the sub-stream.
    Refused(ApiError),
    /// The whole stream ended or broke (the node went away, shut down, or the connection
    /// failed), or could not be opened.
    Broken(Status),
}

/// Opens a stream to a node address, sending what the stream carries from the client.
pub type Opener<P> = Arc<
    dyn Fn(
            String,
            Outbound<P>,
        ) -> BoxFuture<'static, Result<Streaming<<P as Protocol>::DownMsg>, Status>>
        + Send
        + Sync,
>;

/// What a stream carries from the client: everything its sub-streams queued when the stream
/// can take a message goes in that message, up to [`Protocol::UP_GATHER`] items.
pub struct Outbound<P: Protocol> {
    queued: mpsc::UnboundedReceiver<Up<P::Up>>,
}

impl<P: Protocol> futures::Stream for Outbound<P> {
    type Item = P::UpMsg;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let first = match this.queued.poll_recv(cx) {
            std::task::Poll::Ready(Some(item)) => item,
            std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        };
        let mut items = vec![first];
        while items.len() < P::UP_GATHER {
            let Ok(item) = this.queued.try_recv() else {
                break;
            };
            items.push(item);
        }
        std::task::Poll::Ready(Some(P::up_message(items)))
    }
}

/// The streams of one protocol, one per node address.
pub struct Mux<P: Protocol> {
    opener: Opener<P>,
    /// Items queued per sub-stream before the reader waits for its owner.
    depth: usize,
    /// Per address, the live stream; opening holds only that address's lock, so a node that is
    /// slow to answer delays no other node's sub-streams.
    slots: Mutex<HashMap<String, Arc<Slot<P>>>>,
}

type Slot<P> = tokio::sync::Mutex<Option<Arc<Conn<P>>>>;

/// One open stream.
struct Conn<P: Protocol> {
    out: mpsc::UnboundedSender<Up<P::Up>>,
    routes: Arc<Mutex<Routes<P::Down>>>,
}

struct Routes<D> {
    next_id: u64,
    by_id: HashMap<u64, mpsc::Sender<Down<D>>>,
    /// Why the stream ended; nothing opens on it after that.
    ended: Option<Status>,
}

/// One sub-stream; dropping it ends it (the node is told).
pub struct SubStream<P: Protocol> {
    id: u64,
    conn: Arc<Conn<P>>,
    rx: mpsc::Receiver<Down<P::Down>>,
    /// The node ended it: no end to send.
    finished: bool,
}

impl<P: Protocol> Mux<P> {
    /// A mux whose streams `opener` opens, queueing up to `depth` items per sub-stream.
    pub fn new(opener: Opener<P>, depth: usize) -> Self {
        Self {
            opener,
            depth: depth.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a sub-stream at `address` with its first item, opening the stream when there is
    /// none (or it ended).
    pub async fn open(&self, address: &str, first: P::Up) -> Result<SubStream<P>, MuxError> {
        let slot = self
            .slots
            .lock()
            .expect("poisoned")
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            match conn.sub_stream(first, self.depth) {
                Ok(s) => return Ok(s),
                Err(item) => return self.reopen(&mut slot, address, item).await,
            }
        }
        self.reopen(&mut slot, address, first).await
    }

    async fn reopen(
        &self,
        slot: &mut Option<Arc<Conn<P>>>,
        address: &str,
        first: P::Up,
    ) -> Result<SubStream<P>, MuxError> {
        *slot = None;
        let (out, queued) = mpsc::unbounded_channel();
        let inbound = (self.opener)(address.to_string(), Outbound { queued })
            .await
            .map_err(MuxError::Broken)?;
        let routes = Arc::new(Mutex::new(Routes {
            next_id: 0,
            by_id: HashMap::new(),
            ended: None,
        }));
        tokio::spawn(read::<P>(routes.clone(), out.downgrade(), inbound));
        let conn = Arc::new(Conn { out, routes });
        *slot = Some(conn.clone());
        conn.sub_stream(first, self.depth).map_err(|_| {
            MuxError::Broken(Status::unavailable(format!(
                "the stream to {address} ended as it opened"
            )))
        })
    }

    /// Sends `request` on a sub-stream of its own and waits for the answer (for protocols whose
    /// sub-streams are one request and its answer).
    pub async fn call(&self, address: &str, request: P::Up) -> Result<P::Down, MuxError> {
        let mut sub = self.open(address, request).await?;
        match sub.next().await? {
            Some(answer) => Ok(answer),
            None => Err(MuxError::Broken(Status::internal(
                "the node ended a request without answering it",
            ))),
        }
    }
}

impl<P: Protocol> Conn<P> {
    /// A new sub-stream with `first` sent; the item back when the stream has ended.
    fn sub_stream(self: &Arc<Self>, first: P::Up, depth: usize) -> Result<SubStream<P>, P::Up> {
        let mut routes = self.routes.lock().expect("poisoned");
        if routes.ended.is_some() {
            return Err(first);
        }
        let id = routes.next_id;
        routes.next_id += 1;
        // Sent under the lock: the node sees sub-streams open in the order of their ids.
        if let Err(e) = self.out.send(Up::Item(id, first)) {
            let Up::Item(_, first) = e.0 else {
                unreachable!("sent an item")
            };
            return Err(first);
        }
        let (tx, rx) = mpsc::channel(depth);
        routes.by_id.insert(id, tx);
        Ok(SubStream {
            id,
            conn: self.clone(),
            rx,
            finished: false,
        })
    }
}

/// Sends further items on a sub-stream, apart from its reader.
pub struct SubSender<P: Protocol> {
    id: u64,
    conn: Arc<Conn<P>>,
}

impl<P: Protocol> SubSender<P> {
    /// Sends a further item; `false` once the stream has ended.
    pub fn send(&self, item: P::Up) -> bool {
        self.conn.out.send(Up::Item(self.id, item)).is_ok()
    }
}

impl<P: Protocol> SubStream<P> {
    /// Sends a further item; `false` once the stream has ended.
    pub fn send(&self, item: P::Up) -> bool {
        self.conn.out.send(Up::Item(self.id, item)).is_ok()
    }

    /// A sender of further items, for use while [`SubStream::next`] is waited on.
    pub fn sender(&self) -> SubSender<P> {
        SubSender {
            id: self.id,
            conn: self.conn.clone(),
        }
    }

    /// The next item; `Ok(None)` when the node ended the sub-stream without an error.
    pub async fn next(&mut self) -> Result<Option<P::Down>, MuxError> {
        if self.finished {
            return Ok(None);
        }
        let down = self.rx.recv().await;
        if P::ONE_ANSWER || !matches!(down, Some(Down::Item(_))) {
            self.finished = true;
        }
        match down {
            Some(Down::Item(item)) => Ok(Some(item)),
            Some(Down::End(None)) => Ok(None),
            Some(Down::End(Some(e))) => Err(MuxError::Refused(e)),
            None => {
                let why = self.conn.routes.lock().expect("poisoned").ended.clone();
                Err(MuxError::Broken(
                    why.unwrap_or_else(|| Status::unavailable("the stream ended")),
                ))
            }
        }
    }
}

impl<P: Protocol> Drop for SubStream<P> {
    fn drop(&mut self) {
        self.conn
            .routes
            .lock()
            .expect("poisoned")
            .by_id
            .remove(&self.id);
        // A request abandoned before its answer is still carried out (its late answer is
        // discarded), as a unary call's would be.
        if !P::ONE_ANSWER && !self.finished {
            let _ = self.conn.out.send(Up::End(self.id));
        }
    }
}

/// Hands every item to its sub-stream until the stream ends, then ends every sub-stream left.
/// Holds no sender of its own: the stream's client side ends when the mux and every sub-stream
/// are gone.
async fn read<P: Protocol>(
    routes: Arc<Mutex<Routes<P::Down>>>,
    out: mpsc::WeakUnboundedSender<Up<P::Up>>,
    mut inbound: Streaming<P::DownMsg>,
) {
    let why = loop {
        let msg = match inbound.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break Status::unavailable("the node ended the stream"),
            Err(status) => break status,
        };
        for (id, down) in P::down_items(msg) {
            let last = P::ONE_ANSWER || matches!(down, Down::End(_));
            let route = {
                let mut routes = routes.lock().expect("poisoned");
                if last {
                    routes.by_id.remove(&id)
                } else {
                    routes.by_id.get(&id).cloned()
                }
            };
            let delivered = match route {
                Some(tx) => tx.send(down).await.is_ok(),
                None => last,
            };
            if !delivered {
                // Its owner has gone: make sure the node stops it.
                routes.lock().expect("poisoned").by_id.remove(&id);
                if let Some(out) = out.upgrade() {
                    let _ = out.send(Up::End(id));
                }
            }
        }
    };
    let mut routes = routes.lock().expect("poisoned");
    routes.ended = Some(why);
    // Dropping the senders ends every sub-stream's queue.
    routes.by_id.clear();
}

/// An opener that gives up after `timeout`.
pub fn with_open_timeout<P: Protocol>(
    timeout: std::time::Duration,
    opener: Opener<P>,
) -> Opener<P> {
    Arc::new(move |address, outbound| {
        let opening = opener(address, outbound);
        async move {
            tokio::time::timeout(timeout, opening)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "opening the stream took longer than {timeout:?}"
                    )))
                })
        }
        .boxed()
    })
}
