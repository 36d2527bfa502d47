//! One typed topic configuration. A topic record stores only the keys set on the topic (its
//! overrides); [`TopicConfig::from_overrides`] validates them against the one table of keys,
//! defaults and checks below and fills in the rest, so the controller, the storage nodes and the
//! CLI read the same values, and a default applies to every topic that did not set the key.

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::pb::ErrorCode;

/// Hard ceiling on `max.message.bytes` (and so on any batch a node accepts).
pub const MAX_BATCH_BYTES_LIMIT: i64 = 64 * 1024 * 1024;

/// `cleanup.policy`: what happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Old segments are deleted by retention.
    pub delete: bool,
    /// Older records of a key are removed by compaction.
    pub compact: bool,
}

/// Every topic setting, typed, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `retention.ms`: how long records are kept; `None` keeps them forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: most bytes a partition keeps; `None` for no limit.
    pub retention_bytes: Option<u64>,
    /// `max.message.bytes`: the largest record batch a partition accepts.
    pub max_message_bytes: usize,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `min.insync.replicas`: in-sync replicas an `acks=all` write needs.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election`: whether a replica outside the ISR may be elected.
    pub unclean_leader_election: bool,
    /// `replica.lag.time.max.ms`: how long a follower may stay behind before leaving the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `segment.bytes`: a segment file is closed, and a new one started, at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: a segment is closed at the first append after it is this old, so time
    /// retention can delete data of a partition that never fills a segment.
    pub segment_ms: u64,
    /// `delete.retention.ms`: how long compaction keeps a tombstone (a record without a value)
    /// after it was written, so consumers catching up still see the deletion.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted away.
    pub min_compaction_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`: compaction starts once this share of the closed segments'
    /// bytes was written since the last clean.
    pub min_cleanable_dirty_ratio: f64,
}

/// One key: its default and its check.
pub(crate) struct Spec {
    pub(crate) key: &'static str,
    pub(crate) default: &'static str,
    pub(crate) check: fn(&str) -> Result<(), String>,
}

/// The keys, their defaults and checks: the one table.
const SPECS: &[Spec] = &[
    Spec {
        key: "retention.ms",
        default: "604800000",
        check: non_negative_or_minus_one,
    },
    Spec {
        key: "retention.bytes",
        default: "-1",
        check: non_negative_or_minus_one,
    },
    Spec {
        key: "max.message.bytes",
        default: "1048588",
        check: batch_size,
    },
    Spec {
        key: "cleanup.policy",
        default: "delete",
        check: cleanup_policy,
    },
    Spec {
        key: "min.insync.replicas",
        default: "1",
        check: positive,
    },
    Spec {
        key: "unclean.leader.election",
        default: "false",
        check: boolean,
    },
    Spec {
        key: "replica.lag.time.max.ms",
        default: "10000",
        check: positive,
    },
    Spec {
        key: "segment.bytes",
        default: "268435456",
        check: segment_size,
    },
    Spec {
        key: "segment.ms",
        default: "604800000",
        check: positive,
    },
    Spec {
        key: "delete.retention.ms",
        default: "86400000",
        check: non_negative,
    },
    Spec {
        key: "min.compaction.lag.ms",
        default: "0",
        check: non_negative,
    },
    Spec {
        key: "min.cleanable.dirty.ratio",
        default: "0.5",
        check: ratio,
    },
];

pub(crate) fn non_negative(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be an integer >= 0".into()),
    }
}

fn ratio(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// Smallest `segment.bytes`: one small batch per segment at most.
pub const MIN_SEGMENT_BYTES: i64 = 1024;

fn segment_size(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (MIN_SEGMENT_BYTES..=i64::from(i32::MAX)).contains(&n) => Ok(()),
        _ => Err(format!(
            "must be an integer between {MIN_SEGMENT_BYTES} and {}",
            i32::MAX
        )),
    }
}

fn non_negative_or_minus_one(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(()),
        _ => Err("must be an integer >= 0, or -1 for unlimited".into()),
    }
}

pub(crate) fn positive(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(()),
        _ => Err("must be an integer >= 1".into()),
    }
}

fn batch_size(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (1024..=MAX_BATCH_BYTES_LIMIT).contains(&n) => Ok(()),
        _ => Err(format!(
            "must be an integer between 1024 and {MAX_BATCH_BYTES_LIMIT}"
        )),
    }
}

fn cleanup_policy(v: &str) -> Result<(), String> {
    match v {
        "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
        _ => Err("must be 'delete', 'compact' or 'compact,delete'".into()),
    }
}

pub(crate) fn boolean(v: &str) -> Result<(), String> {
    match v {
        "true" | "false" => Ok(()),
        _ => Err("must be 'true' or 'false'".into()),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidConfig, message)
}

/// Checks one key and value; unknown keys are refused naming the known ones.
pub fn check(key: &str, value: &str) -> Result<(), ApiError> {
    check_in(SPECS, "topic", key, value)
}

/// Checks `key` and `value` against the table `specs` of `kind` ("topic", "cluster") configs.
pub(crate) fn check_in(specs: &[Spec], kind: &str, key: &str, value: &str) -> Result<(), ApiError> {
    let Some(spec) = specs.iter().find(|s| s.key == key) else {
        let known: Vec<_> = specs.iter().map(|s| s.key).collect();
        return Err(invalid(format!(
            "unknown {kind} config '{key}'; known configs: {}",
            known.join(", ")
        )));
    };
    (spec.check)(value).map_err(|why| invalid(format!("config {key}={value:?}: {why}")))
}

/// Whether `key` is a topic config.
pub fn is_known(key: &str) -> bool {
    SPECS.iter().any(|s| s.key == key)
}

/// Validates a topic's overrides for a topic of `replication_factor` replicas and returns them
/// (only what was set: defaults are not stored, so a changed default reaches every topic).
pub fn validate_overrides<'a>(
    overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
    replication_factor: i32,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in overrides {
        check(k, v)?;
        out.insert(k.clone(), v.clone());
    }
    let cfg = TopicConfig::from_overrides(&out)?;
    if cfg.min_insync_replicas > replication_factor.max(0) as usize {
        return Err(invalid(format!(
            "min.insync.replicas={} exceeds the replication factor {replication_factor}; lower it or raise the replication factor",
            cfg.min_insync_replicas
        )));
    }
    Ok(out)
}

/// Every key with its effective value and whether it is the default (not set on the topic).
pub fn effective<'a>(
    overrides: impl Fn(&str) -> Option<&'a String>,
) -> Vec<(&'static str, String, bool)> {
    SPECS
        .iter()
        .map(|s| match overrides(s.key) {
            Some(v) => (s.key, v.clone(), false),
            None => (s.key, s.default.to_string(), true),
        })
        .collect()
}

impl TopicConfig {
    /// The configuration of a topic whose overrides are `overrides` (each checked).
    pub fn from_overrides<'a, I>(overrides: I) -> Result<Self, ApiError>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut values: BTreeMap<&str, String> = SPECS
            .iter()
            .map(|s| (s.key, s.default.to_string()))
            .collect();
        for (k, v) in overrides {
            check(k, v)?;
            let spec = SPECS.iter().find(|s| s.key == k).expect("checked");
            values.insert(spec.key, v.clone());
        }
        let int = |k: &str| values[k].parse::<i64>().expect("checked");
        let limit = |k: &str| u64::try_from(int(k)).ok();
        let policy = &values["cleanup.policy"];
        Ok(Self {
            retention_ms: limit("retention.ms"),
            retention_bytes: limit("retention.bytes"),
            max_message_bytes: int("max.message.bytes") as usize,
            cleanup_policy: CleanupPolicy {
                delete: policy.contains("delete"),
                compact: policy.contains("compact"),
            },
            min_insync_replicas: int("min.insync.replicas") as usize,
            unclean_leader_election: values["unclean.leader.election"] == "true",
            replica_lag_time_max_ms: int("replica.lag.time.max.ms") as u64,
            segment_bytes: int("segment.bytes") as u64,
            segment_ms: int("segment.ms") as u64,
            delete_retention_ms: int("delete.retention.ms") as u64,
            min_compaction_lag_ms: int("min.compaction.lag.ms") as u64,
            min_cleanable_dirty_ratio: values["min.cleanable.dirty.ratio"]
                .parse()
                .expect("checked"),
        })
    }

    /// The configuration a node applies from a stored record: the record was validated when
    /// written, so a value that no longer parses (written by another version) falls back to
    /// the defaults with a warning rather than stopping the node.
    pub fn from_stored<'a, I>(topic: &str, overrides: I) -> Self
    where
        I: IntoIterator<Item = (&'a String, &'a String)> + Clone,
    {
        Self::from_overrides(overrides.clone()).unwrap_or_else(|e| {
            let valid = overrides.into_iter().filter(|(k, v)| check(k, v).is_ok());
            tracing::warn!(topic, error = %e, "ignoring a stored topic config value");
            Self::from_overrides(valid).expect("only valid overrides")
        })
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self::from_overrides(std::iter::empty()).expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fill_what_the_topic_does_not_set() {
        let cfg = TopicConfig::default();
        assert_eq!(cfg.retention_ms, Some(604_800_000));
        assert_eq!(cfg.retention_bytes, None);
        assert_eq!(cfg.max_message_bytes, 1_048_588);
        assert!(cfg.cleanup_policy.delete && !cfg.cleanup_policy.compact);
        let cfg = TopicConfig::from_overrides(&map(&[
            ("cleanup.policy", "compact,delete"),
            ("min.insync.replicas", "2"),
            ("retention.ms", "-1"),
        ]))
        .unwrap();
        assert!(cfg.cleanup_policy.delete && cfg.cleanup_policy.compact);
        assert_eq!((cfg.min_insync_replicas, cfg.retention_ms), (2, None));
    }

    #[test]
    fn unknown_keys_bad_values_and_min_isr_above_rf_are_invalid_config() {
        for bad in [
            map(&[("retention.mss", "1")]),
            map(&[("retention.ms", "-2")]),
            map(&[("max.message.bytes", "10")]),
            map(&[("unclean.leader.election", "yes")]),
            map(&[("min.insync.replicas", "3")]),
        ] {
            let e = validate_overrides(&bad, 2).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{bad:?}");
        }
        let e = validate_overrides(&map(&[("retention.mss", "1")]), 1).unwrap_err();
        assert!(e.message.contains("retention.mss") && e.message.contains("retention.ms"));
        let ok = validate_overrides(&map(&[("min.insync.replicas", "2")]), 3).unwrap();
        assert_eq!(ok.len(), 1, "only overrides are kept");
    }

    #[test]
    fn effective_config_says_which_values_are_defaults() {
        let set = map(&[("retention.ms", "1000")]);
        let all = effective(|k| set.get(k));
        assert_eq!(all.len(), SPECS.len());
        assert!(all.contains(&("retention.ms", "1000".to_string(), false)));
        assert!(all.contains(&("cleanup.policy", "delete".to_string(), true)));
    }
}
