//! The `acks=all` wait: a leader's append counts as committed once the high watermark passes it
//! while this node still leads at the epoch it appended in. The produce handler and the group
//! coordinator both wait here and map [`CommitError`] to their own client-facing codes.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::model::Offset;

use super::Replica;

/// Why an appended batch did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Leadership moved (or the partition was deleted) before the batch committed; it may
    /// survive on the new leader.
    #[error("leadership of {topic}-{partition} moved while the batch awaited replication")]
    LeadershipMoved {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The high watermark passed the batch, but the in-sync replicas had fallen below
    /// `min.insync.replicas` (Kafka's `NOT_ENOUGH_REPLICAS_AFTER_APPEND`).
    #[error(
        "{topic}-{partition} has {isr} in-sync replicas, fewer than min.insync.replicas={min_insync}, after the batch was appended"
    )]
    TooFewInSync {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// In-sync replicas when the batch reached the high watermark.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_insync: usize,
    },
    /// The in-sync replicas did not reach the batch within the timeout.
    #[error("the batch was not replicated to the in-sync replicas within {0:?}")]
    TimedOut(Duration),
}

/// Waits until the high watermark passes `end` while this node still leads `r` at `epoch`.
pub async fn wait_committed(
    r: &Arc<Replica>,
    end: Offset,
    epoch: i32,
    timeout: Duration,
) -> Result<(), CommitError> {
    let (mut hw, mut lead) = (r.watch_high_watermark(), r.watch_leadership());
    let wait = async {
        loop {
            let l = *lead.borrow_and_update();
            if l.leader != r.node_id || l.epoch != epoch || r.is_deleted() {
                return Err(CommitError::LeadershipMoved {
                    topic: r.topic.clone(),
                    partition: r.partition(),
                });
            }
            if *hw.borrow_and_update() >= end {
                let isr = r.isr().len();
                return if isr >= r.min_insync() {
                    Ok(())
                } else {
                    Err(CommitError::TooFewInSync {
                        topic: r.topic.clone(),
                        partition: r.partition(),
                        isr,
                        min_insync: r.min_insync(),
                    })
                };
            }
            tokio::select! {
                _ = hw.changed() => {}
                _ = lead.changed() => {}
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(Err(CommitError::TimedOut(timeout)))
}

#[cfg(test)]
mod tests {
    use sluice_proto::model::TopicId;

    use super::*;
    use crate::log::{OpenedLog, PartitionKey};
    use crate::replica::{Assignment, Leadership, ReplicaConfig};

    /// A replica of node 0 with ten records, led by `leader`, with `isr` of replicas 0 and 1.
    fn replica(leader: i32, isr: Vec<i32>) -> Arc<Replica> {
        let opened = OpenedLog {
            uid: 1,
            log_start: 0,
            log_end: 10,
            epochs: vec![],
            high_watermark: 0,
        };
        let key = PartitionKey {
            topic_id: TopicId([1; 16]),
            partition: 0,
        };
        let assignment = Assignment {
            leadership: Leadership { leader, epoch: 1 },
            replicas: vec![0, 1],
            isr,
            partition_epoch: 0,
            isr_incarnations: Default::default(),
            adding: Vec::new(),
        };
        let config = ReplicaConfig {
            max_batch_bytes: 1 << 20,
            min_insync: 2,
            max_lag_ms: 10_000,
            ..Default::default()
        };
        Replica::new(0, "t".into(), key, opened, assignment, config)
    }

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn an_append_past_the_high_watermark_with_too_few_in_sync_is_after_append() {
        let r = replica(0, vec![0]);
        let e = wait_committed(&r, 10, 1, WAIT).await.unwrap_err();
        assert!(
            matches!(
                e,
                CommitError::TooFewInSync {
                    isr: 1,
                    min_insync: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_follower_that_never_reports_times_the_wait_out_and_another_leader_moves_it() {
        let r = replica(0, vec![0, 1]);
        assert_eq!(
            wait_committed(&r, 10, 1, WAIT).await,
            Err(CommitError::TimedOut(WAIT))
        );
        r.update_follower(1, Some(10), true);
        assert_eq!(wait_committed(&r, 10, 1, WAIT).await, Ok(()));
        let r = replica(1, vec![0, 1]);
        assert!(matches!(
            wait_committed(&r, 10, 1, WAIT).await,
            Err(CommitError::LeadershipMoved { .. })
        ));
    }
}
