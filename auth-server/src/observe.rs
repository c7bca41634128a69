//! The outermost gRPC layer: one `tracing` span per request (method, status code, user id
//! where known; never a token or password) and the request count and latency metrics.
//!
//! The status is read from the response head: errors carry `grpc-status` there ("trailers
//! only"), a response that starts normally is counted as `OK` (for a stream: the latency is the
//! time until the stream starts).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tonic::codegen::http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument as _, field::Empty};

use crate::metrics::Metrics;

/// Layer producing [`Observe`].
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Metrics>,
}

impl ObserveLayer {
    /// Spans always; metrics when given.
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Traces and counts every request.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Metrics>,
}

/// gRPC status names by code number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The method label: our services' paths as they are, anything else as `other` (a client
/// cannot blow up the metric's cardinality with made-up paths).
fn method_label(path: &str) -> &str {
    let known = ["/auth.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    if path.len() <= 96 && known.iter().any(|p| path.starts_with(p)) {
        path
    } else {
        "other"
    }
}

// === impl Observe ===

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path()).to_owned();
        let (service, rpc) = method
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %method.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
            rpc.grpc.status_code = Empty,
            user_id = Empty,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        let start = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let name = CODE_NAMES.get(code).copied().unwrap_or("UNKNOWN");
                    let current = tracing::Span::current();
                    current.record("rpc.grpc.status_code", code);
                    if code != 0 {
                        current.record("otel.status_code", "ERROR");
                    }
                    if let Some(metrics) = metrics {
                        metrics.observe_rpc(&method, name, start.elapsed());
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Records the user a request acts for on the request's span (no-op outside one).
pub fn record_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}
