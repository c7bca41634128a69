//! [`AuthLayer`] and [`RequireAuth`]: a tower middleware that guards tonic services and HTTP
//! (axum) services with a [`Validator`].
//!
//! | token | gRPC request (`content-type: application/grpc…`) | HTTP request |
//! | --- | --- | --- |
//! | missing, malformed or refused | `UNAUTHENTICATED` (with `ErrorInfo` reason) | 401 + `WWW-Authenticate: Bearer` |
//! | valid but lacks the required role (or organization role) | `PERMISSION_DENIED` | 403 |
//! | auth service could not decide | `UNAVAILABLE` | 503 + `Retry-After: 1` |
//! | valid | the inner service, with the [`Principal`] in the request extensions | same |

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt as _};
use tower_layer::Layer;
use tower_service::Service;

use crate::{AuthClientError, Principal, Validator};

/// Layer that wraps services in [`RequireAuth`].
///
/// ```
/// # fn example(validator: auth_client::Validator) {
/// use auth_client::AuthLayer;
/// // Every request needs a valid bearer token of a caller with role `admin`.
/// let layer = AuthLayer::new(validator).require_role("admin");
/// # let _ = layer;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    validator: Validator,
    required_role: Option<Arc<str>>,
    required_org_role: Option<Arc<(OrgFrom, String)>>,
}

/// Where [`AuthLayer::require_org_role`] finds the organization a request is about.
#[derive(Debug, Clone)]
pub enum OrgFrom {
    /// A request header, for example `x-organization-id`.
    Header(http::HeaderName),
    /// A path parameter: the segment of the request path that stands where `{name}` stands
    /// in the pattern, for example `/orgs/{org}/projects` with name `org`. A path that does not
    /// match the pattern names no organization.
    Path {
        /// The route pattern, `/`-separated, with `{param}` segments.
        pattern: String,
        /// The parameter that holds the organization id.
        name: String,
    },
}

impl OrgFrom {
    /// The organization id named by `request`, if any.
    fn find<B>(&self, request: &Request<B>) -> Option<String> {
        match self {
            OrgFrom::Header(name) => {
                let mut values = request.headers().get_all(name).iter();
                let value = values.next()?.to_str().ok()?.trim();
                (values.next().is_none() && !value.is_empty()).then(|| value.to_owned())
            }
            OrgFrom::Path { pattern, name } => {
                let wanted = format!("{{{name}}}");
                let mut path = request.uri().path().trim_end_matches('/').split('/');
                let mut found = None;
                for expected in pattern.trim_end_matches('/').split('/') {
                    let segment = path.next()?;
                    if expected == wanted {
                        found = Some(segment);
                    } else if !(expected.starts_with('{') && expected.ends_with('}'))
                        && expected != segment
                    {
                        return None;
                    }
                }
                if path.next().is_some() {
                    return None;
                }
                found.filter(|s| !s.is_empty()).map(str::to_owned)
            }
        }
    }
}

impl AuthLayer {
    /// Guards with `validator`; any valid token passes.
    pub fn new(validator: Validator) -> Self {
        Self {
            validator,
            required_role: None,
            required_org_role: None,
        }
    }

    /// Also requires the caller to hold `role` (otherwise `PERMISSION_DENIED` / 403).
    #[must_use]
    pub fn require_role(mut self, role: impl Into<Arc<str>>) -> Self {
        self.required_role = Some(role.into());
        self
    }

    /// Also requires the caller to hold `role` in the organization the request names (taken
    /// `from` a header or path parameter), as the token lists it: a request that names no
    /// organization, or one the token does not list with `role`, is `PERMISSION_DENIED` / 403.
    /// Tokens carry memberships as of their issue, so a removal shows at the next refresh;
    /// check your own mirror where that matters.
    ///
    /// ```
    /// # fn example(validator: auth_client::Validator) {
    /// use auth_client::{AuthLayer, OrgFrom};
    /// // `/orgs/{org}/...` needs role `editor` in that organization.
    /// let layer = AuthLayer::new(validator).require_org_role(
    ///     OrgFrom::Path { pattern: "/orgs/{org}/documents".into(), name: "org".into() },
    ///     "editor",
    /// );
    /// # let _ = layer;
    /// # }
    /// ```
    #[must_use]
    pub fn require_org_role(mut self, from: OrgFrom, role: impl Into<String>) -> Self {
        self.required_org_role = Some(Arc::new((from, role.into())));
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            validator: self.validator.clone(),
            required_role: self.required_role.clone(),
            required_org_role: self.required_org_role.clone(),
        }
    }
}

/// A service that lets a request through only with a valid bearer token.
#[derive(Debug, Clone)]
pub struct RequireAuth<S> {
    inner: S,
    validator: Validator,
    required_role: Option<Arc<str>>,
    required_org_role: Option<Arc<(OrgFrom, String)>>,
}

// === impl RequireAuth ===

enum Denial {
    Unauthenticated(String),
    PermissionDenied,
    Unavailable,
}

fn bearer(headers: &HeaderMap) -> Result<String, Denial> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| Denial::Unauthenticated("TOKEN_MISSING".into()))?;
    if values.next().is_some() {
        return Err(Denial::Unauthenticated("AUTHORIZATION_MALFORMED".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| Denial::Unauthenticated("AUTHORIZATION_MALFORMED".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(Denial::Unauthenticated("AUTHORIZATION_MALFORMED".into())),
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn deny<B: Default>(grpc: bool, denial: Denial) -> Response<B> {
    if grpc {
        let status = match denial {
            Denial::Unauthenticated(reason) => tonic::Status::with_error_details(
                Code::Unauthenticated,
                "invalid or missing bearer token",
                ErrorDetails::with_error_info(reason, "auth.v1", HashMap::new()),
            ),
            Denial::PermissionDenied => tonic::Status::permission_denied("missing required role"),
            Denial::Unavailable => tonic::Status::unavailable("auth service unavailable"),
        };
        return status.into_http();
    }
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    *response.status_mut() = match denial {
        Denial::Unauthenticated(reason) => {
            // RFC 6750 3.1: no error code when the request carried no credentials at all.
            let challenge = if reason == "TOKEN_MISSING" {
                "Bearer"
            } else {
                "Bearer error=\"invalid_token\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            StatusCode::UNAUTHORIZED
        }
        Denial::PermissionDenied => StatusCode::FORBIDDEN,
        Denial::Unavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready handles this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        let required_role = self.required_role.clone();
        let required_org_role = self.required_org_role.clone();
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let token = match bearer(request.headers()) {
                Ok(token) => token,
                Err(denial) => return Ok(deny(grpc, denial)),
            };
            let principal: Principal = match validator.validate(&token).await {
                Ok(principal) => principal,
                Err(AuthClientError::Unauthenticated { reason, .. }) => {
                    return Ok(deny(grpc, Denial::Unauthenticated(reason)));
                }
                Err(AuthClientError::PermissionDenied(_)) => {
                    return Ok(deny(grpc, Denial::PermissionDenied));
                }
                Err(_) => return Ok(deny(grpc, Denial::Unavailable)),
            };
            if let Some(role) = &required_role
                && !principal.has_role(role)
            {
                return Ok(deny(grpc, Denial::PermissionDenied));
            }
            if let Some(required) = &required_org_role {
                let (from, role) = &**required;
                let allowed = from
                    .find(&request)
                    .is_some_and(|org| principal.has_org_role(&org, role));
                if !allowed {
                    return Ok(deny(grpc, Denial::PermissionDenied));
                }
            }
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(from: &OrgFrom, uri: &str, header: Option<&str>) -> Option<String> {
        let mut request = Request::builder().uri(uri);
        if let Some(value) = header {
            request = request.header("x-org", value);
        }
        from.find(&request.body(()).expect("request"))
    }

    #[test]
    fn the_organization_comes_from_the_named_path_parameter_or_header() {
        let path = OrgFrom::Path {
            pattern: "/orgs/{org}/projects/{project}".into(),
            name: "org".into(),
        };
        assert_eq!(
            org(&path, "/orgs/o1/projects/p1", None).as_deref(),
            Some("o1")
        );
        assert_eq!(
            org(&path, "/orgs/o1/projects/p1/", None).as_deref(),
            Some("o1")
        );
        assert_eq!(
            org(&path, "/orgs/o1/projects/p1?x=1", None).as_deref(),
            Some("o1")
        );
        for miss in [
            "/orgs/o1/projects",
            "/orgs/o1/projects/p1/x",
            "/teams/o1/projects/p1",
            "/orgs//projects/p1",
        ] {
            assert_eq!(org(&path, miss, None), None, "{miss}");
        }
        let header = OrgFrom::Header(http::HeaderName::from_static("x-org"));
        assert_eq!(org(&header, "/", Some(" o2 ")).as_deref(), Some("o2"));
        assert_eq!(org(&header, "/", Some("")), None);
        assert_eq!(org(&header, "/", None), None);
    }
}
