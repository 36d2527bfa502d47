//! Conversions from the cached cluster view to API descriptions (read paths; no I/O).

use sluice_metadata::cache::ClusterView;
use sluice_proto::error::ApiError;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_proto::model::TopicId;
use sluice_proto::pb::{self, ErrorCode};
use sluice_proto::topic_config;

/// Partition metadata of a topic, only partitions below its partition count (a partition written
/// ahead of its topic record by an unfinished CreatePartitions stays invisible).
pub fn partitions(view: &ClusterView, topic: &pb::TopicRecord) -> Vec<pb::PartitionMetadata> {
    let Ok(id) = TopicId::from_slice(&topic.topic_id) else {
        return Vec::new();
    };
    let live = crate::reconcile::registered_nodes(view);
    view.partitions_of(&id)
        .filter(|p| p.record.partition < topic.partition_count)
        .map(|p| pb::PartitionMetadata {
            partition: p.record.partition,
            leader: p.record.leader,
            leader_epoch: p.record.leader_epoch,
            replicas: p.record.replicas.clone(),
            isr: p.record.isr.clone(),
            offline_reason: crate::failover::offline_reason(&p.record, &live).unwrap_or_default(),
            target_replicas: p.record.target_replicas.clone(),
        })
        .collect()
}

/// A topic's full description, or `UNKNOWN_TOPIC`.
pub fn topic(view: &ClusterView, name: &str) -> Result<pb::TopicDescription, ApiError> {
    let t = view.topics.get(name).ok_or_else(|| unknown_topic(name))?;
    let r = &t.record;
    Ok(pb::TopicDescription {
        name: r.name.clone(),
        topic_id: r.topic_id.clone(),
        replication_factor: r.replication_factor,
        partitions: partitions(view, r),
        internal: r.internal,
        ..config_fields(&r.config)
    })
}

/// A description's `config` (every key, effective) and `default_configs` for a topic whose
/// stored overrides are `overrides`.
pub fn config_fields(overrides: &HashMap<String, String>) -> pb::TopicDescription {
    let mut d = pb::TopicDescription::default();
    for (key, value, is_default) in topic_config::effective(|k| overrides.get(k)) {
        if is_default {
            d.default_configs.push(key.to_string());
        }
        d.config.insert(key.to_string(), value);
    }
    d
}

/// A topic's description from the records a controller just wrote.
pub fn written(
    topic: &pb::TopicRecord,
    states: &[pb::PartitionStateRecord],
) -> pb::TopicDescription {
    pb::TopicDescription {
        name: topic.name.clone(),
        topic_id: topic.topic_id.clone(),
        replication_factor: topic.replication_factor,
        partitions: states
            .iter()
            .map(|p| pb::PartitionMetadata {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline_reason: String::new(),
                target_replicas: p.target_replicas.clone(),
            })
            .collect(),
        internal: topic.internal,
        ..config_fields(&topic.config)
    }
}

/// The error for a topic that does not exist.
pub fn unknown_topic(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownTopic,
        format!("topic '{name}' does not exist; create it first (sluice topic create {name})"),
    )
}

/// Live storage nodes as API records, with the replicas each holds or receives.
pub fn nodes(view: &ClusterView) -> Vec<pb::NodeInfo> {
    let replicas = replica_counts(view);
    view.nodes
        .values()
        .map(|n| pb::NodeInfo {
            node_id: n.node_id,
            address: n.address.clone(),
            rack: n.rack.clone(),
            decommissioning: view.decommissioned.contains(&n.node_id),
            replicas: replicas.get(&n.node_id).copied().unwrap_or(0),
            registered: true,
        })
        .collect()
}

/// [`nodes`], then the nodes that are gone but hold replicas or are decommissioned.
pub fn all_nodes(view: &ClusterView) -> Vec<pb::NodeInfo> {
    let replicas = replica_counts(view);
    let gone: BTreeSet<i32> = replicas
        .keys()
        .chain(&view.decommissioned)
        .filter(|n| !view.nodes.contains_key(n))
        .copied()
        .collect();
    let mut out = nodes(view);
    out.extend(gone.into_iter().map(|n| pb::NodeInfo {
        node_id: n,
        decommissioning: view.decommissioned.contains(&n),
        replicas: replicas.get(&n).copied().unwrap_or(0),
        registered: false,
        ..Default::default()
    }));
    out
}

/// Partitions each node holds a replica of or is receiving one of.
fn replica_counts(view: &ClusterView) -> BTreeMap<i32, i32> {
    let mut replicas: BTreeMap<i32, i32> = BTreeMap::new();
    for p in view.partitions.values() {
        let all: BTreeSet<i32> = p
            .record
            .replicas
            .iter()
            .chain(&p.record.target_replicas)
            .copied()
            .collect();
        for n in all {
            *replicas.entry(n).or_default() += 1;
        }
    }
    replicas
}

/// The active controller, if any.
pub fn controller(view: &ClusterView) -> Option<pb::ControllerInfo> {
    view.controller.as_ref().map(|c| pb::ControllerInfo {
        coordinator_id: c.record.coordinator_id.clone(),
        address: c.record.address.clone(),
    })
}

/// Metadata for the asked topics (all when empty); an unknown asked topic is an error so that
/// producers to a misspelt topic fail clearly.
pub fn metadata(
    view: &ClusterView,
    cluster_name: &str,
    req: &pb::GetMetadataRequest,
) -> Result<pb::GetMetadataResponse, ApiError> {
    if let Some(name) = req.topics.iter().find(|n| !view.topics.contains_key(*n)) {
        return Err(unknown_topic(name));
    }
    Ok(known_metadata(view, cluster_name, req))
}

/// Metadata for the asked topics that exist (all when empty), silently leaving out the others:
/// a watch may name topics that are created later.
pub fn known_metadata(
    view: &ClusterView,
    cluster_name: &str,
    req: &pb::GetMetadataRequest,
) -> pb::GetMetadataResponse {
    let topics = if req.topics.is_empty() {
        view.topics
            .values()
            .filter(|t| req.include_internal || !t.record.internal)
            .map(|t| topic_metadata(view, &t.record))
            .collect()
    } else {
        req.topics
            .iter()
            .filter_map(|name| view.topics.get(name))
            .map(|t| topic_metadata(view, &t.record))
            .collect()
    };
    pb::GetMetadataResponse {
        cluster_name: cluster_name.to_string(),
        nodes: nodes(view),
        topics,
        controller: controller(view),
    }
}

fn topic_metadata(view: &ClusterView, r: &pb::TopicRecord) -> pb::TopicMetadata {
    pb::TopicMetadata {
        name: r.name.clone(),
        topic_id: r.topic_id.clone(),
        partitions: partitions(view, r),
        internal: r.internal,
    }
}

/// The cluster summary for DescribeCluster.
pub fn cluster(view: &ClusterView, cluster_name: &str) -> pb::DescribeClusterResponse {
    let active = view
        .controller
        .as_ref()
        .map(|c| c.record.coordinator_id.clone());
    let mut partition_count = 0;
    let mut offline = 0;
    for t in view.topics.values() {
        for p in partitions(view, &t.record) {
            partition_count += 1;
            if p.leader < 0 || !view.nodes.contains_key(&p.leader) {
                offline += 1;
            }
        }
    }
    pb::DescribeClusterResponse {
        cluster_name: cluster_name.to_string(),
        controller: controller(view),
        nodes: all_nodes(view),
        coordinators: view
            .coordinators
            .values()
            .map(|c| pb::CoordinatorInfo {
                coordinator_id: c.coordinator_id.clone(),
                address: c.address.clone(),
                active: active.as_deref() == Some(c.coordinator_id.as_str()),
            })
            .collect(),
        topic_count: view.topics.len() as i32,
        partition_count,
        offline_partitions: offline,
    }
}
