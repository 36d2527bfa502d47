//! Live topic config changes (Kafka's incremental AlterConfigs): the controller applies the keys
//! to set and to remove to the topic's stored overrides, validates the result as a whole (every
//! key and value, and `min.insync.replicas` against the replication factor), and writes the topic
//! record with a compare on its revision. Storage nodes read the config again at every view, so
//! the change takes effect on every replica without a restart.

use std::collections::BTreeMap;

use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, TopicRecord};
use sluice_proto::topic_config;

use crate::controller::Controller;
use crate::describe;

impl Controller {
    /// Sets and removes config keys of topic `req.name` (or only checks, with `validate_only`)
    /// and returns the resulting description.
    pub async fn alter_topic_config(
        &self,
        fence: i64,
        req: pb::AlterTopicConfigRequest,
    ) -> Result<pb::TopicDescription, ApiError> {
        let name = req.name.as_str();
        let view = self.cache.view();
        let t = view
            .topics
            .get(name)
            .ok_or_else(|| describe::unknown_topic(name))?;
        if req.set.is_empty() && req.delete.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "nothing to change: give keys to set or to delete",
            ));
        }
        let mut overrides: BTreeMap<String, String> = t.record.config.clone().into_iter().collect();
        for key in &req.delete {
            if !topic_config::is_known(key) {
                return Err(topic_config::check(key, "").unwrap_err());
            }
            if req.set.contains_key(key) {
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!("config {key} is both set and deleted; give it once"),
                ));
            }
            overrides.remove(key);
        }
        overrides.extend(req.set.clone());
        let overrides = topic_config::validate_overrides(&overrides, t.record.replication_factor)?;
        let record = TopicRecord {
            config: overrides.into_iter().collect(),
            ..t.record.clone()
        };
        if req.validate_only {
            let mut d = describe::topic(&view, name)?;
            let fields = describe::config_fields(&record.config);
            (d.config, d.default_configs) = (fields.config, fields.default_configs);
            return Ok(d);
        }
        self.replace_topic(fence, name, t.mod_revision, &record)
            .await?;
        tracing::info!(topic = %name, set = ?req.set, delete = ?req.delete, "topic config changed");
        describe::topic(&self.cache.view(), name)
    }
}
