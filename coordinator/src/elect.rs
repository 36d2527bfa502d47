//! Preferred leader election on request (`ElectLeaders`, `sluice topic elect-leaders`): each
//! partition whose preferred replica is an in-sync, live, non-draining member gets it back as
//! leader ([`failover::move_to_preferred`]), in the same fenced, revision-checked writes as
//! failover.

use sluice_proto::error::ApiError;
use sluice_proto::model::TopicId;
use sluice_proto::pb::{self, ErrorCode};

use crate::controller::{Controller, store_error};
use crate::failover::{self, NO_LEADER};
use crate::reconcile::{self, Change, Pass};

impl Controller {
    /// Elects the preferred leader of `req.topic`'s partitions (all when none are named).
    pub async fn elect_preferred_leaders(
        &self,
        fence: i64,
        req: pb::ElectLeadersRequest,
    ) -> Result<pb::ElectLeadersResponse, ApiError> {
        let view = self.cache.view();
        let t = view.topics.get(&req.topic).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopic,
                format!("topic '{}' does not exist", req.topic),
            )
        })?;
        let count = t.record.partition_count;
        if let Some(p) = req.partitions.iter().find(|p| !(0..count).contains(*p)) {
            return Err(ApiError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "topic '{}' has partitions 0 to {}, not {p}",
                    req.topic,
                    count - 1
                ),
            ));
        }
        let topic_id = TopicId::from_slice(&t.record.topic_id)?;
        let live = reconcile::registered_nodes(&view);
        let draining = reconcile::draining(&view);
        let (mut changes, mut results) = (Vec::new(), Vec::new());
        for p in view.partitions_of(&topic_id) {
            let s = &p.record;
            let wanted = req.partitions.is_empty() || req.partitions.contains(&s.partition);
            if !wanted || s.partition >= count {
                continue;
            }
            let preferred = s.replicas.first().copied().unwrap_or(NO_LEADER);
            let Some(new) = failover::move_to_preferred(s, &live, &draining) else {
                let message = if s.leader == preferred {
                    "already led by its preferred replica".to_string()
                } else {
                    format!(
                        "preferred replica {preferred} is not a live, in-sync member; leadership stays with {}",
                        s.leader
                    )
                };
                results.push(pb::ElectLeadersResult {
                    partition: s.partition,
                    leader: s.leader,
                    moved: false,
                    message,
                });
                continue;
            };
            results.push(pb::ElectLeadersResult {
                partition: s.partition,
                leader: new.leader,
                moved: true,
                message: String::new(),
            });
            changes.push(Change {
                topic: t.record.name.clone(),
                topic_id,
                mod_revision: p.mod_revision,
                old: s.clone(),
                leader_registration: live.get(&new.leader).map(|n| n.registration),
                new,
                offline_reason: None,
            });
        }
        let written = reconcile::write_changes(self.store.as_ref(), &self.keys, fence, &changes)
            .await
            .map_err(store_error)?;
        if let Pass::Conflict { .. } = written {
            return Err(ApiError::new(
                ErrorCode::ConcurrentModification,
                "a partition changed while its leader was being elected; retry",
            ));
        }
        results.sort_by_key(|r| r.partition);
        Ok(pb::ElectLeadersResponse { results })
    }
}
