//! A backend-example on a loopback port next to a testkit auth-server, and a small HTTP client.

use std::{net::SocketAddr, time::Duration};

pub use auth_server::testkit::{PASSWORD, Server, TestDatabase};
use axum::body::Body;
use backend_example::{Backend, Config};
use http_body_util::BodyExt as _;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

pub const SERVICE_EMAIL: &str = "backend@example.com";

/// The backend's own database kind.
pub type Db = TestDatabase;

/// The backend's own database for one test; a server database is dropped with it.
pub struct BackendDb {
    pub url: String,
}

impl Drop for BackendDb {
    fn drop(&mut self) {
        auth_server::testkit::drop_database(&self.url);
    }
}

/// A fresh database for the backend.
pub async fn backend_db(kind: Db, dir: &tempfile::TempDir) -> BackendDb {
    match auth_server::testkit::create_database(kind).await {
        Some(url) => BackendDb { url },
        None => BackendDb {
            url: format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("backend.db").display()
            ),
        },
    }
}

/// An auth-server with the backend's service account.
pub async fn auth_server() -> Server {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    server
        .account_with_roles(SERVICE_EMAIL, &["events.subscriber"])
        .await;
    server
}

pub struct TestBackend {
    pub addr: SocketAddr,
    pub config: Config,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TestBackend {
    pub async fn start(auth: &Server, database_url: String) -> Self {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            auth_url: auth.url(),
            database_url,
            auth_api_key: None,
            auth_email: Some(SERVICE_EMAIL.into()),
            auth_password: Some(PASSWORD.into()),
            auth_ca_file: None,
            auth_client_cert: None,
            auth_client_key: None,
        };
        Self::start_config(config).await
    }

    pub async fn start_config(config: Config) -> Self {
        let mut backend = Self {
            addr: config.listen,
            config,
            running: None,
        };
        backend.resume().await;
        backend
    }

    pub async fn resume(&mut self) {
        let backend = Backend::build(self.config.clone())
            .await
            .expect("backend builds");
        self.addr = backend.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            backend
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await
                .expect("backend runs");
        });
        self.running = Some((tx, handle));
    }

    pub async fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            handle.await.expect("backend task");
        }
    }

    /// Sends a request; returns the status, the `Retry-After`/`WWW-Authenticate` headers and the JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = client
            .request(request.body(body).expect("request"))
            .await
            .expect("backend answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            json,
        }
    }

    pub async fn me(&self, token: Option<&str>) -> Response {
        self.request("GET", "/me", token, None).await
    }

    pub async fn health(&self) -> Value {
        let response = self.request("GET", "/health/sync", None, None).await;
        assert_eq!(response.status, 200, "{:?}", response.json);
        response.json
    }

    /// Waits until the mirror applied `sequence`.
    pub async fn wait_applied(&self, sequence: u64) {
        for _ in 0..200 {
            if self.health().await["last_applied_sequence"].as_u64() >= Some(sequence) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mirror never reached {sequence}: {}", self.health().await);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some((tx, _)) = self.running.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub json: Value,
}

/// Registers and logs in a user on auth-server; returns (access token, user id).
pub async fn user(auth: &Server, email: &str) -> (String, String) {
    let client = auth_client::AuthClient::connect_lazy(&auth.url()).expect("url");
    client
        .register(email, PASSWORD, "")
        .await
        .expect("register");
    let session = client
        .login(email, PASSWORD)
        .await
        .expect("login")
        .into_session()
        .expect("no MFA on this account");
    (
        session.access_token,
        session.user.map(|u| u.id).unwrap_or_default(),
    )
}

/// The auth-server's newest event sequence.
pub async fn auth_head(auth: &Server) -> u64 {
    let store = auth_server::storage::Store::connect(&auth.settings.database_url, 1)
        .await
        .expect("store");
    auth_server::storage::sequencer::drain(&store)
        .await
        .expect("sequence staged events");
    let head = auth_server::storage::events::find_head_sequence(store.conn())
        .await
        .expect("head");
    store.close().await;
    u64::try_from(head).expect("non-negative")
}

/// Declares `sqlite`, `postgres` and `mysql` variants of a test taking the backend's [`Db`].
#[macro_export]
macro_rules! every_backend_db {
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
