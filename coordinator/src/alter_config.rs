//! Live topic config changes (Kafka's incremental AlterConfigs): the controller applies the keys
//! to set and to remove to the topic's stored overrides, validates the result as a whole (every
//! key and value, and `min.insync.replicas` against the replication factor), and writes the topic
//! record with a compare on its revision. Storage nodes read the config again at every view, so
//! the change takes effect on every replica without a restart.

use std::collections::BTreeMap;

use prost::Message;
use sluice_metadata::{Compare, Op};
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ErrorCode, TopicRecord};
use sluice_proto::topic_config;

use crate::controller::{Controller, READ_YOUR_WRITE_TIMEOUT, fenced, store_error};
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
        let txn = fenced(&self.keys, fence)
            .when(Compare::ModRevision(self.keys.topic(name), t.mod_revision))
            .then(Op::Put {
                key: self.keys.topic(name),
                value: record.encode_to_vec().into(),
                lease: 0,
            });
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            return Err(self
                .explain_conflict(fence, || {
                    ApiError::new(
                        ErrorCode::ConcurrentModification,
                        format!("topic '{name}' changed concurrently; retry"),
                    )
                })
                .await);
        }
        tracing::info!(topic = %name, set = ?req.set, delete = ?req.delete, "topic config changed");
        self.cache
            .wait_for_revision(outcome.revision, READ_YOUR_WRITE_TIMEOUT)
            .await;
        describe::topic(&self.cache.view(), name)
    }
}
