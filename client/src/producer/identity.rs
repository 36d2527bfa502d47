//! Producer ids for the idempotent producer, from the coordinators' `InitProducerId`: one when
//! the producer starts, and a fresh one whenever a partition has lost track of its sequence
//! (see [`super::sequence`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::pb::{self, ErrorCode, metadata_client::MetadataClient};

use crate::connection::request;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::{RetryDecision, RetryPolicy};

/// A producer id and epoch as the coordinator granted them.
pub(crate) type Granted = (i64, i16);

/// For `Producer::new`: asks the coordinators in turn, retrying retriable errors (no controller
/// yet, coordinator unreachable) until `within` has passed.
pub(crate) async fn init(meta: &Metadata, within: Duration, backoff: Duration) -> Result<Granted> {
    let deadline = Instant::now() + within;
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        backoff,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let err = match request_once(meta).await {
            Ok(granted) => return Ok(granted),
            Err(e) => e,
        };
        match policy.decide(
            err.is_retriable(),
            false,
            attempts,
            Instant::now(),
            deadline,
        ) {
            RetryDecision::GiveUp => return Err(err),
            RetryDecision::Now => {}
            RetryDecision::After(wait) => {
                tracing::debug!(attempts, error = %err, "InitProducerId failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// For the sender, after a partition lost track of its sequence: asks until a coordinator
/// grants an id. Batches of the partitions waiting for it expire meanwhile if this takes longer
/// than the delivery timeout; the sender drops this future when it stops.
pub(crate) async fn renew(meta: Arc<Metadata>, backoff: Duration) -> Granted {
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        backoff,
    };
    let mut failures = 0u32;
    loop {
        match request_once(&meta).await {
            Ok(granted) => return granted,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(failures, error = %e, "cannot get a new producer id; partitions that lost their sequence wait");
                }
                tokio::time::sleep(policy.backoff(failures)).await;
            }
        }
    }
}

async fn request_once(meta: &Metadata) -> Result<Granted> {
    let resp = meta
        .coordinators
        .call(
            &meta.pool,
            "InitProducerId",
            true,
            |ch, timeout| async move {
                MetadataClient::new(ch)
                    .init_producer_id(request(pb::InitProducerIdRequest {}, timeout))
                    .await
            },
        )
        .await?
        .into_inner();
    let epoch = i16::try_from(resp.producer_epoch).ok().filter(|e| *e >= 0);
    match epoch {
        Some(epoch) if resp.producer_id >= 0 => Ok((resp.producer_id, epoch)),
        _ => Err(ClientError::api(
            ErrorCode::Internal,
            format!(
                "coordinator granted an unusable producer id {} with epoch {}; expected a \
                 non-negative id and an epoch between 0 and {}",
                resp.producer_id,
                resp.producer_epoch,
                i16::MAX
            ),
        )),
    }
}
