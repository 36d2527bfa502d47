//! One produce attempt for the batches the sender drained together: the batches that share a
//! leader go in one `ProduceMany` message on that node's produce stream (one request, one
//! answer and one group commit on the node instead of one each per partition, which is what
//! keeps latency low when many partitions have a few records ready at once). Each batch still
//! gets its own result, and a failed batch its own routing reaction (follow the `NOT_LEADER`
//! hint or refresh metadata) so its retry goes to the right node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, log_client::LogClient, produce_request::Payload};

use super::Shared;
use super::accumulator::ProducerBatch;
use crate::connection::{MAX_MESSAGE_BYTES, with_timeout};
use crate::error::{ClientError, Result};
use crate::metadata::Leader;

/// A finished produce attempt, handed back to the loop that owns retry decisions.
pub(super) struct Completion {
    pub(super) batch: ProducerBatch,
    pub(super) result: Result<pb::ProduceResponse>,
    /// A `NOT_LEADER` hint named a newer leader, so a retry can go at once.
    pub(super) rerouted: bool,
}

/// Sends `batches` (drained together, grouped by their cached leader) and returns one completion
/// per batch.
pub(super) async fn send(shared: Arc<Shared>, batches: Vec<ProducerBatch>) -> Vec<Completion> {
    let meta = &shared.metadata;
    let seen = meta.version();
    let mut done = Vec::with_capacity(batches.len());
    // By leader node: normally one group, but the cache may have changed since the sender
    // grouped them.
    let mut by_node: BTreeMap<i32, Vec<Part>> = BTreeMap::new();
    for mut batch in batches {
        let payload = match batch.payload() {
            Ok(p) => p,
            Err(e) => {
                done.push(Completion {
                    batch,
                    result: Err(ClientError::Api(ApiError::from(e))),
                    rerouted: false,
                });
                continue;
            }
        };
        match meta.leader(&batch.topic, batch.partition).await {
            Ok(leader) => by_node.entry(leader.node_id).or_default().push(Part {
                batch,
                leader,
                payload,
            }),
            Err(e) => done.push(conclude(&shared, batch, Err(e), seen).await),
        }
    }
    let sent = join_all(
        by_node
            .into_values()
            .map(|parts| send_to_node(shared.clone(), parts, seen)),
    )
    .await;
    done.extend(sent.into_iter().flatten());
    done
}

/// A batch ready to go, with the leader it goes to.
struct Part {
    batch: ProducerBatch,
    leader: Leader,
    payload: Bytes,
}

/// One `ProduceMany` to the node leading every part.
async fn send_to_node(shared: Arc<Shared>, parts: Vec<Part>, seen: u64) -> Vec<Completion> {
    let meta = &shared.metadata;
    let address = parts[0].leader.address.clone();
    let requests = parts
        .iter()
        .map(|p| produce_request(&shared, &p.batch, &p.leader, p.payload.clone()))
        .collect();
    let watched: Vec<(&str, i32, &Leader)> = parts
        .iter()
        .map(|p| (p.batch.topic.as_str(), p.batch.partition, &p.leader))
        .collect();
    let attempt = produce_many(&shared, &address, requests);
    let answer = meta.unless_any_leader_moves(&watched, attempt).await;
    drop(watched);
    let results: Vec<Result<pb::ProduceResponse>> = match answer {
        Ok(results) if results.len() == parts.len() => results,
        Ok(results) => {
            let err = ClientError::api(
                ErrorCode::Internal,
                format!(
                    "node at {address} answered {} of {} produce requests",
                    results.len(),
                    parts.len()
                ),
            );
            vec![Err(err); parts.len()]
        }
        Err(e) => vec![Err(e); parts.len()],
    };
    join_all(
        parts
            .into_iter()
            .zip(results)
            .map(|(part, result)| conclude(&shared, part.batch, result, seen)),
    )
    .await
}

/// Pairs a batch with its result and reacts to a retriable error: a move the cache already knows
/// of, or a `NOT_LEADER` hint naming a newer leader, retries at once; other retriable errors
/// refresh metadata first.
async fn conclude(
    shared: &Shared,
    batch: ProducerBatch,
    result: Result<pb::ProduceResponse>,
    seen: u64,
) -> Completion {
    let rerouted = match &result {
        Err(ClientError::LeaderMoved(_)) => true,
        Err(e) if e.is_retriable() => {
            shared
                .metadata
                .handle_error(&batch.topic, batch.partition, e, seen)
                .await
        }
        _ => false,
    };
    Completion {
        batch,
        result,
        rerouted,
    }
}

fn produce_request(
    shared: &Shared,
    batch: &ProducerBatch,
    leader: &Leader,
    payload: Bytes,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: batch.topic.clone(),
        partition: batch.partition,
        acks: shared.cfg.acks.as_i32(),
        timeout_ms: i32::try_from(shared.cfg.client.request_timeout.as_millis())
            .unwrap_or(i32::MAX),
        payload: Some(Payload::Batch(payload)),
        compression: pb::Compression::None as i32,
        leader_epoch: leader.epoch,
        topic_id: leader.topic_id.clone(),
        producer: None,
    }
}

fn log_client(shared: &Shared, address: &str) -> Result<LogClient<tonic::transport::Channel>> {
    Ok(LogClient::new(shared.metadata.pool.channel(address)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The leader gives up waiting for replicas at the request's `timeout_ms`; allow its answer to
/// arrive.
fn answer_timeout(shared: &Shared) -> Duration {
    shared.cfg.client.request_timeout + Duration::from_secs(1)
}

/// The one exception to "every produce travels on the node's stream": a request larger than
/// this goes as a `ProduceMany` call of its own. The stream saves a fixed cost per request,
/// which is most of a small request's; a large one spends its time encoding, sending and
/// decoding its bytes, which separate calls do in parallel on both sides (HTTP/2 streams are
/// encoded and decoded by separate tasks) while one stream does it a message at a time
/// (BENCHMARKS.md, "The data path and why": the produce stream).
const PARALLEL_ENCODE_BYTES: usize = 64 << 10;

fn payload_len(r: &pb::ProduceRequest) -> usize {
    match &r.payload {
        Some(Payload::Batch(b)) => b.len(),
        _ => 0,
    }
}

/// Sends `requests` as one `ProduceMany`: on the node's produce stream, or as a call of its own
/// when it is larger than [`PARALLEL_ENCODE_BYTES`].
async fn produce_many(
    shared: &Shared,
    address: &str,
    requests: Vec<pb::ProduceRequest>,
) -> Result<Vec<Result<pb::ProduceResponse>>> {
    let timeout = answer_timeout(shared);
    let bytes: usize = requests.iter().map(payload_len).sum();
    let msg = pb::ProduceManyRequest { requests };
    let resp = if bytes <= PARALLEL_ENCODE_BYTES {
        shared.streams.call(address, msg, timeout).await?
    } else {
        let mut client = log_client(shared, address)?;
        // The node bounds its wait by each request's `timeout_ms`; no grpc-timeout header,
        // which would cost a second timer per request.
        with_timeout(timeout, "produce", client.produce_many(msg))
            .await?
            .into_inner()
    };
    Ok(resp
        .results
        .into_iter()
        .map(|r| match (r.response, r.error) {
            (Some(response), None) => Ok(response),
            (_, Some(detail)) => Err(ClientError::Api(ApiError::from_detail(detail, r.message))),
            (None, None) => Err(ClientError::api(
                ErrorCode::Internal,
                "the node answered a produce request with neither a result nor an error",
            )),
        })
        .collect())
}
