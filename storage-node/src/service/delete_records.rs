//! DeleteRecords on a partition's leader: the log start moves to the asked offset (through the
//! writer, ordered with the appends before it); followers learn it from the `log_start_offset`
//! of their next chunk and move theirs.

use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode};

use super::LogService;
use super::produce::append_error;

/// Handles one DeleteRecords request.
pub async fn delete_records(
    svc: &LogService,
    req: pb::DeleteRecordsRequest,
) -> Result<pb::DeleteRecordsResponse, ApiError> {
    let replica = svc.leader_by_name(&req.topic, req.partition)?;
    let (start, hw) = (replica.log_start(), replica.high_watermark());
    let before = if req.before_offset == -1 {
        hw
    } else {
        req.before_offset
    };
    if !(0..=hw).contains(&before) {
        return Err(ApiError::new(
            ErrorCode::OffsetOutOfRange,
            format!(
                "cannot delete records of {}-{} before offset {}: the high watermark is {hw}; give an offset from {start} to {hw}, or -1 for the high watermark",
                req.topic, req.partition, req.before_offset
            ),
        ));
    }
    let low_watermark = svc
        .writer
        .delete_before(replica.clone(), before)
        .await
        .map_err(|e| append_error(e, &replica))?;
    tracing::info!(topic = %req.topic, partition = req.partition, low_watermark, "records deleted");
    Ok(pb::DeleteRecordsResponse { low_watermark })
}
