//! The node side of the mux on the `SubscribeMany` protocol, with a handler whose sub-streams
//! are scripted: gathering of ready items, ends, late items and half-closing.

use futures::channel::mpsc;
use futures::executor::block_on;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::protocols::Subscribe;
use super::server::{Handler, Limits, serve};
use super::{Down, Protocol};
use crate::error::ApiError;
use crate::pb;

/// Each subscription pushes two answers (next_offset = offset + 1, + 2), then ends with
/// NOT_LEADER for offsets of 100 and more, or stays open. Records which ids were closed.
#[derive(Default)]
struct Scripted {
    closed: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Handler for Scripted {
    type P = Subscribe;

    fn open(
        &mut self,
        _id: u64,
        req: pb::FetchRequest,
    ) -> BoxStream<'static, Down<pb::FetchResponse>> {
        let o = req.offset;
        let data = futures::stream::iter([1, 2].map(move |d| {
            Down::Item(pb::FetchResponse {
                next_offset: o + d,
                ..Default::default()
            })
        }));
        if o >= 100 {
            let e = ApiError::not_leader("moved", None);
            data.chain(futures::stream::iter([Down::End(Some(e))]))
                .boxed()
        } else {
            data.chain(futures::stream::pending()).boxed()
        }
    }

    fn closed(&mut self, id: u64) {
        self.closed.lock().unwrap().push(id);
    }
}

const LIMITS: Limits = Limits {
    message_bytes: 2 << 20,
    max_open: usize::MAX,
    drain_on_close: false,
};

fn add(ids: &[(u64, i64)], remove: &[u64]) -> Result<pb::SubscribeControl, tonic::Status> {
    let items = remove
        .iter()
        .map(|id| super::Up::End(*id))
        .chain(ids.iter().map(|(id, offset)| {
            super::Up::Item(
                *id,
                pb::FetchRequest {
                    offset: *offset,
                    ..Default::default()
                },
            )
        }))
        .collect();
    Ok(Subscribe::up_message(items))
}

#[test]
fn ready_items_of_many_sub_streams_leave_together_and_an_error_ends_only_its_own() {
    let (tx, rx) = mpsc::unbounded();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let handler = Scripted::default();
    let closed = handler.closed.clone();
    let mut s = serve(rx, handler, LIMITS, stopped.map(|_| ()));
    tx.unbounded_send(add(&[(1, 10), (2, 100)], &[])).unwrap();
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
    let mut ids: Vec<_> = seen.iter().map(|s| s.0).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 1, 2, 2, 2],
        "all five ready pushes in one message"
    );
    assert!(seen.contains(&(2, None, Some(pb::ErrorCode::NotLeader as i32))));
    assert!(seen.contains(&(1, Some(12), None)));
    assert_eq!(
        *closed.lock().unwrap(),
        vec![2],
        "the refused one is closed"
    );
    // Sub-stream 1 goes on; ending it and opening 3 pushes only 3's records.
    tx.unbounded_send(add(&[(3, 50)], &[1])).unwrap();
    let second = block_on(s.next()).unwrap().unwrap();
    assert!(second.pushes.iter().all(|p| p.id == 3), "{second:?}");
    assert_eq!(second.pushes.len(), 2);
    // A late item for an id at or below the last opened one opens nothing.
    tx.unbounded_send(add(&[(2, 10)], &[])).unwrap();
    // Shutting down ends the stream and closes what is open.
    stop.send(()).unwrap();
    assert!(block_on(s.next()).is_none());
    let mut closed = closed.lock().unwrap().clone();
    closed.sort();
    assert_eq!(closed, vec![1, 2, 3]);
}

#[test]
fn a_half_closed_client_keeps_its_sub_streams_until_they_end() {
    let (tx, rx) = mpsc::unbounded();
    let mut s = serve(rx, Scripted::default(), LIMITS, futures::future::pending());
    tx.unbounded_send(add(&[(7, 200)], &[])).unwrap();
    drop(tx);
    let pushes = block_on(s.next()).unwrap().unwrap().pushes;
    assert_eq!(pushes.len(), 3);
    assert!(pushes[2].error.is_some());
    assert!(
        block_on(s.next()).is_none(),
        "nothing left, so the stream ends"
    );
}

#[test]
fn a_sub_stream_that_finishes_ends_plainly_and_the_cap_splits_messages() {
    struct Finite;
    impl Handler for Finite {
        type P = Subscribe;
        fn open(
            &mut self,
            _: u64,
            _: pb::FetchRequest,
        ) -> BoxStream<'static, Down<pb::FetchResponse>> {
            let big = pb::FetchResponse {
                batches: vec![0u8; 1 << 20].into(),
                ..Default::default()
            };
            futures::stream::iter([Down::Item(big.clone()), Down::Item(big)]).boxed()
        }
    }
    let (tx, rx) = mpsc::unbounded();
    let limits = Limits {
        message_bytes: 1 << 20,
        ..LIMITS
    };
    let mut s = serve(rx, Finite, limits, futures::future::pending());
    tx.unbounded_send(add(&[(1, 0)], &[])).unwrap();
    let first = block_on(s.next()).unwrap().unwrap().pushes;
    assert_eq!(first.len(), 1, "one MiB fills a message");
    let second = block_on(s.next()).unwrap().unwrap().pushes;
    assert_eq!(second.len(), 1, "and the second another");
    let end = block_on(s.next()).unwrap().unwrap().pushes;
    assert_eq!(end.len(), 1);
    assert!(
        end[0].data.is_none() && end[0].error.is_none(),
        "a finished sub-stream ends plainly: {end:?}"
    );
}

#[test]
fn one_answer_sub_streams_end_with_their_answer_and_each_answer_has_a_message() {
    struct Echo;
    impl Handler for Echo {
        type P = super::protocols::Produce;
        fn open(
            &mut self,
            _: u64,
            req: pb::ProduceManyRequest,
        ) -> BoxStream<'static, Down<pb::ProduceManyResponse>> {
            let results = req
                .requests
                .iter()
                .map(|_| pb::ProduceResult::default())
                .collect();
            futures::stream::iter([Down::Item(pb::ProduceManyResponse { results })]).boxed()
        }
    }
    let (tx, rx) = mpsc::unbounded();
    let limits = Limits {
        message_bytes: usize::MAX,
        max_open: 2,
        drain_on_close: true,
    };
    let mut s = serve(rx, Echo, limits, futures::future::pending());
    for id in 0..3 {
        let request = pb::ProduceManyRequest {
            requests: vec![pb::ProduceRequest::default(); id + 1],
        };
        let msg = super::protocols::Produce::up_message(vec![super::Up::Item(id as u64, request)]);
        tx.unbounded_send(Ok(msg)).unwrap();
    }
    drop(tx);
    let answers: Vec<pb::ProduceStreamResponse> =
        block_on(s.by_ref().map(Result::unwrap).collect());
    let ids: Vec<(u64, usize)> = answers
        .iter()
        .map(|a| (a.id, a.response.as_ref().unwrap().results.len()))
        .collect();
    assert_eq!(
        ids,
        vec![(0, 1), (1, 2), (2, 3)],
        "every answer, once, none lost"
    );
}
