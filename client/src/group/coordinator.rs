//! Reaching a group's coordinator: the storage node leading the group's partition of
//! `__sluice_offsets`, found with `Admin.FindCoordinator` on any bootstrap coordinator and
//! cached until it refuses (`NOT_COORDINATOR`, `COORDINATOR_LOAD_IN_PROGRESS`) or cannot be
//! reached.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::pb::{self, ErrorCode, admin_client::AdminClient, groups_client::GroupsClient};
use tonic::transport::Channel;

use crate::connection::{request, with_timeout};
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::RetryPolicy;

/// Backoff between attempts while the coordinator moves or loads.
pub(crate) const BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    backoff: Duration::from_millis(100),
};

/// Whether `e` means the cached coordinator is wrong or gone, so it must be found again.
pub(crate) fn coordinator_moved(e: &ClientError) -> bool {
    match e {
        ClientError::Api(api) => matches!(
            api.code,
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoadInProgress
        ),
        ClientError::Transport(_) | ClientError::Timeout(_) => true,
        _ => false,
    }
}

/// Whether `e` means the member was removed or fenced and must rejoin with epoch 0.
pub(crate) fn membership_lost(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
    )
}

/// One group's coordinator.
#[derive(Debug)]
pub(crate) struct GroupCoordinator {
    group_id: String,
    meta: Arc<Metadata>,
    request_timeout: Duration,
    address: Mutex<Option<String>>,
}

impl GroupCoordinator {
    pub(crate) fn new(group_id: String, meta: Arc<Metadata>, request_timeout: Duration) -> Self {
        Self {
            group_id,
            meta,
            request_timeout,
            address: Mutex::new(None),
        }
    }

    /// The group's id.
    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Forgets the cached coordinator, so the next call finds it again.
    pub(crate) fn invalidate(&self) {
        self.address.lock().unwrap().take();
    }

    async fn address(&self) -> Result<String> {
        if let Some(a) = self.address.lock().unwrap().clone() {
            return Ok(a);
        }
        let group_id = self.group_id.clone();
        let resp = self
            .meta
            .coordinators
            .call(&self.meta.pool, "FindCoordinator", true, |ch, t| {
                let req = pb::FindCoordinatorRequest {
                    group_id: group_id.clone(),
                };
                async move { AdminClient::new(ch).find_coordinator(request(req, t)).await }
            })
            .await?
            .into_inner();
        if resp.address.is_empty() {
            return Err(ClientError::api(
                ErrorCode::CoordinatorLoadInProgress,
                format!("group '{}' has no coordinator yet", self.group_id),
            ));
        }
        tracing::debug!(group = %self.group_id, node_id = resp.node_id, address = %resp.address, partition = resp.partition, "found group coordinator");
        *self.address.lock().unwrap() = Some(resp.address.clone());
        Ok(resp.address)
    }

    /// One attempt at `f` on the coordinator; a refusal or transport error that says it moved
    /// forgets it.
    pub(crate) async fn call_once<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(GroupsClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let result = async {
            let addr = self.address().await?;
            let client = GroupsClient::new(self.meta.pool.channel(&addr)?);
            let resp =
                with_timeout(self.request_timeout, what, f(client, self.request_timeout)).await?;
            Ok(resp.into_inner())
        }
        .await;
        if let Err(e) = &result
            && coordinator_moved(e)
        {
            self.invalidate();
        }
        result
    }

    /// `f` on the coordinator, finding it again and retrying retriable errors with backoff for
    /// up to the request timeout.
    pub(crate) async fn call<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self.call_once(what, &mut f).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match BACKOFF.decide(
                err.is_retriable(),
                false,
                attempts,
                Instant::now(),
                deadline,
            ) {
                crate::retry::RetryDecision::GiveUp => return Err(err),
                crate::retry::RetryDecision::Now => {}
                crate::retry::RetryDecision::After(wait) => {
                    tracing::debug!(group = %self.group_id, call = what, error = %err, "group call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Commits `offsets` as member `member_id` at `epoch` (empty and -1 for an admin commit).
    pub(crate) async fn commit(
        &self,
        member_id: &str,
        epoch: i32,
        offsets: Vec<pb::OffsetCommit>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let req = pb::CommitOffsetsRequest {
            group_id: self.group_id.clone(),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            offsets,
        };
        self.call("CommitOffsets", |mut c, t| {
            let req = req.clone();
            async move { c.commit_offsets(request(req, t)).await }
        })
        .await?;
        Ok(())
    }

    /// The committed offsets of `partitions` (every committed partition when empty).
    pub(crate) async fn fetch_offsets(
        &self,
        partitions: Vec<pb::TopicPartitions>,
    ) -> Result<Vec<pb::OffsetCommit>> {
        let req = pb::FetchOffsetsRequest {
            group_id: self.group_id.clone(),
            partitions,
        };
        let resp = self
            .call("FetchOffsets", |mut c, t| {
                let req = req.clone();
                async move { c.fetch_offsets(request(req, t)).await }
            })
            .await?;
        Ok(resp.offsets)
    }
}

/// Groups partitions by topic, as the protocol carries them.
pub(crate) fn by_topic<'a>(
    tps: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<pb::TopicPartitions> {
    let mut map: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in tps {
        map.entry(t.as_str()).or_default().push(*p);
    }
    map.into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            partitions.dedup();
            pb::TopicPartitions {
                topic: topic.to_string(),
                partitions,
            }
        })
        .collect()
}

/// The protocol's per-topic lists as a set of partitions.
pub(crate) fn flatten(tps: &[pb::TopicPartitions]) -> std::collections::BTreeSet<(String, i32)> {
    tps.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}
