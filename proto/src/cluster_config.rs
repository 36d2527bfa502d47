//! The cluster-wide settings: stored once in the metadata store (only the keys an operator set),
//! read live by the active controller (balancing) and every storage node (the reassignment
//! throttle), changed with `sluice cluster config --set` and no restart.

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::topic_config::{self, Spec, boolean, positive};

/// Every cluster setting, typed, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `reassignment.throttle.bytes.per.second`: the most bytes per second each storage node
    /// sends to replicas that a reassignment is adding (catch-up of moving replicas), so the
    /// rest of the traffic keeps its latency; `None` for no limit.
    pub reassignment_throttle: Option<u64>,
    /// `auto.balance.enable`: whether the controller evens out replicas and preferred leaders
    /// by itself when a storage node joins, and moves the replicas of one gone too long.
    pub auto_balance: bool,
    /// `auto.balance.node.unavailable.ms`: how long a storage node may be gone before its
    /// replicas are moved to the others.
    pub node_unavailable_ms: u64,
    /// `auto.leader.rebalance.enable`: whether the controller moves leadership back to
    /// preferred replicas by itself.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.per.node.percentage`: share of a node's preferred-led partitions led
    /// elsewhere above which its leaderships move back.
    pub leader_imbalance_percentage: u64,
    /// `leader.imbalance.check.interval.ms`: how often leader imbalance is checked.
    pub leader_imbalance_check_interval_ms: u64,
    /// `leader.rebalance.moves.per.second`: leadership moves the controller starts per second
    /// at most when balancing leaders.
    pub leader_rebalance_moves_per_second: u64,
}

/// The keys, their defaults and checks: the one table.
const SPECS: &[Spec] = &[
    Spec {
        key: "reassignment.throttle.bytes.per.second",
        default: "33554432",
        check: rate,
    },
    Spec {
        key: "auto.balance.enable",
        default: "true",
        check: boolean,
    },
    Spec {
        key: "auto.balance.node.unavailable.ms",
        default: "900000",
        check: positive,
    },
    Spec {
        key: "auto.leader.rebalance.enable",
        default: "true",
        check: boolean,
    },
    Spec {
        key: "leader.imbalance.per.node.percentage",
        default: "10",
        check: percentage,
    },
    Spec {
        key: "leader.imbalance.check.interval.ms",
        default: "30000",
        check: positive,
    },
    Spec {
        key: "leader.rebalance.moves.per.second",
        default: "10",
        check: positive,
    },
];

fn rate(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 1 || n == -1 => Ok(()),
        _ => Err("must be an integer >= 1, or -1 for unlimited".into()),
    }
}

fn percentage(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (0..=100).contains(&n) => Ok(()),
        _ => Err("must be an integer from 0 to 100".into()),
    }
}

/// Checks one key and value; unknown keys are refused naming the known ones.
pub fn check(key: &str, value: &str) -> Result<(), ApiError> {
    topic_config::check_in(SPECS, "cluster", key, value)
}

/// Checks that `key` is a cluster config (for removals, which carry no value).
pub fn check_key(key: &str) -> Result<(), ApiError> {
    match SPECS.iter().find(|s| s.key == key) {
        Some(spec) => check(key, spec.default),
        None => check(key, ""),
    }
}

/// Every key with its effective value and whether it is the default (not set).
pub fn effective(overrides: &BTreeMap<String, String>) -> Vec<(&'static str, String, bool)> {
    SPECS
        .iter()
        .map(|s| match overrides.get(s.key) {
            Some(v) => (s.key, v.clone(), false),
            None => (s.key, s.default.to_string(), true),
        })
        .collect()
}

impl ClusterConfig {
    /// The configuration from the stored overrides. Values were checked when written; one that
    /// no longer parses (written by another version) falls back to its default with a warning.
    pub fn from_stored(overrides: &BTreeMap<String, String>) -> Self {
        let values: BTreeMap<&str, String> = SPECS
            .iter()
            .map(|s| {
                let v = match overrides.get(s.key) {
                    Some(v) if (s.check)(v).is_ok() => v.clone(),
                    Some(v) => {
                        tracing::warn!(key = s.key, value = %v, "ignoring a stored cluster config value");
                        s.default.to_string()
                    }
                    None => s.default.to_string(),
                };
                (s.key, v)
            })
            .collect();
        let int = |k: &str| values[k].parse::<i64>().expect("checked");
        Self {
            reassignment_throttle: u64::try_from(int("reassignment.throttle.bytes.per.second"))
                .ok(),
            auto_balance: values["auto.balance.enable"] == "true",
            node_unavailable_ms: int("auto.balance.node.unavailable.ms") as u64,
            auto_leader_rebalance: values["auto.leader.rebalance.enable"] == "true",
            leader_imbalance_percentage: int("leader.imbalance.per.node.percentage") as u64,
            leader_imbalance_check_interval_ms: int("leader.imbalance.check.interval.ms") as u64,
            leader_rebalance_moves_per_second: int("leader.rebalance.moves.per.second") as u64,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self::from_stored(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::ErrorCode;

    #[test]
    fn defaults_overrides_and_bad_values() {
        let d = ClusterConfig::default();
        assert_eq!(d.reassignment_throttle, Some(32 << 20));
        assert!(d.auto_balance && d.auto_leader_rebalance);
        let set: BTreeMap<String, String> = [
            ("reassignment.throttle.bytes.per.second", "-1"),
            ("auto.balance.enable", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = ClusterConfig::from_stored(&set);
        assert_eq!(c.reassignment_throttle, None);
        assert!(!c.auto_balance);
        for (k, v) in [
            ("auto.balance.enable", "yes"),
            ("leader.imbalance.per.node.percentage", "101"),
            ("reassignment.throttle", "1"),
            ("reassignment.throttle.bytes.per.second", "0"),
        ] {
            assert_eq!(check(k, v).unwrap_err().code, ErrorCode::InvalidConfig);
        }
        let all = effective(&set);
        assert_eq!(all.len(), SPECS.len());
        assert!(all.contains(&("auto.balance.enable", "false".into(), false)));
    }
}
