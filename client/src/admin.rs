//! Topic and cluster administration through the coordinators' `Admin` service (consumer
//! group administration is in `group::admin`).

use std::collections::{BTreeMap, HashMap};

use sluice_proto::pb::{self, ErrorCode, admin_client::AdminClient};

use crate::config::ClientConfig;
use crate::connection::{Coordinators, Pool, request};
use crate::error::{ClientError, Result};

/// Creates, deletes and describes topics, the cluster and consumer groups. Any coordinator answers (standbys
/// forward writes to the active controller); unreachable ones are skipped.
#[derive(Debug)]
pub struct Admin {
    pub(crate) pool: Pool,
    pub(crate) coordinators: Coordinators,
    pub(crate) cfg: ClientConfig,
    /// Leader cache for the group commands' `ListOffsets`, made on first use.
    pub(crate) meta: std::sync::OnceLock<std::sync::Arc<crate::metadata::Metadata>>,
}

impl Admin {
    /// Checks the config; connections are made on the first call.
    pub async fn connect(cfg: ClientConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            pool: Pool::new(cfg.connect_timeout),
            coordinators: Coordinators::new(cfg.bootstrap_uris(), cfg.request_timeout),
            cfg,
            meta: std::sync::OnceLock::new(),
        })
    }

    /// Deletes the records of `topic`/`partition` before offset `before` (-1: the high
    /// watermark), as Kafka's DeleteRecords; returns the partition's new log start (the low
    /// watermark) on its leader. Followers follow within a replication round trip.
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) -> Result<i64> {
        let req = pb::DeleteRecordsRequest {
            topic: topic.to_string(),
            partition,
            before_offset: before,
        };
        let meta = self.leader_meta()?;
        let resp = crate::consumer::offsets::on_leader(
            &meta,
            self.cfg.request_timeout,
            topic,
            partition,
            "delete records",
            |mut c, left| {
                let req = request(req.clone(), left);
                async move { c.delete_records(req).await }
            },
        )
        .await?;
        Ok(resp.low_watermark)
    }

    /// Each partition's log start and end, high watermark and disk use as its leader reports
    /// them (`Log.DescribeReplicas`); a partition whose leader cannot be reached is missing.
    pub async fn describe_replicas(&self, topic: &str) -> Result<BTreeMap<i32, pb::ReplicaInfo>> {
        let meta = self.leader_meta()?;
        let count = meta.topic(topic).await?.partitions.len() as i32;
        let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for p in 0..count {
            if let Ok(l) = meta.leader(topic, p).await {
                by_leader.entry(l.address).or_default().push(p);
            }
        }
        let mut out = BTreeMap::new();
        for (address, partitions) in by_leader {
            let req = pb::DescribeReplicasRequest {
                topic: topic.to_string(),
                partitions,
            };
            let timeout = self.cfg.request_timeout;
            let answer = async {
                let mut c = pb::log_client::LogClient::new(self.pool.channel(&address)?);
                crate::connection::with_timeout(
                    timeout,
                    "describe replicas",
                    c.describe_replicas(request(req, timeout)),
                )
                .await
            }
            .await;
            match answer {
                Ok(r) => out.extend(
                    r.into_inner()
                        .replicas
                        .into_iter()
                        .filter(|i| i.leader)
                        .map(|i| (i.partition, i)),
                ),
                Err(error) => {
                    tracing::debug!(%address, %error, "describing replicas failed; leaving them out")
                }
            }
        }
        Ok(out)
    }

    /// Creates a topic; `replication_factor` 0 takes the cluster default, `config` holds topic
    /// settings such as `retention.ms` (unknown keys are refused).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        config: BTreeMap<String, String>,
    ) -> Result<pb::TopicDescription> {
        let config: HashMap<String, String> = config.into_iter().collect();
        let resp = self
            .coordinators
            .call(&self.pool, "CreateTopic", false, |ch, t| {
                let req = pb::CreateTopicRequest {
                    name: name.to_string(),
                    partitions,
                    replication_factor,
                    config: config.clone(),
                    validate_only: false,
                };
                async move { AdminClient::new(ch).create_topic(request(req, t)).await }
            })
            .await?
            .into_inner();
        described(resp.topic, name)
    }

    /// Sets `set` and removes `delete` (back to their defaults) in a topic's config, or only
    /// checks the change with `validate_only`; every replica applies it without a restart.
    /// Unknown keys and bad values are refused with `INVALID_CONFIG`.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        validate_only: bool,
    ) -> Result<pb::TopicDescription> {
        let set: HashMap<String, String> = set.into_iter().collect();
        let resp = self
            .coordinators
            .call(&self.pool, "AlterTopicConfig", false, |ch, t| {
                let req = pb::AlterTopicConfigRequest {
                    name: name.to_string(),
                    set: set.clone(),
                    delete: delete.clone(),
                    validate_only,
                };
                async move {
                    AdminClient::new(ch)
                        .alter_topic_config(request(req, t))
                        .await
                }
            })
            .await?
            .into_inner();
        described(resp.topic, name)
    }

    /// Moves leadership of `topic`'s `partitions` (all when empty) back to their preferred
    /// replicas where those are in sync (preferred leader election); answers per partition.
    pub async fn elect_leaders(
        &self,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<Vec<pb::ElectLeadersResult>> {
        let resp = self
            .coordinators
            .call(&self.pool, "ElectLeaders", false, |ch, t| {
                let req = pb::ElectLeadersRequest {
                    topic: topic.to_string(),
                    partitions: partitions.clone(),
                };
                async move { AdminClient::new(ch).elect_leaders(request(req, t)).await }
            })
            .await?
            .into_inner();
        Ok(resp.results)
    }

    /// Starts moving partitions to new replica lists (the first replica of each is its
    /// preferred leader); the controller carries the moves out. A partition already moving
    /// takes the new target instead; moving it back to its old list cancels the move.
    pub async fn reassign_partitions(&self, moves: Vec<pb::PartitionReassignment>) -> Result<()> {
        self.coordinators
            .call(&self.pool, "ReassignPartitions", false, |ch, t| {
                let req = pb::ReassignPartitionsRequest {
                    reassignments: moves.clone(),
                };
                async move {
                    AdminClient::new(ch)
                        .reassign_partitions(request(req, t))
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// Decommissions storage node `node` (its replicas move to the other nodes, a few at a
    /// time, and no new ones go to it), or with `recommission` undoes that.
    pub async fn decommission_node(&self, node: i32, recommission: bool) -> Result<()> {
        self.coordinators
            .call(&self.pool, "DecommissionNode", true, |ch, t| {
                let req = pb::DecommissionNodeRequest {
                    node_id: node,
                    recommission,
                };
                async move {
                    AdminClient::new(ch)
                        .decommission_node(request(req, t))
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// Plans the moves that even out replicas and preferred leaders over the storage nodes
    /// and, unless `dry_run`, starts them; returns the plan.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<pb::PartitionReassignment>> {
        let resp = self
            .coordinators
            .call(&self.pool, "Rebalance", dry_run, |ch, t| async move {
                AdminClient::new(ch)
                    .rebalance(request(pb::RebalanceRequest { dry_run }, t))
                    .await
            })
            .await?
            .into_inner();
        Ok(resp.moves)
    }

    /// Cancels the moves of `partitions` (topic, partition): each returns to its replicas
    /// before the move. Returns the cancelled moves (named partitions not moving are left out).
    pub async fn cancel_reassignments(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<pb::PartitionReassignment>> {
        let partitions = partitions
            .into_iter()
            .map(|(topic, partition)| pb::PartitionRef { topic, partition })
            .collect();
        self.cancel(pb::CancelReassignmentsRequest {
            partitions,
            all: false,
        })
        .await
    }

    /// Cancels every move under way; returns the cancelled moves.
    pub async fn cancel_all_reassignments(&self) -> Result<Vec<pb::PartitionReassignment>> {
        self.cancel(pb::CancelReassignmentsRequest {
            partitions: Vec::new(),
            all: true,
        })
        .await
    }

    async fn cancel(
        &self,
        req: pb::CancelReassignmentsRequest,
    ) -> Result<Vec<pb::PartitionReassignment>> {
        let resp = self
            .coordinators
            .call(&self.pool, "CancelReassignments", true, |ch, t| {
                let req = req.clone();
                async move {
                    AdminClient::new(ch)
                        .cancel_reassignments(request(req, t))
                        .await
                }
            })
            .await?
            .into_inner();
        Ok(resp.cancelled)
    }

    /// Every cluster-wide setting with its effective value.
    pub async fn describe_cluster_config(&self) -> Result<pb::DescribeClusterConfigResponse> {
        Ok(self
            .coordinators
            .call(
                &self.pool,
                "DescribeClusterConfig",
                true,
                |ch, t| async move {
                    AdminClient::new(ch)
                        .describe_cluster_config(request(pb::DescribeClusterConfigRequest {}, t))
                        .await
                },
            )
            .await?
            .into_inner())
    }

    /// Sets and removes cluster-wide settings; answers with every setting after the change.
    pub async fn alter_cluster_config(
        &self,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<pb::DescribeClusterConfigResponse> {
        let req = pb::AlterClusterConfigRequest {
            set: set.into_iter().collect(),
            delete,
        };
        Ok(self
            .coordinators
            .call(&self.pool, "AlterClusterConfig", true, |ch, t| {
                let req = req.clone();
                async move {
                    AdminClient::new(ch)
                        .alter_cluster_config(request(req, t))
                        .await
                }
            })
            .await?
            .into_inner())
    }

    /// The partition moves under way.
    pub async fn list_reassignments(&self) -> Result<Vec<pb::Reassignment>> {
        let resp = self
            .coordinators
            .call(&self.pool, "ListReassignments", true, |ch, t| async move {
                AdminClient::new(ch)
                    .list_reassignments(request(pb::ListReassignmentsRequest {}, t))
                    .await
            })
            .await?
            .into_inner();
        Ok(resp.reassignments)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.coordinators
            .call(&self.pool, "DeleteTopic", false, |ch, t| {
                let req = pb::DeleteTopicRequest {
                    name: name.to_string(),
                };
                async move { AdminClient::new(ch).delete_topic(request(req, t)).await }
            })
            .await?;
        Ok(())
    }

    /// Every topic, with internal ones (such as `__sluice_offsets`) when asked.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<pb::TopicSummary>> {
        let resp = self
            .coordinators
            .call(&self.pool, "ListTopics", true, |ch, t| {
                let req = pb::ListTopicsRequest { include_internal };
                async move { AdminClient::new(ch).list_topics(request(req, t)).await }
            })
            .await?;
        Ok(resp.into_inner().topics)
    }

    /// A topic's id, config and per-partition leaders, replicas and ISR.
    pub async fn describe_topic(&self, name: &str) -> Result<pb::TopicDescription> {
        let resp = self
            .coordinators
            .call(&self.pool, "DescribeTopic", true, |ch, t| {
                let req = pb::DescribeTopicRequest {
                    name: name.to_string(),
                };
                async move { AdminClient::new(ch).describe_topic(request(req, t)).await }
            })
            .await?
            .into_inner();
        described(resp.topic, name)
    }

    /// Raises a topic's partition count to `total_partitions` (counts never shrink, since keys
    /// would move).
    pub async fn create_partitions(
        &self,
        name: &str,
        total_partitions: i32,
    ) -> Result<pb::TopicDescription> {
        let resp = self
            .coordinators
            .call(&self.pool, "CreatePartitions", false, |ch, t| {
                let req = pb::CreatePartitionsRequest {
                    name: name.to_string(),
                    total_partitions,
                };
                async move {
                    AdminClient::new(ch)
                        .create_partitions(request(req, t))
                        .await
                }
            })
            .await?
            .into_inner();
        described(resp.topic, name)
    }

    /// Cluster name, active controller, coordinators, live storage nodes and partition counts.
    pub async fn describe_cluster(&self) -> Result<pb::DescribeClusterResponse> {
        let resp = self
            .coordinators
            .call(&self.pool, "DescribeCluster", true, |ch, t| async move {
                AdminClient::new(ch)
                    .describe_cluster(request(pb::DescribeClusterRequest {}, t))
                    .await
            })
            .await?;
        Ok(resp.into_inner())
    }
}

/// The topic of an answer that must carry one.
fn described(topic: Option<pb::TopicDescription>, name: &str) -> Result<pb::TopicDescription> {
    topic.ok_or_else(|| {
        ClientError::api(
            ErrorCode::Internal,
            format!("coordinator answered without a description of topic '{name}'"),
        )
    })
}
