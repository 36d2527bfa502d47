//! Consumer group administration on [`Admin`]: list, describe with lag, reset offsets, delete.
//! Group calls go to the group's coordinator (found like a member finds it), except
//! `list_groups`, which asks every storage node, since each knows only the groups it
//! coordinates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sluice_proto::pb::{self, groups_client::GroupsClient, list_offsets_request::Spec};

use super::coordinator::{GroupCoordinator, by_topic, flatten};
use super::lag::{lag, reset_target};
use crate::admin::Admin;
use crate::connection::{request, with_timeout};
use crate::consumer::SeekTo;
use crate::consumer::offsets::list_offsets;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;

/// One partition of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
    /// The group's committed offset (the next offset to consume), if any.
    pub committed: Option<i64>,
    /// The partition's high watermark, if its leader answered.
    pub log_end: Option<i64>,
    /// `log_end - committed` (see [`super::lag`]); `None` when either is unknown.
    pub lag: Option<i64>,
}

/// A group's state, members and per-partition lag.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// The coordinator's name for the group's state (e.g. "stable", "empty").
    pub state: String,
    /// The group epoch (bumped with every membership or subscription change).
    pub group_epoch: i32,
    /// The server-side assignor in use.
    pub assignor: String,
    /// Members with their assignments and subscriptions.
    pub members: Vec<pb::GroupMemberDescription>,
    /// Every partition that is assigned or has a committed offset, sorted.
    pub partitions: Vec<PartitionLag>,
    /// Sum of the known lags.
    pub total_lag: i64,
}

/// One partition's step of an offset reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetResetPlan {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset before the reset, if any.
    pub current: Option<i64>,
    /// The offset the reset commits.
    pub target: i64,
}

impl Admin {
    pub(crate) fn leader_meta(&self) -> Result<Arc<Metadata>> {
        if let Some(m) = self.meta.get() {
            return Ok(m.clone());
        }
        let m = Metadata::new(&self.cfg)?;
        Ok(self.meta.get_or_init(|| m).clone())
    }

    fn coordinator(&self, group: &str) -> Result<GroupCoordinator> {
        if group.trim().is_empty() {
            return Err(ClientError::Config("group id is empty".into()));
        }
        Ok(GroupCoordinator::new(
            group.to_string(),
            self.leader_meta()?,
            self.cfg.request_timeout,
        ))
    }

    /// Every group of the cluster: each live storage node lists the groups it coordinates, and
    /// the answers are merged (sorted by id). Nodes that do not answer are skipped with a
    /// warning; the call fails only when none answers.
    pub async fn list_groups(&self) -> Result<Vec<pb::GroupSummary>> {
        let cluster = self.describe_cluster().await?;
        let timeout = self.cfg.request_timeout;
        let asks = cluster.nodes.iter().map(|n| async move {
            let mut client = GroupsClient::new(self.pool.channel(&n.address)?);
            let resp = with_timeout(
                timeout,
                "list groups",
                client.list_groups(request(pb::ListGroupsRequest {}, timeout)),
            )
            .await?;
            Ok::<_, ClientError>(resp.into_inner().groups)
        });
        let answers = futures::future::join_all(asks).await;
        let mut merged = BTreeMap::new();
        let mut last_err = None;
        let mut answered = 0;
        for (node, answer) in cluster.nodes.iter().zip(answers) {
            match answer {
                Ok(groups) => {
                    answered += 1;
                    for g in groups {
                        // A group seen twice (its coordinator just moved): the one with members
                        // is current.
                        let keep = merged
                            .get(&g.group_id)
                            .is_none_or(|old: &pb::GroupSummary| g.members > old.members);
                        if keep {
                            merged.insert(g.group_id.clone(), g);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node_id = node.node_id, address = %node.address, error = %e, "storage node did not list its groups");
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(e) if answered == 0 => Err(e),
            _ => Ok(merged.into_values().collect()),
        }
    }

    /// A group's members, assignments, committed offsets and lag per partition (log end from
    /// `ListOffsets` on each partition's leader, minus the committed offset).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coord = self.coordinator(group)?;
        let req = pb::DescribeGroupRequest {
            group_id: group.to_string(),
        };
        let d = coord
            .call("DescribeGroup", |mut c, t| {
                let req = req.clone();
                async move { c.describe_group(request(req, t)).await }
            })
            .await?;
        let mut owner: HashMap<(String, i32), String> = HashMap::new();
        for m in &d.members {
            for tp in flatten(&m.assignment) {
                owner.insert(tp, m.member_id.clone());
            }
        }
        let committed: HashMap<(String, i32), i64> = d
            .offsets
            .iter()
            .map(|o| ((o.topic.clone(), o.partition), o.offset))
            .collect();
        let all: BTreeSet<(String, i32)> = owner.keys().chain(committed.keys()).cloned().collect();
        let meta = self.leader_meta()?;
        let ends = futures::future::join_all(all.iter().map(|(t, p)| {
            let meta = meta.clone();
            async move {
                match list_offsets(&meta, self.cfg.request_timeout, t, *p, Spec::Latest(true)).await
                {
                    Ok(r) => Some(r.high_watermark),
                    Err(e) => {
                        tracing::warn!(topic = %t, partition = *p, error = %e, "log end unknown");
                        None
                    }
                }
            }
        }))
        .await;
        let partitions: Vec<PartitionLag> = all
            .into_iter()
            .zip(ends)
            .map(|(tp, log_end)| {
                let c = committed.get(&tp).copied();
                PartitionLag {
                    member_id: owner.get(&tp).cloned(),
                    committed: c,
                    log_end,
                    lag: lag(c, log_end),
                    topic: tp.0,
                    partition: tp.1,
                }
            })
            .collect();
        let total_lag = partitions.iter().filter_map(|p| p.lag).sum();
        Ok(GroupDescription {
            group_id: d.group_id,
            state: d.state,
            group_epoch: d.group_epoch,
            assignor: d.assignor,
            members: d.members,
            partitions,
            total_lag,
        })
    }

    /// Deletes a group and its committed offsets; refused (`GROUP_NOT_EMPTY`) while it has
    /// members.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let coord = self.coordinator(group)?;
        let req = pb::DeleteGroupRequest {
            group_id: group.to_string(),
        };
        coord
            .call("DeleteGroup", |mut c, t| {
                let req = req.clone();
                async move { c.delete_group(request(req, t)).await }
            })
            .await?;
        Ok(())
    }

    /// Plans moving the group's committed offsets of every partition of `topic` to `to` (see
    /// [`super::reset_target`]) and, with `execute`, commits the plan as an administrative commit
    /// (empty member id, epoch -1), which the coordinator refuses (`GROUP_NOT_EMPTY`) while the
    /// group has members. Returns the plan either way.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: SeekTo,
        execute: bool,
    ) -> Result<Vec<OffsetResetPlan>> {
        let coord = self.coordinator(group)?;
        let meta = self.leader_meta()?;
        let count = meta.topic(topic).await?.partitions.len() as i32;
        let tps: Vec<(String, i32)> = (0..count).map(|p| (topic.to_string(), p)).collect();
        let current: HashMap<i32, i64> = coord
            .fetch_offsets(by_topic(&tps))
            .await?
            .into_iter()
            .filter(|o| o.topic == topic && o.offset >= 0)
            .map(|o| (o.partition, o.offset))
            .collect();
        let timeout = self.cfg.request_timeout;
        let plans = futures::future::try_join_all((0..count).map(|p| {
            let meta = meta.clone();
            let current = current.get(&p).copied();
            async move {
                let bounds = list_offsets(&meta, timeout, topic, p, Spec::Latest(true)).await?;
                let at = match to {
                    SeekTo::Timestamp(ms) => {
                        let r =
                            list_offsets(&meta, timeout, topic, p, Spec::TimestampMs(ms)).await?;
                        (r.offset >= 0).then_some(r.offset)
                    }
                    _ => None,
                };
                Ok::<_, ClientError>(OffsetResetPlan {
                    topic: topic.to_string(),
                    partition: p,
                    current,
                    target: reset_target(to, bounds.log_start_offset, bounds.high_watermark, at),
                })
            }
        }))
        .await?;
        if execute {
            let offsets = plans
                .iter()
                .map(|p| pb::OffsetCommit {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: p.target,
                    metadata: String::new(),
                })
                .collect();
            coord.commit("", -1, offsets).await?;
        }
        Ok(plans)
    }
}
