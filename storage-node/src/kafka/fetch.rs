//! Fetch (v4 and up) and ListOffsets through the gRPC handlers' code
//! ([`crate::service::fetch`]): every partition of a request is read up to the high watermark
//! (Sluice has no transactions, so the last stable offset is the high watermark at either
//! isolation level); the request waits until `min_bytes` are there or `max_wait_ms` passed,
//! looking again every [`POLL`]. No fetch sessions: the answer's session id 0 tells the client
//! to send every partition each time.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use sluice_proto::pb::{self, list_offsets_request::Spec};

use super::KafkaContext;
use super::errors::kafka_code;

/// How often a fetch that has fewer than `min_bytes` looks again.
const POLL: Duration = Duration::from_millis(10);

/// The answer to `req`.
pub async fn answer(ctx: &KafkaContext, req: &FetchRequest) -> FetchResponse {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    loop {
        let out = once(ctx, req).await;
        let bytes: usize = out
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        let errors = out
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code != 0);
        if errors
            || bytes >= req.min_bytes.max(1) as usize
            || tokio::time::Instant::now() >= deadline
        {
            return out;
        }
        tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

async fn once(ctx: &KafkaContext, req: &FetchRequest) -> FetchResponse {
    let mut out = FetchResponse::default();
    for t in &req.topics {
        let topic = t.topic.0.to_string();
        let partitions = join_all(t.partitions.iter().map(|p| {
            let fetch = pb::FetchRequest {
                topic: topic.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                leader_epoch: p.current_leader_epoch,
                ..Default::default()
            };
            async move {
                let mut d = PartitionData::default();
                d.partition_index = p.partition;
                d.preferred_read_replica = BrokerId(-1);
                match crate::service::fetch::fetch(&ctx.svc, fetch).await {
                    Ok(r) => {
                        d.high_watermark = r.high_watermark;
                        d.last_stable_offset = r.high_watermark;
                        d.log_start_offset = r.log_start_offset;
                        d.records = Some(r.batches);
                    }
                    Err(e) => {
                        d.error_code = kafka_code(e.code);
                        d.high_watermark = -1;
                        d.last_stable_offset = -1;
                        d.log_start_offset = -1;
                    }
                }
                d
            }
        }))
        .await;
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        tr.topic_id = t.topic_id;
        tr.partitions = partitions;
        out.responses.push(tr);
    }
    out
}

/// The answer to a ListOffsets request: -2 asks for the log start, -1 for the high watermark,
/// anything else for the first offset at or after that time.
pub async fn list_offsets(ctx: &KafkaContext, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let spec = match p.timestamp {
                -2 => Spec::Earliest(true),
                -1 => Spec::Latest(true),
                ts => Spec::TimestampMs(ts),
            };
            let asked = pb::ListOffsetsRequest {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                spec: Some(spec),
            };
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = p.partition_index;
            r.timestamp = -1;
            match crate::service::fetch::list_offsets(&ctx.svc, asked).await {
                Ok(a) => {
                    r.offset = a.offset;
                    r.timestamp = a.timestamp_ms;
                }
                Err(e) => {
                    r.error_code = kafka_code(e.code);
                    r.offset = -1;
                }
            }
            r.leader_epoch = -1;
            tr.partitions.push(r);
        }
        out.topics.push(tr);
    }
    out
}
