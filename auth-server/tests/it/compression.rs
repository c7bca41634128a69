//! gzip: a client that compresses its requests and asks for compressed answers (grpcio and
//! grpc-health-probe with compression on, grpcurl with it) is served, and the request size
//! limits hold for the decompressed message.

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use tonic::{Code, codec::CompressionEncoding};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_requests_are_accepted_and_answers_compressed_on_request() {
    let app = spawn_app(Db::Sqlite).await;
    let gzip = CompressionEncoding::Gzip;
    let channel = channel(app.addr).await;
    let mut health = HealthClient::new(channel.clone())
        .send_compressed(gzip)
        .accept_compressed(gzip);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("gzip health check");
    assert_eq!(
        answer
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the answer is compressed"
    );
    let mut client = AuthServiceClient::new(channel)
        .send_compressed(gzip)
        .accept_compressed(gzip);
    client
        .register(pb::RegisterRequest {
            email: "zip@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Zip".into(),
        })
        .await
        .expect("gzip register");
    let login = client
        .login(pb::LoginRequest {
            email: "zip@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("gzip login")
        .into_inner();
    let valid = client
        .validate(pb::ValidateRequest {
            token: login.access_token.clone(),
        })
        .await
        .expect("gzip validate")
        .into_inner();
    assert_eq!(Some(valid.user_id), login.user.map(|u| u.id));
    let mut events = client
        .user_events(bearer(
            pb::UserEventsRequest { after_sequence: 0 },
            &app.token_with_roles("root@example.com", &["admin"]).await,
        ))
        .await
        .expect("gzip stream")
        .into_inner();
    let first = events.message().await.expect("event").expect("open");
    assert_eq!(first.event.map(|e| e.sequence), Some(1));

    // 1 MiB of display name squeezes into about 1 KiB: the limit counts what it inflates to.
    let bomb = client
        .register(pb::RegisterRequest {
            email: "bomb@example.com".into(),
            password: PASSWORD.into(),
            display_name: "a".repeat(1 << 20),
        })
        .await;
    let status = assert_code(bomb, Code::ResourceExhausted);
    assert!(status.message().contains("limit"), "{}", status.message());
}
