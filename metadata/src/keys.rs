//! The metadata key layout. Every key lives under a cluster prefix (default
//! `/sluice/<cluster-name>/`) so several clusters can share one etcd:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `controller` | `ControllerRecord`, leased | the elected coordinator |
//! | `coordinators/<id>` | `ControllerRecord`, leased | every coordinator (for DescribeCluster) |
//! | `nodes/<node-id>` | `NodeRecord`, leased | the storage node |
//! | `topics/<name>` | `TopicRecord` | the controller |
//! | `partitions/<topic-id-hex>/<p>` | `PartitionStateRecord` | the controller; the leader for ISR changes (CAS) |
//! | `producer_ids` | `ProducerIdBlockRecord` | any coordinator (CAS), a block at a time |
//! | `decommissioned/<node-id>` | empty | the controller |
//! | `cluster_config` | `ClusterConfigRecord` | the controller (CAS) |
//! | `balancer` | `BalancerRecord` | the controller |

use sluice_proto::model::{NodeId, PartitionId, TopicId};

/// What a key under the cluster prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The active controller's record.
    Controller,
    /// A coordinator's registration.
    Coordinator(String),
    /// A storage node's registration.
    Node(NodeId),
    /// A topic, by name.
    Topic(String),
    /// A partition's state.
    Partition(TopicId, PartitionId),
    /// A storage node being emptied (decommissioned).
    Decommissioned(NodeId),
    /// The cluster-wide settings.
    ClusterConfig,
    /// The node set the automatic balancer last balanced for.
    Balancer,
}

/// Builds and parses keys for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// Checks a cluster name: it becomes a key prefix, so `/` (which would nest one cluster's keys
/// inside another's) and empty names are refused.
pub fn validate_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "cluster name {name:?} must have 1 to 64 characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "cluster name {name:?} contains {c:?}; use ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl Keys {
    /// Keys of the cluster `name` under the default prefix `/sluice/<name>/`.
    pub fn for_cluster(name: &str) -> Self {
        Self {
            prefix: format!("/sluice/{name}/"),
        }
    }

    /// The cluster prefix; every Sluice key starts with it.
    pub fn root(&self) -> &str {
        &self.prefix
    }

    /// The cluster's id, made once by the first process that finds none (see
    /// [`crate::cluster_id`]).
    pub fn cluster_id(&self) -> String {
        format!("{}cluster_id", self.prefix)
    }

    /// The cluster-wide settings an operator set.
    pub fn cluster_config(&self) -> String {
        format!("{}cluster_config", self.prefix)
    }

    /// The node set the automatic balancer last balanced for.
    pub fn balancer(&self) -> String {
        format!("{}balancer", self.prefix)
    }

    /// The key marking storage node `id` decommissioned: no new replicas go to it and the
    /// controller moves its replicas away.
    pub fn decommissioned(&self, id: NodeId) -> String {
        format!("{}decommissioned/{id}", self.prefix)
    }

    /// The active controller's key.
    pub fn controller(&self) -> String {
        format!("{}controller", self.prefix)
    }

    /// The next unallocated producer id block (coordinators take blocks by CAS).
    pub fn producer_ids(&self) -> String {
        format!("{}producer_ids", self.prefix)
    }

    /// Prefix of coordinator registrations.
    pub fn coordinators(&self) -> String {
        format!("{}coordinators/", self.prefix)
    }

    /// One coordinator's registration.
    pub fn coordinator(&self, id: &str) -> String {
        format!("{}coordinators/{id}", self.prefix)
    }

    /// Prefix of storage-node registrations.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// One storage node's registration.
    pub fn node(&self, id: NodeId) -> String {
        format!("{}nodes/{id}", self.prefix)
    }

    /// Prefix of topic records.
    pub fn topics(&self) -> String {
        format!("{}topics/", self.prefix)
    }

    /// One topic's record.
    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.prefix)
    }

    /// Prefix of every partition state.
    pub fn partitions(&self) -> String {
        format!("{}partitions/", self.prefix)
    }

    /// Prefix of one topic's partition states.
    pub fn partitions_of(&self, topic: &TopicId) -> String {
        format!("{}partitions/{}/", self.prefix, topic.to_hex())
    }

    /// One partition's state.
    pub fn partition(&self, topic: &TopicId, partition: PartitionId) -> String {
        format!("{}partitions/{}/{partition}", self.prefix, topic.to_hex())
    }

    /// Classifies a full key; `None` for keys outside this layout.
    pub fn parse(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(&self.prefix)?;
        if rest == "controller" {
            return Some(KeyKind::Controller);
        }
        if rest == "cluster_config" {
            return Some(KeyKind::ClusterConfig);
        }
        if rest == "balancer" {
            return Some(KeyKind::Balancer);
        }
        if let Some(id) = rest.strip_prefix("coordinators/") {
            return Some(KeyKind::Coordinator(id.to_string()));
        }
        if let Some(id) = rest.strip_prefix("nodes/") {
            return id.parse().ok().map(KeyKind::Node);
        }
        if let Some(id) = rest.strip_prefix("decommissioned/") {
            return id.parse().ok().map(KeyKind::Decommissioned);
        }
        if let Some(name) = rest.strip_prefix("topics/") {
            return Some(KeyKind::Topic(name.to_string()));
        }
        if let Some(tp) = rest.strip_prefix("partitions/") {
            let (topic, p) = tp.split_once('/')?;
            return Some(KeyKind::Partition(
                TopicId::from_hex(topic)?,
                p.parse().ok()?,
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_what_built_it() {
        let k = Keys::for_cluster("c1");
        let id = TopicId([7; 16]);
        assert_eq!(k.parse(&k.controller()), Some(KeyKind::Controller));
        assert_eq!(k.parse(&k.cluster_config()), Some(KeyKind::ClusterConfig));
        assert_eq!(k.parse(&k.balancer()), Some(KeyKind::Balancer));
        assert_eq!(k.parse(&k.node(4)), Some(KeyKind::Node(4)));
        assert_eq!(k.parse(&k.topic("t")), Some(KeyKind::Topic("t".into())));
        assert_eq!(
            k.parse(&k.partition(&id, 3)),
            Some(KeyKind::Partition(id, 3))
        );
        assert_eq!(
            k.parse(&k.coordinator("a")),
            Some(KeyKind::Coordinator("a".into()))
        );
        assert_eq!(
            k.parse(&k.decommissioned(3)),
            Some(KeyKind::Decommissioned(3))
        );
        assert_eq!(k.parse("/sluice/other/controller"), None);
        assert!(k.partition(&id, 3).starts_with(&k.partitions_of(&id)));
    }
}
