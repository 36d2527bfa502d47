//! The `Groups` gRPC service: adapters from the wire to the coordinator's shards and back.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_groups::assignor::by_name;
use sluice_groups::{GroupState, HeartbeatRequest, TopicPartition};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, groups_server::Groups};
use tonic::{Request, Response, Status};

use super::codec::{Committed, partitions_from_pb, partitions_to_pb};
use super::shard::DEFAULT_ASSIGNOR;
use super::{GroupCoordinator, HeartbeatInput, Subscription};

/// Serves `Groups` for one storage node.
pub struct GroupsService {
    /// This node's coordinator.
    pub coordinator: Arc<GroupCoordinator>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn state_name(s: GroupState) -> &'static str {
    match s {
        GroupState::Empty => "Empty",
        GroupState::Reconciling => "Reconciling",
        GroupState::Stable => "Stable",
    }
}

fn timeout(ms: i32, what: &str) -> Result<u32, ApiError> {
    u32::try_from(ms).map_err(|_| invalid(format!("{what} must not be negative, got {ms}")))
}

/// The shard's form of a heartbeat (validates the assignor and compiles the pattern).
pub fn heartbeat_input(req: pb::GroupHeartbeatRequest) -> Result<HeartbeatInput, ApiError> {
    let assignor = if req.assignor.is_empty() {
        DEFAULT_ASSIGNOR.to_string()
    } else if by_name(&req.assignor).is_some() {
        req.assignor
    } else {
        return Err(invalid(format!(
            "unknown assignor '{}'; use uniform, range or sticky",
            req.assignor
        )));
    };
    let pattern = if req.subscribed_regex.is_empty() {
        None
    } else {
        let re = regex::Regex::new(&format!("^(?:{})$", req.subscribed_regex)).map_err(|e| {
            invalid(format!(
                "subscribed_regex '{}' is not a valid regular expression: {e}",
                req.subscribed_regex
            ))
        })?;
        Some(re)
    };
    Ok(HeartbeatInput {
        group_id: req.group_id,
        assignor,
        request: HeartbeatRequest {
            member_id: req.member_id,
            instance_id: Some(req.instance_id).filter(|i| !i.is_empty()),
            member_epoch: req.member_epoch,
            subscribed_topics: BTreeSet::new(),
            owned_partitions: partitions_from_pb(&req.owned),
            rebalance_timeout_ms: timeout(req.rebalance_timeout_ms, "rebalance_timeout_ms")?,
            session_timeout_ms: timeout(req.session_timeout_ms, "session_timeout_ms")?,
        },
        subscription: Subscription {
            topics: req.subscribed_topics.into_iter().collect(),
            pattern,
        },
    })
}

fn to_pb_commit(p: TopicPartition, c: Option<Committed>) -> pb::OffsetCommit {
    let (offset, metadata) = c.map_or((-1, String::new()), |c| (c.offset, c.metadata));
    pb::OffsetCommit {
        topic: p.topic,
        partition: p.partition,
        offset,
        metadata,
    }
}

fn check_group_id(group_id: &str) -> Result<(), ApiError> {
    if group_id.is_empty() {
        return Err(invalid("group_id must not be empty".into()));
    }
    Ok(())
}

impl GroupsService {
    async fn heartbeat(
        &self,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<pb::GroupHeartbeatResponse, ApiError> {
        check_group_id(&req.group_id)?;
        let shard = self.coordinator.route(&req.group_id)?;
        let input = heartbeat_input(req)?;
        let r = shard.heartbeat(input, &self.coordinator.catalog()).await?;
        Ok(pb::GroupHeartbeatResponse {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: i32::try_from(r.heartbeat_interval_ms).unwrap_or(i32::MAX),
            assignment: partitions_to_pb(&r.assignment),
        })
    }

    async fn commit(
        &self,
        req: pb::CommitOffsetsRequest,
    ) -> Result<pb::CommitOffsetsResponse, ApiError> {
        check_group_id(&req.group_id)?;
        let mut offsets = Vec::with_capacity(req.offsets.len());
        for o in req.offsets {
            if o.topic.is_empty() || o.partition < 0 || o.offset < 0 {
                return Err(invalid(format!(
                    "commit of {}-{} at offset {} is invalid: name a topic, a partition >= 0 and an offset >= 0",
                    o.topic, o.partition, o.offset
                )));
            }
            let c = Committed {
                offset: o.offset,
                metadata: o.metadata,
            };
            offsets.push((TopicPartition::new(o.topic, o.partition), c));
        }
        let shard = self.coordinator.route(&req.group_id)?;
        shard
            .commit(&req.group_id, &req.member_id, req.member_epoch, offsets)
            .await?;
        Ok(pb::CommitOffsetsResponse {})
    }

    async fn fetch(
        &self,
        req: pb::FetchOffsetsRequest,
    ) -> Result<pb::FetchOffsetsResponse, ApiError> {
        check_group_id(&req.group_id)?;
        let shard = self.coordinator.route(&req.group_id)?;
        let wanted = (!req.partitions.is_empty()).then(|| partitions_from_pb(&req.partitions));
        let offsets = shard.fetch_offsets(&req.group_id, wanted).await?;
        Ok(pb::FetchOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(p, c)| to_pb_commit(p, c))
                .collect(),
        })
    }

    async fn list(&self) -> Result<pb::ListGroupsResponse, ApiError> {
        let mut groups = Vec::new();
        for shard in self.coordinator.shards() {
            // A shard still loading or just moved away is listed by its next coordinator.
            let Ok(listed) = shard.list().await else {
                continue;
            };
            groups.extend(listed.into_iter().map(|g| pb::GroupSummary {
                group_id: g.group_id,
                state: state_name(g.state).to_string(),
                members: i32::try_from(g.members).unwrap_or(i32::MAX),
            }));
        }
        Ok(pb::ListGroupsResponse { groups })
    }

    async fn describe(
        &self,
        req: pb::DescribeGroupRequest,
    ) -> Result<pb::DescribeGroupResponse, ApiError> {
        check_group_id(&req.group_id)?;
        let shard = self.coordinator.route(&req.group_id)?;
        let (d, offsets) = shard.describe(&req.group_id).await?;
        Ok(pb::DescribeGroupResponse {
            group_id: d.group_id,
            state: state_name(d.state).to_string(),
            group_epoch: d.group_epoch,
            assignor: d.assignor.to_string(),
            members: d
                .members
                .into_iter()
                .map(|m| pb::GroupMemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id.unwrap_or_default(),
                    member_epoch: m.member_epoch,
                    assignment: partitions_to_pb(&m.assigned),
                    subscribed_topics: m.subscribed_topics.into_iter().collect(),
                })
                .collect(),
            offsets: offsets
                .into_iter()
                .map(|(p, c)| to_pb_commit(p, Some(c)))
                .collect(),
        })
    }

    async fn delete(
        &self,
        req: pb::DeleteGroupRequest,
    ) -> Result<pb::DeleteGroupResponse, ApiError> {
        check_group_id(&req.group_id)?;
        let shard = self.coordinator.route(&req.group_id)?;
        shard.delete(&req.group_id).await?;
        Ok(pb::DeleteGroupResponse {})
    }
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        Ok(Response::new(
            GroupsService::heartbeat(self, req.into_inner()).await?,
        ))
    }

    async fn commit_offsets(
        &self,
        req: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        Ok(Response::new(self.commit(req.into_inner()).await?))
    }

    async fn fetch_offsets(
        &self,
        req: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        Ok(Response::new(self.fetch(req.into_inner()).await?))
    }

    async fn list_groups(
        &self,
        _req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Ok(Response::new(self.list().await?))
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Ok(Response::new(self.describe(req.into_inner()).await?))
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        Ok(Response::new(self.delete(req.into_inner()).await?))
    }
}
