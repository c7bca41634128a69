//! The `auth-server` binary's account and migration commands.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{every_backend, helpers::*};

every_backend!(
    create_user_with_role_reads_the_password_from_stdin,
    migrate_down_and_up_round_trips_the_schema,
    two_servers_and_a_cli_started_at_once_on_a_fresh_database_all_come_up,
);

pub fn auth_server(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = spawn_auth_server(&app.db.url, &app.settings.data_dir, args);
    // A command refused by argument parsing exits before reading: a broken pipe is fine.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("auth-server exits")
}

async fn create_user_with_role_reads_the_password_from_stdin(db: Db) {
    let app = spawn_app(db).await;
    let password = "service account secret";
    let out = auth_server(
        &app,
        &[
            "create-user",
            "--email",
            "svc@example.com",
            "--role",
            "events.subscriber",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "create-user failed: {stderr}");
    assert!(
        !stdout.contains(password) && !stderr.contains(password),
        "password printed"
    );

    let login = app
        .login("svc@example.com", password)
        .await
        .expect("login as the new account");
    let v = app.validate(&login.access_token).await.expect("valid");
    assert_eq!(v.roles, ["events.subscriber"]);

    let out = auth_server(
        &app,
        &[
            "create-admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ],
        "admin secret 1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let login = app
        .login("root@example.com", "admin secret 1")
        .await
        .expect("admin login");
    assert_eq!(login.user.expect("user").roles, ["admin"]);

    // Refusals: duplicate, bad role, no password, short password. Each exits non-zero.
    for (args, stdin) in [
        (
            &[
                "create-user",
                "--email",
                "svc@example.com",
                "--password-stdin",
            ][..],
            "another password\n",
        ),
        (
            &[
                "create-user",
                "--email",
                "x@example.com",
                "--role",
                "Bad Role",
                "--password-stdin",
            ][..],
            "long enough pw\n",
        ),
        (
            &[
                "create-user",
                "--email",
                "y@example.com",
                "--password-stdin",
            ][..],
            "",
        ),
        (
            &[
                "create-user",
                "--email",
                "z@example.com",
                "--password-stdin",
            ][..],
            "short\n",
        ),
        (
            &["create-user", "--email", "w@example.com"][..],
            "long enough pw\n",
        ),
    ] {
        let out = auth_server(&app, args, stdin);
        assert!(!out.status.success(), "{args:?} should fail");
    }

    let out = auth_server(&app, &["migrate", "status"], "");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied m20261126_000001_core"), "{stdout}");
    assert!(
        stdout.starts_with("database "),
        "names the server: {stdout}"
    );
}

async fn migrate_down_and_up_round_trips_the_schema(db: Db) {
    let mut app = spawn_app(db).await;
    app.register("kept@example.com", PASSWORD)
        .await
        .expect("register");
    app.stop().await;

    let status = |app: &TestApp| {
        let out = auth_server(app, &["migrate", "status"], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    const ALL: [&str; 11] = [
        "m20261126_000001_core",
        "m20261126_000002_protection",
        "m20261126_000003_signing_keys",
        "m20261130_000004_external_ids",
        "m20261130_000005_api_keys",
        "m20261130_000006_organizations",
        "m20261130_000007_last_login",
        "m20261130_000008_email_verifications",
        "m20261201_000009_lifecycle",
        "m20261202_000010_staged_events",
        "m20261203_000011_lean_outbox",
    ];
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("applied {m}"))),
        "{now}"
    );
    // One step down undoes only the newest migration; the events survive it and its redo
    // (SQLite rebuilds the outbox table), and numbering goes on after them.
    let head = app.head().await;
    assert!(head >= 1, "registration wrote an event");
    let out = auth_server(&app, &["migrate", "down"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(
        now.contains("applied m20261202_000010_staged_events"),
        "{now}"
    );
    assert!(
        now.contains("pending m20261203_000011_lean_outbox"),
        "{now}"
    );
    assert_eq!(app.head().await, head);
    let out = auth_server(&app, &["migrate", "up"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut app = app.restart().await;
    assert_eq!(app.head().await, head);
    app.register("later@example.com", PASSWORD)
        .await
        .expect("register");
    assert_eq!(app.head().await, head + 1);
    app.stop().await;
    let out = auth_server(&app, &["migrate", "down", "--steps", "11"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("pending {m}"))),
        "{now}"
    );
    let out = auth_server(&app, &["migrate", "up"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("applied {m}"))),
        "{now}"
    );

    // The schema is back and empty: the server starts, the old account is gone.
    let app = app.restart().await;
    assert!(app.login("kept@example.com", PASSWORD).await.is_err());
    app.register("kept@example.com", PASSWORD)
        .await
        .expect("register again");
}

/// `auth-server ARGS` on `url` and `data_dir`, with cheap hashing and piped output.
fn spawn_auth_server(url: &str, data_dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .args(args)
        .env("AUTH_DATABASE_URL", url)
        .env("AUTH_DATA_DIR", data_dir)
        .env("AUTH_ARGON2_MEMORY_KIB", "256")
        .env("AUTH_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run auth-server")
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

/// Waits until `serve` accepts connections on `addr`; panics with its output if it exits.
fn wait_serving(child: &mut Child, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited with {status}: {}", stderr_of(child));
        }
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("serve did not listen on {addr} within 60 s");
}

/// The README's backend walk and replicas on a new or upgraded schema start processes
/// together: the migrations run once, one process at a time, and every process comes up.
async fn two_servers_and_a_cli_started_at_once_on_a_fresh_database_all_come_up(db: Db) {
    for round in 0..3 {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let test_db = TestDb::create(db, &dir).await;
        let data_dir = dir.path().join("data");
        let (a, b) = (free_addr(), free_addr());
        let mut servers = [a, b].map(|addr| {
            spawn_auth_server(
                &test_db.url,
                &data_dir,
                &["serve", "--listen", &addr.to_string()],
            )
        });
        let mut cli = spawn_auth_server(
            &test_db.url,
            &data_dir,
            &[
                "create-user",
                "--email",
                "svc@example.com",
                "--password-stdin",
            ],
        );
        cli.stdin
            .take()
            .expect("stdin")
            .write_all(b"service passphrase\n")
            .expect("password");
        let out = cli.wait_with_output().expect("create-user exits");
        assert!(
            out.status.success(),
            "round {round}: create-user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (server, addr) in servers.iter_mut().zip([a, b]) {
            wait_serving(server, addr);
        }
        // Both serve the account the CLI created.
        for addr in [a, b] {
            let mut client =
                auth_proto::pb::auth_service_client::AuthServiceClient::new(channel(addr).await);
            let login = client
                .login(auth_proto::pb::LoginRequest {
                    email: "svc@example.com".into(),
                    password: "service passphrase".into(),
                })
                .await;
            assert!(login.is_ok(), "round {round}: login on {addr}: {login:?}");
        }
        for server in &mut servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
