//! Prometheus metrics (OpenMetrics text via `prometheus-client`) and the operator HTTP listener:
//! `GET /metrics`, `GET /livez` (the process is up), `GET /readyz` (database reachable,
//! migrations current, a signing key loaded; the body names the database server and version). Off unless `--metrics-listen` is set.
//!
//! Counters and histograms are updated where things happen (the RPC layer, login outcomes, the
//! hash pool); gauges (queue depth, revocation set, event head, subscribers, lag, database
//! pool) are read at scrape time.

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    events::EventHub,
    passwords::HashPool,
    revocation::Revocations,
    storage::{DbTiming, Store},
    tokens::TokenIssuer,
};

/// Labels of RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub method: String,
    /// gRPC status code name, for example `OK` or `UNAUTHENTICATED`.
    pub code: String,
}

/// Labels of login outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success`, `failure`, `locked`, `mfa_required`, `mfa_failed`.
    pub outcome: String,
}

/// Labels of database pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `in_use` or `idle`.
    pub state: String,
}

/// Labels of database query latency (static strings: recorded on every statement, so no
/// allocation per statement).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// `select`, `insert`, `update`, `delete` or `other`.
    pub operation: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of database pool waits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric of the server. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    logins: Family<OutcomeLabels, Counter>,
    lockouts: Counter,
    rehashes: Counter,
    hash_wait: Histogram,
    hash_queue: Gauge,
    log_suppressed: Counter,
    revoked_sessions: Gauge,
    event_head: Gauge,
    event_subscribers: Gauge,
    event_lag: Gauge,
    db_connections: Family<PoolLabels, Gauge>,
    db_max_connections: Gauge,
    db_queries: Family<QueryLabels, Histogram, fn() -> Histogram>,
    db_begin_wait: Family<BackendLabels, Histogram, fn() -> Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, prefixed `auth_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("auth");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        let lockouts = Counter::default();
        let rehashes = Counter::default();
        let hash_wait = latency_histogram();
        let hash_queue = Gauge::default();
        let log_suppressed = Counter::default();
        let revoked_sessions = Gauge::default();
        let event_head = Gauge::default();
        let event_subscribers = Gauge::default();
        let event_lag = Gauge::default();
        let db_connections = Family::<PoolLabels, Gauge>::default();
        let db_max_connections = Gauge::default();
        let db_queries = Family::<QueryLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let db_begin_wait =
            Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "db_max_connections",
            "Connections the database pool may open",
            db_max_connections.clone(),
        );
        registry.register(
            "db_query_duration_seconds",
            "Database statement latency (on a connection already held) by backend, operation and outcome",
            db_queries.clone(),
        );
        registry.register(
            "db_begin_wait_seconds",
            "Time a transaction waited for a pooled connection and its BEGIN, by backend",
            db_begin_wait.clone(),
        );
        registry.register(
            "rpc_requests",
            "gRPC requests by method and status code",
            rpc_requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC request latency until the response starts, by method and status code",
            rpc_duration.clone(),
        );
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "lockouts",
            "Emails locked after repeated failed logins",
            lockouts.clone(),
        );
        registry.register(
            "password_rehashes",
            "Stored hashes replaced at login by an argon2id hash with the current parameters",
            rehashes.clone(),
        );
        registry.register(
            "hash_wait_seconds",
            "Time password hashing jobs waited for a hashing thread",
            hash_wait.clone(),
        );
        registry.register(
            "hash_queue_depth",
            "Password hashing jobs running or waiting",
            hash_queue.clone(),
        );
        registry.register(
            "revoked_sessions",
            "Sessions in the in-memory revocation set behind Validate",
            revoked_sessions.clone(),
        );
        registry.register(
            "event_head_sequence",
            "Newest user event published to this process's streams",
            event_head.clone(),
        );
        registry.register(
            "event_subscribers",
            "Open UserEvents streams",
            event_subscribers.clone(),
        );
        registry.register(
            "event_subscriber_lag",
            "Events the slowest open stream is behind",
            event_lag.clone(),
        );
        registry.register(
            "log_lines_suppressed",
            "Repeated warning and error lines held back by the one-line-per-10-s log limit",
            log_suppressed.clone(),
        );
        registry.register(
            "db_connections",
            "Database pool connections by state",
            db_connections.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                rpc_requests,
                rpc_duration,
                logins,
                lockouts,
                rehashes,
                hash_wait,
                hash_queue,
                log_suppressed,
                revoked_sessions,
                event_head,
                event_subscribers,
                event_lag,
                db_connections,
                db_max_connections,
                db_queries,
                db_begin_wait,
            }),
        }
    }

    /// Counts one RPC and its latency.
    pub fn observe_rpc(&self, method: &str, code: &str, elapsed: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code: code.to_owned(),
        };
        self.inner.rpc_requests.get_or_create(&labels).inc();
        self.inner
            .rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a login outcome.
    pub fn login(&self, outcome: &str) {
        self.inner
            .logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a stored hash replaced with one of the current parameters.
    pub fn rehash(&self) {
        self.inner.rehashes.inc();
    }

    /// Counts a lockout.
    pub fn lockout(&self) {
        self.inner.lockouts.inc();
    }

    /// Records the timings of `store` (queries and transaction starts) from now on.
    pub fn observe_store(&self, store: &Store, max_connections: u32) {
        let backend = match store.backend() {
            sea_orm::DbBackend::Postgres => "postgres",
            sea_orm::DbBackend::MySql => "mysql",
            _ => "sqlite",
        };
        self.inner
            .db_max_connections
            .set(i64::from(max_connections));
        let inner = Arc::clone(&self.inner);
        let begin_labels = BackendLabels {
            backend: backend.to_owned(),
        };
        store.observe(Arc::new(move |timing| match timing {
            DbTiming::Query {
                operation,
                elapsed,
                failed,
            } => {
                let labels = QueryLabels {
                    backend,
                    operation,
                    outcome: if failed { "error" } else { "ok" },
                };
                inner
                    .db_queries
                    .get_or_create(&labels)
                    .observe(elapsed.as_secs_f64());
            }
            DbTiming::Begin { elapsed } => {
                inner
                    .db_begin_wait
                    .get_or_create(&begin_labels)
                    .observe(elapsed.as_secs_f64());
            }
        }));
    }

    /// The histogram the hash pool records its queue waits in.
    pub fn hash_wait(&self) -> Histogram {
        self.inner.hash_wait.clone()
    }

    /// The OpenMetrics text of every metric, after reading the gauges from `sources`.
    pub fn render(&self, sources: &Sources) -> String {
        let inner = &self.inner;
        inner
            .hash_queue
            .set(i64::try_from(sources.hasher.in_flight()).unwrap_or(i64::MAX));
        inner
            .revoked_sessions
            .set(i64::try_from(sources.revocations.len()).unwrap_or(i64::MAX));
        inner.event_head.set(sources.events.published());
        inner
            .event_subscribers
            .set(i64::try_from(sources.events.subscriber_count()).unwrap_or(i64::MAX));
        inner.event_lag.set(sources.events.max_subscriber_lag());
        let (size, idle) = sources.store.pool_usage();
        let in_use = PoolLabels {
            state: "in_use".into(),
        };
        let idle_labels = PoolLabels {
            state: "idle".into(),
        };
        inner
            .db_connections
            .get_or_create(&in_use)
            .set(i64::from(size.saturating_sub(idle)));
        inner
            .db_connections
            .get_or_create(&idle_labels)
            .set(i64::from(idle));
        let mut out = String::new();
        let registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Under the registry lock, so two renders do not both add the same lines.
        let suppressed = crate::log_limit::suppressed_total();
        inner
            .log_suppressed
            .inc_by(suppressed.saturating_sub(inner.log_suppressed.get()));
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Where the scrape-time gauges come from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The hash pool.
    pub hasher: HashPool,
    /// The revocation set.
    pub revocations: Revocations,
    /// The event feed.
    pub events: EventHub,
    /// The database.
    pub store: Store,
    /// The signing keys.
    pub tokens: Arc<TokenIssuer>,
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    sources: Sources,
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.sources),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    let store = &state.sources.store;
    let checks = tokio::time::timeout(Duration::from_secs(2), async {
        let version = store
            .server_version()
            .await
            .map_err(|_| "database unreachable")?;
        match store.is_migrated().await {
            Ok(true) => {}
            Ok(false) => return Err("database migrations pending"),
            Err(_) => return Err("database unreachable"),
        }
        // A key set always has a signer; this reads it to prove keys are loaded.
        let _ = state.sources.tokens.keys().signer().kid();
        Ok(version)
    })
    .await
    .unwrap_or(Err("database check timed out"));
    match checks {
        Ok(version) => (StatusCode::OK, format!("ready: database {version}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves `/metrics`, `/livez` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    sources: Sources,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, sources });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener (so a bad address fails at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
