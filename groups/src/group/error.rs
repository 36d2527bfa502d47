//! Errors a member can get from its group. The storage node maps each to a stable error code;
//! the message says what the client should do.

/// Why a heartbeat or a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group: it left or its session expired.
    #[error(
        "member '{member_id}' is not in the group (it left or its session expired); release all partitions and rejoin with member epoch 0"
    )]
    UnknownMemberId {
        /// The id the request named.
        member_id: String,
    },
    /// The request's member epoch is neither the member's epoch nor an acceptable previous one:
    /// the sender is a zombie (or lost too many responses) and must not act for the member.
    #[error(
        "member '{member_id}' sent member epoch {received} but its epoch is {current}; release all partitions and rejoin with member epoch 0"
    )]
    FencedMemberEpoch {
        /// The member the request named.
        member_id: String,
        /// Epoch in the request.
        received: i32,
        /// Epoch the group holds for the member.
        current: i32,
    },
    /// A static member joined with an instance id whose previous member has not left yet.
    #[error(
        "instance id '{instance_id}' is still held by member '{member_id}'; retry once that member leaves or its session expires"
    )]
    UnreleasedInstanceId {
        /// The contested `group.instance.id`.
        instance_id: String,
        /// The member that still holds it.
        member_id: String,
    },
    /// The request is malformed (bad epoch, timeout out of range, …).
    #[error("invalid group request: {0}")]
    InvalidRequest(String),
}
