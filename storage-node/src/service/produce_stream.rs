//! `ProduceStream`: a producer's `ProduceMany` calls on one long-lived stream per node. Each
//! message is handled exactly as the call would be ([`produce::produce_many`]), concurrently
//! with the others, and answered with its id as soon as it is done. What it saves is the
//! per-request cost of a unary call on both sides: an HTTP/2 stream with its headers and
//! trailers, and a task and a routing step on the node.
//!
//! The stream ends when the producer ends it (after the answers of what it sent), when it
//! breaks, or when the node drains for shutdown (requests already read are still answered).

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sluice_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::log::LogService;
use super::produce;
use sluice_proto::server::observe;

/// Requests of one stream handled at once, at most; the node reads no further messages until
/// one finishes, so a producer that sends without waiting is paced by HTTP/2 flow control
/// instead of growing the node's memory (a unary call is bounded by HTTP/2's concurrent
/// streams the same way).
const MAX_RUNNING: usize = 128;

/// Answers as the node sends them.
pub type AnswerStream = ReceiverStream<Result<pb::ProduceStreamResponse, Status>>;

/// Answers the requests read from `requests` on a task of their own.
pub fn serve(svc: LogService, mut requests: Streaming<pb::ProduceStreamRequest>) -> AnswerStream {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut closing = svc.closing.clone();
        let closing = async move { drop(closing.wait_for(|c| *c).await) };
        tokio::pin!(closing);
        let mut running = FuturesUnordered::new();
        let mut reading = true;
        while reading || !running.is_empty() {
            tokio::select! {
                read = requests.message(), if reading && running.len() < MAX_RUNNING => match read {
                    Ok(Some(msg)) => running.push(answer(&svc, msg)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        tracing::debug!(%status, "produce stream broke");
                        reading = false;
                    }
                },
                Some(done) = running.next(), if !running.is_empty() => {
                    if tx.send(Ok(done)).await.is_err() {
                        // The producer is gone; what it sent is still written.
                        while running.next().await.is_some() {}
                        return;
                    }
                }
                () = &mut closing, if reading => reading = false,
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Handles one message as a `ProduceMany` call.
async fn answer(svc: &LogService, msg: pb::ProduceStreamRequest) -> pb::ProduceStreamResponse {
    let request = msg.request.unwrap_or_default();
    match observe("ProduceStream", produce::produce_many(svc, request)).await {
        Ok(response) => pb::ProduceStreamResponse {
            id: msg.id,
            response: Some(response),
            ..Default::default()
        },
        Err(e) => pb::ProduceStreamResponse {
            id: msg.id,
            response: None,
            error: Some(e.detail()),
            message: e.message,
        },
    }
}
