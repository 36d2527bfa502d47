//! The Rust client for Sluice: [`Admin`] for topics and the cluster, [`Producer`] for appending
//! records in batches straight to partition leaders, [`Consumer`] for reading partitions from a
//! chosen position, [`GroupConsumer`] for sharing topics' partitions within a consumer group
//! (coordinator-side assignment, committed offsets; group administration is on [`Admin`]).
//!
//! All three start from a [`ClientConfig`] naming one or more coordinators. Partition leaders
//! are learnt from coordinator metadata, kept current by a metadata watch stream, and corrected
//! by the `NOT_LEADER` hints storage nodes return, so data never passes through a coordinator
//! and a leader failover costs the producer and consumer a retry or two, not an error. A request
//! still waiting on a leader that hung (paused, or cut off with its connections open) is
//! abandoned and sent to the new leader as soon as the metadata names one, rather than at its
//! timeout.
//!
//! The producer is idempotent by default (`acks=all` plus a producer id and per-partition
//! sequence numbers), so the retries a failover causes never duplicate a record.
//!
//! ```no_run
//! # async fn demo() -> sluice_client::Result<()> {
//! use sluice_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
//! let producer = Producer::new(ProducerConfig {
//!     client: ClientConfig::new(["127.0.0.1:9092"]),
//!     ..ProducerConfig::default()
//! })
//! .await?;
//! let delivery = producer.send(ProducerRecord::new("orders", "hello").key("customer-7")).await?;
//! let metadata = delivery.await?;
//! println!("stored at {}-{}@{}", metadata.topic, metadata.partition, metadata.offset);
//! producer.close().await
//! # }
//! ```

mod admin;
mod config;
mod connection;
mod consumer;
mod error;
mod group;
mod metadata;
mod partitioner;
mod producer;
mod retry;

pub use admin::Admin;
pub use config::{Acks, ClientConfig, ConsumerConfig, ProducerConfig};
pub use consumer::{Consumer, ConsumerRecord, SeekTo};
pub use error::{ClientError, Result};
pub use group::{
    GroupConsumer, GroupConsumerConfig, GroupDescription, GroupEvent, OffsetReset, OffsetResetPlan,
    PartitionLag, lag, reset_target,
};
pub use partitioner::{murmur2, partition_for_key, to_positive};
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
/// Codec choice for [`ProducerConfig::compression`].
pub use sluice_proto::batch::Compression;
/// Server-side error details carried by [`ClientError::Api`].
pub use sluice_proto::error::ApiError;
/// Generated message types returned by [`Admin`] calls.
pub use sluice_proto::pb;
