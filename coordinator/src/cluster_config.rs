//! `DescribeClusterConfig` and `AlterClusterConfig`: the cluster-wide settings
//! ([`sluice_proto::cluster_config`]) under one key, changed by a compare-and-swap so two
//! concurrent changes cannot lose one another.

use std::collections::BTreeMap;

use prost::Message;
use sluice_metadata::{Compare, Op, Txn};
use sluice_proto::cluster_config;
use sluice_proto::error::ApiError;
use sluice_proto::pb::{self, ClusterConfigRecord, ErrorCode};

use crate::controller::{Controller, lost_leadership, store_error};

/// Every key with its effective value, from the settings stored in `overrides`.
pub fn describe(overrides: &BTreeMap<String, String>) -> pb::DescribeClusterConfigResponse {
    let mut out = pb::DescribeClusterConfigResponse::default();
    for (key, value, is_default) in cluster_config::effective(overrides) {
        if is_default {
            out.default_configs.push(key.to_string());
        }
        out.config.insert(key.to_string(), value);
    }
    out
}

impl Controller {
    /// Applies `req` to the stored settings and answers with the result.
    pub async fn alter_cluster_config(
        &self,
        fence: i64,
        req: pb::AlterClusterConfigRequest,
    ) -> Result<pb::DescribeClusterConfigResponse, ApiError> {
        for (k, v) in &req.set {
            cluster_config::check(k, v)?;
        }
        if let Some(k) = req.delete.iter().find(|k| req.set.contains_key(*k)) {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                format!("config {k} is both set and deleted; give it once"),
            ));
        }
        for k in &req.delete {
            cluster_config::check_key(k)?;
        }
        let key = self.keys.cluster_config();
        let stored = self.store.get(&key).await.map_err(store_error)?;
        let (mut config, revision) = match &stored {
            Some(v) => {
                // A record this version cannot read is not overwritten (it would lose every
                // setting in it).
                let record = ClusterConfigRecord::decode(v.value.clone()).map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("the stored cluster config cannot be read ({e}); change it with the version that wrote it"),
                    )
                })?;
                (
                    record.config.into_iter().collect::<BTreeMap<_, _>>(),
                    v.mod_revision,
                )
            }
            None => (BTreeMap::new(), 0),
        };
        for k in &req.delete {
            config.remove(k);
        }
        config.extend(req.set.clone());
        let record = ClusterConfigRecord {
            config: config.clone().into_iter().collect(),
        };
        let txn = Txn::new()
            .when(Compare::CreateRevision(self.keys.controller(), fence))
            .when(Compare::ModRevision(key.clone(), revision))
            .then(Op::Put {
                key,
                value: record.encode_to_vec().into(),
                lease: 0,
            });
        let outcome = self.store.txn(txn).await.map_err(store_error)?;
        if !outcome.succeeded {
            return Err(match self.store.get(&self.keys.controller()).await {
                Ok(Some(c)) if c.create_revision == fence => ApiError::new(
                    ErrorCode::ConcurrentModification,
                    "the cluster config changed concurrently; retry",
                ),
                _ => lost_leadership(),
            });
        }
        self.cache
            .wait_for_revision(outcome.revision, std::time::Duration::from_secs(5))
            .await;
        tracing::info!(set = ?req.set, delete = ?req.delete, "cluster config changed");
        Ok(describe(&config))
    }
}
