//! Test support for crates that talk to auth-server (feature `testkit`): a real auth-server on a
//! loopback port, over a fresh SQLite file, a fresh PostgreSQL database (on the
//! `TEST_DATABASE_URL` server) or a fresh MySQL/MariaDB database (on the `TEST_MYSQL_URL`
//! server), that can be stopped and started again on the same port so a client loses and
//! regains it. Not for production use.

use std::{net::SocketAddr, sync::Arc};

use crate::{Application, Settings, passwords::HashingSettings};
use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

/// The password of every account the kit creates.
pub const PASSWORD: &str = "correct horse battery";
const CHEAP: HashingSettings = HashingSettings {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
    min_password_length: 8,
};

/// A running (or stopped) auth-server.
pub struct Server {
    /// Bound address (kept across restarts).
    pub addr: SocketAddr,
    /// Its settings.
    pub settings: Settings,
    _dir: Arc<TempDir>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// The PostgreSQL server tests use: `TEST_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The MySQL/MariaDB server tests use: `TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`.
pub fn mysql_admin_url() -> String {
    let url =
        std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    // The server part only: a database in the URL is where tests would not create theirs.
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", &url));
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// Which database a test server (or a test's own store) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDatabase {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the `TEST_DATABASE_URL` PostgreSQL server.
    Postgres,
    /// A fresh database on the `TEST_MYSQL_URL` MySQL/MariaDB server.
    Mysql,
}

/// A fresh server database of `kind` (`None` for SQLite: the caller picks the file).
pub async fn create_database(kind: TestDatabase) -> Option<String> {
    match kind {
        TestDatabase::Sqlite => None,
        TestDatabase::Postgres => Some(create_postgres_database().await),
        TestDatabase::Mysql => Some(create_mysql_database().await),
    }
}

/// Drops the server database a URL names (nothing for SQLite), from any context.
pub fn drop_database(url: &str) {
    if url.starts_with("postgres") {
        drop_postgres_database(url);
    } else if url.starts_with("mysql") {
        drop_mysql_database(url);
    }
}

/// The same server database under a URL that differs by a harmless parameter. A `Store` opened
/// with it shares nothing in process with stores on the original URL (the "events committed"
/// signal is kept per URL), so it behaves as another replica on another machine would: it
/// learns of new events through LISTEN/NOTIFY (PostgreSQL) or its poll (MySQL) only.
/// SQLite URLs come back unchanged (one file has one process-wide writer anyway).
pub fn detached_url(url: &str) -> String {
    let param = if url.starts_with("postgres") {
        "application_name=detached-replica"
    } else if url.starts_with("mysql") {
        // sqlx's default statement cache size is 100; 99 changes nothing that matters.
        "statement-cache-capacity=99"
    } else {
        return url.to_owned();
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// Creates a fresh, uniquely named MySQL database on the `TEST_MYSQL_URL` server and returns its
/// URL. Panics if MySQL is unreachable: tests that need it must not skip.
pub async fn create_mysql_database() -> String {
    let admin = mysql_admin_url();
    let name = format!("c_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(format!("{admin}/"))
        .await
        .expect("MySQL/MariaDB for tests must be reachable at TEST_MYSQL_URL");
    conn.execute_unprepared(&format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .await
    .expect("create database");
    conn.close().await.ok();
    format!("{admin}/{name}")
}

/// Drops the MySQL database a URL names, from any context (see [`drop_postgres_database`]).
pub fn drop_mysql_database(url: &str) {
    if let Some(name) = url.rsplit('/').next() {
        admin_sql_blocking(
            format!("{}/", mysql_admin_url()),
            format!("DROP DATABASE IF EXISTS `{name}`"),
        );
    }
}

/// Runs one admin statement from any context: on a private runtime on a plain thread, since
/// `Drop` may run outside a runtime. Failures are ignored (cleanup is best effort).
fn admin_sql_blocking(admin_url: String, sql: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let admin = Database::connect(admin_url).await.ok()?;
            admin.execute_unprepared(&sql).await.ok();
            admin.close().await.ok()
        })
    })
    .join();
}

/// Creates a fresh, uniquely named PostgreSQL database on the `TEST_DATABASE_URL` server and
/// returns its URL. Panics if PostgreSQL is unreachable: tests that need it must not skip.
pub async fn create_postgres_database() -> String {
    let admin = admin_url();
    let name = format!("c_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(&admin)
        .await
        .expect("PostgreSQL for tests must be reachable at TEST_DATABASE_URL");
    conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    conn.close().await.ok();
    let (prefix, _) = admin.rsplit_once('/').expect("URL with a database");
    format!("{prefix}/{name}")
}

impl Server {
    /// Starts a server on a fresh database; `tweak` adjusts the settings first.
    pub async fn start(database: TestDatabase, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let url = create_database(database).await;
        let mut settings = Settings::for_data_dir(dir.path().join("data"), url);
        settings.hashing = CHEAP;
        // Client tests log in many times from 127.0.0.1.
        settings.protection.rate_limit = None;
        tweak(&mut settings);
        let mut server = Self {
            addr: settings.listen,
            settings,
            _dir: dir,
            running: None,
        };
        server.resume().await;
        server
    }

    /// Starts (again) on the same address, database and keys.
    pub async fn resume(&mut self) {
        let app = Application::build(self.settings.clone())
            .await
            .expect("server builds");
        self.addr = app.local_addr();
        self.settings.listen = self.addr;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        self.running = Some((tx, handle));
    }

    /// Stops the server and waits for it.
    pub async fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            handle.await.expect("server task");
        }
    }

    /// `http://host:port` of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://localhost:port` of the server (when started with TLS settings; the
    /// [`TestCerts`] server certificate names `localhost`).
    pub fn tls_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Adds a signing key that signs from now on, as `auth-server keys rotate
    /// --activate-in-secs 0` does; a running server picks it up on its next key reload.
    pub async fn rotate_key(&self) -> String {
        let store = crate::storage::Store::connect(&self.settings.database_url, 2)
            .await
            .expect("store");
        let keys = crate::keys::KeyManager::new(
            store.clone(),
            &self.settings.key_file,
            self.settings.access_token_ttl,
        )
        .expect("key manager");
        let info = keys
            .rotate(std::time::Duration::ZERO)
            .await
            .expect("rotate");
        store.close().await;
        info.kid
    }

    /// An account with roles (and [`PASSWORD`]), created directly in the database as
    /// `create-user` would.
    pub async fn account_with_roles(&self, email: &str, roles: &[&str]) {
        let store = crate::storage::Store::connect(&self.settings.database_url, 2)
            .await
            .expect("store");
        let hasher = crate::passwords::HashPool::new(&CHEAP, 1, 1).expect("pool");
        let new = crate::domain::NewAccount {
            email,
            password: crate::passwords::Password::new(PASSWORD.into()),
            display_name: "",
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        crate::domain::create_account(&store, &hasher, 8, new)
            .await
            .expect("account");
        store.close().await;
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

impl Server {
    /// An admin account `email` (created here) logged in: the `AdminService` client and the
    /// access token to pass with [`bearer`].
    pub async fn admin(
        &self,
        email: &str,
    ) -> (
        auth_proto::pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
        String,
    ) {
        use auth_proto::pb::{
            self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
        };
        self.account_with_roles(email, &["admin"]).await;
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let login = AuthServiceClient::new(channel.clone())
            .login(pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("admin login")
            .into_inner();
        (AdminServiceClient::new(channel), login.access_token)
    }

    /// A service account with `roles` and an API key for it, made through AdminService (by an
    /// admin account created for the purpose); returns the key.
    pub async fn service_account_key(&self, email: &str, roles: &[&str]) -> String {
        use auth_proto::pb;
        let admin_email = format!("keys-admin-{}", email.replace('@', "-at-")) + "@example.com";
        let (mut admin, token) = self.admin(&admin_email).await;
        let user = admin
            .create_service_account(bearer(
                pb::CreateServiceAccountRequest {
                    email: email.into(),
                    display_name: "service".into(),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                },
                &token,
            ))
            .await
            .expect("service account")
            .into_inner()
            .user
            .expect("user");
        admin
            .issue_api_key(bearer(
                pb::IssueApiKeyRequest {
                    user_id: user.id,
                    name: "test".into(),
                    expires_at: None,
                },
                &token,
            ))
            .await
            .expect("api key")
            .into_inner()
            .api_key
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((tx, _)) = self.running.take() {
            let _ = tx.send(());
        }
        drop_database(&self.settings.database_url);
    }
}

/// Drops the database a URL names (`WITH (FORCE)`), from any context.
pub fn drop_postgres_database(url: &str) {
    if let Some(name) = url.rsplit('/').next() {
        admin_sql_blocking(
            admin_url(),
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        );
    }
}

/// A throw-away PKI for TLS tests: a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and a client certificate, all PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate.
    pub ca: std::path::PathBuf,
    /// Server certificate.
    pub server_cert: std::path::PathBuf,
    /// Server key.
    pub server_key: std::path::PathBuf,
    /// Client certificate (CN `test-client`).
    pub client_cert: std::path::PathBuf,
    /// Client key.
    pub client_key: std::path::PathBuf,
}

impl TestCerts {
    /// Generates the files in `dir` (created if missing), overwriting older ones.
    pub fn generate(dir: &std::path::Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).expect("cert dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "auth-server test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let leaf = |names: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "auth-server");
        let (client_cert, client_key) = leaf(vec!["test-client".into()], "test-client");
        // Private keys 0600, certificates 0644, as a real deployment would keep them.
        let write = |name: &str, text: &str| {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            let path = dir.join(name);
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write pem");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}
