//! Crash consistency: the real binary is killed with SIGKILL while writers register, log in,
//! refresh and change passwords, then restarted on the same database. Every acknowledged write
//! is there, the event sequence is exactly 1..N, every user has its events and every event its
//! user (versions agree), and no session is half-written.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::storage::{Store, events::find_events_after};
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Channel;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_leaves_a_consistent_database_sqlite() {
    sigkill_during_writes_leaves_a_consistent_database(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_leaves_a_consistent_database_postgres() {
    sigkill_during_writes_leaves_a_consistent_database(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_leaves_a_consistent_database_mysql() {
    sigkill_during_writes_leaves_a_consistent_database(Db::Mysql).await;
}

const NEW_PASSWORD: &str = "another correct horse";

/// The real binary, serving `url` on `port`.
fn serve(url: &str, dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-registration",
            "--rate-limit-per-minute",
            "0",
            "--argon2-memory-kib",
            "256",
            "--argon2-iterations",
            "1",
        ])
        .env("AUTH_DATABASE_URL", url)
        .env("AUTH_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve")
}

async fn connect(port: u16) -> AuthServiceClient<Channel> {
    for _ in 0..300 {
        if let Ok(channel) =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("url")
                .connect()
                .await
        {
            return AuthServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never listened on {port}");
}

/// What the writers were told succeeded.
#[derive(Default)]
struct Acknowledged {
    registered: BTreeSet<String>,
    password_changed: BTreeSet<String>,
}

/// Registers, logs in twice, refreshes and changes the password, user after user, until
/// `stop` or the first failure (the server died).
async fn writer(
    mut client: AuthServiceClient<Channel>,
    name: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acknowledged>>,
) {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let email = format!("w{name}-{i}@example.com");
        let step = async {
            client
                .register(pb::RegisterRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    ..Default::default()
                })
                .await?;
            acked.lock().expect("lock").registered.insert(email.clone());
            let login = |client: &mut AuthServiceClient<Channel>| {
                let request = pb::LoginRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                };
                let mut client = client.clone();
                async move { client.login(request).await.map(|r| r.into_inner()) }
            };
            let first = login(&mut client).await?;
            login(&mut client).await?;
            let refreshed = client
                .refresh(pb::RefreshRequest {
                    refresh_token: first.refresh_token,
                })
                .await?
                .into_inner();
            client
                .change_password(bearer(
                    pb::ChangePasswordRequest {
                        current_password: PASSWORD.into(),
                        new_password: NEW_PASSWORD.into(),
                    },
                    &refreshed.access_token,
                ))
                .await?;
            acked
                .lock()
                .expect("lock")
                .password_changed
                .insert(email.clone());
            Ok::<_, tonic::Status>(())
        };
        if step.await.is_err() {
            return;
        }
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    let conn = store.conn();
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<i64>(0).expect("count")
}

async fn sigkill_during_writes_leaves_a_consistent_database(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = TestDb::create(db, &dir).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = serve(&database.url, dir.path(), port);
    let client = connect(port).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let writers: Vec<_> = (0..4)
        .map(|name| {
            tokio::spawn(writer(
                client.clone(),
                name,
                Arc::clone(&stop),
                Arc::clone(&acked),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.registered.len() >= 4,
        "the writers did some work first"
    );

    // Restarted on the same database: everything acknowledged is there.
    let mut child = serve(&database.url, dir.path(), port);
    let mut client = connect(port).await;
    for email in &acked.registered {
        let password = if acked.password_changed.contains(email) {
            NEW_PASSWORD
        } else {
            // Acknowledged registration; the change may or may not have committed.
            PASSWORD
        };
        let login = client
            .login(pb::LoginRequest {
                email: email.clone(),
                password: password.into(),
            })
            .await;
        let fallback_ok = !acked.password_changed.contains(email)
            && client
                .login(pb::LoginRequest {
                    email: email.clone(),
                    password: NEW_PASSWORD.into(),
                })
                .await
                .is_ok();
        assert!(
            login.is_ok() || fallback_ok,
            "{email} cannot log in after the crash"
        );
    }
    child.kill().expect("stop");
    child.wait().expect("reaped");

    let store = Store::connect(&database.url, 1).await.expect("store");
    // The outbox is exactly 1..N, and the counter says N.
    let head = auth_server::storage::events::find_head_sequence(store.conn())
        .await
        .expect("head");
    let events = find_events_after(store.conn(), 0, 1_000_000)
        .await
        .expect("events");
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    // Every user has its events and every event its user, and the last event of each user
    // carries the user's current version.
    let mut last_version: BTreeMap<String, i64> = BTreeMap::new();
    let mut created = BTreeSet::new();
    for event in &events {
        let Some(user) = event.user() else { continue };
        if event.kind == auth_server::storage::EventKind::UserCreated {
            created.insert(user.id.clone());
        }
        let entry = last_version.entry(user.id.clone()).or_insert(0);
        *entry = (*entry).max(user.version);
    }
    let conn = store.conn();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT id, version FROM users",
        ))
        .await
        .expect("users");
    let users: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).expect("id"),
                r.try_get_by_index::<i64>(1).expect("version"),
            )
        })
        .collect();
    assert_eq!(users.keys().cloned().collect::<BTreeSet<_>>(), created);
    assert_eq!(users, last_version);
    // No half-written session: each has its first refresh token; each revocation its event.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS \
             (SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id)"
        )
        .await,
        0
    );
    let revoked_events: BTreeSet<String> = events
        .iter()
        .filter(|e| e.kind == auth_server::storage::EventKind::SessionRevoked)
        .filter_map(|e| e.session_id.clone())
        .collect();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL",
        ))
        .await
        .expect("sessions");
    let revoked: BTreeSet<String> = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("id"))
        .collect();
    assert_eq!(revoked, revoked_events);
    eprintln!(
        "after SIGKILL: {} users acknowledged, {} events, {} sessions revoked",
        acked.registered.len(),
        head,
        revoked.len()
    );
    store.close().await;
}
