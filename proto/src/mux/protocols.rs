//! The three streams of `sluice.v1.Log` as [`Protocol`]s: how their sub-stream items travel in
//! the wire messages of `log.proto`.

use super::{Down, Protocol, Up};
use crate::error::ApiError;
use crate::pb;

/// The end item of a sub-stream on the wire: an error and its message, or neither.
fn end_of(detail: Option<pb::ErrorDetail>, message: String) -> Down<std::convert::Infallible> {
    Down::End(detail.map(|d| ApiError::from_detail(d, message)))
}

fn relabel<T>(d: Down<std::convert::Infallible>) -> Down<T> {
    match d {
        Down::End(e) => Down::End(e),
        Down::Item(never) => match never {},
    }
}

fn error_parts(e: Option<ApiError>) -> (Option<pb::ErrorDetail>, String) {
    match e {
        Some(e) => (Some(e.detail()), e.message),
        None => (None, String::new()),
    }
}

/// `ProduceStream`: each sub-stream is one `ProduceMany` and its answer.
pub enum Produce {}

impl Protocol for Produce {
    type Up = pb::ProduceManyRequest;
    type Down = pb::ProduceManyResponse;
    type UpMsg = pb::ProduceStreamRequest;
    type DownMsg = pb::ProduceStreamResponse;
    // One request or answer per message: `ProduceStreamRequest` and `ProduceStreamResponse`
    // carry one each.
    const UP_GATHER: usize = 1;
    const DOWN_GATHER: usize = 1;
    const ONE_ANSWER: bool = true;

    fn up_message(items: Vec<Up<Self::Up>>) -> Self::UpMsg {
        match items.into_iter().next() {
            Some(Up::Item(id, request)) => pb::ProduceStreamRequest {
                id,
                request: Some(request),
            },
            _ => pb::ProduceStreamRequest::default(),
        }
    }

    fn up_items(msg: Self::UpMsg) -> Vec<Up<Self::Up>> {
        vec![Up::Item(msg.id, msg.request.unwrap_or_default())]
    }

    fn down_message(items: Vec<(u64, Down<Self::Down>)>) -> Self::DownMsg {
        match items.into_iter().next() {
            Some((id, Down::Item(response))) => pb::ProduceStreamResponse {
                id,
                response: Some(response),
                ..Default::default()
            },
            Some((id, Down::End(e))) => {
                let (error, message) = error_parts(e);
                pb::ProduceStreamResponse {
                    id,
                    response: None,
                    error,
                    message,
                }
            }
            None => pb::ProduceStreamResponse::default(),
        }
    }

    fn down_items(msg: Self::DownMsg) -> Vec<(u64, Down<Self::Down>)> {
        let down = match (msg.response, msg.error) {
            (Some(r), None) => Down::Item(r),
            (_, error) => relabel(end_of(
                error.or_else(|| {
                    Some(
                        ApiError::new(
                            pb::ErrorCode::Internal,
                            "an answer with neither a result nor an error",
                        )
                        .detail(),
                    )
                }),
                msg.message,
            )),
        };
        vec![(msg.id, down)]
    }

    fn down_bytes(_: &Down<Self::Down>) -> usize {
        0
    }
}

/// `SubscribeMany`: each sub-stream is one partition's subscription.
pub enum Subscribe {}

impl Protocol for Subscribe {
    type Up = pb::FetchRequest;
    type Down = pb::FetchResponse;
    type UpMsg = pb::SubscribeControl;
    type DownMsg = pb::SubscribePushes;
    const UP_GATHER: usize = 1024;
    const DOWN_GATHER: usize = usize::MAX;
    const ONE_ANSWER: bool = false;

    fn up_message(items: Vec<Up<Self::Up>>) -> Self::UpMsg {
        let mut msg = pb::SubscribeControl::default();
        for item in items {
            match item {
                Up::Item(id, fetch) => msg.add.push(pb::Subscription {
                    id: id as u32,
                    fetch: Some(fetch),
                }),
                Up::End(id) => msg.remove.push(id as u32),
            }
        }
        msg
    }

    fn up_items(msg: Self::UpMsg) -> Vec<Up<Self::Up>> {
        // Removals first: an id is never reused, so the order only matters for the count of
        // open subscriptions.
        let ends = msg.remove.into_iter().map(|id| Up::End(u64::from(id)));
        let adds = msg
            .add
            .into_iter()
            .map(|s| Up::Item(u64::from(s.id), s.fetch.unwrap_or_default()));
        ends.chain(adds).collect()
    }

    fn down_message(items: Vec<(u64, Down<Self::Down>)>) -> Self::DownMsg {
        let pushes = items
            .into_iter()
            .map(|(id, d)| match d {
                Down::Item(data) => pb::SubscribePush {
                    id: id as u32,
                    data: Some(data),
                    ..Default::default()
                },
                Down::End(e) => {
                    let (error, message) = error_parts(e);
                    pb::SubscribePush {
                        id: id as u32,
                        data: None,
                        error,
                        message,
                    }
                }
            })
            .collect();
        pb::SubscribePushes { pushes }
    }

    fn down_items(msg: Self::DownMsg) -> Vec<(u64, Down<Self::Down>)> {
        msg.pushes
            .into_iter()
            .map(|p| {
                let down = match (p.data, p.error) {
                    (Some(data), None) => Down::Item(data),
                    (_, error) => relabel(end_of(error, p.message)),
                };
                (u64::from(p.id), down)
            })
            .collect()
    }

    fn down_bytes(d: &Down<Self::Down>) -> usize {
        match d {
            Down::Item(data) => data.batches.len(),
            Down::End(_) => 0,
        }
    }
}

/// `ReplicateMany`: each sub-stream is one partition a follower follows from this leader.
pub enum Replicate {}

impl Protocol for Replicate {
    type Up = pb::ReplicaAck;
    type Down = pb::ReplicaChunk;
    type UpMsg = pb::ReplicaAcks;
    type DownMsg = pb::ReplicaChunks;
    const UP_GATHER: usize = 1024;
    const DOWN_GATHER: usize = usize::MAX;
    const ONE_ANSWER: bool = false;

    fn up_message(items: Vec<Up<Self::Up>>) -> Self::UpMsg {
        let mut msg = pb::ReplicaAcks::default();
        for item in items {
            match item {
                Up::Item(id, ack) => msg.acks.push(pb::TaggedReplicaAck {
                    id: id as u32,
                    ack: Some(ack),
                }),
                Up::End(id) => msg.end.push(id as u32),
            }
        }
        msg
    }

    fn up_items(msg: Self::UpMsg) -> Vec<Up<Self::Up>> {
        // Acknowledgements before ends: a follower that moves to a newer leader sends its new
        // epoch, then ends the sub-stream, and both may arrive in one message.
        let acks = msg
            .acks
            .into_iter()
            .filter_map(|t| t.ack.map(|a| Up::Item(u64::from(t.id), a)));
        let ends = msg.end.into_iter().map(|id| Up::End(u64::from(id)));
        acks.chain(ends).collect()
    }

    fn down_message(items: Vec<(u64, Down<Self::Down>)>) -> Self::DownMsg {
        let chunks = items
            .into_iter()
            .map(|(id, d)| match d {
                Down::Item(chunk) => pb::TaggedReplicaChunk {
                    id: id as u32,
                    chunk: Some(chunk),
                    ..Default::default()
                },
                Down::End(e) => {
                    let (error, message) = error_parts(e);
                    pb::TaggedReplicaChunk {
                        id: id as u32,
                        chunk: None,
                        error,
                        message,
                    }
                }
            })
            .collect();
        pb::ReplicaChunks { chunks }
    }

    fn down_items(msg: Self::DownMsg) -> Vec<(u64, Down<Self::Down>)> {
        msg.chunks
            .into_iter()
            .map(|t| {
                let down = match (t.chunk, t.error) {
                    (Some(chunk), None) => Down::Item(chunk),
                    (_, error) => relabel(end_of(error, t.message)),
                };
                (u64::from(t.id), down)
            })
            .collect()
    }

    fn down_bytes(d: &Down<Self::Down>) -> usize {
        match d {
            Down::Item(chunk) => chunk.batches.len(),
            Down::End(_) => 0,
        }
    }
}
