//! Produce (v3 and up: RecordBatch v2, the layout Sluice stores byte for byte): each partition's
//! batch goes through the gRPC handler's code ([`crate::service::produce`]), the partitions of
//! one request concurrently. `acks=0` gets no answer, as Kafka does.

use futures::future::join_all;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::pb::{self, produce_request::Payload};

use super::KafkaContext;
use super::errors::kafka_code;

/// The answer to `req`; `None` for `acks=0`.
pub async fn answer(ctx: &KafkaContext, req: &ProduceRequest) -> Option<ProduceResponse> {
    let mut out = ProduceResponse::default();
    for t in &req.topic_data {
        let topic = t.name.0.to_string();
        let partitions = join_all(t.partition_data.iter().map(|p| {
            let produce = pb::ProduceRequest {
                topic: topic.clone(),
                partition: p.index,
                acks: i32::from(req.acks),
                timeout_ms: req.timeout_ms,
                payload: p.records.clone().map(Payload::Batch),
                leader_epoch: -1,
                ..Default::default()
            };
            let produce_topic = topic.clone();
            async move {
                let mut r = PartitionProduceResponse::default();
                r.index = p.index;
                r.log_append_time_ms = -1;
                match crate::service::produce::produce(&ctx.svc, produce).await {
                    Ok(ok) => {
                        r.base_offset = ok.base_offset;
                        r.log_start_offset = ok.log_start_offset;
                    }
                    Err(e) => {
                        tracing::debug!(topic = %produce_topic, partition = p.index, error = %e, "Kafka produce refused");
                        r.error_code = kafka_code(e.code);
                        r.error_message = Some(StrBytes::from_string(e.message.clone()));
                        r.base_offset = -1;
                        r.log_start_offset = -1;
                        if let Some(l) = &e.leader {
                            let mut current = LeaderIdAndEpoch::default();
                            current.leader_id = BrokerId(l.node_id);
                            current.leader_epoch = l.leader_epoch;
                            r.current_leader = current;
                        }
                    }
                }
                r
            }
        }))
        .await;
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        tr.partition_responses = partitions;
        out.responses.push(tr);
    }
    (req.acks != 0).then_some(out)
}
