//! The Kafka listener: every storage node speaks Kafka's wire protocol beside gRPC, on the same
//! data. A thin adapter: frames are decoded with the `kafka-protocol` crate, and each request is
//! answered from the node's watch-fed view and the same service code the gRPC handlers use.
//!
//! One task per connection reads a frame (a big-endian `i32` size, then the request), answers
//! it and reads the next, so answers leave in request order as Kafka requires. A frame larger
//! than [`MAX_FRAME`], a header that does not decode, or an API key this node does not know
//! closes the connection (there is no answer it could be given); every other request is
//! answered, with an error code where it cannot be served.

mod api_versions;
mod errors;
mod fetch;
mod metadata;
mod produce;

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::service::LogService;

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default).
pub const MAX_FRAME: usize = 100 << 20;

/// What the listener answers from.
pub struct KafkaContext {
    /// The node's services (view, replicas, produce and fetch).
    pub svc: LogService,
    /// The cluster id Kafka clients see.
    pub cluster_id: String,
}

/// Accepts connections until the task is aborted, which ends every connection with it.
pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "accepting a Kafka connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        connections.spawn(async move {
            if let Err(error) = connection(stream, &ctx).await {
                tracing::debug!(%peer, %error, "Kafka connection closed");
            }
        });
    }
}

/// Serves one connection until the client closes it or sends something that cannot be answered.
async fn connection(mut stream: TcpStream, ctx: &KafkaContext) -> anyhow::Result<()> {
    loop {
        let mut size = [0u8; 4];
        match stream.read_exact(&mut size).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let size = i32::from_be_bytes(size);
        let Ok(size) = usize::try_from(size) else {
            anyhow::bail!("negative frame size {size}");
        };
        if size > MAX_FRAME {
            anyhow::bail!("frame of {size} bytes is larger than {MAX_FRAME}");
        }
        let mut frame = vec![0u8; size];
        stream.read_exact(&mut frame).await?;
        // A request answered by nothing (produce with acks=0) gets no frame back.
        if let Some(answer) = answer(ctx, Bytes::from(frame)).await? {
            stream.write_all(&answer).await?;
        }
    }
}

/// One request's framed answer (none for produce with acks=0), or why the connection closes.
async fn answer(ctx: &KafkaContext, mut frame: Bytes) -> anyhow::Result<Option<Bytes>> {
    if frame.len() < 4 {
        anyhow::bail!("a frame of {} bytes has no request header", frame.len());
    }
    let (key, version) = (frame.clone().get_i16(), (&frame[2..4]).get_i16());
    let Ok(api) = ApiKey::try_from(key) else {
        anyhow::bail!("unknown API key {key}");
    };
    if api == ApiKey::ApiVersions {
        return api_versions::answer(&mut frame, version).map(Some);
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))?;
    let id = header.correlation_id;
    match api {
        ApiKey::Metadata if api_versions::served(api, version) => {
            let req = Decodable::decode(&mut frame, version)?;
            respond(api, version, id, &metadata::answer(ctx, &req)).map(Some)
        }
        ApiKey::Fetch if api_versions::served(api, version) => {
            let req = Decodable::decode(&mut frame, version)?;
            respond(api, version, id, &fetch::answer(ctx, &req).await).map(Some)
        }
        ApiKey::ListOffsets if api_versions::served(api, version) => {
            let req = Decodable::decode(&mut frame, version)?;
            respond(api, version, id, &fetch::list_offsets(ctx, &req).await).map(Some)
        }
        ApiKey::Produce if api_versions::served(api, version) => {
            let req = Decodable::decode(&mut frame, version)?;
            match produce::answer(ctx, &req).await {
                Some(body) => respond(api, version, id, &body).map(Some),
                None => Ok(None),
            }
        }
        _ => anyhow::bail!("API {api:?} v{version} is not served by this node"),
    }
}

/// `body` framed as the answer to request `correlation_id` of `api` at `version`.
fn respond<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut out, api.response_header_version(version))?;
    body.encode(&mut out, version)?;
    let size = i32::try_from(out.len() - 4)?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}
