//! Client, producer and consumer settings with Kafka-like defaults.

use std::time::Duration;

use sluice_proto::batch::Compression;

use crate::error::{ClientError, Result};

/// Where the cluster is and how long to wait for it; shared by admin, producer and consumer.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Coordinator addresses (`host:port`, `http://` added when missing); any one of them is
    /// enough, the others are tried in turn when it is unreachable.
    pub bootstrap: Vec<String>,
    /// Upper bound on one request to a coordinator or storage node (a long-poll fetch gets its
    /// wait on top of this).
    pub request_timeout: Duration,
    /// Cached cluster metadata older than this is refreshed in the background, so the client
    /// notices new partitions and leader moves that caused no error (a safety net: the metadata
    /// watch normally delivers every change at once).
    pub metadata_max_age: Duration,
    /// Longest wait for a TCP connection to a coordinator or storage node. Short, so a request to
    /// a node that just died fails fast and its retry goes to the new leader.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bootstrap: vec!["127.0.0.1:9092".to_string()],
            request_timeout: Duration::from_secs(30),
            metadata_max_age: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl ClientConfig {
    /// A config for the given bootstrap addresses with default timeouts.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Refuses settings no request could succeed with, before any connection is made.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap.iter().all(|a| a.trim().is_empty()) {
            return Err(ClientError::Config(
                "no bootstrap address: give at least one coordinator host:port".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ClientError::Config(
                "request_timeout is zero: give a positive duration".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ClientError::Config(
                "connect_timeout is zero: give a positive duration, e.g. 1 s".into(),
            ));
        }
        Ok(())
    }

    /// The bootstrap list as URIs, blanks dropped.
    pub(crate) fn bootstrap_uris(&self) -> Vec<String> {
        self.bootstrap
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(normalize_address)
            .collect()
    }
}

/// Turns `host:port` into the `http://host:port` URI tonic dials; URIs are kept as they are.
pub(crate) fn normalize_address(addr: &str) -> String {
    let addr = addr.trim();
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// How many replicas must have a batch before the producer counts it as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Fire and forget (`acks=0`): deliveries resolve with offset -1 and may be lost.
    None,
    /// The leader's local append (`acks=1`): lost if the leader dies before followers copy it.
    Leader,
    /// Every in-sync replica (`acks=all`, -1): survives any single node loss.
    #[default]
    All,
}

impl Acks {
    /// The wire value of `ProduceRequest.acks`.
    pub fn as_i32(self) -> i32 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Batching, retry and memory settings of a [`crate::Producer`].
///
/// The default is Kafka's safe producer: `acks` [`Acks::All`] with idempotence on, so retries
/// during a leader failover neither lose nor duplicate records. To use `acks` 0 or 1, turn
/// `enable_idempotence` off as well; `Producer::new` refuses the combination otherwise.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Cluster address and timeouts.
    pub client: ClientConfig,
    /// Durability asked of the storage nodes.
    pub acks: Acks,
    /// Stamp every batch with a producer id and per-partition sequence numbers, so a retried
    /// batch the leader already stored is acknowledged again instead of appended twice. Needs
    /// `acks` [`Acks::All`]: a leader-only ack can be lost with the leader, and with it the
    /// de-duplication state. Without it, any retry of a batch whose outcome is unknown may store
    /// it twice, as in Kafka; that includes the resend of a batch whose request was abandoned
    /// because its leader hung and a new leader was elected meanwhile.
    pub enable_idempotence: bool,
    /// How long a partition's batch waits for more records before it is sent, trading latency
    /// for fewer, larger requests.
    pub linger: Duration,
    /// Estimated encoded size at which a batch is closed and sent at once.
    pub batch_size: usize,
    /// Codec applied to each batch's records.
    pub compression: Compression,
    /// Produce requests outstanding at once across all partitions; each partition still has at
    /// most one, so a retry can never overtake a later batch of the same partition.
    pub max_in_flight: usize,
    /// Retries of a batch after a retriable error; `delivery_timeout` bounds them as well.
    pub retries: u32,
    /// Wait before the first retry; doubles on each further retry up to one second.
    pub retry_backoff: Duration,
    /// Time from `send` until a record is reported as failed, retries included.
    pub delivery_timeout: Duration,
    /// Bytes of records buffered but not yet acknowledged; `send` waits when it is used up, so a
    /// fast producer cannot exhaust memory when the cluster is slow.
    pub buffer_memory: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            acks: Acks::All,
            enable_idempotence: true,
            linger: Duration::from_millis(5),
            batch_size: 256 * 1024,
            compression: Compression::None,
            max_in_flight: 8,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(30),
            buffer_memory: 32 * 1024 * 1024,
        }
    }
}

impl ProducerConfig {
    /// Refuses settings that would stall or never deliver.
    pub(crate) fn validate(&self) -> Result<()> {
        self.client.validate()?;
        let bad = |what: &str| Err(ClientError::Config(what.to_string()));
        if self.batch_size == 0 {
            return bad("batch_size is zero: give a size in bytes, e.g. 262144");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight is zero: allow at least one request in flight");
        }
        if self.buffer_memory < self.batch_size {
            return bad("buffer_memory is smaller than batch_size: raise buffer_memory");
        }
        if self.delivery_timeout.is_zero() {
            return bad("delivery_timeout is zero: give a positive duration");
        }
        if self.enable_idempotence && self.acks != Acks::All {
            return Err(ClientError::Config(format!(
                "enable_idempotence needs acks=all but acks is {}: set acks to Acks::All, or set \
                 enable_idempotence to false to accept possible duplicates on retry",
                self.acks.as_i32()
            )));
        }
        Ok(())
    }
}

/// Where a member starts reading a partition the group has no committed offset for, and where
/// a consumer moves a position that is out of range (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest retained record.
    Earliest,
    /// The log end: only records produced from now on.
    #[default]
    Latest,
    /// Neither: `next()` returns an error naming the partition, which stays owned but unread.
    None,
}

/// Fetch and buffering settings of a [`crate::Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Cluster address and timeouts.
    pub client: ClientConfig,
    /// Longest a fetch waits on the leader for `min_bytes` to arrive (long poll).
    pub max_wait: Duration,
    /// Bytes a fetch waits for before it answers; 1 answers as soon as anything is there.
    pub min_bytes: i32,
    /// Upper bound on the bytes one fetch returns (at least one whole batch is always returned).
    pub max_bytes: i32,
    /// Records fetched ahead and held for `next()`; fetches pause when it is full, so memory
    /// stays bounded however slow the application is.
    pub queue_records: usize,
    /// What happens when a partition's position is out of range (below the log start once
    /// retention or `DeleteRecords` removed what it pointed at, or past the end): with
    /// [`OffsetReset::None`] (the default) `next()` returns `OFFSET_OUT_OF_RANGE` and the
    /// partition waits for a seek; `Earliest` and `Latest` move the position there and log a
    /// warning saying from where to where. A [`crate::GroupConsumer`] uses its
    /// `auto_offset_reset`.
    pub offset_reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 4 * 1024 * 1024,
            queue_records: 10_000,
            offset_reset: OffsetReset::None,
        }
    }
}

impl ConsumerConfig {
    /// Refuses settings no fetch could work with.
    pub(crate) fn validate(&self) -> Result<()> {
        self.client.validate()?;
        if self.max_bytes <= 0 || self.min_bytes < 0 {
            return Err(ClientError::Config(
                "max_bytes must be positive and min_bytes not negative".into(),
            ));
        }
        if self.queue_records == 0 {
            return Err(ClientError::Config(
                "queue_records is zero: allow at least one buffered record".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_gets_http_scheme_and_uris_are_kept() {
        assert_eq!(normalize_address("127.0.0.1:9092"), "http://127.0.0.1:9092");
        assert_eq!(normalize_address(" http://a:1 "), "http://a:1");
        assert_eq!(normalize_address("https://a:1"), "https://a:1");
    }

    #[test]
    fn empty_bootstrap_is_a_config_error() {
        let cfg = ClientConfig::new(Vec::<String>::new());
        assert!(matches!(cfg.validate(), Err(ClientError::Config(_))));
        let cfg = ClientConfig::new([" ", ""]);
        assert!(matches!(cfg.validate(), Err(ClientError::Config(_))));
        assert!(ClientConfig::default().validate().is_ok());
    }

    #[test]
    fn acks_map_to_wire_values() {
        assert_eq!(Acks::None.as_i32(), 0);
        assert_eq!(Acks::Leader.as_i32(), 1);
        assert_eq!(Acks::All.as_i32(), -1);
    }

    #[test]
    fn idempotence_is_on_by_default_and_refused_without_acks_all() {
        let cfg = ProducerConfig::default();
        assert!(cfg.enable_idempotence && cfg.acks == Acks::All);
        assert!(cfg.validate().is_ok());
        for acks in [Acks::None, Acks::Leader] {
            let cfg = ProducerConfig {
                acks,
                ..ProducerConfig::default()
            };
            let Err(ClientError::Config(msg)) = cfg.validate() else {
                panic!("acks {acks:?} with idempotence must be refused");
            };
            assert!(msg.contains("enable_idempotence"), "{msg}");
            let cfg = ProducerConfig {
                enable_idempotence: false,
                ..cfg
            };
            assert!(cfg.validate().is_ok());
        }
    }
}
