//! How group-coordination failures reach clients: the one table from the core's
//! [`GroupError`] and from write failures to stable error codes.
//!
//! | Failure | Code | Retriable |
//! |---|---|---|
//! | `GroupError::UnknownMemberId` | `UNKNOWN_MEMBER_ID` | no: rejoin with epoch 0 |
//! | `GroupError::FencedMemberEpoch` | `FENCED_MEMBER_EPOCH` | no: release partitions, rejoin |
//! | `GroupError::UnreleasedInstanceId` | `UNRELEASED_INSTANCE_ID` | no |
//! | `GroupError::InvalidRequest` | `INVALID_REQUEST` | no |
//! | leadership of the offsets partition moved, node stopping, partition deleted | `NOT_COORDINATOR` | yes |
//! | the change was not replicated in time / too few in-sync replicas | `REQUEST_TIMED_OUT` / `NOT_ENOUGH_REPLICAS_AFTER_APPEND` | yes |
//! | the log store failed | `STORAGE_ERROR` | yes |

use sluice_groups::GroupError;
use sluice_proto::error::ApiError;
use sluice_proto::pb::ErrorCode;

use crate::replica::commit::CommitError;
use crate::writer::AppendError;

/// The client-facing error of a refused heartbeat or commit.
pub fn group_error(e: GroupError) -> ApiError {
    let code = match &e {
        GroupError::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
        GroupError::FencedMemberEpoch { .. } => ErrorCode::FencedMemberEpoch,
        GroupError::UnreleasedInstanceId { .. } => ErrorCode::UnreleasedInstanceId,
        GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
    };
    ApiError::new(code, e.to_string())
}

/// A failed append of group records.
pub fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::NotLeader | AppendError::Deleted | AppendError::Stopped => ApiError::new(
            ErrorCode::NotCoordinator,
            format!(
                "{e}: this node no longer coordinates the group; find its coordinator again and retry"
            ),
        ),
        other => ApiError::new(
            ErrorCode::StorageError,
            format!("persisting the group change failed ({other}); retry"),
        ),
    }
}

/// A failed wait for replication: a leadership change means another node coordinates now.
pub fn commit_wait_error(e: CommitError) -> ApiError {
    let code = match e {
        CommitError::LeadershipMoved { .. } => ErrorCode::NotCoordinator,
        CommitError::TooFewInSync { .. } => ErrorCode::NotEnoughReplicasAfterAppend,
        CommitError::TimedOut(_) => ErrorCode::RequestTimedOut,
    };
    let what = match code {
        ErrorCode::NotCoordinator => "find the group's coordinator again and retry",
        _ => "retry",
    };
    ApiError::new(
        code,
        format!("the group change did not commit: {e}; {what}"),
    )
}
