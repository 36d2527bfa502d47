//! Metadata: the brokers are the registered storage nodes that serve Kafka (at their advertised
//! Kafka address); topics, partitions, leaders, leader epochs, replicas and ISRs come from the
//! node's watch-fed view, as gRPC's `GetMetadata` does. Topics are never created by a Metadata
//! request.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::cache::{ClusterView, Stored};
use sluice_proto::model::TopicId;
use sluice_proto::pb::TopicRecord;

use super::KafkaContext;

/// `UNKNOWN_TOPIC_OR_PARTITION`.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// `LEADER_NOT_AVAILABLE`.
const LEADER_NOT_AVAILABLE: i16 = 5;

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The answer to `req`.
pub fn answer(ctx: &KafkaContext, req: &MetadataRequest) -> MetadataResponse {
    let view = ctx.svc.cache.view();
    let mut out = MetadataResponse::default();
    out.brokers = view
        .nodes
        .values()
        .filter_map(|n| {
            let (host, port) = n.kafka_address.rsplit_once(':')?;
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(n.node_id);
            b.host = str(host);
            b.port = port.parse().ok()?;
            b.rack = (!n.rack.is_empty()).then(|| str(&n.rack));
            Some(b)
        })
        .collect();
    out.cluster_id = Some(str(&ctx.cluster_id));
    // Kafka clients send admin requests to the controller; this node answers them itself.
    out.controller_id = BrokerId(ctx.svc.node_id);
    out.topics = match &req.topics {
        None => view
            .topics
            .values()
            .filter(|t| !t.record.internal)
            .map(|t| topic(&view, t))
            .collect(),
        Some(asked) => asked
            .iter()
            .map(|a| {
                let name = a.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                match view.topics.get(&name) {
                    Some(t) => topic(&view, t),
                    None => {
                        let mut t = MetadataResponseTopic::default();
                        t.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                        t.name = a.name.clone();
                        t.topic_id = a.topic_id;
                        t
                    }
                }
            })
            .collect(),
    };
    out
}

fn topic(view: &ClusterView, t: &Stored<TopicRecord>) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(str(&t.record.name)));
    out.is_internal = t.record.internal;
    let Ok(id) = TopicId::from_slice(&t.record.topic_id) else {
        out.error_code = UNKNOWN_TOPIC_OR_PARTITION;
        return out;
    };
    out.topic_id = uuid::Uuid::from_bytes(id.0);
    out.partitions = view
        .partitions_of(&id)
        .filter(|p| p.record.partition < t.record.partition_count)
        .map(|p| {
            let s = &p.record;
            let mut m = MetadataResponsePartition::default();
            m.partition_index = s.partition;
            m.leader_id = BrokerId(s.leader);
            m.leader_epoch = s.leader_epoch;
            m.error_code = if s.leader < 0 {
                LEADER_NOT_AVAILABLE
            } else {
                0
            };
            m.replica_nodes = s.replicas.iter().map(|r| BrokerId(*r)).collect();
            m.isr_nodes = s.isr.iter().map(|r| BrokerId(*r)).collect();
            m.offline_replicas = s
                .replicas
                .iter()
                .filter(|r| !view.nodes.contains_key(r))
                .map(|r| BrokerId(*r))
                .collect();
            m
        })
        .collect();
    out
}
