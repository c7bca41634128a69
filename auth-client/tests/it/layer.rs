//! The AuthLayer in front of an axum router and a tonic service.

use std::time::Duration;

use auth_client::{AuthLayer, Principal};
use axum::{Extension, Router, body::Body, routing::get};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tonic::{Code, transport::Server as TonicServer};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tower::ServiceExt as _;

use crate::helpers::*;

async fn me(Extension(principal): Extension<Principal>) -> String {
    format!("{} {}", principal.user_id, principal.roles.join(","))
}

async fn get_me(
    router: &Router,
    authorization: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().uri("/me");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_on_an_axum_router_answers_401_403_503_and_200_with_the_principal() {
    let mut server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    server
        .account_with_roles("admin@example.com", &["admin"])
        .await;
    let user = server.user("user@example.com").await;
    let admin = server
        .client()
        .login("admin@example.com", PASSWORD)
        .await
        .expect("login")
        .into_session()
        .expect("no MFA on this account");
    let validator = server.validator(Duration::from_secs(60), Duration::ZERO);
    let open = Router::new()
        .route("/me", get(me))
        .layer(AuthLayer::new(validator.clone()));
    let admins = Router::new()
        .route("/me", get(me))
        .layer(AuthLayer::new(validator.clone()).require_role("admin"));

    // No credentials: a bare challenge (RFC 6750: no error code); bad ones: invalid_token.
    let (status, headers, _) = get_me(&open, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    for bad in [
        "Bearer garbage",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        &user.access_token,
    ] {
        let (status, headers, _) = get_me(&open, Some(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer error=\"invalid_token\""),
            "{bad}"
        );
    }
    let (status, _, body) = get_me(&open, Some(&format!("Bearer {}", user.access_token))).await;
    assert_eq!(status, StatusCode::OK);
    let user_id = user.user.as_ref().map(|u| u.id.clone()).expect("user");
    assert_eq!(body, format!("{user_id} "));

    assert_eq!(
        get_me(&admins, Some(&format!("Bearer {}", user.access_token)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, _, body) = get_me(&admins, Some(&format!("Bearer {}", admin.access_token))).await;
    assert_eq!((status, body.ends_with(" admin")), (StatusCode::OK, true));

    // The auth service goes away: a token it never saw cannot be decided.
    server.stop().await;
    let other = "v4.public.eyJzdWIiOiJub2JvZHkifQ";
    let (status, headers, _) = get_me(&open, Some(&format!("Bearer {other}"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get(header::RETRY_AFTER).is_some());
    // A token validated a moment ago is still fresh.
    assert_eq!(
        get_me(&open, Some(&format!("Bearer {}", user.access_token)))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_on_a_tonic_service_answers_grpc_codes() {
    let mut server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let user = server.user("grpc@example.com").await;
    let validator = server.validator(Duration::from_secs(60), Duration::ZERO);

    // A tonic service (the health service) behind the layer, on its own port.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        TonicServer::builder()
            .layer(AuthLayer::new(validator))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    let check = |token: Option<String>| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            if let Some(token) = token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii"),
                );
            }
            client.check(request).await.map(|_| ())
        }
    };
    assert_eq!(
        check(None).await.expect_err("no token").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        check(Some("garbage".into()))
            .await
            .expect_err("garbage")
            .code(),
        Code::Unauthenticated
    );
    check(Some(user.access_token.clone()))
        .await
        .expect("valid token passes");
    server.stop().await;
    assert_eq!(
        check(Some("v4.public.unseen".into()))
            .await
            .expect_err("undecided")
            .code(),
        Code::Unavailable
    );
}

async fn fetch(
    router: &Router,
    uri: &str,
    token: &str,
    org_header: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(org) = org_header {
        request = request.header("x-organization-id", org);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_requires_an_organization_role_named_by_the_path_or_a_header() {
    use auth_client::OrgFrom;
    use auth_server::testkit::bearer;

    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let (mut admin, root) = server.admin("root@example.com").await;
    let editor = server.user("editor@example.com").await;
    let viewer = server.user("viewer@example.com").await;
    let org_of = |name: &str| {
        let request = auth_client::pb::CreateOrganizationRequest {
            name: name.into(),
            ..Default::default()
        };
        let mut admin = admin.clone();
        let root = root.clone();
        async move {
            admin
                .create_organization(bearer(request, &root))
                .await
                .expect("create")
                .into_inner()
                .organization
                .expect("org")
                .id
        }
    };
    let acme = org_of("Acme").await;
    let other = org_of("Other").await;
    for (session, role) in [(&editor, "editor"), (&viewer, "viewer")] {
        let request = auth_client::pb::AddMemberRequest {
            organization_id: acme.clone(),
            user_id: session.user.as_ref().map(|u| u.id.clone()).expect("user"),
            roles: vec![role.into()],
        };
        admin
            .add_member(bearer(request, &root))
            .await
            .expect("add member");
    }
    // Memberships reach tokens at the next refresh.
    let client = server.client();
    let editor = client
        .refresh(&editor.refresh_token)
        .await
        .expect("refresh");
    let viewer = client
        .refresh(&viewer.refresh_token)
        .await
        .expect("refresh");

    async fn roles(Extension(p): Extension<Principal>) -> String {
        format!("{:?}", p.organizations)
    }
    for offline in [false, true] {
        let validator = auth_client::Validator::builder(server.client())
            .offline(offline)
            .build();
        let by_path = Router::new().route("/orgs/{org}/docs", get(roles)).layer(
            AuthLayer::new(validator.clone()).require_org_role(
                OrgFrom::Path {
                    pattern: "/orgs/{org}/docs".into(),
                    name: "org".into(),
                },
                "editor",
            ),
        );
        let by_header = Router::new().route("/docs", get(roles)).layer(
            AuthLayer::new(validator).require_org_role(
                OrgFrom::Header("x-organization-id".parse().expect("name")),
                "editor",
            ),
        );
        let path = format!("/orgs/{acme}/docs");
        let (status, body) = fetch(&by_path, &path, &editor.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "offline {offline}");
        assert!(body.contains(&acme) && body.contains("editor"), "{body}");
        assert_eq!(
            fetch(&by_path, &path, &viewer.access_token, None).await.0,
            StatusCode::FORBIDDEN,
            "a member without the role"
        );
        assert_eq!(
            fetch(
                &by_path,
                &format!("/orgs/{other}/docs"),
                &editor.access_token,
                None
            )
            .await
            .0,
            StatusCode::FORBIDDEN,
            "another organization"
        );
        assert_eq!(
            fetch(&by_header, "/docs", &editor.access_token, Some(&acme))
                .await
                .0,
            StatusCode::OK
        );
        for header in [None, Some(other.as_str()), Some("")] {
            assert_eq!(
                fetch(&by_header, "/docs", &editor.access_token, header)
                    .await
                    .0,
                StatusCode::FORBIDDEN,
                "{header:?}"
            );
        }
    }
}
