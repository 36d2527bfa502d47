//! The `Admin` service. Reads come from the local view; writes run here when this coordinator
//! is the active controller and are forwarded to it otherwise.

use std::time::Duration;

use sluice_proto::error::ApiError;
use sluice_proto::pb::admin_client::AdminClient;
use sluice_proto::pb::admin_server::Admin;
use sluice_proto::pb::{self, ErrorCode};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::controller::Controller;
use crate::describe;
use crate::election::Role;

/// Marks a request a standby forwarded, so it is never forwarded twice.
const FORWARDED: &str = "x-sluice-forwarded";
/// Forwarding to the active controller gives up after these, so a blackholed controller
/// address fails a request in seconds rather than after the OS's TCP timeout.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write waits for a controller to exist (e.g. during a failover) before failing.
const CONTROLLER_WAIT: Duration = Duration::from_secs(10);

/// Serves `Admin` for one coordinator.
pub struct AdminService {
    /// The controller's write handle (used only while active).
    pub controller: Controller,
    /// This coordinator's current role.
    pub role: watch::Receiver<Role>,
    /// The cluster's name, reported by DescribeCluster.
    pub cluster_name: String,
    /// Partitions of the offsets topic when the controller creates it.
    pub offsets_topic_partitions: i32,
}

/// Where a write must run.
enum Route {
    Local(i64),
    Forward(String),
}

impl AdminService {
    async fn route<T>(&self, req: &Request<T>) -> Result<Route, ApiError> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let mut role = self.role.clone();
        let mut view = self.controller.cache.subscribe();
        let wait = async {
            loop {
                if let Role::Active { fence } = *role.borrow_and_update() {
                    return Ok(Route::Local(fence));
                }
                if !forwarded && let Some(c) = view.borrow_and_update().controller.as_ref() {
                    return Ok(Route::Forward(c.record.address.clone()));
                }
                tokio::select! {
                    r = role.changed() => if r.is_err() { break },
                    r = view.changed() => if r.is_err() { break },
                }
            }
            Err(no_controller())
        };
        tokio::time::timeout(CONTROLLER_WAIT, wait)
            .await
            .unwrap_or_else(|_| Err(no_controller()))
    }
}

fn no_controller() -> ApiError {
    ApiError::new(
        ErrorCode::NotController,
        "no active controller right now (failover in progress?); retry shortly",
    )
}

async fn client(addr: &str) -> Result<AdminClient<tonic::transport::Channel>, Status> {
    let unreachable = |e: &dyn std::fmt::Display| {
        let mut err = ApiError::new(
            ErrorCode::NotController,
            format!("cannot reach the active controller at {addr}: {e}; retry"),
        );
        err.controller_address = Some(addr.to_string());
        err.to_status()
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| unreachable(&e))?
        .connect_timeout(FORWARD_CONNECT_TIMEOUT)
        .timeout(FORWARD_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    Ok(AdminClient::new(channel))
}

fn forwarded<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii"));
    r
}

/// Runs a write locally or forwards it: one arm per RPC, the rest shared.
macro_rules! write_rpc {
    ($self:ident, $req:ident, $method:ident, |$fence:ident, $msg:ident| $local:expr) => {{
        match $self.route(&$req).await? {
            Route::Local($fence) => {
                let $msg = $req.into_inner();
                Ok(Response::new($local))
            }
            Route::Forward(addr) => {
                client(&addr)
                    .await?
                    .$method(forwarded($req.into_inner()))
                    .await
            }
        }
    }};
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        write_rpc!(self, req, create_topic, |fence, msg| {
            pb::CreateTopicResponse {
                topic: Some(self.controller.create_topic(fence, msg).await?),
            }
        })
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        write_rpc!(self, req, delete_topic, |fence, msg| {
            self.controller.delete_topic(fence, &msg.name).await?;
            pb::DeleteTopicResponse {}
        })
    }

    async fn create_partitions(
        &self,
        req: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        write_rpc!(self, req, create_partitions, |fence, msg| {
            pb::CreatePartitionsResponse {
                topic: Some(
                    self.controller
                        .create_partitions(fence, &msg.name, msg.total_partitions)
                        .await?,
                ),
            }
        })
    }

    async fn alter_topic_config(
        &self,
        req: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        write_rpc!(self, req, alter_topic_config, |fence, msg| {
            pb::AlterTopicConfigResponse {
                topic: Some(self.controller.alter_topic_config(fence, msg).await?),
            }
        })
    }

    async fn reassign_partitions(
        &self,
        req: Request<pb::ReassignPartitionsRequest>,
    ) -> Result<Response<pb::ReassignPartitionsResponse>, Status> {
        write_rpc!(self, req, reassign_partitions, |fence, msg| {
            self.controller.reassign_partitions(fence, msg).await?
        })
    }

    async fn rebalance(
        &self,
        req: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        write_rpc!(self, req, rebalance, |fence, msg| {
            self.controller.rebalance(fence, msg).await?
        })
    }

    async fn decommission_node(
        &self,
        req: Request<pb::DecommissionNodeRequest>,
    ) -> Result<Response<pb::DecommissionNodeResponse>, Status> {
        write_rpc!(self, req, decommission_node, |fence, msg| {
            self.controller.decommission_node(fence, msg).await?
        })
    }

    async fn list_reassignments(
        &self,
        _req: Request<pb::ListReassignmentsRequest>,
    ) -> Result<Response<pb::ListReassignmentsResponse>, Status> {
        Ok(Response::new(self.controller.list_reassignments().await))
    }

    async fn cancel_reassignments(
        &self,
        req: Request<pb::CancelReassignmentsRequest>,
    ) -> Result<Response<pb::CancelReassignmentsResponse>, Status> {
        write_rpc!(self, req, cancel_reassignments, |fence, msg| {
            self.controller.cancel_reassignments(fence, msg).await?
        })
    }

    async fn describe_cluster_config(
        &self,
        _req: Request<pb::DescribeClusterConfigRequest>,
    ) -> Result<Response<pb::DescribeClusterConfigResponse>, Status> {
        let view = self.controller.cache.view();
        Ok(Response::new(crate::cluster_config::describe(
            &view.cluster_config,
        )))
    }

    async fn alter_cluster_config(
        &self,
        req: Request<pb::AlterClusterConfigRequest>,
    ) -> Result<Response<pb::DescribeClusterConfigResponse>, Status> {
        write_rpc!(self, req, alter_cluster_config, |fence, msg| {
            self.controller.alter_cluster_config(fence, msg).await?
        })
    }

    async fn elect_leaders(
        &self,
        req: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        write_rpc!(self, req, elect_leaders, |fence, msg| {
            self.controller.elect_preferred_leaders(fence, msg).await?
        })
    }

    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        write_rpc!(self, req, find_coordinator, |fence, msg| {
            if msg.group_id.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "group id is empty; name the consumer group",
                )
                .into());
            }
            let topic = self
                .controller
                .ensure_offsets_topic(fence, self.offsets_topic_partitions)
                .await?;
            let partition =
                sluice_proto::model::group_partition(&msg.group_id, topic.partitions.len() as i32);
            let state = topic.partitions.iter().find(|p| p.partition == partition);
            let view = self.controller.cache.view();
            let leader = state
                .filter(|p| p.leader >= 0)
                .and_then(|p| view.nodes.get(&p.leader).map(|n| (p, n)));
            let Some((p, node)) = leader else {
                return Err(ApiError::new(
                    ErrorCode::NotCoordinator,
                    format!("partition {partition} of the offsets topic has no leader yet; retry shortly"),
                )
                .into());
            };
            pb::FindCoordinatorResponse {
                partition,
                node_id: p.leader,
                address: node.address.clone(),
                leader_epoch: p.leader_epoch,
            }
        })
    }

    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let include_internal = req.into_inner().include_internal;
        let view = self.controller.cache.view();
        let topics = view
            .topics
            .values()
            .filter(|t| include_internal || !t.record.internal)
            .map(|t| pb::TopicSummary {
                name: t.record.name.clone(),
                topic_id: t.record.topic_id.clone(),
                partitions: t.record.partition_count,
                replication_factor: t.record.replication_factor,
                internal: t.record.internal,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        req: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let topic = describe::topic(&self.controller.cache.view(), &req.into_inner().name)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic),
        }))
    }

    async fn describe_cluster(
        &self,
        _req: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Ok(Response::new(describe::cluster(
            &self.controller.cache.view(),
            &self.cluster_name,
        )))
    }
}
