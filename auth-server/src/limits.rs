//! Request size limit reporting.
//!
//! tonic refuses a request message over `max_decoding_message_size` with `OUT_OF_RANGE`, but the
//! gRPC spec (and our callers) expect `RESOURCE_EXHAUSTED` for "message too large". This
//! outermost layer rewrites exactly that status; every other response passes untouched.

use std::task::{Context, Poll};

use futures::{TryFutureExt as _, future::MapOk};
use tonic::codegen::http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

/// `grpc-status` of OUT_OF_RANGE.
const OUT_OF_RANGE: &str = "11";
/// `grpc-status` of RESOURCE_EXHAUSTED.
const RESOURCE_EXHAUSTED: &str = "8";

/// Layer producing [`MessageLimit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

/// Maps tonic's "decoded message length too large" to `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
}

// === impl MessageLimit ===

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let too_large = headers
        .get("grpc-status")
        .is_some_and(|s| s == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("too large") || m.contains("too%20large"));
    if too_large {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("request%20message%20larger%20than%2064%20KiB"),
        );
    }
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MessageLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<ResBody>) -> Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.inner
            .call(request)
            .map_ok(rewrite as fn(Response<ResBody>) -> Response<ResBody>)
    }
}
