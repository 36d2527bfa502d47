//! DescribeReplicas: the offsets and disk use of the replicas of a topic this node holds, for
//! `sluice topic describe` (sizes come from the segment summaries, one short read each).

use sluice_proto::error::ApiError;
use sluice_proto::model::TopicId;
use sluice_proto::pb::{self, ErrorCode};

use super::LogService;
use super::codec::internal;
use crate::log::PartitionKey;

/// Handles one DescribeReplicas request.
pub async fn describe_replicas(
    svc: &LogService,
    req: pb::DescribeReplicasRequest,
) -> Result<pb::DescribeReplicasResponse, ApiError> {
    let topic_id = {
        let view = svc.cache.view();
        let t = view.topics.get(&req.topic).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopic,
                format!("topic '{}' does not exist", req.topic),
            )
        })?;
        TopicId::from_slice(&t.record.topic_id)?
    };
    let replicas: Vec<_> = svc
        .partitions
        .all()
        .into_iter()
        .filter(|r| r.key.topic_id == topic_id)
        .filter(|r| req.partitions.is_empty() || req.partitions.contains(&r.partition()))
        .collect();
    let log = svc.log.clone();
    let uids: Vec<(PartitionKey, u64)> = replicas.iter().map(|r| (r.key, r.uid)).collect();
    let sizes = tokio::task::spawn_blocking(move || {
        uids.into_iter()
            .map(|(_, uid)| {
                let segments = log.segments(uid).unwrap_or_default();
                (
                    segments.iter().map(|s| s.bytes).sum::<u64>(),
                    segments.len(),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(internal)?;
    let mut out: Vec<pb::ReplicaInfo> = replicas
        .iter()
        .zip(sizes)
        .map(|(r, (bytes, segments))| pb::ReplicaInfo {
            partition: r.partition(),
            leader: r.is_leader(),
            log_start_offset: r.log_start(),
            log_end_offset: r.log_end(),
            high_watermark: r.high_watermark(),
            size_bytes: bytes as i64,
            segments: segments as i32,
        })
        .collect();
    out.sort_by_key(|i| i.partition);
    Ok(pb::DescribeReplicasResponse { replicas: out })
}
