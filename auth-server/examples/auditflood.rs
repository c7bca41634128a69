//! Audit under attack: a flood of logins against locked emails from many client addresses
//! (through a trusted proxy's `x-forwarded-for`), next to legitimate users logging in.
//!
//! Measures, in one run on one in-process server with the production argon2 parameters:
//! legitimate logins/s alone (the baseline), then the same callers while `--flood` callers send
//! logins for `--locked` locked emails from `--addresses` distinct addresses; the flood's
//! attempts/s, the audit rows it wrote (one per email per minute is the goal, against one per
//! attempt without aggregation), and the legitimate logins/s as a ratio to the baseline.
//!
//! `cargo run --release -p auth-server --example auditflood -- --backend sqlite|postgres|mysql`

#![allow(missing_docs)]

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{
    Application, Settings,
    storage::Store,
    testkit::{self, TestDatabase},
};
use clap::Parser;
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Legitimate callers (each its own account, right password).
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Flooding callers.
    #[arg(long, default_value_t = 32)]
    flood: usize,
    /// Locked emails the flood targets.
    #[arg(long, default_value_t = 10)]
    locked: usize,
    /// Distinct client addresses the flood comes from.
    #[arg(long, default_value_t = 1000)]
    addresses: u32,
    /// Backend: `sqlite`, `postgres` (TEST_DATABASE_URL) or `mysql` (TEST_MYSQL_URL).
    #[arg(long, default_value = "sqlite")]
    backend: String,
}

const PASSWORD: &str = "correct horse battery";

async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
    from: Option<String>,
) -> bool {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    if let Some(addr) = from
        && let Ok(value) = addr.parse()
    {
        request.metadata_mut().insert("x-forwarded-for", value);
    }
    client.login(request).await.is_ok()
}

/// Legitimate logins/s over `seconds`, while whatever else runs.
async fn legit_rate(client: &AuthServiceClient<Channel>, users: usize, seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let (mut client, stop, done) = (client.clone(), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let email = format!("user{u}@example.com");
                while !stop.load(Ordering::Relaxed) {
                    if login(&mut client, &email, PASSWORD, None).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / elapsed
}

async fn audit_rows(store: &Store) -> anyhow::Result<i64> {
    let conn = store.conn();
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'login_locked'",
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
    // The flood comes from many addresses through one proxy; the per-address limit would see
    // each address only a few times a minute, so it is off to let every attempt through.
    settings.protection.rate_limit = None;
    settings.protection.trusted_proxies = vec![IpAddr::from([127, 0, 0, 1])];
    let app = Application::build(settings.clone()).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = AuthServiceClient::new(channel);
    let store = Store::connect(&settings.database_url, 2).await?;
    for u in 0..args.users {
        client
            .clone()
            .register(pb::RegisterRequest {
                email: format!("user{u}@example.com"),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await?;
    }
    // Lock the targets: unknown emails lock like known ones.
    for v in 0..args.locked {
        for _ in 0..5 {
            login(
                &mut client.clone(),
                &format!("victim{v}@example.com"),
                "guess",
                None,
            )
            .await;
        }
    }

    let alone = legit_rate(&client, args.users, args.seconds).await;

    let flooding = Arc::new(AtomicBool::new(true));
    let attempts = Arc::new(AtomicU64::new(0));
    let rows_before = audit_rows(&store).await?;
    let flood: Vec<_> = (0..args.flood)
        .map(|f| {
            let (mut client, flooding, attempts) =
                (client.clone(), Arc::clone(&flooding), Arc::clone(&attempts));
            let (locked, addresses) = (args.locked, args.addresses);
            tokio::spawn(async move {
                let mut n = f as u32;
                while flooding.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let from = format!(
                        "10.{}.{}.{}",
                        (n % addresses) / 65_536,
                        (n % addresses) / 256 % 256,
                        (n % addresses) % 256
                    );
                    let email = format!("victim{}@example.com", n as usize % locked);
                    login(&mut client, &email, PASSWORD, Some(from)).await;
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let during = legit_rate(&client, args.users, args.seconds).await;
    flooding.store(false, Ordering::Relaxed);
    let flood_secs = started.elapsed().as_secs_f64();
    for task in flood {
        let _ = task.await;
    }
    // The last counts reach their records within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = audit_rows(&store).await? - rows_before;
    let attempts = attempts.load(Ordering::Relaxed);
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
    if let Some(url) = url {
        testkit::drop_database(&url);
    }
    let minutes = (flood_secs / 60.0).ceil().max(1.0);
    println!(
        "flood: {attempts} logins against {} locked emails from {} addresses in {flood_secs:.1} s ({:.0}/s); login_locked audit rows written: {rows} (one per email per minute: {}; one per attempt: {attempts})",
        args.locked,
        args.addresses,
        attempts as f64 / flood_secs,
        args.locked as f64 * minutes
    );
    println!(
        "legitimate logins/s: alone {alone:.1}, during the flood {during:.1} ({:.0} % of alone)",
        100.0 * during / alone
    );
    Ok(())
}
