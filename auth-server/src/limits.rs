//! Request limits: size limit reporting, and per-RPC-class concurrency and deadlines.
//!
//! tonic refuses a request message over `max_decoding_message_size` with `OUT_OF_RANGE`, but the
//! gRPC spec (and our callers) expect `RESOURCE_EXHAUSTED` for "message too large". This
//! outermost layer rewrites exactly that status; every other response passes untouched.
//!
//! A call takes a slot of its class only once its whole request has arrived (every request of
//! this API is one message of at most 64 KiB): a client that sends HEADERS and then nothing
//! holds no slot, and is ended after [`REQUEST_BODY_TIMEOUT`]. Health checks take no slot at
//! all, so no flood of any class can make a load balancer think the server is down. With the
//! per-connection stream cap (`--max-streams-per-connection`), one connection cannot hold more
//! than that many stalled streams either.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{TryFutureExt as _, future::MapOk};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    Status,
    body::Body,
    codegen::http::{HeaderValue, Request, Response},
};

use tower_layer::Layer;
use tower_service::Service;

use crate::log_limit::LogThrottle;

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Password class: concurrency and deadline.
    pub password: (usize, Duration),
    /// Validate class.
    pub validate: (usize, Duration),
    /// Admin class.
    pub admin: (usize, Duration),
    /// Everything else (logout, health, reflection): concurrency and deadline.
    pub other: (usize, Duration),
    /// Streams at most (no deadline).
    pub max_streams: usize,
    /// Concurrent HTTP/2 streams one connection may open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub streams_per_connection: u32,
    /// Open connections at most (waiting for their first bytes or served).
    pub max_connections: usize,
    /// HTTP/2 keepalive interval.
    pub keepalive: Duration,
}

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

// === Per-class concurrency and deadlines ===

/// Which budget an RPC draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcClass {
    /// Calls that hash a password or guard a secret (also rate-limited per client address).
    Password,
    /// Token checks.
    Validate,
    /// AdminService.
    Admin,
    /// Server streams (no deadline; the permit lives as long as the stream).
    Stream,
    /// Logout, reflection.
    Other,
    /// `grpc.health.v1.Health`: no concurrency budget (cheap, and must answer under any flood).
    Health,
    /// Server reflection: a bidirectional stream, so its request is not awaited whole; a budget
    /// of its own (the size of `Other`'s), so stalled reflection streams starve nothing else.
    Reflection,
    /// `AdminService/ImportUsers`: a client stream, so its request is not awaited whole and it
    /// has no deadline (the handler ends a stream idle for [`IMPORT_IDLE_TIMEOUT`]); at most
    /// [`MAX_IMPORTS`] at once.
    Import,
}

/// Imports running at once at most.
pub const MAX_IMPORTS: usize = 2;
/// How long an import stream may go without a message.
pub const IMPORT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a call's request message may take to arrive after its headers.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The class of a request path: the one table of which RPC is which class. `ClassLimit`
/// puts the class into the request's extensions for the handlers.
pub fn classify(path: &str) -> RpcClass {
    let Some(method) = path.strip_prefix("/auth.v1.AuthService/") else {
        return if path == "/auth.v1.AdminService/ImportUsers" {
            RpcClass::Import
        } else if path.starts_with("/auth.v1.AdminService/") {
            RpcClass::Admin
        } else if path.starts_with("/grpc.health.v1.Health/") {
            RpcClass::Health
        } else if path.starts_with("/grpc.reflection.") {
            RpcClass::Reflection
        } else {
            RpcClass::Other
        };
    };
    match method {
        "Validate" | "GetPublicKeys" => RpcClass::Validate,
        "UserEvents" | "UserSnapshot" => RpcClass::Stream,
        "Logout" | "GetMe" | "ListMySessions" | "RevokeMySessions" => RpcClass::Other,
        _ => RpcClass::Password,
    }
}

struct ClassBudget {
    permits: Arc<Semaphore>,
    timeout: Option<Duration>,
    refusals: LogThrottle,
    overruns: LogThrottle,
}

impl ClassBudget {
    fn new(permits: usize, timeout: Option<Duration>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            timeout,
            refusals: LogThrottle::new(),
            overruns: LogThrottle::new(),
        }
    }
}

/// Layer producing [`ClassLimit`].
#[derive(Clone)]
pub struct ClassLimitLayer {
    budgets: Arc<[ClassBudget; 8]>,
    max_body: usize,
}

impl std::fmt::Debug for ClassLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassLimitLayer")
    }
}

impl ClassLimitLayer {
    /// Budgets from the settings; requests over `max_message` bytes are RESOURCE_EXHAUSTED.
    pub fn new(limits: &LimitSettings, max_message: usize) -> Self {
        let budget = |(n, timeout): (usize, Duration)| ClassBudget::new(n, Some(timeout));
        Self {
            // In `RpcClass` order.
            budgets: Arc::new([
                budget(limits.password),
                budget(limits.validate),
                budget(limits.admin),
                ClassBudget::new(limits.max_streams, None),
                budget(limits.other),
                ClassBudget::new(Semaphore::MAX_PERMITS, Some(limits.other.1)),
                budget(limits.other),
                ClassBudget::new(MAX_IMPORTS, None),
            ]),
            // A gRPC message is framed with a 5-byte header.
            max_body: max_message + 5,
        }
    }
}

impl<S> Layer<S> for ClassLimitLayer {
    type Service = ClassLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassLimit {
            inner,
            budgets: Arc::clone(&self.budgets),
            max_body: self.max_body,
        }
    }
}

/// Sheds calls over their class's concurrency and ends those past its deadline.
#[derive(Clone)]
pub struct ClassLimit<S> {
    inner: S,
    budgets: Arc<[ClassBudget; 8]>,
    max_body: usize,
}

impl<S> std::fmt::Debug for ClassLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassLimit")
    }
}

/// A response body that holds its class permit until the body ends (streams).
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// === impl ClassLimit ===

/// Why a request body was not taken.
enum BodyRefused {
    TooLarge,
    Broken,
}

/// The whole request body, at most `max` bytes.
async fn collect_body(mut body: Body, max: usize) -> Result<bytes::Bytes, BodyRefused> {
    use http_body_util::BodyExt as _;
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyRefused::Broken)?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > max {
                return Err(BodyRefused::TooLarge);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

impl<S> Service<Request<Body>> for ClassLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let class = classify(request.uri().path());
        // The handlers read the class from here (the rate limit applies to the password class),
        // so which RPC is expensive is decided once, by `classify`.
        request.extensions_mut().insert(class);
        let budgets = Arc::clone(&self.budgets);
        let max_body = self.max_body;
        // The service that was polled ready goes into the future; a clone stays here.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            if matches!(class, RpcClass::Reflection | RpcClass::Import) {
                return limited(
                    &budgets[class as usize],
                    class,
                    inner,
                    Request::from_parts(parts, body),
                )
                .await;
            }
            let body = match tokio::time::timeout(
                REQUEST_BODY_TIMEOUT,
                collect_body(body, max_body),
            )
            .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(BodyRefused::TooLarge)) => {
                    return Ok(
                        Status::resource_exhausted("request message larger than 64 KiB")
                            .into_http(),
                    );
                }
                Ok(Err(BodyRefused::Broken)) => {
                    return Ok(Status::cancelled("the request body was cut off").into_http());
                }
                Err(_) => {
                    return Ok(Status::deadline_exceeded(
                        "the request message did not arrive within 5 s of its headers",
                    )
                    .into_http());
                }
            };
            let request = Request::from_parts(parts, Body::new(http_body_util::Full::new(body)));
            limited(&budgets[class as usize], class, inner, request).await
        })
    }
}

/// Runs `request` on a slot of `budget` (or refuses it at once) within the class deadline; a
/// stream's response body keeps the slot until it ends.
async fn limited<S>(
    budget: &ClassBudget,
    class: RpcClass,
    mut inner: S,
    request: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let Ok(permit) = Arc::clone(&budget.permits).try_acquire_owned() else {
        crate::throttled!(
            budget.refusals,
            warn,
            ?class,
            "concurrency limit reached; calls refused (logged at most every 10 s)"
        );
        let status =
            Status::resource_exhausted("too many concurrent calls of this kind; retry shortly");
        return Ok(status.into_http());
    };
    let future = inner.call(request);
    let response = match budget.timeout {
        Some(limit) => match tokio::time::timeout(limit, future).await {
            Ok(response) => response,
            Err(_) => {
                crate::throttled!(
                    budget.overruns,
                    warn,
                    ?class,
                    limit_ms = limit.as_millis() as u64,
                    "call deadline exceeded (logged at most every 10 s)"
                );
                return Ok(Status::deadline_exceeded(
                    "the call took longer than this server allows",
                )
                .into_http());
            }
        },
        None => future.await,
    }?;
    if matches!(class, RpcClass::Stream | RpcClass::Reflection) {
        return Ok(response.map(|body| {
            Body::new(PermitBody {
                inner: body,
                _permit: permit,
            })
        }));
    }
    drop(permit);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_classes() {
        assert_eq!(classify("/auth.v1.AuthService/Login"), RpcClass::Password);
        assert_eq!(
            classify("/auth.v1.AuthService/CompleteMfaLogin"),
            RpcClass::Password
        );
        assert_eq!(
            classify("/auth.v1.AuthService/Validate"),
            RpcClass::Validate
        );
        assert_eq!(
            classify("/auth.v1.AuthService/UserEvents"),
            RpcClass::Stream
        );
        assert_eq!(classify("/auth.v1.AdminService/ListUsers"), RpcClass::Admin);
        assert_eq!(classify("/grpc.health.v1.Health/Check"), RpcClass::Health);
        assert_eq!(classify("/grpc.health.v1.Health/Watch"), RpcClass::Health);
        assert_eq!(
            classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            RpcClass::Reflection
        );
        assert_eq!(classify("/auth.v1.AuthService/Logout"), RpcClass::Other);
        assert_eq!(classify("/auth.v1.AuthService/GetMe"), RpcClass::Other);
        assert_eq!(
            classify("/auth.v1.AuthService/RevokeMySessions"),
            RpcClass::Other
        );
    }
}
