//! Operations: Prometheus metrics after traffic, liveness and readiness (503 while the
//! database is unreachable), JSON log lines.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(metrics_count_rpcs_by_method_and_code_and_logins_by_outcome);

fn with_metrics(s: &mut auth_server::Settings) {
    s.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_count_rpcs_by_method_and_code_and_logins_by_outcome(db: Db) {
    let app = spawn_app_with(db, with_metrics).await;
    let addr = app.metrics_addr.expect("metrics listener");
    assert_eq!(http_get(addr, "/livez").await.0, 200);
    let (status, body) = http_get(addr, "/readyz").await;
    let server = match db {
        Db::Sqlite => "SQLite 3.",
        Db::Postgres => "PostgreSQL ",
        Db::Mysql => "M",
    };
    assert_eq!(status, 200, "{body}");
    assert!(
        body.trim()
            .starts_with(&format!("ready: database {server}")),
        "{body}"
    );

    let session = app.signed_up("ops@example.com").await;
    for _ in 0..2 {
        assert_code(
            app.login("ops@example.com", "wrong password").await,
            Code::Unauthenticated,
        );
    }
    for _ in 0..3 {
        app.validate(&session.access_token).await.expect("valid");
    }
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let login_ok = r#"auth_rpc_requests_total{method="/auth.v1.AuthService/Login",code="OK"}"#;
    let login_bad =
        r#"auth_rpc_requests_total{method="/auth.v1.AuthService/Login",code="UNAUTHENTICATED"}"#;
    let validate = r#"auth_rpc_requests_total{method="/auth.v1.AuthService/Validate",code="OK"}"#;
    let backend = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
        Db::Mysql => "mysql",
    };
    let selects = format!(
        r#"auth_db_query_duration_seconds_count{{backend="{backend}",operation="select",outcome="ok"}}"#
    );
    let inserts = format!(
        r#"auth_db_query_duration_seconds_count{{backend="{backend}",operation="insert",outcome="ok"}}"#
    );
    let begins = format!(r#"auth_db_begin_wait_seconds_count{{backend="{backend}"}}"#);
    assert!(sample(&text, &selects).is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, &inserts).is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, &begins).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        sample(&text, "auth_db_max_connections "),
        Some(8.0),
        "{text}"
    );
    assert!(
        sample(&text, r#"auth_db_connections{state="idle"}"#).is_some(),
        "{text}"
    );
    assert_eq!(sample(&text, login_ok), Some(1.0), "{text}");
    assert_eq!(sample(&text, login_bad), Some(2.0), "{text}");
    assert_eq!(sample(&text, validate), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"auth_rpc_duration_seconds_count{method="/auth.v1.AuthService/Validate",code="OK"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"auth_logins_total{outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"auth_logins_total{outcome="failure"}"#),
        Some(2.0)
    );
    assert!(
        sample(&text, "auth_hash_wait_seconds_count").is_some_and(|n| n >= 4.0),
        "{text}"
    );
    for gauge in [
        "auth_hash_queue_depth",
        "auth_revoked_sessions",
        "auth_event_head_sequence",
        "auth_event_subscribers",
        "auth_event_subscriber_lag",
        r#"auth_db_connections{state="idle"}"#,
        "auth_log_lines_suppressed_total",
    ] {
        assert!(sample(&text, gauge).is_some(), "{gauge} missing: {text}");
    }
    // Three more failures lock the email: one lockout.
    for _ in 0..3 {
        let _ = app.login("ops@example.com", "wrong password").await;
    }
    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(sample(&text, "auth_lockouts_total"), Some(1.0), "{text}");
    assert!(!text.contains("wrong password") && !text.contains(&session.access_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_postgres_is_unreachable_and_livez_stays_200() {
    let app = spawn_app_with(Db::Postgres, with_metrics).await;
    let addr = app.metrics_addr.expect("metrics listener");
    let name = app.db.pg_name().expect("postgres").to_owned();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    pg_admin(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .await;
    pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
    let mut seen = None;
    for _ in 0..50 {
        let (status, body) = http_get(addr, "/readyz").await;
        if status == 503 {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = seen.expect("readyz turned 503");
    assert!(body.contains("database"), "{body}");
    assert_eq!(
        http_get(addr, "/livez").await.0,
        200,
        "the process is still alive"
    );
    pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await;
    let mut ready = false;
    for _ in 0..50 {
        if http_get(addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "readyz recovers");
}

/// The server's stderr lines up to "auth-server listening", with `--log-format format`.
async fn startup_log_lines(format: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
        .env("AUTH_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("auth-server listening");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let lines = tokio::task::spawn_blocking(move || lines.join().expect("reader"))
        .await
        .expect("join");
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// Human logs written to a pipe (not a terminal) carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_logs_into_a_pipe_have_no_colour_codes() {
    let lines = startup_log_lines("human").await;
    assert!(
        lines.iter().any(|l| l.contains("auth-server listening")),
        "{lines:?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "escape code in {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let lines = startup_log_lines("json").await;
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
    let listening: serde_json::Value =
        serde_json::from_str(lines.last().expect("line")).expect("json");
    assert_eq!(listening["fields"]["message"], "auth-server listening");
    assert_eq!(listening["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_their_class_limit_are_refused_at_once_and_freed_when_closed() {
    let app = spawn_app_with(Db::Sqlite, |s| s.limits.max_streams = 1).await;
    let token = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let first = app.subscribe(&token, 0).await.expect("first stream");
    let refused = assert_code(app.subscribe(&token, 0).await, Code::ResourceExhausted);
    assert!(refused.message().contains("concurrent"), "{refused:?}");
    // Unary calls have their own budgets.
    app.validate(&token).await.expect("validate unaffected");
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(stream) = app.subscribe(&token, 0).await {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "the closed stream's slot was never freed"
    );
}
