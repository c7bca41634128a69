//! Floods that cost an attacker nothing: streams that send HEADERS and then nothing.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

/// Streams opened with HEADERS only (no DATA, no END_STREAM) and kept open.
struct Stalled {
    _streams: Vec<h2::SendStream<bytes::Bytes>>,
    responses: Vec<h2::client::ResponseFuture>,
    max_streams_per_connection: Vec<usize>,
}

/// Opens `per_connection` stalled streams for `path` on each of `connections` connections.
async fn stall(
    addr: std::net::SocketAddr,
    path: &str,
    connections: usize,
    per_connection: usize,
) -> Stalled {
    let mut stalled = Stalled {
        _streams: Vec::new(),
        responses: Vec::new(),
        max_streams_per_connection: Vec::new(),
    };
    for _ in 0..connections {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        // Let the connection task read the server's SETTINGS.
        client = client.ready().await.expect("ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..per_connection {
            client = client.ready().await.expect("ready");
            let request = tonic::codegen::http::Request::builder()
                .method("POST")
                .uri(format!("http://{addr}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let (response, stream) = client.send_request(request, false).expect("send");
            stalled.responses.push(response);
            stalled._streams.push(stream);
        }
        stalled
            .max_streams_per_connection
            .push(client.current_max_send_streams());
    }
    stalled
}

async fn health_within_a_second(app: &TestApp) {
    let started = Instant::now();
    let mut client = HealthClient::new(channel(app.addr).await);
    let response = tokio::time::timeout(
        Duration::from_secs(1),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("health answers within a second")
    .expect("health check")
    .into_inner();
    assert_eq!(response.status, ServingStatus::Serving as i32);
    eprintln!("health answered in {:?}", started.elapsed());
}

/// 300 stalled Health/Check streams (three connections of 100, the per-connection cap) leave
/// Health SERVING within a second for everyone else; 300 stalled Login streams leave logins
/// working; a stalled stream is ended DEADLINE_EXCEEDED once its body is 5 s late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_hold_no_slots_and_health_stays_serving() {
    let app = spawn_app(Db::Sqlite).await;
    app.register("ann@example.com", PASSWORD)
        .await
        .expect("register");

    let health = stall(app.addr, "/grpc.health.v1.Health/Check", 3, 100).await;
    assert_eq!(health.max_streams_per_connection, vec![100, 100, 100]);
    health_within_a_second(&app).await;

    let logins = stall(app.addr, "/auth.v1.AuthService/Login", 3, 100).await;
    health_within_a_second(&app).await;
    let started = Instant::now();
    app.login("ann@example.com", PASSWORD)
        .await
        .expect("a complete login is served beside 300 stalled ones");
    eprintln!("login beside 300 stalled ones took {:?}", started.elapsed());

    // The stalled ones end by themselves: DEADLINE_EXCEEDED (gRPC status 4), trailers-only.
    let mut first = logins
        .responses
        .into_iter()
        .next()
        .expect("a stalled login");
    let response = tokio::time::timeout(Duration::from_secs(8), &mut first)
        .await
        .expect("ended within the body timeout")
        .expect("response");
    assert_eq!(
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("4"),
        "{response:?}"
    );
    drop(health);
}
