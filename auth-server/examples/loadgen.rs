//! Load generator for `Validate` and `Login`, with same-run baselines.
//!
//! It measures, on the same cores and in the same run:
//! 1. raw `pasetors` v4.public verifies/s on every core (the ceiling for `Validate`);
//! 2. raw argon2id hashes/s on the hash pool's thread count (the ceiling for `Login`);
//! 3. `Validate` and `Login` through gRPC from N concurrent callers: req/s, p50, p99;
//! 4. `Login` floods against a locked email (refused without hashing) vs the raw hash rate;
//! 5. overload: correct-password logins offered open-loop at 10x the rate measured in (3)
//!    (requests sent on a schedule, whatever the answers): successful logins/s against the rate
//!    without overload, and the refusal latency;
//! 6. `Validate` p99 from a few callers alone and during that login storm.
//!
//! A closed loop of many callers that retry the instant they are refused (`--retry-storm`)
//! offers far more than 10x: then the refusals themselves, and this process generating them on
//! the same cores, are the load.
//!
//! and prints the ratios. Without `--target` it starts an in-process server with the production
//! argon2 parameters on a fresh database: a temporary SQLite file, or with `--backend postgres` /
//! `--backend mysql` a database on the `TEST_DATABASE_URL` / `TEST_MYSQL_URL` server (dropped at
//! the end).
//!
//! `cargo run --release -p auth-server --example loadgen -- --concurrency 32 --seconds 10 --backend mysql`

#![allow(missing_docs)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{
    Application, Settings,
    passwords::HashingSettings,
    passwords::{HashPool, HashPriority, Password},
    testkit::{self, TestDatabase},
};
use clap::Parser;
use pasetors::{
    Public,
    keys::{AsymmetricKeyPair, Generate},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use tonic::{Code, transport::Channel};

#[derive(Debug, Parser)]
struct Args {
    /// Server to load (`host:port`); default: an in-process server on a temporary SQLite file.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds of (baseline, measurement); the median ratio is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Hash threads of the in-process server (default: cores).
    #[arg(long)]
    hash_threads: Option<usize>,
    /// How the in-process server's hashing threads give way to its request threads: `mixed`
    /// (the server's default), `idle`, `nice` (nice 10), `nice=N` or `normal`.
    #[arg(long, value_parser = parse_priority)]
    hash_priority: Option<HashPriority>,
    /// Callers of the Validate-during-a-login-storm measurement.
    #[arg(long, default_value_t = 8)]
    validate_callers: usize,
    /// Validate calls per second of the open-loop Validate-during-a-storm measurement.
    #[arg(long, default_value_t = 2000.0)]
    validate_rate: f64,
    /// Overload factor: login callers = factor x concurrency.
    #[arg(long, default_value_t = 10)]
    overload: usize,
    /// Also measure a closed loop of overload x concurrency callers retrying at once.
    #[arg(long)]
    retry_storm: bool,
    /// Database of the in-process server: `sqlite`, `postgres` or `mysql`.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Organizations the logging-in user belongs to (each login and refresh reads them into
    /// the token; 32 is the most a token carries). In-process server only.
    #[arg(long, default_value_t = 0)]
    memberships: usize,
}

fn parse_priority(value: &str) -> Result<HashPriority, String> {
    match value {
        "mixed" => Ok(HashPriority::Mixed(10)),
        "idle" => Ok(HashPriority::Idle),
        "nice" => Ok(HashPriority::Nice(10)),
        "normal" => Ok(HashPriority::Normal),
        _ => match value.strip_prefix("nice=") {
            Some(n) => n.parse().map(HashPriority::Nice).map_err(|e| e.to_string()),
            None => Err(format!("{value}: mixed, idle, nice, nice=N or normal")),
        },
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `work` on `threads` OS threads for `duration`; returns operations per second.
fn per_second_on_threads(threads: usize, duration: Duration, work: impl Fn() + Sync) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    work();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    exhausted: u64,
    /// Latency of the RESOURCE_EXHAUSTED answers: p50, p99.
    refusal: (Duration, Duration),
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// `concurrency` callers repeat `call` for `duration`.
async fn measure<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let call = Arc::clone(&call);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut refusals) = (Vec::new(), Vec::new());
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match call(worker).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(s) if s.code() == Code::ResourceExhausted => refusals.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, refusals, errors)
        }));
    }
    let (mut all, mut refused) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for task in tasks {
        let (l, r, e) = task.await.expect("worker");
        all.extend(l);
        refused.extend(r);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    refused.sort();
    Measured {
        per_second: all.len() as f64 / elapsed,
        p50: quantile(&all, 0.50),
        p99: quantile(&all, 0.99),
        errors,
        exhausted: refused.len() as u64,
        refusal: (quantile(&refused, 0.50), quantile(&refused, 0.99)),
    }
}

/// Sends `call` `rate` times per second for `duration` on a fixed schedule, without waiting
/// for answers (an open loop: a slow server does not slow the senders down).
async fn open_loop<F, Fut>(rate: f64, duration: Duration, call: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = tokio::task::JoinSet::new();
    let mut n = 0usize;
    while start.elapsed() < duration {
        ticker.tick().await;
        let call = Arc::clone(&call);
        let t = Instant::now();
        let future = call(n);
        n += 1;
        sent.spawn(async move { (future.await, t.elapsed(), start.elapsed()) });
    }
    let (mut ok, mut refused, mut errors) = (Vec::new(), Vec::new(), 0u64);
    // Successes per second counts those that finished within the window.
    let mut in_window = 0usize;
    while let Some(done) = sent.join_next().await {
        match done.expect("call") {
            (Ok(()), t, finished) => {
                ok.push(t);
                in_window += usize::from(finished <= duration);
            }
            (Err(s), t, _) if s.code() == Code::ResourceExhausted => refused.push(t),
            _ => errors += 1,
        }
    }
    ok.sort();
    refused.sort();
    Measured {
        per_second: in_window as f64 / duration.as_secs_f64(),
        p50: quantile(&ok, 0.50),
        p99: quantile(&ok, 0.99),
        errors,
        exhausted: refused.len() as u64,
        refusal: (quantile(&refused, 0.50), quantile(&refused, 0.99)),
    }
}

fn report(name: &str, m: &Measured) {
    println!(
        "  {name:<10} {:>10.0} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   errors {}   resource_exhausted {}",
        m.per_second,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
        m.errors,
        m.exhausted
    );
    if m.exhausted > 0 {
        println!(
            "  {:<10} refusals: p50 {:>8.3} ms   p99 {:>8.3} ms",
            "",
            m.refusal.0.as_secs_f64() * 1e3,
            m.refusal.1.as_secs_f64() * 1e3
        );
    }
}

/// Puts `user_id` into `count` new organizations, straight into the database.
async fn add_memberships(url: &str, user_id: &str, count: usize) -> anyhow::Result<()> {
    use auth_server::storage::{Store, organizations};
    let store = Store::connect(url, 1).await?;
    let tx = store.begin_write().await?;
    for i in 0..count {
        let org = organizations::OrganizationRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: format!("Load {i}"),
            slug: format!("load-{i}"),
            metadata: Default::default(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            deleted: false,
        };
        organizations::insert_organization(&*tx, &org).await?;
        organizations::add_membership(&*tx, &org.id, user_id, &["editor".to_owned()]).await?;
    }
    tx.commit().await?;
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let hash_threads = args.hash_threads.unwrap_or_else(cores);
    let hashing = HashingSettings {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
        min_password_length: 8,
    };

    // Server.
    let _dir;
    let mut database_url = None;
    let mut server_database_url = None;
    let mut hash_pool = None;
    let addr = match args.target {
        Some(addr) => addr,
        None => {
            let dir = tempfile::tempdir()?;
            let kind = match args.backend.as_str() {
                "sqlite" => TestDatabase::Sqlite,
                "postgres" => TestDatabase::Postgres,
                "mysql" => TestDatabase::Mysql,
                other => anyhow::bail!("unknown backend {other}: sqlite, postgres or mysql"),
            };
            database_url = testkit::create_database(kind).await;
            let mut settings =
                Settings::for_data_dir(dir.path().join("data"), database_url.clone());
            settings.hashing = hashing;
            settings.hash_threads = hash_threads;
            settings.hash_queue = args.concurrency * 2;
            if let Some(priority) = args.hash_priority {
                settings.hash_priority = priority;
            }
            // One load generator on 127.0.0.1 would hit the per-address limit at once.
            settings.protection.rate_limit = None;
            // The locked email must stay locked through every round.
            settings.protection.lockout.lockout_base_secs = 3600;
            server_database_url = Some(settings.database_url.clone());
            let app = Application::build(settings).await?;
            let addr = app.local_addr();
            hash_pool = Some(app.hash_pool());
            tokio::spawn(app.run_until_stopped(std::future::pending()));
            _dir = dir;
            addr
        }
    };
    println!(
        "auth-server at {addr} ({}); {} cores; {} callers; {} s per measurement",
        if args.target.is_some() {
            "external"
        } else {
            args.backend.as_str()
        },
        cores(),
        args.concurrency,
        args.seconds
    );

    // Baselines, same cores, same run.
    let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let sample = PublicToken::sign(
        &pair.secret,
        &[b'x'; 330],
        Some(b"{\"kid\":\"k4.pid.x\"}"),
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let raw_verify = || {
        per_second_on_threads(cores(), duration, || {
            let t = UntrustedToken::<Public, V4>::try_from(sample.as_str()).expect("parse");
            PublicToken::verify(&pair.public, &t, None, None).expect("valid");
        })
    };
    let pool = HashPool::new(&hashing, 1, 0)?;
    let raw_password = Password::new("correct horse battery".into());
    let raw_hash = || {
        per_second_on_threads(hash_threads, duration, || {
            pool.hash_blocking(&raw_password).expect("hash");
        })
    };

    // Clients.
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    let client = |i: usize| AuthServiceClient::new(channels[i % channels.len()].clone());
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery".to_owned();
    let mut c = client(0);
    let user_id = c
        .register(pb::RegisterRequest {
            email: email.clone(),
            password: password.clone(),
            display_name: String::new(),
        })
        .await?
        .into_inner()
        .user
        .map(|u| u.id)
        .unwrap_or_default();
    if args.memberships > 0 {
        let url = server_database_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--memberships needs the in-process server"))?;
        add_memberships(url, &user_id, args.memberships).await?;
        println!(
            "the logging-in user belongs to {} organizations",
            args.memberships
        );
    }
    let token = c
        .login(pb::LoginRequest {
            email: email.clone(),
            password: password.clone(),
        })
        .await?
        .into_inner()
        .access_token;
    let clients: Arc<Vec<_>> = Arc::new((0..args.concurrency).map(client).collect());
    let storm_callers = args.concurrency * args.overload.max(1);
    let storm_clients: Arc<Vec<_>> = Arc::new((0..storm_callers).map(client).collect());
    // Correct-password logins from `n` callers, each calling again as soon as it has an answer.
    let logins = |clients: Arc<Vec<AuthServiceClient<Channel>>>, n: usize| {
        let (email, password) = (email.clone(), password.clone());
        measure(n, duration, move |w| {
            let mut c = clients[w].clone();
            let req = pb::LoginRequest {
                email: email.clone(),
                password: password.clone(),
            };
            async move { c.login(req).await.map(|_| ()) }
        })
    };
    let offered_logins = |rate: f64| {
        let clients = Arc::clone(&storm_clients);
        let (email, password) = (email.clone(), password.clone());
        open_loop(rate, duration, move |n| {
            let mut c = clients[n % clients.len()].clone();
            let req = pb::LoginRequest {
                email: email.clone(),
                password: password.clone(),
            };
            async move { c.login(req).await.map(|_| ()) }
        })
    };
    let offered_validates = |rate: f64| {
        let clients = Arc::clone(&clients);
        let token = token.clone();
        open_loop(rate, duration, move |n| {
            let mut c = clients[n % clients.len()].clone();
            let token = token.clone();
            async move { c.validate(pb::ValidateRequest { token }).await.map(|_| ()) }
        })
    };
    let validates = |n: usize| {
        let clients = Arc::clone(&clients);
        let token = token.clone();
        measure(n, duration, move |w| {
            let mut c = clients[w % clients.len()].clone();
            let token = token.clone();
            async move { c.validate(pb::ValidateRequest { token }).await.map(|_| ()) }
        })
    };
    // An email locked by five wrong passwords.
    let locked_email = format!("locked-{}@example.com", uuid::Uuid::new_v4().simple());
    for _ in 0..5 {
        let _ = c
            .login(pb::LoginRequest {
                email: locked_email.clone(),
                password: "wrong password".into(),
            })
            .await;
    }

    // Rounds alternate baseline and measurement so drift on a noisy machine hits both.
    let (mut verify_ratios, mut login_ratios, mut locked_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut overload_ratios, mut refusal_p99s, mut storm_ratios, mut storm_p99s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut paced_ratios, mut paced_p99s, mut storm_logins) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        println!("round {round}");
        let verify_base = raw_verify();
        println!(
            "  raw pasetors verify on {} threads: {verify_base:>10.0} /s",
            cores()
        );
        let validate = {
            let clients = Arc::clone(&clients);
            let token = token.clone();
            measure(args.concurrency, duration, move |w| {
                let mut c = clients[w].clone();
                let token = token.clone();
                async move { c.validate(pb::ValidateRequest { token }).await.map(|_| ()) }
            })
            .await
        };
        report("Validate", &validate);
        let hash_base = raw_hash();
        println!("  raw argon2id hash on {hash_threads} threads: {hash_base:>10.1} /s");
        let login = logins(Arc::clone(&clients), args.concurrency).await;
        report("Login", &login);
        let hashes_before = hash_pool.as_ref().map(|p| p.computed());
        let locked = {
            let clients = Arc::clone(&clients);
            let email = locked_email.clone();
            measure(args.concurrency, duration, move |w| {
                let mut c = clients[w].clone();
                let req = pb::LoginRequest {
                    email: email.clone(),
                    password: "correct horse battery".into(),
                };
                async move {
                    match c.login(req).await {
                        Err(s) if s.code() == Code::Unauthenticated => Ok(()),
                        Ok(_) => Err(tonic::Status::internal("a locked email logged in")),
                        Err(s) => Err(s),
                    }
                }
            })
            .await
        };
        report("Locked", &locked);
        if let (Some(pool), Some(before)) = (&hash_pool, hashes_before) {
            println!(
                "  argon2 computations during the locked flood: {}",
                pool.computed() - before
            );
        }
        let offered = login.per_second * args.overload as f64;
        let overloaded = offered_logins(offered).await;
        report(&format!("Login {offered:.0}/s"), &overloaded);
        let alone = validates(args.validate_callers).await;
        report("Val. alone", &alone);
        let (during, storm) =
            tokio::join!(validates(args.validate_callers), offered_logins(offered));
        report("Val. storm", &during);
        report("  (storm)", &storm);
        let paced_alone = offered_validates(args.validate_rate).await;
        report(&format!("Val. {:.0}/s", args.validate_rate), &paced_alone);
        let (paced_during, _) = tokio::join!(
            offered_validates(args.validate_rate),
            offered_logins(offered)
        );
        report("  + storm", &paced_during);
        paced_ratios.push(paced_during.p99.as_secs_f64() / paced_alone.p99.as_secs_f64());
        paced_p99s.push(paced_during.p99.as_secs_f64() * 1e3);
        storm_logins.push(storm.per_second / login.per_second);
        if args.retry_storm {
            let closed = logins(Arc::clone(&storm_clients), storm_callers).await;
            report(&format!("Login {storm_callers}c"), &closed);
            let (during, _) = tokio::join!(
                validates(args.validate_callers),
                logins(Arc::clone(&storm_clients), storm_callers)
            );
            report("Val.+retry", &during);
        }
        overload_ratios.push(overloaded.per_second / login.per_second);
        refusal_p99s.push(overloaded.refusal.1.as_secs_f64() * 1e3);
        storm_ratios.push(during.p99.as_secs_f64() / alone.p99.as_secs_f64());
        storm_p99s.push(during.p99.as_secs_f64() * 1e3);
        verify_ratios.push(validate.per_second / verify_base);
        login_ratios.push(login.per_second / hash_base);
        locked_ratios.push(locked.per_second / hash_base);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median ratios over {} rounds: Validate / raw verify = {:.0} %   Login / raw hash ({hash_threads} threads) = {:.0} %",
        args.rounds,
        100.0 * median(&mut verify_ratios),
        100.0 * median(&mut login_ratios)
    );
    println!(
        "locked-email Login / raw hash = {:.0}x (attempts on a locked email cost no hash)",
        median(&mut locked_ratios)
    );
    println!(
        "overload (logins offered at {}x the rate above, open loop): successful logins = {:.0} % of the rate without overload; refusal p99 = {:.2} ms",
        args.overload,
        100.0 * median(&mut overload_ratios),
        median(&mut refusal_p99s)
    );
    println!(
        "Validate p99 during the login storm = {:.2} ms = {:.1}x its p99 alone ({} callers)",
        median(&mut storm_p99s),
        median(&mut storm_ratios),
        args.validate_callers
    );
    println!(
        "Validate p99 at {:.0}/s during the login storm = {:.2} ms = {:.1}x its p99 alone; logins during the closed-loop Validate storm = {:.0} % of the rate without overload",
        args.validate_rate,
        median(&mut paced_p99s),
        median(&mut paced_ratios),
        100.0 * median(&mut storm_logins)
    );
    if let Some(url) = database_url {
        testkit::drop_database(&url);
    }
    Ok(())
}
