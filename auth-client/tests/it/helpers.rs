//! A real auth-server on a loopback port (fresh SQLite file or PostgreSQL database) that can be
//! stopped and started again on the same port, for the client to lose and regain it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use auth_client::{AuthClient, Validator};
use auth_server::{Application, Settings, config::HashingSettings};
use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

pub const PASSWORD: &str = "correct horse battery";
const CHEAP: HashingSettings = HashingSettings {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
    min_password_length: 8,
};

pub struct Server {
    pub addr: SocketAddr,
    pub settings: Settings,
    _dir: Arc<TempDir>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

async fn postgres_url() -> String {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
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
    pub async fn start(postgres: bool, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let url = if postgres {
            Some(postgres_url().await)
        } else {
            None
        };
        let mut settings = Settings::for_data_dir(dir.path().join("data"), url);
        settings.hashing = CHEAP;
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

    pub async fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            handle.await.expect("server task");
        }
    }

    pub fn client(&self) -> AuthClient {
        AuthClient::connect_lazy(&format!("http://{}", self.addr))
            .expect("url")
            .with_timeout(Duration::from_millis(500))
    }

    pub fn validator(&self, ttl: Duration, grace: Duration) -> Validator {
        Validator::builder(self.client())
            .ttl(ttl)
            .grace(grace)
            .build()
    }

    /// Registers `email` and logs in; returns the access token.
    pub async fn user(&self, email: &str) -> auth_client::Session {
        let client = self.client();
        client
            .register(email, PASSWORD, "")
            .await
            .expect("register");
        client.login(email, PASSWORD).await.expect("login")
    }

    /// An account with roles, created directly in the database as `create-user` would.
    pub async fn account_with_roles(&self, email: &str, roles: &[&str]) {
        let store = auth_server::storage::Store::connect(&self.settings.database_url, 2)
            .await
            .expect("store");
        let hasher = auth_server::passwords::HashPool::new(&CHEAP, 1, 1).expect("pool");
        let new = auth_server::accounts::NewAccount {
            email,
            password: auth_server::passwords::Password::new(PASSWORD.into()),
            display_name: "",
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        auth_server::accounts::create_account(&store, &hasher, 8, new)
            .await
            .expect("account");
        store.close().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((tx, _)) = self.running.take() {
            let _ = tx.send(());
        }
    }
}
