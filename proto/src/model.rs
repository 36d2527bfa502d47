//! Validated domain types. Values from the wire or the command line are converted with
//! `TryFrom`/`parse` at the boundary, so the core never sees an invalid name or id.

use std::fmt;

use crate::error::ApiError;
use crate::pb::ErrorCode;

/// Longest topic name accepted (as in Kafka: names become file and metric names elsewhere).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;
/// Prefix reserved for internal topics such as `__sluice_offsets`.
pub const INTERNAL_PREFIX: &str = "__";

/// A storage node's stable id (the StatefulSet ordinal in Kubernetes).
pub type NodeId = i32;
/// A partition's index within its topic.
pub type PartitionId = i32;
/// A record's position in a partition's log.
pub type Offset = i64;
/// Epoch of a partition's leadership; bumped at each leader change.
pub type LeaderEpoch = i32;

/// A topic name that passed [`TopicName::parse`]: 1..=249 characters of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Validates a user-supplied name; `allow_internal` permits the reserved `__` prefix.
    pub fn parse(name: &str, allow_internal: bool) -> Result<Self, ApiError> {
        let bad = |why: String| Err(ApiError::new(ErrorCode::InvalidTopicName, why));
        if name.is_empty() {
            return bad("topic name is empty; give a name of 1 to 249 characters".into());
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return bad(format!(
                "topic name is {} characters long; the limit is {MAX_TOPIC_NAME_LEN}",
                name.len()
            ));
        }
        if name == "." || name == ".." {
            return bad(format!(
                "topic name '{name}' is not allowed; choose another name"
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(format!(
                "topic name '{name}' contains {c:?}; use only ASCII letters, digits, '.', '_' and '-'"
            ));
        }
        if !allow_internal && name.starts_with(INTERNAL_PREFIX) {
            return bad(format!(
                "topic name '{name}' starts with '{INTERNAL_PREFIX}', which is reserved for internal topics; choose another name"
            ));
        }
        Ok(Self(name.to_string()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic's identity, fresh at each creation (16 random bytes, shown as 32 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// Parses the raw bytes carried in records and requests.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ApiError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| {
            ApiError::new(
                ErrorCode::UnknownTopicId,
                format!("topic id must be 16 bytes, got {}", bytes.len()),
            )
        })?;
        Ok(Self(arr))
    }

    /// 32 lower-case hex digits, as used in metadata keys.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Inverse of [`TopicId::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

pub use crate::topic_config::MAX_BATCH_BYTES_LIMIT;

/// Validates a requested partition count (for creation or as a new total).
pub fn validate_partition_count(partitions: i32) -> Result<(), ApiError> {
    if partitions <= 0 || partitions > MAX_PARTITIONS {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "partition count {partitions} is invalid; give a number from 1 to {MAX_PARTITIONS}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_that_kafka_accepts_are_accepted() {
        for ok in ["orders", "a", "a.b_c-D9", &"x".repeat(249)] {
            assert!(TopicName::parse(ok, false).is_ok(), "{ok}");
        }
        assert!(TopicName::parse("__sluice_offsets", true).is_ok());
    }

    #[test]
    fn bad_topic_names_are_refused_with_invalid_topic_name() {
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/",
            "ü",
            &"x".repeat(250),
            "__internal",
        ] {
            let err = TopicName::parse(bad, false).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTopicName, "{bad}");
        }
    }

    #[test]
    fn topic_id_hex_round_trips() {
        let id = TopicId([0xab; 16]);
        assert_eq!(TopicId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(TopicId::from_hex("zz"), None);
    }

    #[test]
    fn partition_counts_outside_range_are_refused() {
        assert!(validate_partition_count(0).is_err());
        assert!(validate_partition_count(-3).is_err());
        assert!(validate_partition_count(1).is_ok());
    }
}

/// The internal topic holding consumer-group state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__sluice_offsets";

/// The partition of [`OFFSETS_TOPIC`] that coordinates `group_id`: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 units, so
/// every component (and a Kafka-minded operator) agrees on it.
pub fn group_partition(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod group_partition_tests {
    use super::group_partition;

    #[test]
    fn matches_javas_string_hash_code() {
        // "abc".hashCode() == 96354; "".hashCode() == 0; "polygenelubricants".hashCode() == i32::MIN.
        assert_eq!(group_partition("abc", 50), 96354 % 50);
        assert_eq!(group_partition("", 50), 0);
        assert_eq!(group_partition("polygenelubricants", 50), 0);
        assert!((0..50).contains(&group_partition("orders-consumers", 50)));
    }
}
