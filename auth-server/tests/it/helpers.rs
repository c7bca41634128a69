//! `spawn_app`: a real server on `127.0.0.1:0` over a fresh SQLite file or a fresh PostgreSQL
//! database, with a connected tonic client.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use auth_proto::pb::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};
use auth_server::{
    Application, Settings,
    passwords::HashingSettings,
    storage::{Store, UserRecord},
    testkit,
};
use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use tonic_types::StatusExt;

/// Which database backs the server.
pub use auth_server::testkit::TestDatabase as Db;

/// Cheap argon2 parameters so tests spend their time on behaviour, not hashing.
pub const CHEAP_HASHING: HashingSettings = HashingSettings {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
    min_password_length: 8,
};

pub const PASSWORD: &str = "correct horse battery";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        auth_server::telemetry::init();
    }
});

/// A database that lives as long as the test: a SQLite file in a temp dir or a fresh
/// PostgreSQL or MySQL database (the testkit's), dropped at the end.
pub struct TestDb {
    pub url: String,
    pub kind: Db,
    /// Whether the test created the database (and drops it).
    owned: bool,
}

impl TestDb {
    /// A fresh, empty database of `kind` (a SQLite file in `dir`).
    pub async fn create(kind: Db, dir: &TempDir) -> Self {
        let url = testkit::create_database(kind).await.unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display())
        });
        Self {
            url,
            kind,
            owned: true,
        }
    }

    /// A database somewhere else, left alone at the end.
    pub fn external(url: String, kind: Db) -> Self {
        Self {
            url,
            kind,
            owned: false,
        }
    }

    /// The PostgreSQL database's name.
    pub fn pg_name(&self) -> Option<&str> {
        (self.kind == Db::Postgres).then(|| self.url.rsplit('/').next().unwrap_or_default())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.owned {
            testkit::drop_database(&self.url);
        }
    }
}

/// Runs SQL against the test's PostgreSQL server as the admin user.
pub async fn pg_admin(sql: &str) {
    let admin = Database::connect(testkit::admin_url())
        .await
        .expect("admin connection");
    admin.execute_unprepared(sql).await.expect("admin sql");
    admin.close().await.ok();
}

/// A running server and a client connected to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: AuthServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub channel: Channel,
    /// The `/metrics` `/livez` `/readyz` listener, if the settings turned it on.
    pub metrics_addr: Option<SocketAddr>,
    /// The server's password hash pool (its counter shows argon2 work done).
    pub hash_pool: auth_server::passwords::HashPool,
    pub settings: Settings,
    pub db: Arc<TestDb>,
    pub dir: Arc<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

pub async fn spawn_app_with(db: Db, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::create(db, &dir).await);
    spawn_app_on(db, dir, tweak).await
}

/// A server on a given database (in `dir`'s data dir).
pub async fn spawn_app_on(
    db: Arc<TestDb>,
    dir: Arc<TempDir>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    LazyLock::force(&TRACING);
    let mut settings = Settings::for_data_dir(dir.path().join("data"), Some(db.url.clone()));
    settings.hashing = CHEAP_HASHING;
    settings.health_interval = Duration::from_millis(200);
    settings.db_pool.max_connections = 8;
    // Tests log in many times from 127.0.0.1; the rate limit has its own tests.
    settings.protection.rate_limit = None;
    tweak(&mut settings);
    start(settings, db, dir).await
}

async fn start(settings: Settings, db: Arc<TestDb>, dir: Arc<TempDir>) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("server builds");
    let addr = app.local_addr();
    let hash_pool = app.hash_pool();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    // A TLS server cannot be reached over plaintext: its tests connect their own channels.
    let channel = if settings.tls.is_some() {
        Channel::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect_lazy()
    } else {
        channel(addr).await
    };
    let client = AuthServiceClient::new(channel.clone());
    let admin = AdminServiceClient::new(channel.clone());
    TestApp {
        addr,
        client,
        admin,
        channel,
        metrics_addr,
        hash_pool,
        settings,
        db,
        dir,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("server accepts connections")
}

impl TestApp {
    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
    }

    /// Stops the server and starts a new one on the same database and data dir.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let settings = self.settings.clone();
        start(settings, Arc::clone(&self.db), Arc::clone(&self.dir)).await
    }

    /// Stops the server and starts one with changed settings on the same database and data dir.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        self.stop().await;
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        start(settings, Arc::clone(&self.db), Arc::clone(&self.dir)).await
    }

    /// A storage handle on the server's database, to check what was (not) written.
    pub async fn store(&self) -> Store {
        Store::connect(&self.db.url, 2).await.expect("store")
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<pb::User, Status> {
        let req = pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            display_name: String::new(),
        };
        Ok(self
            .client
            .clone()
            .register(req)
            .await?
            .into_inner()
            .user
            .expect("user"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        let req = pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        };
        Ok(self.client.clone().login(req).await?.into_inner())
    }

    pub async fn validate(&self, token: &str) -> Result<pb::ValidateResponse, Status> {
        Ok(self
            .client
            .clone()
            .validate(pb::ValidateRequest {
                token: token.into(),
            })
            .await?
            .into_inner())
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshResponse, Status> {
        let req = pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        Ok(self.client.clone().refresh(req).await?.into_inner())
    }

    pub async fn logout(&self, token: &str) -> Result<(), Status> {
        self.client
            .clone()
            .logout(bearer(pb::LogoutRequest {}, token))
            .await?;
        Ok(())
    }

    pub async fn change_password(
        &self,
        token: &str,
        current: &str,
        new: &str,
    ) -> Result<u32, Status> {
        let req = pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
        };
        Ok(self
            .client
            .clone()
            .change_password(bearer(req, token))
            .await?
            .into_inner()
            .revoked_sessions)
    }

    /// Registers `email` with [`PASSWORD`] and logs in.
    pub async fn signed_up(&self, email: &str) -> pb::LoginResponse {
        self.register(email, PASSWORD).await.expect("register");
        self.login(email, PASSWORD).await.expect("login")
    }

    pub async fn find_user_by_email(&self, email: &str) -> Option<UserRecord> {
        let store = self.store().await;
        let user = auth_server::storage::users::find_user_by_email(store.conn(), email)
            .await
            .expect("query");
        store.close().await;
        user
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub use auth_server::testkit::bearer;

/// The `ErrorInfo` reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Asserts a status code (and shows the status on failure).
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Declares `mod name { sqlite, postgres, mysql }` tests that run `name(Db)` on each backend.
#[macro_export]
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    super::$name($crate::helpers::Db::Mysql).await
                }
            }
        )*
    };
}

impl TestApp {
    /// A second server on the same database and data dir (same signing keys): a replica.
    pub async fn spawn_replica(&self) -> TestApp {
        let mut settings = self.settings.clone();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        start(settings, Arc::clone(&self.db), Arc::clone(&self.dir)).await
    }

    /// A replica that shares nothing in process with this server: its database URL differs by
    /// a harmless parameter, so the in-process "events committed" signal (shared per URL) does
    /// not reach it and it learns of new events only as another machine would.
    pub async fn spawn_detached_replica(&self) -> TestApp {
        let mut settings = self.settings.clone();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        assert_ne!(self.db.kind, Db::Sqlite, "replicas need a server database");
        settings.database_url = testkit::detached_url(&settings.database_url);
        start(settings, Arc::clone(&self.db), Arc::clone(&self.dir)).await
    }

    /// Creates an account with roles directly in the database (as `create-user` does) and logs
    /// in through the server; returns the access token.
    pub async fn token_with_roles(&self, email: &str, roles: &[&str]) -> String {
        let store = self.store().await;
        let hasher = auth_server::passwords::HashPool::new(&CHEAP_HASHING, 1, 1).expect("pool");
        let new = auth_server::domain::NewAccount {
            email,
            password: auth_server::passwords::Password::new(PASSWORD.into()),
            display_name: "",
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        auth_server::domain::create_account(&store, &hasher, 8, new)
            .await
            .expect("create account");
        store.close().await;
        self.login(email, PASSWORD)
            .await
            .expect("login")
            .access_token
    }

    /// Opens `UserEvents` after `after` with `token`.
    pub async fn subscribe(
        &self,
        token: &str,
        after: u64,
    ) -> Result<tonic::Streaming<pb::UserEventsResponse>, Status> {
        let request = bearer(
            pb::UserEventsRequest {
                after_sequence: after,
            },
            token,
        );
        Ok(self.client.clone().user_events(request).await?.into_inner())
    }

    /// The newest event sequence in the database, once every committed event is numbered.
    pub async fn head(&self) -> u64 {
        let store = self.store().await;
        auth_server::storage::sequencer::drain(&store)
            .await
            .expect("sequence staged events");
        let head = auth_server::storage::events::find_head_sequence(store.conn())
            .await
            .expect("head");
        store.close().await;
        u64::try_from(head).expect("non-negative")
    }
}

/// The next event of a stream, within `wait`.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::UserEventsResponse>,
    wait: Duration,
) -> pb::UserEvent {
    let message = tokio::time::timeout(wait, stream.message())
        .await
        .expect("an event arrives in time")
        .expect("stream ok")
        .expect("stream open");
    message.event.expect("event")
}

/// Reads events until `last` is reached; returns them all.
pub async fn events_until(
    stream: &mut tonic::Streaming<pb::UserEventsResponse>,
    last: u64,
) -> Vec<pb::UserEvent> {
    let mut events = Vec::new();
    while events
        .last()
        .is_none_or(|e: &pb::UserEvent| e.sequence < last)
    {
        events.push(next_event(stream, Duration::from_secs(20)).await);
    }
    events
}

impl TestApp {
    /// Argon2 computations the server has finished so far.
    pub fn hashes(&self) -> u64 {
        self.hash_pool.computed()
    }

    /// The admin client with a bearer token on every call.
    pub fn admin_with(&self, token: &str) -> Admin {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token");
        AdminServiceClient::with_interceptor(self.channel.clone(), BearerInterceptor(value))
    }

    /// The audit records of the database, oldest first, as the table holds them.
    pub async fn audit_rows(&self) -> Vec<auth_server::storage::audit::AuditEntry> {
        let store = self.store().await;
        let mut rows = auth_server::storage::audit::find_audit_page(
            store.conn(),
            None,
            100_000,
            &Default::default(),
        )
        .await
        .expect("audit rows");
        store.close().await;
        rows.reverse();
        rows
    }
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct BearerInterceptor(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The admin client type tests use.
pub type Admin =
    AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerInterceptor>>;

/// A plain HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
