//! The client's one error type: callers branch on server error codes ([`ClientError::Api`]) or
//! on where a request failed before a server could answer.

use sluice_proto::error::ApiError;
use sluice_proto::pb::ErrorCode;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A Sluice server refused the request; `code` says why, `is_retriable` whether waiting helps.
    #[error(transparent)]
    Api(ApiError),
    /// No answer because the connection could not be made or broke.
    #[error("transport error: {0}")]
    Transport(String),
    /// No answer within the configured timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A request was abandoned unanswered because the partition's leader changed while it was
    /// in flight (the old leader hung rather than refused). Retriable, and its outcome is
    /// unknown: the old leader may have appended a produce before it stopped answering.
    #[error("leader moved: {0}")]
    LeaderMoved(String),
    /// The client was configured in a way no request can succeed with.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The producer or consumer was closed before the operation completed.
    #[error("client closed")]
    Closed,
}

/// Result of every client call.
pub type Result<T> = std::result::Result<T, ClientError>;

impl ClientError {
    /// Whether the same call may succeed later unchanged (after a metadata refresh).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.is_retriable(),
            ClientError::Transport(_) | ClientError::Timeout(_) | ClientError::LeaderMoved(_) => {
                true
            }
            ClientError::Config(_) | ClientError::Closed => false,
        }
    }

    /// The server's error code, when a server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether cached leaders or topic ids may be stale, so metadata should be re-read before
    /// the next attempt.
    pub(crate) fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Api(e) => matches!(
                e.code,
                ErrorCode::NotLeader
                    | ErrorCode::UnknownTopic
                    | ErrorCode::UnknownPartition
                    | ErrorCode::UnknownTopicId
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::PartitionOffline
                    | ErrorCode::NotEnoughReplicas
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::MetadataUnavailable
                    // The leader gave up waiting for its followers: it may have been cut off and
                    // replaced meanwhile.
                    | ErrorCode::RequestTimedOut
            ),
            ClientError::Transport(_) | ClientError::Timeout(_) => true,
            // The cache already names the new leader.
            ClientError::LeaderMoved(_) | ClientError::Config(_) | ClientError::Closed => false,
        }
    }

    /// Whether a produce request that failed this way may still have been appended by the
    /// leader. False only for refusals a leader gives before appending (wrong leader, bad batch,
    /// sequence checks) and for errors raised before a request left the client; an idempotent
    /// producer can then reuse the batch's sequence numbers for the next batch.
    pub(crate) fn may_have_been_written(&self) -> bool {
        match self {
            ClientError::Api(e) => !matches!(
                e.code,
                ErrorCode::NotLeader
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownTopic
                    | ErrorCode::UnknownPartition
                    | ErrorCode::UnknownTopicId
                    | ErrorCode::PartitionOffline
                    | ErrorCode::NotEnoughReplicas
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::MetadataUnavailable
                    | ErrorCode::InvalidRequest
                    | ErrorCode::CorruptBatch
                    | ErrorCode::BatchTooLarge
                    | ErrorCode::InvalidTimestamp
                    | ErrorCode::OutOfOrderSequence
                    | ErrorCode::InvalidProducerEpoch
            ),
            // The request may have arrived and been applied before the answer was lost (or,
            // for an abandoned one, before the leader stopped answering).
            ClientError::Transport(_) | ClientError::Timeout(_) | ClientError::LeaderMoved(_) => {
                true
            }
            ClientError::Config(_) | ClientError::Closed => false,
        }
    }

    /// Whether another coordinator may answer where this one could not.
    pub(crate) fn try_other_coordinator(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api(e) => matches!(
                e.code,
                ErrorCode::NotController | ErrorCode::MetadataUnavailable
            ),
            _ => false,
        }
    }

    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Api(ApiError::new(code, message))
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(e)
    }
}

/// A status with Sluice error details is an API error; one without came from the transport
/// (connection refused, reset) or a deadline, not from a Sluice handler.
/// Whether a detail-less status reports a broken HTTP/2 connection rather than a server answer.
fn is_connection_error(status: &tonic::Status) -> bool {
    let m = status.message();
    m.contains("h2 protocol error") || m.contains("connection reset") || m.contains("broken pipe")
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        if sluice_proto::error::error_detail(&status).is_none() {
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                    return ClientError::Transport(status.message().to_string());
                }
                tonic::Code::DeadlineExceeded => {
                    return ClientError::Timeout(status.message().to_string());
                }
                // A connection torn down under a request (e.g. the server's GOAWAY while it
                // shuts down) surfaces as INTERNAL with an h2 error and no Sluice details:
                // a transport failure whose outcome is unknown, so retried like one.
                tonic::Code::Internal if is_connection_error(&status) => {
                    return ClientError::Transport(status.message().to_string());
                }
                _ => {}
            }
        }
        ClientError::Api(ApiError::from_status(&status))
    }
}

impl From<sluice_proto::mux::client::MuxError> for ClientError {
    fn from(e: sluice_proto::mux::client::MuxError) -> Self {
        match e {
            sluice_proto::mux::client::MuxError::Refused(e) => ClientError::Api(e),
            sluice_proto::mux::client::MuxError::Broken(status) => ClientError::from(status),
        }
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        ClientError::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_torn_down_under_a_request_is_a_retriable_transport_error() {
        let e = ClientError::from(tonic::Status::internal("h2 protocol error: http2 error"));
        assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
        assert!(e.is_retriable());
        let other = ClientError::from(tonic::Status::internal("failed to decode the message"));
        assert!(!other.is_retriable());
    }

    #[test]
    fn status_without_details_is_transport_or_timeout() {
        let e = ClientError::from(tonic::Status::unavailable("connection refused"));
        assert!(matches!(e, ClientError::Transport(_)));
        assert!(e.is_retriable() && e.needs_metadata_refresh() && e.try_other_coordinator());
        let e = ClientError::from(tonic::Status::deadline_exceeded("slow"));
        assert!(matches!(e, ClientError::Timeout(_)));
        assert!(e.is_retriable());
    }

    #[test]
    fn sluice_status_keeps_code_and_retriability() {
        let status = ApiError::new(ErrorCode::OffsetOutOfRange, "offset 9 > log end 3").to_status();
        let e = ClientError::from(status);
        assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange));
        assert!(!e.is_retriable());
        assert!(!e.needs_metadata_refresh());
        let e = ClientError::from(ApiError::not_leader("moved", None).to_status());
        assert!(e.is_retriable() && e.needs_metadata_refresh());
    }

    #[test]
    fn failover_errors_are_retriable_and_only_refusals_prove_nothing_was_written() {
        for code in [
            ErrorCode::NotLeader,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::PartitionOffline,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::RequestTimedOut,
        ] {
            assert!(ClientError::api(code, "x").is_retriable(), "{code:?}");
        }
        for code in [
            ErrorCode::OutOfOrderSequence,
            ErrorCode::InvalidProducerEpoch,
        ] {
            let e = ClientError::api(code, "x");
            assert!(!e.is_retriable() && !e.may_have_been_written(), "{code:?}");
        }
        assert!(!ClientError::api(ErrorCode::NotLeader, "x").may_have_been_written());
        assert!(!ClientError::api(ErrorCode::NotEnoughReplicas, "x").may_have_been_written());
        assert!(
            ClientError::api(ErrorCode::NotEnoughReplicasAfterAppend, "x").may_have_been_written()
        );
        assert!(ClientError::api(ErrorCode::RequestTimedOut, "x").may_have_been_written());
        assert!(ClientError::Transport("reset".into()).may_have_been_written());
    }
}
