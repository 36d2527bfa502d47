//! Records of the `__sluice_offsets` log: group records and offset commits as Kafka records
//! whose key is a `GroupLogKey` and whose value is the protobuf message of the key's kind. A
//! record without a value is a tombstone for its key, so compaction keeps the last write.
//!
//! | kind | key fields | value | tombstone means |
//! |---|---|---|---|
//! | `offset` | group, topic, partition | `OffsetCommitValue` | offset deleted |
//! | `group` | group | `GroupMetadataValue` | group deleted |
//! | `member` | group, member | `GroupMemberValue` | member left (`MemberLeft`) |
//! | `epoch` | group | `GroupEpochValue` | (written by a delete) |
//! | `target` | group | `TargetAssignmentValue` | (written by a delete) |
//! | `assignment` | group, member | `CurrentAssignmentValue` | (written with `MemberLeft`) |

use bytes::Bytes;
use prost::Message;
use sluice_groups::{Assignment, GroupRecord, Partitions, TopicPartition};
use sluice_proto::pb;

/// Key kinds, as written in `GroupLogKey.kind`.
pub mod kind {
    /// A committed offset.
    pub const OFFSET: &str = "offset";
    /// Group metadata (assignor); its tombstone deletes the group.
    pub const GROUP: &str = "group";
    /// A member's subscription.
    pub const MEMBER: &str = "member";
    /// The group epoch.
    pub const EPOCH: &str = "epoch";
    /// The target assignment.
    pub const TARGET: &str = "target";
    /// A member's current assignment.
    pub const ASSIGNMENT: &str = "assignment";
}

/// A committed offset and its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: i64,
    /// The client's metadata string.
    pub metadata: String,
}

/// One decoded record of the offsets log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A commit (`Some`) or the deletion (`None`) of a group's offset for one partition.
    Offset {
        /// Group id.
        group_id: String,
        /// The committed partition.
        partition: TopicPartition,
        /// The commit, or `None` for a tombstone.
        commit: Option<Committed>,
    },
    /// The group's metadata (its assignor), or `None`: the group was deleted.
    Group {
        /// Group id.
        group_id: String,
        /// The assignor name, or `None` for a tombstone.
        assignor: Option<String>,
    },
    /// A record of the group core, to replay.
    Record {
        /// Group id.
        group_id: String,
        /// The record.
        record: GroupRecord,
    },
    /// A tombstone the core has no record for (epoch, target and assignment deletions).
    Ignored,
}

/// Why a record of the offsets log could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unreadable __sluice_offsets record: {0}")]
pub struct CodecError(pub String);

/// A record's key and value (None: tombstone), ready for a batch.
pub type KeyValue = (Bytes, Option<Bytes>);

fn key(group_id: &str, kind: &str, topic: &str, partition: i32, member_id: &str) -> Bytes {
    pb::GroupLogKey {
        group_id: group_id.to_string(),
        kind: kind.to_string(),
        topic: topic.to_string(),
        partition,
        member_id: member_id.to_string(),
    }
    .encode_to_vec()
    .into()
}

fn value(m: &impl Message) -> Option<Bytes> {
    Some(m.encode_to_vec().into())
}

fn to_pb(partitions: &Partitions) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for p in partitions {
        match out.last_mut() {
            Some(last) if last.topic == p.topic => last.partitions.push(p.partition),
            _ => out.push(pb::TopicPartitions {
                topic: p.topic.clone(),
                partitions: vec![p.partition],
            }),
        }
    }
    out
}

fn from_pb(list: &[pb::TopicPartitions]) -> Partitions {
    list.iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(&t.topic, *p))
        })
        .collect()
}

/// Partitions as the API's `TopicPartitions` list, grouped by topic in order.
pub fn partitions_to_pb(partitions: &Partitions) -> Vec<pb::TopicPartitions> {
    to_pb(partitions)
}

/// The API's `TopicPartitions` list as a set of partitions.
pub fn partitions_from_pb(list: &[pb::TopicPartitions]) -> Partitions {
    from_pb(list)
}

/// An offset commit (or its tombstone).
pub fn encode_offset(
    group_id: &str,
    p: &TopicPartition,
    commit: Option<&Committed>,
    now_ms: i64,
) -> KeyValue {
    let v = commit.and_then(|c| {
        value(&pb::OffsetCommitValue {
            offset: c.offset,
            metadata: c.metadata.clone(),
            commit_timestamp_ms: now_ms,
        })
    });
    (key(group_id, kind::OFFSET, &p.topic, p.partition, ""), v)
}

/// The group's metadata record (or its tombstone, which deletes the group on replay).
pub fn encode_group(group_id: &str, assignor: Option<&str>) -> KeyValue {
    let v = assignor.and_then(|a| {
        value(&pb::GroupMetadataValue {
            assignor: a.to_string(),
        })
    });
    (key(group_id, kind::GROUP, "", 0, ""), v)
}

/// A tombstone for a key of `kind` (used when a group is deleted).
pub fn tombstone(group_id: &str, kind: &str, member_id: &str) -> KeyValue {
    (key(group_id, kind, "", 0, member_id), None)
}

/// The log records of one core record. `MemberLeft` becomes two tombstones (the member and
/// its assignment), so compaction forgets the member entirely.
pub fn encode_record(group_id: &str, r: &GroupRecord) -> Vec<KeyValue> {
    match r {
        GroupRecord::MemberJoined {
            member_id,
            instance_id,
            subscribed_topics,
            rebalance_timeout_ms,
            session_timeout_ms,
        } => {
            let v = pb::GroupMemberValue {
                has_instance_id: instance_id.is_some(),
                instance_id: instance_id.clone().unwrap_or_default(),
                subscribed_topics: subscribed_topics.iter().cloned().collect(),
                rebalance_timeout_ms: *rebalance_timeout_ms,
                session_timeout_ms: *session_timeout_ms,
            };
            vec![(key(group_id, kind::MEMBER, "", 0, member_id), value(&v))]
        }
        GroupRecord::MemberLeft { member_id, .. } => vec![
            tombstone(group_id, kind::ASSIGNMENT, member_id),
            tombstone(group_id, kind::MEMBER, member_id),
        ],
        GroupRecord::GroupEpoch {
            group_epoch,
            topics,
        } => {
            let v = pb::GroupEpochValue {
                group_epoch: *group_epoch,
                topics: topics
                    .iter()
                    .map(|(t, n)| pb::TopicPartitionCount {
                        topic: t.clone(),
                        partitions: *n,
                    })
                    .collect(),
            };
            vec![(key(group_id, kind::EPOCH, "", 0, ""), value(&v))]
        }
        GroupRecord::TargetAssignment {
            assignment_epoch,
            assignment,
        } => {
            let v = pb::TargetAssignmentValue {
                assignment_epoch: *assignment_epoch,
                members: assignment
                    .members
                    .iter()
                    .map(|(m, ps)| pb::MemberPartitions {
                        member_id: m.clone(),
                        partitions: to_pb(ps),
                    })
                    .collect(),
            };
            vec![(key(group_id, kind::TARGET, "", 0, ""), value(&v))]
        }
        GroupRecord::CurrentAssignment {
            member_id,
            member_epoch,
            previous_member_epoch,
            assigned,
            pending_revocation,
        } => {
            let v = pb::CurrentAssignmentValue {
                member_epoch: *member_epoch,
                previous_member_epoch: *previous_member_epoch,
                assigned: to_pb(assigned),
                pending_revocation: to_pb(pending_revocation),
            };
            vec![(key(group_id, kind::ASSIGNMENT, "", 0, member_id), value(&v))]
        }
    }
}

fn decode_value<M: Message + Default>(v: &Bytes) -> Result<M, CodecError> {
    M::decode(v.clone()).map_err(|e| CodecError(e.to_string()))
}

/// Decodes one record of the offsets log.
pub fn decode(k: Option<&Bytes>, v: Option<&Bytes>) -> Result<LogEntry, CodecError> {
    let k = k.ok_or_else(|| CodecError("record has no key".into()))?;
    let k = pb::GroupLogKey::decode(k.clone()).map_err(|e| CodecError(e.to_string()))?;
    let group_id = k.group_id;
    let record = |record| LogEntry::Record {
        group_id: group_id.clone(),
        record,
    };
    Ok(match (k.kind.as_str(), v) {
        (kind::OFFSET, v) => {
            let commit = match v {
                Some(v) => {
                    let c: pb::OffsetCommitValue = decode_value(v)?;
                    Some(Committed {
                        offset: c.offset,
                        metadata: c.metadata,
                    })
                }
                None => None,
            };
            LogEntry::Offset {
                partition: TopicPartition::new(k.topic, k.partition),
                group_id,
                commit,
            }
        }
        (kind::GROUP, v) => {
            let assignor = match v {
                Some(v) => Some(decode_value::<pb::GroupMetadataValue>(v)?.assignor),
                None => None,
            };
            LogEntry::Group { group_id, assignor }
        }
        (kind::MEMBER, None) => record(GroupRecord::MemberLeft {
            member_id: k.member_id,
            member_epoch: -1,
        }),
        (kind::MEMBER, Some(v)) => {
            let m: pb::GroupMemberValue = decode_value(v)?;
            record(GroupRecord::MemberJoined {
                member_id: k.member_id,
                instance_id: m.has_instance_id.then_some(m.instance_id),
                subscribed_topics: m.subscribed_topics.into_iter().collect(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
            })
        }
        (kind::EPOCH, Some(v)) => {
            let e: pb::GroupEpochValue = decode_value(v)?;
            record(GroupRecord::GroupEpoch {
                group_epoch: e.group_epoch,
                topics: e
                    .topics
                    .into_iter()
                    .map(|t| (t.topic, t.partitions))
                    .collect(),
            })
        }
        (kind::TARGET, Some(v)) => {
            let t: pb::TargetAssignmentValue = decode_value(v)?;
            let members = t
                .members
                .iter()
                .map(|m| (m.member_id.clone(), from_pb(&m.partitions)))
                .collect();
            record(GroupRecord::TargetAssignment {
                assignment_epoch: t.assignment_epoch,
                assignment: Assignment { members },
            })
        }
        (kind::ASSIGNMENT, Some(v)) => {
            let a: pb::CurrentAssignmentValue = decode_value(v)?;
            record(GroupRecord::CurrentAssignment {
                member_id: k.member_id,
                member_epoch: a.member_epoch,
                previous_member_epoch: a.previous_member_epoch,
                assigned: from_pb(&a.assigned),
                pending_revocation: from_pb(&a.pending_revocation),
            })
        }
        (kind::EPOCH | kind::TARGET | kind::ASSIGNMENT, None) => LogEntry::Ignored,
        (other, _) => return Err(CodecError(format!("unknown key kind '{other}'"))),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn parts(list: &[(&str, i32)]) -> Partitions {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    fn round_trip(r: &GroupRecord) -> LogEntry {
        let kvs = encode_record("g", r);
        let (k, v) = kvs.last().unwrap();
        decode(Some(k), v.as_ref()).unwrap()
    }

    #[test]
    fn group_records_round_trip() {
        let records = [
            GroupRecord::MemberJoined {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                subscribed_topics: BTreeSet::from(["a".to_string(), "b".to_string()]),
                rebalance_timeout_ms: 3_000,
                session_timeout_ms: 1_000,
            },
            GroupRecord::GroupEpoch {
                group_epoch: 7,
                topics: [("a".to_string(), 12), ("b".to_string(), 3)].into(),
            },
            GroupRecord::TargetAssignment {
                assignment_epoch: 7,
                assignment: Assignment {
                    members: [("m1".to_string(), parts(&[("a", 0), ("a", 1), ("b", 2)]))].into(),
                },
            },
            GroupRecord::CurrentAssignment {
                member_id: "m1".into(),
                member_epoch: 7,
                previous_member_epoch: 6,
                assigned: parts(&[("a", 0), ("b", 2)]),
                pending_revocation: parts(&[("a", 5)]),
            },
        ];
        for r in &records {
            assert_eq!(
                round_trip(r),
                LogEntry::Record {
                    group_id: "g".into(),
                    record: r.clone()
                }
            );
        }
    }

    #[test]
    fn member_left_is_written_as_tombstones_of_the_member_and_its_assignment() {
        let kvs = encode_record(
            "g",
            &GroupRecord::MemberLeft {
                member_id: "m1".into(),
                member_epoch: 4,
            },
        );
        assert!(kvs.iter().all(|(_, v)| v.is_none()));
        let decoded: Vec<LogEntry> = kvs
            .iter()
            .map(|(k, v)| decode(Some(k), v.as_ref()).unwrap())
            .collect();
        assert_eq!(decoded[0], LogEntry::Ignored);
        assert!(matches!(
            &decoded[1],
            LogEntry::Record { record: GroupRecord::MemberLeft { member_id, .. }, .. } if member_id == "m1"
        ));
    }

    #[test]
    fn offsets_and_group_metadata_round_trip_with_tombstones() {
        let p = TopicPartition::new("orders", 3);
        let c = Committed {
            offset: 42,
            metadata: "meta".into(),
        };
        let (k, v) = encode_offset("g", &p, Some(&c), 1);
        assert_eq!(
            decode(Some(&k), v.as_ref()).unwrap(),
            LogEntry::Offset {
                group_id: "g".into(),
                partition: p.clone(),
                commit: Some(c)
            }
        );
        let (k2, v2) = encode_offset("g", &p, None, 1);
        assert_eq!(k2, k, "a tombstone has the key of what it deletes");
        assert_eq!(
            decode(Some(&k2), v2.as_ref()).unwrap(),
            LogEntry::Offset {
                group_id: "g".into(),
                partition: p,
                commit: None
            }
        );
        let (k, v) = encode_group("g", Some("range"));
        assert_eq!(
            decode(Some(&k), v.as_ref()).unwrap(),
            LogEntry::Group {
                group_id: "g".into(),
                assignor: Some("range".into())
            }
        );
        let (k, v) = encode_group("g", None);
        assert_eq!(
            decode(Some(&k), v.as_ref()).unwrap(),
            LogEntry::Group {
                group_id: "g".into(),
                assignor: None
            }
        );
    }

    #[test]
    fn records_without_a_readable_key_are_errors() {
        assert!(decode(None, None).is_err());
        let k = key("g", "bogus", "", 0, "");
        assert!(decode(Some(&k), None).is_err());
    }
}
