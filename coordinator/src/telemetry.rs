//! Request metrics for every gRPC call a coordinator serves, as a tower layer around the
//! server: `sluice_requests_total{api}` and `sluice_request_duration_seconds{api}` (time to the
//! response headers, which for unary calls is the handler's whole run). `api` is the method name.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::codegen::http;
use tower::{Layer, Service};

/// Wraps a service with [`Metered`].
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
            metrics::counter!("sluice_requests_total", "api" => api.clone()).increment(1);
            metrics::histogram!("sluice_request_duration_seconds", "api" => api)
                .record(start.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_label_is_the_method_name() {
        assert_eq!(super::api_of("/sluice.v1.Admin/CreateTopic"), "CreateTopic");
    }
}
