//! The `Metadata` service, answered from the watch cache on every coordinator.

use std::sync::Arc;

use sluice_metadata::cache::MetadataCache;
use sluice_proto::pb::{self, metadata_server::Metadata};
use tonic::{Request, Response, Status};

use crate::describe;

/// Serves `Metadata` from the local view.
pub struct MetadataService {
    /// The watch-fed view.
    pub cache: Arc<MetadataCache>,
    /// The cluster's name.
    pub cluster_name: String,
}

#[tonic::async_trait]
impl Metadata for MetadataService {
    async fn get_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let resp = describe::metadata(&self.cache.view(), &self.cluster_name, &req.into_inner())?;
        Ok(Response::new(resp))
    }
}
