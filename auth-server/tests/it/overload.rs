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

/// 1,100 connections that never send a byte, against the real binary started under a soft
/// open-files limit of 1,024: the server raises its limit, keeps accepting, and Health answers
/// a new client within a second; the silent ones are closed after 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_beyond_the_soft_fd_limit_leave_health_answering() {
    use std::process::{Command, Stdio};
    // This test process needs 1,100+ descriptors itself.
    let _ = rlimit::increase_nofile_limit(4096);
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#"ulimit -Sn 1024 && exec "$0" "$@""#,
            env!("CARGO_BIN_EXE_auth-server"),
            "serve",
            "--listen",
            &addr.to_string(),
        ])
        .env("AUTH_DATA_DIR", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("server: {open_files}");
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    assert!(
        fields.len() >= 5 && fields[3] == fields[4],
        "the server raised its soft open-files limit to the hard one: {open_files}"
    );

    let mut silent = Vec::with_capacity(1100);
    for _ in 0..1100 {
        silent.push(TcpStream::connect(addr).await.expect("silent connection"));
    }
    let started = Instant::now();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1));
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let channel = channel.connect().await.expect("connect");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner()
    })
    .await
    .expect("health answers within a second beside 1,100 silent connections");
    assert_eq!(answer.status, ServingStatus::Serving as i32);
    eprintln!(
        "health beside 1,100 silent sockets answered in {:?}",
        started.elapsed()
    );
    // The server closes a connection that stays silent for 10 s.
    let mut first = silent.swap_remove(0);
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read(&mut first, &mut byte),
    )
    .await
    .expect("closed within 15 s");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
}

/// Under a hard open-files limit of 1,024 (nothing to raise to), 1,100 silent connections fill
/// the connection cap (the limit less a reserve): the accept loop neither spins nor logs per
/// attempt, and once the silent ones are gone Health answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_hard_fd_limit_the_accept_loop_waits_without_spinning() {
    use std::process::{Command, Stdio};
    let _ = rlimit::increase_nofile_limit(4096);
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#"ulimit -n 1024 && exec "$0" "$@" 2>"$LOG""#,
            env!("CARGO_BIN_EXE_auth-server"),
            "serve",
            "--listen",
            &addr.to_string(),
        ])
        .env("AUTH_DATA_DIR", dir.path().join("data"))
        .env("LOG", &log)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = |pid: u32| -> f64 {
        // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(") ").next().unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks as f64 / 100.0
    };
    let mut silent = Vec::with_capacity(1100);
    for _ in 0..1100 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => silent.push(stream),
            _ => break,
        }
    }
    let before = cpu(child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spent = cpu(child.id()) - before;
    eprintln!(
        "{} silent connections; server CPU over 3 s: {spent:.2} s",
        silent.len()
    );
    assert!(
        spent < 0.5,
        "the accept loop spins: {spent:.2} s of CPU in 3 s"
    );
    drop(silent);
    // With the silent ones gone, a client is served again.
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner()
    })
    .await
    .expect("health answers after the silent connections close");
    assert_eq!(answer.status, ServingStatus::Serving as i32);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.lines().count() < 20,
        "a flood of log lines:\n{logged}"
    );
}
