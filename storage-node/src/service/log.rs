//! The `Log` gRPC service: a screenful of adapters over produce, fetch, list-offsets,
//! delete-records and the leader side of replication (request metrics come from the server's layer).

use sluice_proto::mux::server::{Answers, serve};
use sluice_proto::pb::{self, log_server::Log};
use tonic::{Request, Response, Status, Streaming};

use super::{
    LogService, delete_records, describe_replicas, fetch, produce, replicate_many, streams,
};

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        Ok(Response::new(
            produce::produce(self, req.into_inner()).await?,
        ))
    }

    async fn produce_many(
        &self,
        req: Request<pb::ProduceManyRequest>,
    ) -> Result<Response<pb::ProduceManyResponse>, Status> {
        Ok(Response::new(
            produce::produce_many(self, req.into_inner()).await?,
        ))
    }

    type ProduceStreamStream = Answers<pb::ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        metrics::counter!("sluice_produce_streams_total").increment(1);
        let handler = streams::Producing(self.clone());
        Ok(Response::new(serve(
            req.into_inner(),
            handler,
            streams::PRODUCE_LIMITS,
            self.closed(),
        )))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        Ok(Response::new(fetch::fetch(self, req.into_inner()).await?))
    }

    type SubscribeManyStream = Answers<pb::SubscribePushes>;

    async fn subscribe_many(
        &self,
        req: Request<Streaming<pb::SubscribeControl>>,
    ) -> Result<Response<Self::SubscribeManyStream>, Status> {
        metrics::counter!("sluice_subscription_streams_total").increment(1);
        let handler = streams::Subscribing(self.clone());
        Ok(Response::new(serve(
            req.into_inner(),
            handler,
            streams::SUBSCRIBE_LIMITS,
            self.closed(),
        )))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new(
            fetch::list_offsets(self, req.into_inner()).await?,
        ))
    }

    async fn delete_records(
        &self,
        req: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        Ok(Response::new(
            delete_records::delete_records(self, req.into_inner()).await?,
        ))
    }

    async fn describe_replicas(
        &self,
        req: Request<pb::DescribeReplicasRequest>,
    ) -> Result<Response<pb::DescribeReplicasResponse>, Status> {
        Ok(Response::new(
            describe_replicas::describe_replicas(self, req.into_inner()).await?,
        ))
    }

    type ReplicateManyStream = Answers<pb::ReplicaChunks>;

    async fn replicate_many(
        &self,
        req: Request<Streaming<pb::ReplicaAcks>>,
    ) -> Result<Response<Self::ReplicateManyStream>, Status> {
        metrics::counter!("sluice_replication_streams_total").increment(1);
        let handler = replicate_many::Leading::new(self);
        Ok(Response::new(serve(
            req.into_inner(),
            handler,
            replicate_many::LIMITS,
            self.closed(),
        )))
    }
}
