//! Retention benchmark: do sessions and refresh tokens stay flat under a steady
//! login/refresh/logout load, how fast does housekeeping delete, and what does it cost Login?
//!
//! 1. Flatness: workers log in, refresh twice and log out, over and over, for `--seconds`;
//!    once with the session retention at a day (nothing is old enough to prune: the baseline)
//!    and once at 2 s with housekeeping every second. Row counts are sampled every second.
//! 2. Cost: `--backfill` ended sessions with 4 refresh tokens each (ended 10 days ago) are
//!    inserted, then the server starts with its default 7-day retention and housekeeping every
//!    second while workers log in; the deletion rate (rows/s) and Login p50/p99 while it runs
//!    are compared with Login p50/p99 right after, on the same server and load.
//!
//! `cargo run --release -p auth-server --example retentionbench -- --backend sqlite|postgres|mysql`

#![allow(missing_docs)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{
    Application, Settings,
    storage::{Store, retention::count_rows},
    testkit::{self, TestDatabase},
};
use clap::Parser;
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per load phase.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Ended sessions inserted before the cost phase (each with 4 refresh tokens).
    #[arg(long, default_value_t = 40_000)]
    backfill: usize,
    /// Rows per delete statement (`--prune-batch`).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Backend: `sqlite`, `postgres` (TEST_DATABASE_URL) or `mysql` (TEST_MYSQL_URL).
    #[arg(long, default_value = "sqlite")]
    backend: String,
}

const PASSWORD: &str = "correct horse battery";

struct Running {
    client: AuthServiceClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(settings: Settings) -> anyhow::Result<Running> {
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(Running {
        client: AuthServiceClient::new(channel),
        stop,
        handle,
    })
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// Runs `workers` clients for `seconds`; with `cycle`, each logs in, refreshes twice and
/// logs out, else it only logs in. Returns the login latencies and the row counts sampled
/// every second.
async fn load(
    client: &AuthServiceClient<Channel>,
    store: &Store,
    workers: usize,
    seconds: u64,
    cycle: bool,
) -> (Vec<Duration>, Vec<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut client = client.clone();
            let stop = Arc::clone(&stop);
            let latencies = Arc::clone(&latencies);
            tokio::spawn(async move {
                let email = format!("bench{w}@example.com");
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let Ok(login) = client
                        .login(pb::LoginRequest {
                            email: email.clone(),
                            password: PASSWORD.into(),
                        })
                        .await
                    else {
                        continue;
                    };
                    latencies.lock().expect("lock").push(started.elapsed());
                    if !cycle {
                        continue;
                    }
                    let mut login = login.into_inner();
                    let mut refresh = login.refresh_token.clone();
                    for _ in 0..2 {
                        if let Ok(pair) = client
                            .refresh(pb::RefreshRequest {
                                refresh_token: refresh.clone(),
                            })
                            .await
                        {
                            let pair = pair.into_inner();
                            refresh = pair.refresh_token;
                            login.access_token = pair.access_token;
                        }
                    }
                    let mut request = tonic::Request::new(pb::LogoutRequest::default());
                    if let Ok(value) = format!("Bearer {}", login.access_token).parse() {
                        request.metadata_mut().insert("authorization", value);
                    }
                    let _ = client.logout(request).await;
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (sessions, tokens, _) = count_rows(store.conn()).await.unwrap_or_default();
        samples.push((sessions, tokens));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let latencies = std::mem::take(&mut *latencies.lock().expect("lock"));
    (latencies, samples)
}

fn percentile_ms(latencies: &mut [Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies.sort();
    let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[index].as_secs_f64() * 1000.0
}

/// Inserts `count` sessions of `user_id` that ended 10 days ago, each with 4 spent refresh
/// tokens, in multi-row statements.
async fn backfill(store: &Store, user_id: &str, count: usize) -> anyhow::Result<()> {
    let conn = store.conn();
    let backend = conn.get_database_backend();
    let ended = auth_server::clock::millis_ago(Duration::from_secs(10 * 24 * 3600));
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut sessions = Vec::new();
        let mut tokens = Vec::new();
        for i in chunk {
            let id = format!("{:036}", i);
            sessions.push(format!(
                "('{id}', '{user_id}', {ended}, {ended}, {ended}, {ended}, 'logout')"
            ));
            for t in 0..4 {
                tokens.push(format!(
                    "('{:064}', '{id}', {ended}, {ended}, {ended})",
                    i * 4 + t
                ));
            }
        }
        conn.execute_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason) VALUES {}",
                sessions.join(", ")
            ),
        ))
        .await?;
        conn.execute_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, used_at) VALUES {}",
                tokens.join(", ")
            ),
        ))
        .await?;
    }
    Ok(())
}

/// Backfilled refresh tokens still there (the sessions go first, their tokens with them).
async fn backlog_left(store: &Store) -> anyhow::Result<i64> {
    let conn = store.conn();
    let old = auth_server::clock::millis_ago(Duration::from_secs(5 * 24 * 3600));
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT COUNT(*) FROM refresh_tokens WHERE created_at < {old}"),
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("count"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let kind = match args.backend.as_str() {
        "sqlite" => TestDatabase::Sqlite,
        "postgres" => TestDatabase::Postgres,
        "mysql" => TestDatabase::Mysql,
        other => anyhow::bail!("unknown backend {other}"),
    };
    let url = testkit::create_database(kind).await;
    let mut settings = Settings::for_data_dir(dir.path().join("data"), url.clone());
    settings.protection.rate_limit = None;
    settings.lifecycle.housekeeping_interval = Duration::from_secs(1);
    settings.lifecycle.prune_batch = args.batch;
    // The first server creates and migrates the database.
    start(settings.clone()).await?.stop().await;
    let store = Store::connect(&settings.database_url, 2).await?;

    // 1. Flatness: the same load without and with pruning.
    let mut rows = Vec::new();
    for retention in [Duration::from_secs(24 * 3600), Duration::from_secs(2)] {
        let mut phase = settings.clone();
        phase.lifecycle.session_retention = retention;
        let server = start(phase).await?;
        for w in 0..args.workers {
            let _ = server
                .client
                .clone()
                .register(pb::RegisterRequest {
                    email: format!("bench{w}@example.com"),
                    password: PASSWORD.into(),
                    ..Default::default()
                })
                .await;
        }
        let (latencies, samples) =
            load(&server.client, &store, args.workers, args.seconds, true).await;
        println!(
            "retention {:>6} s: {} logins (each + 2 refreshes + logout); sessions/refresh tokens each second: {:?}",
            retention.as_secs(),
            latencies.len(),
            samples
        );
        rows.push(samples.last().copied().unwrap_or_default());
        server.stop().await;
    }
    let (kept, pruned) = (rows[0], rows[1]);
    println!(
        "rows after {} s: without pruning {} sessions + {} tokens, with pruning {} + {} ({:.1} % of the baseline)",
        args.seconds,
        kept.0,
        kept.1,
        pruned.0,
        pruned.1,
        100.0 * (pruned.0 + pruned.1) as f64 / (kept.0 + kept.1).max(1) as f64
    );

    // 2. Cost: a backlog of old rows deleted while logins run.
    let (user_id,): (String,) = {
        let conn = store.conn();
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT id FROM users WHERE email = 'bench0@example.com'",
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("bench user"))?;
        (row.try_get_by_index::<String>(0)?,)
    };
    backfill(&store, &user_id, args.backfill).await?;
    let (s0, t0, _) = count_rows(store.conn()).await?;
    let mut phase = settings.clone();
    phase.lifecycle.session_retention = Duration::from_secs(7 * 24 * 3600);
    let server = start(phase).await?;
    let started = Instant::now();
    let watch = async {
        for _ in 0..1200 {
            if backlog_left(&store).await.unwrap_or(1) == 0 {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    // Logins for the first 3 s of the deletion (it takes longer than that).
    let ((mut during, _), drained) =
        tokio::join!(load(&server.client, &store, args.workers, 3, false), watch);
    let (mut after, _) = load(&server.client, &store, args.workers, 3, false).await;
    server.stop().await;
    let drained = drained.ok_or_else(|| anyhow::anyhow!("backlog not pruned in 60 s"))?;
    println!(
        "backlog {} sessions + {} tokens deleted in {:.2} s ({:.0} rows/s, batches of {})",
        s0,
        t0,
        drained.as_secs_f64(),
        (s0 + t0) as f64 / drained.as_secs_f64(),
        settings.lifecycle.prune_batch
    );
    let (d50, d99) = (
        percentile_ms(&mut during, 0.5),
        percentile_ms(&mut during, 0.99),
    );
    let (a50, a99) = (
        percentile_ms(&mut after, 0.5),
        percentile_ms(&mut after, 0.99),
    );
    println!(
        "Login while pruning: p50 {d50:.1} ms p99 {d99:.1} ms ({} logins); after: p50 {a50:.1} ms p99 {a99:.1} ms ({} logins); ratio p50 {:.2}, p99 {:.2}",
        during.len(),
        after.len(),
        d50 / a50,
        d99 / a99
    );
    store.close().await;
    if let Some(url) = url {
        testkit::drop_database(&url);
    }
    Ok(())
}
