//! Settings of a [`crate::GroupConsumer`], with Kafka's defaults.

use std::time::Duration;

pub use crate::config::OffsetReset;
use crate::config::{ClientConfig, ConsumerConfig};
use crate::error::{ClientError, Result};

/// Settings of a [`crate::GroupConsumer`].
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Cluster address and timeouts.
    pub client: ClientConfig,
    /// The group to join.
    pub group_id: String,
    /// Topics to consume; the coordinator spreads their partitions over the members.
    pub topics: Vec<String>,
    /// Also subscribe to every topic whose whole name matches this regular expression (evaluated
    /// by the coordinator, so topics created later join the subscription); internal `__` topics
    /// never match.
    pub topic_regex: Option<String>,
    /// Static membership (`group.instance.id`): a member that restarts with the same id within
    /// the session timeout gets its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// Time without heartbeat after which the coordinator removes the member (45 s).
    pub session_timeout: Duration,
    /// Time the member may take to release revoked partitions (5 min).
    pub rebalance_timeout: Duration,
    /// Server-side assignor: "uniform", "range" or "sticky"; empty takes the group's default.
    pub assignor: String,
    /// Commit the positions of owned partitions every `auto_commit_interval`, before a
    /// revocation, and on `close()` (true).
    pub auto_commit: bool,
    /// Time between automatic commits (5 s).
    pub auto_commit_interval: Duration,
    /// Start position of a partition without a committed offset (latest).
    pub auto_offset_reset: OffsetReset,
    /// Longest a fetch long-polls a leader for records (500 ms).
    pub max_wait: Duration,
    /// Upper bound on the bytes one fetch returns (4 MiB).
    pub max_bytes: i32,
    /// Records fetched ahead of `next()` (10 000).
    pub queue_records: usize,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        let fetch = ConsumerConfig::default();
        Self {
            client: ClientConfig::default(),
            group_id: String::new(),
            topics: Vec::new(),
            topic_regex: None,
            instance_id: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            assignor: String::new(),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: OffsetReset::Latest,
            max_wait: fetch.max_wait,
            max_bytes: fetch.max_bytes,
            queue_records: fetch.queue_records,
        }
    }
}

impl GroupConsumerConfig {
    /// Refuses settings no group member could work with.
    pub(crate) fn validate(&self) -> Result<()> {
        self.fetch_config().validate()?;
        let bad = |what: &str| Err(ClientError::Config(what.to_string()));
        if self.group_id.trim().is_empty() {
            return bad("group_id is empty: name the consumer group");
        }
        if self.topics.is_empty() && self.topic_regex.as_deref().is_none_or(|r| r.is_empty()) {
            return bad(
                "topics is empty and no topic_regex is set: subscribe to at least one topic",
            );
        }
        if self.session_timeout.is_zero() || self.rebalance_timeout.is_zero() {
            return bad("session_timeout and rebalance_timeout must be positive");
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return bad("auto_commit_interval is zero: give a positive duration, e.g. 5 s");
        }
        if self
            .instance_id
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return bad("instance_id is blank: give a name or None for a dynamic member");
        }
        Ok(())
    }

    /// The settings of the fetch machinery underneath.
    pub(crate) fn fetch_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            client: self.client.clone(),
            max_wait: self.max_wait,
            min_bytes: 1,
            max_bytes: self.max_bytes,
            queue_records: self.queue_records,
            offset_reset: self.auto_offset_reset,
        }
    }
}

/// Milliseconds as the protocol's `int32`, saturating.
pub(crate) fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_kafka_and_need_a_group_and_topics() {
        let cfg = GroupConsumerConfig::default();
        assert_eq!(cfg.session_timeout, Duration::from_secs(45));
        assert_eq!(cfg.auto_commit_interval, Duration::from_secs(5));
        assert!(cfg.auto_commit);
        assert_eq!(cfg.auto_offset_reset, OffsetReset::Latest);
        assert!(matches!(cfg.validate(), Err(ClientError::Config(_))));
        let cfg = GroupConsumerConfig {
            group_id: "g".into(),
            topics: vec!["t".into()],
            ..cfg
        };
        assert!(cfg.validate().is_ok());
    }
}
