//! The node side of `SubscribeMany`, shared by the storage node and the client's test double:
//! one stream over many subscriptions, each opened as a lone `Subscribe` would be, whose pushes
//! that are ready together leave in one message. That is one wake-up, one HTTP/2 frame and one
//! decode per burst on either side, instead of one per partition.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt};

use crate::error::ApiError;
use crate::pb;

/// The pushes of one `SubscribeMany` call.
pub type PushStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribePushes, tonic::Status>> + Send>>;

/// Batch bytes one message carries at most; further ready pushes go in the next message. Each
/// message is encoded into a buffer of its own size; at 8 MiB those buffers (doubling as they
/// grew) left a node near 400 MB RSS after one backlog read, and W2 was slower (BENCHMARKS.md,
/// session 10).
const MESSAGE_BYTES: usize = 2 << 20;

/// Serves a `SubscribeMany`: `control` adds and ends subscriptions, `open` starts one (the
/// node's `Subscribe` for its request), and the stream ends when `closing` resolves (the node
/// shuts down) or the client's side of the call fails. A client that half-closes its side
/// keeps its subscriptions until they end.
pub fn merge<C, O, S>(
    control: C,
    open: O,
    closing: impl Future<Output = ()> + Send + 'static,
) -> PushStream
where
    C: Stream<Item = Result<pb::SubscribeControl, tonic::Status>> + Send + Unpin + 'static,
    O: Fn(pb::FetchRequest) -> S + Send + Unpin + 'static,
    S: Stream<Item = Result<pb::FetchResponse, tonic::Status>> + Send + 'static,
{
    Box::pin(Merged {
        control: Some(control),
        open,
        subs: SelectAll::new(),
        aborts: HashMap::new(),
        closing: closing.boxed(),
        done: false,
    })
}

struct Merged<C, O> {
    /// `None` once the client half-closed its side.
    control: Option<C>,
    open: O,
    subs: SelectAll<BoxStream<'static, pb::SubscribePush>>,
    /// Ends each live subscription, by id.
    aborts: HashMap<u32, AbortHandle>,
    closing: BoxFuture<'static, ()>,
    done: bool,
}

impl<C, O, S> Merged<C, O>
where
    O: Fn(pb::FetchRequest) -> S,
    S: Stream<Item = Result<pb::FetchResponse, tonic::Status>> + Send + 'static,
{
    fn apply(&mut self, control: pb::SubscribeControl) {
        for id in control.remove {
            if let Some(h) = self.aborts.remove(&id) {
                h.abort();
            }
        }
        for sub in control.add {
            let id = sub.id;
            let (handle, registration) = AbortHandle::new_pair();
            let pushes = Abortable::new((self.open)(sub.fetch.unwrap_or_default()), registration)
                .map(move |item| push(id, item));
            self.subs.push(pushes.boxed());
            // A reused id replaces the subscription that had it.
            if let Some(old) = self.aborts.insert(id, handle) {
                old.abort();
            }
        }
    }

    fn end(&mut self) {
        self.done = true;
        for (_, h) in self.aborts.drain() {
            h.abort();
        }
    }
}

fn push(id: u32, item: Result<pb::FetchResponse, tonic::Status>) -> pb::SubscribePush {
    match item {
        Ok(data) => pb::SubscribePush {
            id,
            data: Some(data),
            ..Default::default()
        },
        Err(status) => {
            let e = ApiError::from_status(&status);
            pb::SubscribePush {
                id,
                data: None,
                error: Some(e.detail()),
                message: e.message,
            }
        }
    }
}

impl<C, O, S> Stream for Merged<C, O>
where
    C: Stream<Item = Result<pb::SubscribeControl, tonic::Status>> + Unpin,
    O: Fn(pb::FetchRequest) -> S + Unpin,
    S: Stream<Item = Result<pb::FetchResponse, tonic::Status>> + Send + 'static,
{
    type Item = Result<pb::SubscribePushes, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.closing.poll_unpin(cx).is_ready() {
            this.end();
            return Poll::Ready(None);
        }
        // Changes first, so a subscription added in the same turn can push at once.
        while let Some(control) = &mut this.control {
            match control.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(c))) => this.apply(c),
                Poll::Ready(Some(Err(_))) => {
                    // The client's side broke: nobody reads the pushes any more.
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => this.control = None,
                Poll::Pending => break,
            }
        }
        let (mut pushes, mut bytes) = (Vec::new(), 0);
        while bytes < MESSAGE_BYTES {
            // An empty `SelectAll` answers `None`; it is polled again after the next change.
            let Poll::Ready(Some(p)) = this.subs.poll_next_unpin(cx) else {
                break;
            };
            if p.error.is_some()
                && let Some(h) = this.aborts.remove(&p.id)
            {
                h.abort();
            }
            bytes += p.data.as_ref().map_or(0, |d| d.batches.len());
            pushes.push(p);
        }
        if !pushes.is_empty() {
            return Poll::Ready(Some(Ok(pb::SubscribePushes { pushes })));
        }
        if this.control.is_none() && this.subs.is_empty() {
            // Half-closed and nothing left to push.
            this.end();
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::executor::block_on;

    fn sub(id: u32, offset: i64) -> pb::Subscription {
        pb::Subscription {
            id,
            fetch: Some(pb::FetchRequest {
                offset,
                ..Default::default()
            }),
        }
    }

    /// `open` answers each subscription with two pushes (next_offset = offset + 1, + 2) and then
    /// NOT_LEADER for offsets of 100 and more, or stays open.
    fn open(req: pb::FetchRequest) -> BoxStream<'static, Result<pb::FetchResponse, tonic::Status>> {
        let o = req.offset;
        let data = futures::stream::iter([1, 2].map(move |d| {
            Ok(pb::FetchResponse {
                next_offset: o + d,
                ..Default::default()
            })
        }));
        if o >= 100 {
            let e = ApiError::not_leader("moved", None).to_status();
            data.chain(futures::stream::iter([Err(e)])).boxed()
        } else {
            data.chain(futures::stream::pending()).boxed()
        }
    }

    #[test]
    fn ready_pushes_of_many_subscriptions_leave_together_and_an_error_ends_only_its_own() {
        let (tx, rx) = mpsc::unbounded();
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let mut s = merge(rx, open, stopped.map(|_| ()));
        tx.unbounded_send(Ok(pb::SubscribeControl {
            add: vec![sub(1, 10), sub(2, 100)],
            remove: vec![],
        }))
        .unwrap();
        let first = block_on(s.next()).unwrap().unwrap();
        let seen: Vec<(u32, Option<i64>, Option<i32>)> = first
            .pushes
            .iter()
            .map(|p| {
                (
                    p.id,
                    p.data.as_ref().map(|d| d.next_offset),
                    p.error.as_ref().map(|e| e.code),
                )
            })
            .collect();
        let not_leader = pb::ErrorCode::NotLeader as i32;
        let mut ids: Vec<_> = seen.iter().map(|s| s.0).collect();
        ids.sort();
        assert_eq!(
            ids,
            vec![1, 1, 2, 2, 2],
            "all five ready pushes in one message"
        );
        assert!(seen.contains(&(2, None, Some(not_leader))));
        assert!(seen.contains(&(1, Some(12), None)));
        // Subscription 1 goes on; removing it and adding 3 pushes only 3's records.
        tx.unbounded_send(Ok(pb::SubscribeControl {
            add: vec![sub(3, 50)],
            remove: vec![1],
        }))
        .unwrap();
        let second = block_on(s.next()).unwrap().unwrap();
        assert!(second.pushes.iter().all(|p| p.id == 3), "{second:?}");
        assert_eq!(second.pushes.len(), 2);
        // Shutting down ends the stream.
        stop.send(()).unwrap();
        assert!(block_on(s.next()).is_none());
    }

    #[test]
    fn a_half_closed_client_keeps_its_subscriptions_until_they_end() {
        let (tx, rx) = mpsc::unbounded();
        let mut s = merge(rx, open, futures::future::pending());
        tx.unbounded_send(Ok(pb::SubscribeControl {
            add: vec![sub(7, 200)],
            remove: vec![],
        }))
        .unwrap();
        drop(tx);
        let pushes = block_on(s.next()).unwrap().unwrap().pushes;
        assert_eq!(pushes.len(), 3);
        assert!(pushes[2].error.is_some());
        assert!(
            block_on(s.next()).is_none(),
            "nothing left, so the stream ends"
        );
    }
}
