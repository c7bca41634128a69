//! CORS for browsers that call the gRPC-Web endpoints, from an allowlist of exact origins
//! (`--cors-allow-origin`, none by default). The outermost layer:
//!
//! - A request without `Origin` (grpcurl, auth-client, any native gRPC client) passes untouched.
//! - A request from an allowed origin passes, and its answer says so: the origin echoed (never
//!   `*`), credentials allowed, and `grpc-status`, `grpc-message` and
//!   `grpc-status-details-bin` exposed so the page can read the status and the error details.
//!   A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here, 204.
//! - A request from any other origin is refused here with HTTP 403 and no CORS headers: the
//!   browser reports a CORS error and no handler runs, preflight or not.
//!
//! Browsers send `Origin` with every cross-origin request and with same-origin `POST`s too, so
//! a page served from the same host as the service must be listed as well.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    codegen::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header},
};
use tower_layer::Layer;
use tower_service::Service;

/// Request headers a gRPC-Web or Connect client sends, allowed in preflights.
const ALLOW_HEADERS: &str = "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, \
     grpc-accept-encoding, grpc-encoding, connect-protocol-version, connect-timeout-ms";
/// Response headers a page may read.
const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, grpc-encoding";
/// How long (s) a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "7200";

/// The origins allowed to call from a browser.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Arc<[String]>);

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl AllowedOrigins {
    /// Checks and normalizes each origin: `http://` or `https://`, a host, an optional port,
    /// nothing else (no path, no `*`, not `null`).
    pub fn parse(origins: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::with_capacity(origins.len());
        for origin in origins {
            let origin = origin.trim();
            if origin.is_empty() {
                continue;
            }
            let lower = origin.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("CORS origin {origin:?} must start with http:// or https://")
                })?;
            let (host, port) = if rest.starts_with('[') {
                match rest.split_once(']') {
                    Some((v6, "")) => (v6, None),
                    Some((v6, after)) => (v6, Some(after.strip_prefix(':').unwrap_or("x"))),
                    None => ("", None),
                }
            } else {
                match rest.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (rest, None),
                }
            };
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !host_ok || !port_ok {
                return Err(format!(
                    "CORS origin {origin:?} must be scheme://host[:port] with nothing after it \
                     (no path, no trailing slash, no wildcard)"
                ));
            }
            if !allowed.contains(&lower) {
                allowed.push(lower);
            }
        }
        Ok(Self(allowed.into()))
    }

    /// No origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.0.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)))
    }
}

/// Layer producing [`Cors`].
#[derive(Debug, Clone, Default)]
pub struct CorsLayer {
    origins: AllowedOrigins,
}

impl CorsLayer {
    /// CORS for `origins`.
    pub fn new(origins: AllowedOrigins) -> Self {
        Self { origins }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            origins: self.origins.clone(),
        }
    }
}

/// Answers preflights, refuses unknown origins, marks allowed answers.
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    origins: AllowedOrigins,
}

fn vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    vary(headers);
}

fn immediate(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        if !self.origins.allows(&origin) {
            tracing::debug!(origin = ?origin, path = request.uri().path(), "request from an origin not on the CORS allowlist refused");
            let mut response = immediate(StatusCode::FORBIDDEN);
            vary(response.headers_mut());
            return Box::pin(std::future::ready(Ok(response)));
        }
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let mut response = immediate(StatusCode::NO_CONTENT);
            let headers = response.headers_mut();
            allow(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
            return Box::pin(std::future::ready(Ok(response)));
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            allow(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(origins: &[&str]) -> Result<AllowedOrigins, String> {
        AllowedOrigins::parse(&origins.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn origins_are_exact_scheme_host_port() {
        let ok = parse(&[
            "http://127.0.0.1:8080",
            "https://App.Example.com",
            "http://[::1]:3000",
            "https://app.example.com",
        ])
        .expect("valid");
        assert_eq!(ok.0.len(), 3, "{ok:?}");
        assert!(ok.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(ok.allows(&HeaderValue::from_static("http://[::1]:3000")));
        assert!(!ok.allows(&HeaderValue::from_static("http://127.0.0.1:8081")));
        assert!(!ok.allows(&HeaderValue::from_static("null")));
        for bad in [
            "*",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://",
            "http://host:0",
            "http://host:99999",
            "https://*.example.com",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad} accepted");
        }
        assert!(parse(&[]).expect("empty").is_empty());
    }
}
