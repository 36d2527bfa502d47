//! What every Sluice gRPC server shares: reflection that lists the port's own services (v1 and
//! v1alpha; many tools speak only v1alpha), and one request metrics layer with the same labels
//! on every port.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sluice_requests_total` | counter | `api` (the method, e.g. `CreateTopic`), `code` (`OK`, the Sluice error code, or the gRPC code of an error without one) |
//! | `sluice_request_duration_seconds` | histogram | `api` |
//!
//! A unary call is measured whole. A streaming call is counted when it opens, and each request
//! it carries (a `ProduceStream` message) is measured by [`observe`] under the stream's method.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use metrics::SharedString;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::error::{ApiError, error_detail};
use crate::pb;

/// The v1 and v1alpha reflection services of a port serving `services` (fully qualified, e.g.
/// `sluice.v1.Log`). Health and reflection itself are listed too; descriptors of every Sluice
/// proto are registered so any message type resolves.
#[allow(clippy::type_complexity)]
pub fn reflection(
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for s in services {
            b = b.with_service_name(*s);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Counts and times one request by its outcome. Static labels (every request on a stream)
/// cost no allocation.
fn record(api: SharedString, code: SharedString, start: Instant) {
    metrics::counter!("sluice_requests_total", "api" => api.clone(), "code" => code).increment(1);
    metrics::histogram!("sluice_request_duration_seconds", "api" => api)
        .record(start.elapsed().as_secs_f64());
}

/// Measures one request carried inside a stream (see the module docs).
pub async fn observe<T>(
    api: &'static str,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let start = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code.as_str_name(),
    };
    record(
        SharedString::const_str(api),
        SharedString::const_str(code),
        start,
    );
    result
}

/// Wraps a server's services with [`Metered`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered { inner }
    }
}

/// Counts and times the requests of the wrapped service.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
}

/// The method name of a gRPC path (`/sluice.v1.Admin/CreateTopic` → `CreateTopic`).
fn api_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The `code` label of an answer's headers: an error answer carries its status there
/// (trailers-only); a success carries it in the trailers, which come after the measurement.
fn code_of(headers: &http::HeaderMap) -> String {
    match tonic::Status::from_header_map(headers) {
        None => "OK".into(),
        Some(s) if s.code() == tonic::Code::Ok => "OK".into(),
        Some(s) => match error_detail(&s) {
            Some(d) => pb::ErrorCode::try_from(d.code)
                .map_or_else(|_| "INTERNAL".into(), |c| c.as_str_name().to_string()),
            None => format!("{:?}", s.code()).to_uppercase(),
        },
    }
}

impl<S, B, R> Service<http::Request<B>> for Metered<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = api_of(req.uri().path());
        let start = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(resp) => code_of(resp.headers()),
                Err(_) => "UNAVAILABLE".to_string(),
            };
            record(api.into(), code.into(), start);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_label_is_the_method_name() {
        assert_eq!(api_of("/sluice.v1.Admin/CreateTopic"), "CreateTopic");
    }

    #[test]
    fn the_code_label_is_the_sluice_code_of_an_error_answer() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), "OK");
        let status = ApiError::new(pb::ErrorCode::NotLeader, "moved").to_status();
        status.add_header(&mut headers).unwrap();
        assert_eq!(code_of(&headers), "NOT_LEADER");
        let mut headers = http::HeaderMap::new();
        tonic::Status::unavailable("gone")
            .add_header(&mut headers)
            .unwrap();
        assert_eq!(code_of(&headers), "UNAVAILABLE");
    }
}
