//! The node side of a [`Protocol`]: reads the client's messages, opens a sub-stream (through
//! the [`Handler`]) on the first item of each new id, passes later items to it, closes it when
//! the client ends it, and sends what is ready for any sub-stream together in one message.
//!
//! The whole stream runs inside the response body's polls: no task or channel sits between a
//! sub-stream and the wire, and HTTP/2 flow control holds every sub-stream back when the client
//! reads slowly.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use tonic::Status;

use super::{Down, Protocol, Up};
use crate::error::ApiError;

/// What a node does with one stream's sub-streams.
pub trait Handler: Send + 'static {
    /// The stream kind.
    type P: Protocol;

    /// Opens sub-stream `id` with its first item: the items to send it. A stream that ends
    /// without [`Down::End`] ends the sub-stream plainly (`End(None)`), except for one-answer
    /// protocols.
    fn open(
        &mut self,
        id: u64,
        first: <Self::P as Protocol>::Up,
    ) -> BoxStream<'static, Down<<Self::P as Protocol>::Down>>;

    /// A further item of open sub-stream `id`; an error ends the sub-stream with it.
    fn item(&mut self, _id: u64, _item: <Self::P as Protocol>::Up) -> Result<(), ApiError> {
        Ok(())
    }

    /// Sub-stream `id` ended: the client ended it, it ended itself, or the stream ended.
    fn closed(&mut self, _id: u64) {}
}

/// Bounds of one stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of sub-stream items one message carries at most ([`Protocol::down_bytes`]);
    /// further ready items go in the next message.
    pub message_bytes: usize,
    /// Sub-streams open at once at most; the client's next messages are read once one ends
    /// (a client that sends without waiting is paced by HTTP/2 flow control).
    pub max_open: usize,
    /// When the node shuts down: `true` stops reading and ends the stream once every open
    /// sub-stream has ended (requests already read are answered); `false` ends it at once.
    pub drain_on_close: bool,
}

/// The node's messages of one stream.
pub type Answers<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// Serves one stream: `inbound` is the client's side, `closing` resolves when the node shuts
/// down. The stream ends when the client's side broke, or when it half-closed and every
/// sub-stream has ended.
pub fn serve<H, C>(
    inbound: C,
    handler: H,
    limits: Limits,
    closing: impl Future<Output = ()> + Send + 'static,
) -> Answers<<H::P as Protocol>::DownMsg>
where
    H: Handler + Unpin,
    C: Stream<Item = Result<<H::P as Protocol>::UpMsg, Status>> + Send + Unpin + 'static,
{
    Box::pin(Served {
        inbound: Some(inbound),
        handler,
        limits,
        subs: SelectAll::new(),
        open: HashMap::new(),
        last_opened: None,
        pending: Vec::new(),
        closing: Some(closing.boxed()),
        done: false,
    })
}

type Tagged<T> = (u64, Option<Down<T>>);

struct Served<H: Handler, C> {
    /// `None` once the client half-closed (or the node is draining).
    inbound: Option<C>,
    handler: H,
    limits: Limits,
    /// Every open sub-stream's items, tagged with its id; `None` after its last.
    subs: SelectAll<BoxStream<'static, Tagged<<H::P as Protocol>::Down>>>,
    /// Ends each open sub-stream, by id.
    open: HashMap<u64, AbortHandle>,
    last_opened: Option<u64>,
    /// Ends decided while reading the client's messages, sent with the next message.
    pending: Vec<(u64, Down<<H::P as Protocol>::Down>)>,
    closing: Option<BoxFuture<'static, ()>>,
    done: bool,
}

impl<H: Handler, C> Served<H, C> {
    fn apply(&mut self, up: Up<<H::P as Protocol>::Up>) {
        match up {
            Up::Item(id, item) if self.open.contains_key(&id) => {
                if let Err(e) = self.handler.item(id, item) {
                    self.close(id);
                    self.pending.push((id, Down::End(Some(e))));
                }
            }
            Up::Item(id, first) => {
                if self.last_opened.is_some_and(|last| id <= last) {
                    return; // a late item of a sub-stream that already ended
                }
                self.last_opened = Some(id);
                let (handle, registration) = AbortHandle::new_pair();
                let items = Abortable::new(self.handler.open(id, first), registration)
                    .map(move |d| (id, Some(d)))
                    .chain(futures::stream::once(async move { (id, None) }));
                self.subs.push(items.boxed());
                self.open.insert(id, handle);
            }
            Up::End(id) => self.close(id),
        }
    }

    /// Ends sub-stream `id` if it is open.
    fn close(&mut self, id: u64) {
        if let Some(h) = self.open.remove(&id) {
            h.abort();
            self.handler.closed(id);
        }
    }

    fn end(&mut self) {
        self.done = true;
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// What an item a sub-stream yielded means for the message being gathered.
    fn yielded(
        &mut self,
        id: u64,
        item: Option<Down<<H::P as Protocol>::Down>>,
    ) -> Option<Down<<H::P as Protocol>::Down>> {
        if !self.open.contains_key(&id) {
            return None; // ended meanwhile
        }
        match item {
            Some(d) => {
                if <H::P as Protocol>::ONE_ANSWER || matches!(d, Down::End(_)) {
                    self.open.remove(&id);
                    self.handler.closed(id);
                }
                Some(d)
            }
            None => {
                self.open.remove(&id);
                self.handler.closed(id);
                (!<H::P as Protocol>::ONE_ANSWER).then_some(Down::End(None))
            }
        }
    }
}

impl<H, C> Stream for Served<H, C>
where
    H: Handler + Unpin,
    C: Stream<Item = Result<<H::P as Protocol>::UpMsg, Status>> + Unpin,
{
    type Item = Result<<H::P as Protocol>::DownMsg, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(closing) = &mut this.closing
            && closing.poll_unpin(cx).is_ready()
        {
            this.closing = None;
            if !this.limits.drain_on_close {
                this.end();
                return Poll::Ready(None);
            }
            this.inbound = None;
        }
        // The client's messages first, so a sub-stream opened in the same turn can answer at
        // once.
        while this.open.len() < this.limits.max_open {
            let Some(inbound) = &mut this.inbound else {
                break;
            };
            match inbound.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    for up in <H::P as Protocol>::up_items(msg) {
                        this.apply(up);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    // The client's side broke: nobody reads the answers any more.
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => this.inbound = None,
                Poll::Pending => break,
            }
        }
        let mut items = std::mem::take(&mut this.pending);
        let mut bytes: usize = items
            .iter()
            .map(|(_, d)| <H::P as Protocol>::down_bytes(d))
            .sum();
        while bytes < this.limits.message_bytes && items.len() < <H::P as Protocol>::DOWN_GATHER {
            // An empty `SelectAll` answers `None`; it is polled again after the next change.
            let Poll::Ready(Some((id, item))) = this.subs.poll_next_unpin(cx) else {
                break;
            };
            if let Some(d) = this.yielded(id, item) {
                bytes += <H::P as Protocol>::down_bytes(&d);
                items.push((id, d));
            }
        }
        if !items.is_empty() {
            return Poll::Ready(Some(Ok(<H::P as Protocol>::down_message(items))));
        }
        if this.inbound.is_none() && this.open.is_empty() {
            // Half-closed (or draining) and nothing left to answer.
            this.done = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
