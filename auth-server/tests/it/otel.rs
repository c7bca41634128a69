//! OpenTelemetry: the real binary exports spans over OTLP/gRPC to an in-process receiver; a
//! caller's `traceparent` continues its trace; no span attribute holds a secret.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use tonic::{Request, Response, Status, metadata::MetadataValue, transport::Channel};

use crate::helpers::PASSWORD;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_and_continue_the_callers_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-registration",
        ])
        .env("AUTH_DATA_DIR", dir.path())
        .env("AUTH_ARGON2_MEMORY_KIB", "256")
        .env("AUTH_ARGON2_ITERATIONS", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_SERVICE_NAME", "auth-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .connect()
            .await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = AuthServiceClient::new(channel.expect("server up"));
    client
        .register(pb::RegisterRequest {
            email: "otel@example.com".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .expect("register");
    let login = client
        .login(traced(pb::LoginRequest {
            email: "otel@example.com".into(),
            password: PASSWORD.into(),
        }))
        .await
        .expect("login")
        .into_inner();
    let validated = client
        .validate(traced(pb::ValidateRequest {
            token: login.access_token.clone(),
        }))
        .await
        .expect("validate")
        .into_inner();
    let _ = client
        .login(pb::LoginRequest {
            email: "otel@example.com".into(),
            password: "a wrong password".into(),
        })
        .await;

    // SIGTERM: the server drains and flushes its spans on the way out.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;

    let named = |name: &str| {
        receiver
            .spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, s)| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if named("auth.v1.AuthService/Validate").len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logins = named("auth.v1.AuthService/Login");
    assert_eq!(logins.len(), 2, "both logins exported");
    let (service, login_span) = logins
        .iter()
        .find(|(_, s)| hex(&s.trace_id) == TRACE_ID)
        .cloned()
        .expect("the traced login continues the caller's trace");
    assert_eq!(service, "auth-under-test");
    assert_eq!(hex(&login_span.parent_span_id), PARENT_ID);
    assert_eq!(attr(&login_span, "rpc.method").as_deref(), Some("Login"));
    assert_eq!(
        attr(&login_span, "rpc.service").as_deref(),
        Some("auth.v1.AuthService")
    );
    assert_eq!(
        attr(&login_span, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(
        attr(&login_span, "user_id"),
        Some(validated.user_id.clone())
    );
    let failed = logins
        .iter()
        .find(|(_, s)| hex(&s.trace_id) != TRACE_ID)
        .expect("the untraced login has its own trace");
    assert_eq!(
        attr(&failed.1, "rpc.grpc.status_code").as_deref(),
        Some("16")
    );

    let validate = &named("auth.v1.AuthService/Validate")[0].1;
    assert_eq!(hex(&validate.trace_id), TRACE_ID);
    // Hashing shows up as a child span of the login.
    let hashing = named("password.verify");
    assert!(
        hashing
            .iter()
            .any(|(_, s)| s.trace_id == login_span.trace_id),
        "password.verify inside the traced login"
    );

    // So does storage: database calls inside the traced login carry `db.system`.
    let spans = receiver.spans.lock().expect("lock").clone();
    assert!(
        spans.iter().any(|(_, s)| s.trace_id == login_span.trace_id
            && attr(s, "db.system").as_deref() == Some("sqlite")),
        "database spans inside the traced login"
    );

    // No attribute anywhere holds the password or the tokens.
    for (_, span) in &spans {
        for kv in &span.attributes {
            let text = format!("{:?}", kv.value);
            for secret in [
                PASSWORD,
                "a wrong password",
                &login.access_token,
                &login.refresh_token,
            ] {
                assert!(
                    !text.contains(secret),
                    "span {} attribute {} leaks a secret",
                    span.name,
                    kv.key
                );
            }
        }
    }
}
