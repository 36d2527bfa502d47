//! The `Metadata` service, answered from the watch cache on every coordinator; producer ids come
//! from this coordinator's block (no controller needed).

use std::sync::Arc;
use std::time::Duration;

use sluice_metadata::cache::{ClusterView, MetadataCache};
use sluice_proto::pb::{self, metadata_server::Metadata};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::controller::store_error;
use crate::describe;
use crate::producer_ids::ProducerIdAllocator;

/// Wait after a view change before sending, so a burst of changes (a failover moving many
/// leaders) reaches a watcher as one message.
const WATCH_COALESCE: Duration = Duration::from_millis(20);
/// Messages buffered per watcher. Small on purpose: a slow watcher makes its task wait, and
/// it then sends the newest view, not a backlog of stale ones.
const WATCH_BUFFER: usize = 2;

/// Serves `Metadata` from the local view.
pub struct MetadataService {
    /// The watch-fed view.
    pub cache: Arc<MetadataCache>,
    /// The cluster's name.
    pub cluster_name: String,
    /// This coordinator's producer id blocks.
    pub producer_ids: Arc<ProducerIdAllocator>,
    /// Flips to true when the server shuts down, ending every `WatchMetadata` stream (an open
    /// stream would otherwise hold the graceful shutdown forever).
    pub shutdown: watch::Receiver<bool>,
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

    type WatchMetadataStream = ReceiverStream<Result<pb::GetMetadataResponse, Status>>;

    async fn watch_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch_loop(
            self.cache.subscribe(),
            self.cluster_name.clone(),
            req.into_inner(),
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn init_producer_id(
        &self,
        _req: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let producer_id = self.producer_ids.next_id().await.map_err(store_error)?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}

/// Sends the metadata now and after every (coalesced) view change that alters it, until the
/// client goes away (the receiver is dropped) or the server shuts down.
async fn watch_loop(
    mut views: watch::Receiver<Arc<ClusterView>>,
    cluster_name: String,
    req: pb::GetMetadataRequest,
    tx: mpsc::Sender<Result<pb::GetMetadataResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Option<pb::GetMetadataResponse> = None;
    loop {
        let view = views.borrow_and_update().clone();
        let msg = describe::known_metadata(&view, &cluster_name, &req);
        if last.as_ref() != Some(&msg) {
            tokio::select! {
                sent = tx.send(Ok(msg.clone())) => if sent.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            last = Some(msg);
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_COALESCE) => {}
            () = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_proto::pb::NodeRecord;

    use super::*;

    fn view(revision: i64, nodes: &[i32]) -> Arc<ClusterView> {
        let mut v = ClusterView {
            revision,
            ..Default::default()
        };
        for id in nodes {
            v.nodes.insert(
                *id,
                NodeRecord {
                    node_id: *id,
                    ..Default::default()
                },
            );
        }
        Arc::new(v)
    }

    #[tokio::test]
    async fn a_watch_skips_unchanged_metadata_and_stops_when_the_client_goes_away() {
        let (views, views_rx) = watch::channel(view(1, &[0]));
        let (_shutdown, shutdown_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(watch_loop(
            views_rx,
            "c".into(),
            pb::GetMetadataRequest::default(),
            tx,
            shutdown_rx,
        ));
        assert_eq!(rx.recv().await.unwrap().unwrap().nodes.len(), 1);
        // A new revision that changes nothing the client sees (e.g. another coordinator's
        // registration) sends nothing; the next real change does.
        views.send_replace(view(2, &[0]));
        tokio::time::sleep(WATCH_COALESCE * 5).await;
        assert!(rx.try_recv().is_err(), "identical metadata is not resent");
        views.send_replace(view(3, &[0, 1]));
        assert_eq!(rx.recv().await.unwrap().unwrap().nodes.len(), 2);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the task ends without any further view change")
            .unwrap();
    }
}
