//! Moving a replica's log start through the writer queue, so it is ordered with the appends
//! and truncations queued before it: retention, DeleteRecords, and a follower following its
//! leader's log start.

use std::sync::Arc;

use sluice_proto::model::Offset;
use tokio::sync::oneshot;

use super::{AppendError, Job, Writer};
use crate::log::{LogOp, LogStore};
use crate::replica::Replica;
use crate::replica::producers::ProducerState;

impl Writer {
    /// Moves the replica's log start up to `offset` (never down); returns the log start after.
    /// Past the log end the log empties and continues at `offset`.
    pub async fn delete_before(
        &self,
        replica: Arc<Replica>,
        offset: Offset,
    ) -> Result<Offset, AppendError> {
        self.send(|reply| Job::DeleteBefore {
            replica,
            offset,
            past_end: true,
            reply,
        })
        .await?
        .await
        .map_err(|_| AppendError::Stopped)?
    }

    /// Queues the move of a follower's log start to its leader's, capped at the follower's log
    /// end when the job runs; returns the receiver of the log start after.
    pub async fn follow_log_start(
        &self,
        replica: Arc<Replica>,
        offset: Offset,
    ) -> Result<oneshot::Receiver<Result<Offset, AppendError>>, AppendError> {
        self.send(|reply| Job::DeleteBefore {
            replica,
            offset,
            past_end: false,
            reply,
        })
        .await
    }
}

/// Writes the move of the log start, then publishes it.
pub(super) fn delete_before(
    log: &dyn LogStore,
    r: &Arc<Replica>,
    offset: Offset,
    past_end: bool,
) -> Result<Offset, AppendError> {
    if r.is_deleted() {
        return Err(AppendError::Deleted);
    }
    let offset = if past_end {
        offset
    } else {
        offset.min(r.log_end())
    };
    if offset <= r.log_start() {
        return Ok(r.log_start());
    }
    let end = r.log_end();
    if offset <= end {
        log.write(&[LogOp::DeleteBefore { uid: r.uid, offset }])?;
        r.set_log_start(offset);
        return Ok(offset);
    }
    // Nothing kept: the epoch history and producer state describe batches that are gone.
    let mut epochs = r.epochs.lock().expect("poisoned").clone();
    epochs.truncate_from(0);
    log.write(&[
        LogOp::DeleteBefore { uid: r.uid, offset },
        LogOp::PutEpochs {
            uid: r.uid,
            epochs: epochs.entries(),
        },
    ])?;
    *r.epochs.lock().expect("poisoned") = epochs;
    *r.producers.lock().expect("poisoned") = ProducerState::default();
    r.set_log_start(offset);
    r.set_log_end(offset);
    tracing::info!(topic = %r.topic, partition = r.partition(), old_end = end, offset, "log emptied: it continues at the leader's log start");
    Ok(offset)
}
