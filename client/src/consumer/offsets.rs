//! Turning a [`super::SeekTo`] into an offset with `ListOffsets` on the partition's leader.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::pb::{self, list_offsets_request::Spec, log_client::LogClient};

use super::SeekTo;
use crate::connection::{MAX_MESSAGE_BYTES, request, with_timeout};
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::{RetryDecision, RetryPolicy};

/// Backoff between `ListOffsets` attempts while a leader moves.
const BACKOFF: Duration = Duration::from_millis(100);

/// The offset `to` designates in `topic`/`partition`. A timestamp after the last record resolves
/// to the log end (the high watermark), so the consumer waits for new records.
pub(crate) async fn resolve(
    meta: &Arc<Metadata>,
    timeout: Duration,
    topic: &str,
    partition: i32,
    to: SeekTo,
) -> Result<i64> {
    let spec = match to {
        SeekTo::Offset(o) if o < 0 => {
            return Err(ClientError::Config(format!(
                "cannot seek {topic}-{partition} to negative offset {o}; use SeekTo::Earliest or SeekTo::Latest"
            )));
        }
        SeekTo::Offset(o) => return Ok(o),
        SeekTo::Earliest => Spec::Earliest(true),
        SeekTo::Latest => Spec::Latest(true),
        SeekTo::Timestamp(ms) => Spec::TimestampMs(ms),
    };
    let resp = list_offsets(meta, timeout, topic, partition, spec).await?;
    Ok(if resp.offset < 0 {
        resp.high_watermark
    } else {
        resp.offset
    })
}

/// `ListOffsets` on the leader, following leader moves until `timeout` has passed.
pub(crate) async fn list_offsets(
    meta: &Arc<Metadata>,
    timeout: Duration,
    topic: &str,
    partition: i32,
    spec: Spec,
) -> Result<pb::ListOffsetsResponse> {
    let req = pb::ListOffsetsRequest {
        topic: topic.to_string(),
        partition,
        spec: Some(spec),
    };
    on_leader(
        meta,
        timeout,
        topic,
        partition,
        "list offsets",
        |mut c, left| {
            let req = request(req.clone(), left);
            async move { c.list_offsets(req).await }
        },
    )
    .await
}

/// One call on the partition's leader (`call` gets a client and the time left), following
/// leader moves and retrying retriable errors until `timeout` has passed.
pub(crate) async fn on_leader<T, F, Fut>(
    meta: &Arc<Metadata>,
    timeout: Duration,
    topic: &str,
    partition: i32,
    what: &str,
    call: F,
) -> Result<T>
where
    F: Fn(LogClient<tonic::transport::Channel>, Duration) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + timeout;
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        backoff: BACKOFF,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let seen = meta.version();
        let result = async {
            let leader = meta.leader(topic, partition).await?;
            let client = LogClient::new(meta.pool.channel(&leader.address)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let left = deadline.saturating_duration_since(Instant::now());
            with_timeout(left, what, call(client, left)).await
        }
        .await;
        let err = match result {
            Ok(resp) => return Ok(resp.into_inner()),
            Err(e) => e,
        };
        let rerouted = err.is_retriable() && meta.handle_error(topic, partition, &err, seen).await;
        match policy.decide(
            err.is_retriable(),
            rerouted,
            attempts,
            Instant::now(),
            deadline,
        ) {
            RetryDecision::GiveUp => return Err(err),
            RetryDecision::Now => {}
            RetryDecision::After(wait) => {
                tracing::debug!(topic, partition, error = %err, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
