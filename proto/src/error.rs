//! The one table that maps Sluice error codes to gRPC status codes and retriability, and the
//! [`ApiError`] value that crosses every gRPC boundary. On the wire an error is a standard
//! `google.rpc.Status` in the `grpc-status-details-bin` trailer (what every gRPC library's
//! status helpers read): its code and message equal the call's, and its details hold the
//! `sluice.v1.ErrorDetail` packed as an `Any`, so clients in any language branch on a stable
//! code, plus a `google.rpc.ErrorInfo` naming it for tools that know only the standard types.

use prost::Message;
use prost_types::Any;

use crate::pb::{ErrorCode, ErrorDetail, LeaderHint};

/// Type URL of the packed `ErrorDetail` in a status's details.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/sluice.v1.ErrorDetail";
/// Type URL of `google.rpc.ErrorInfo`.
const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
/// `ErrorInfo.domain` of every Sluice error.
const ERROR_DOMAIN: &str = "sluice.v1";

/// An error as seen on the wire: a stable code, a message that says what to do, and hints.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct ApiError {
    /// The stable code clients branch on.
    pub code: ErrorCode,
    /// Human-readable explanation, saying what to do about it.
    pub message: String,
    /// For `NOT_LEADER`: where the leader is, when known.
    pub leader: Option<LeaderHint>,
    /// For `NOT_CONTROLLER`: the active controller's address, when known.
    pub controller_address: Option<String>,
}

/// gRPC status code and retriability of each error code. Retriable means the same request may
/// succeed later without the user changing it (possibly after a metadata refresh).
pub fn classify(code: ErrorCode) -> (tonic::Code, bool) {
    use ErrorCode as E;
    use tonic::Code as C;
    match code {
        E::Unspecified | E::Internal => (C::Internal, false),
        E::InvalidRequest
        | E::InvalidTopicName
        | E::InvalidPartitions
        | E::InvalidConfig
        | E::CorruptBatch
        | E::BatchTooLarge
        | E::InvalidTimestamp => (C::InvalidArgument, false),
        E::InvalidReplicationFactor | E::OutOfOrderSequence | E::InvalidProducerEpoch => {
            (C::FailedPrecondition, false)
        }
        E::TopicAlreadyExists => (C::AlreadyExists, false),
        E::UnknownTopic | E::UnknownPartition | E::UnknownTopicId => (C::NotFound, true),
        E::OffsetOutOfRange => (C::OutOfRange, false),
        E::NotLeader | E::NotController | E::FencedLeaderEpoch => (C::FailedPrecondition, true),
        E::ConcurrentModification => (C::Aborted, true),
        E::NotCoordinator | E::CoordinatorLoadInProgress => (C::Unavailable, true),
        E::UnknownMemberId | E::FencedMemberEpoch => (C::FailedPrecondition, false),
        E::UnreleasedInstanceId | E::GroupNotEmpty => (C::FailedPrecondition, false),
        E::GroupIdNotFound => (C::NotFound, false),
        E::PartitionOffline
        | E::NotEnoughReplicas
        | E::NotEnoughReplicasAfterAppend
        | E::MetadataUnavailable
        | E::LeaderNotAvailable => (C::Unavailable, true),
        E::RequestTimedOut => (C::DeadlineExceeded, true),
        E::StorageError => (C::Internal, true),
        E::StorageFull => (C::ResourceExhausted, true),
    }
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
            controller_address: None,
        }
    }

    /// `NOT_LEADER` with the leader hint when the refusing node knows it.
    pub fn not_leader(message: impl Into<String>, leader: Option<LeaderHint>) -> Self {
        Self {
            leader,
            ..Self::new(ErrorCode::NotLeader, message)
        }
    }

    /// Whether the same request may succeed if retried (after a metadata refresh).
    pub fn is_retriable(&self) -> bool {
        classify(self.code).1
    }

    /// The machine-readable part of this error, as it travels in a status or in a per-partition
    /// answer (`ProduceResult`).
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code as i32,
            name: self.code.as_str_name().to_string(),
            retriable: self.is_retriable(),
            leader: self.leader.clone(),
            controller_address: self.controller_address.clone().unwrap_or_default(),
        }
    }

    /// Rebuilds an error from its detail and message (the inverse of [`ApiError::detail`]);
    /// an unknown code becomes `INTERNAL`.
    pub fn from_detail(detail: ErrorDetail, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal),
            message: message.into(),
            leader: detail.leader,
            controller_address: Some(detail.controller_address).filter(|a| !a.is_empty()),
        }
    }

    /// Encodes this error as a gRPC status whose details are a `google.rpc.Status` carrying the
    /// `ErrorDetail` (and an `ErrorInfo` with the code's name).
    pub fn to_status(&self) -> tonic::Status {
        let code = classify(self.code).0;
        let message = format!("{}: {}", self.code.as_str_name(), self.message);
        let info = tonic_types::pb::ErrorInfo {
            reason: self.code.as_str_name().to_string(),
            domain: ERROR_DOMAIN.to_string(),
            metadata: Default::default(),
        };
        let details = tonic_types::pb::Status {
            code: code as i32,
            message: message.clone(),
            details: vec![
                Any {
                    type_url: ERROR_DETAIL_TYPE_URL.to_string(),
                    value: self.detail().encode_to_vec(),
                },
                Any {
                    type_url: ERROR_INFO_TYPE_URL.to_string(),
                    value: info.encode_to_vec(),
                },
            ],
        };
        tonic::Status::with_details(code, message, details.encode_to_vec().into())
    }

    /// Decodes a status received from a Sluice server; statuses without details (transport
    /// failures, other servers) become `METADATA_UNAVAILABLE` when the peer is unreachable and
    /// `INTERNAL` otherwise.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(detail) = error_detail(status) {
            let code = ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal);
            let prefix = format!("{}: ", code.as_str_name());
            let message = status
                .message()
                .strip_prefix(&prefix)
                .unwrap_or(status.message())
                .to_string();
            return Self::from_detail(detail, message);
        }
        let code = match status.code() {
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                ErrorCode::MetadataUnavailable
            }
            tonic::Code::DeadlineExceeded => ErrorCode::RequestTimedOut,
            _ => ErrorCode::Internal,
        };
        Self::new(code, status.message().to_string())
    }
}

/// The `ErrorDetail` packed in a status's `google.rpc.Status` details, if it has one.
pub fn error_detail(status: &tonic::Status) -> Option<ErrorDetail> {
    let rpc = tonic_types::pb::Status::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
        .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
        .filter(|d| d.code != 0)
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_message_and_leader_hint() {
        let hint = LeaderHint {
            node_id: 3,
            address: "127.0.0.1:9000".into(),
            leader_epoch: 7,
        };
        let e = ApiError::not_leader("node 1 does not lead t-0", Some(hint.clone()));
        let status = e.to_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let back = ApiError::from_status(&status);
        assert_eq!(back, e);
        assert!(back.is_retriable());
        assert_eq!(back.leader, Some(hint));
    }

    #[test]
    fn status_details_are_a_google_rpc_status_with_the_calls_code_and_message() {
        let e = ApiError::new(ErrorCode::NotEnoughReplicas, "too few in sync");
        let status = e.to_status();
        let rpc = tonic_types::pb::Status::decode(status.details()).expect("a google.rpc.Status");
        assert_eq!(rpc.code, status.code() as i32);
        assert_eq!(rpc.message, status.message());
        assert_eq!(rpc.details[0].type_url, ERROR_DETAIL_TYPE_URL);
        let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
        assert_eq!(detail.name, "NOT_ENOUGH_REPLICAS");
        let info = tonic_types::pb::ErrorInfo::decode(rpc.details[1].value.as_slice()).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("NOT_ENOUGH_REPLICAS", "sluice.v1")
        );
    }

    #[test]
    fn detail_round_trip_keeps_code_message_and_controller() {
        let e = ApiError {
            controller_address: Some("127.0.0.1:9092".into()),
            ..ApiError::new(ErrorCode::NotController, "ask the active controller")
        };
        let d = e.detail();
        assert_eq!(d.name, "NOT_CONTROLLER");
        assert!(d.retriable);
        assert_eq!(ApiError::from_detail(d, e.message.clone()), e);
        let unknown = ErrorDetail {
            code: 9999,
            ..Default::default()
        };
        assert_eq!(
            ApiError::from_detail(unknown, "x").code,
            ErrorCode::Internal
        );
    }

    #[test]
    fn status_without_details_is_not_mistaken_for_a_sluice_code() {
        let back = ApiError::from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(back.code, ErrorCode::MetadataUnavailable);
        assert!(back.is_retriable());
    }
}
