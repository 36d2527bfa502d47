//! Sluice's error codes as Kafka error codes: the one table the Kafka listener answers with.

use sluice_proto::pb::ErrorCode;

/// The Kafka error code for a Sluice error code.
pub fn kafka_code(code: ErrorCode) -> i16 {
    use ErrorCode as E;
    match code {
        E::Unspecified => 0,
        E::OffsetOutOfRange => 1,
        E::CorruptBatch => 2,
        E::UnknownTopic | E::UnknownPartition => 3,
        E::PartitionOffline | E::LeaderNotAvailable | E::MetadataUnavailable => 5,
        E::NotLeader => 6,
        E::RequestTimedOut => 7,
        E::BatchTooLarge => 10,
        E::CoordinatorLoadInProgress => 14,
        E::NotCoordinator => 16,
        E::InvalidTopicName => 17,
        E::NotEnoughReplicas => 19,
        E::NotEnoughReplicasAfterAppend => 20,
        E::UnknownMemberId => 25,
        E::InvalidTimestamp => 32,
        E::TopicAlreadyExists => 36,
        E::InvalidPartitions => 37,
        E::InvalidReplicationFactor => 38,
        E::InvalidConfig => 40,
        E::NotController => 41,
        E::InvalidRequest => 42,
        E::OutOfOrderSequence => 45,
        E::InvalidProducerEpoch => 47,
        E::StorageError | E::StorageFull => 56,
        E::GroupNotEmpty => 68,
        E::GroupIdNotFound => 69,
        E::FencedLeaderEpoch => 74,
        E::UnknownTopicId => 100,
        E::FencedMemberEpoch => 110,
        E::UnreleasedInstanceId => 111,
        E::Internal | E::ConcurrentModification => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_kafka_clients_branch_on() {
        assert_eq!(
            kafka_code(ErrorCode::NotLeader),
            6,
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(kafka_code(ErrorCode::CorruptBatch), 2, "CORRUPT_MESSAGE");
        assert_eq!(kafka_code(ErrorCode::NotEnoughReplicas), 19);
        assert_eq!(kafka_code(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(kafka_code(ErrorCode::UnknownTopic), 3);
        assert_eq!(kafka_code(ErrorCode::InvalidTopicName), 17);
        assert_eq!(
            kafka_code(ErrorCode::BatchTooLarge),
            10,
            "MESSAGE_TOO_LARGE"
        );
    }
}
