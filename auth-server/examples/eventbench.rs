//! Event outbox benchmark, with same-run baselines.
//!
//! 1. Outbox cost: user changes committed per second by 1 and by 16 writers, with the
//!    `UserUpdated` outbox row in the same transaction versus the same change without it, the
//!    two measured in alternating short slices.
//! 2. Delivery: commit-to-delivery latency (p50/p99) of an event committed through one pool and
//!    received by a `UserEvents` stream on a server instance that shares nothing in process with
//!    it (on PostgreSQL through `LISTEN/NOTIFY`, on MySQL through the 100 ms poll; on SQLite the
//!    two share the in-process signal of the one file).
//!
//! 3. With `--total-events N` (PostgreSQL, MySQL): N events from 16 writers, 8 on each of two
//!    server instances (each numbering its own writers' staged events), received by 4
//!    subscribers, 2 on each instance; counts gaps, repeats and per-user disorder.
//!
//! `cargo run --release -p auth-server --example eventbench -- --backend postgres|mysql|sqlite`
//! (a fresh database on the `TEST_DATABASE_URL` / `TEST_MYSQL_URL` server, dropped at the end).

#![allow(missing_docs)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{
    Application, Settings,
    domain::{NewAccount, create_account},
    passwords::HashingSettings,
    passwords::{HashPool, Password},
    storage::{
        EventKind, EventSubject, StorageError, Store, UserRecord, WriteTx, events::NewEvent,
        sequencer, users,
    },
    testkit::{self, TestDatabase},
};
use clap::Parser;
use tonic::{metadata::MetadataValue, transport::Channel};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each side (with and without the outbox) runs per throughput measurement.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Rounds of the throughput measurements (each compares with and without, interleaved).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Length of one slice of the interleaved with/without measurement, ms.
    #[arg(long, default_value_t = 250)]
    slice_ms: u64,
    /// Events for the latency measurement.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Backend: `postgres` (TEST_DATABASE_URL), `mysql` (TEST_MYSQL_URL) or `sqlite`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// Events for the two-replica gap check (0: skip it).
    #[arg(long, default_value_t = 0)]
    total_events: u64,
}

const CHEAP: HashingSettings = HashingSettings {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
    min_password_length: 8,
};

async fn database_url(backend: &str, dir: &std::path::Path) -> anyhow::Result<String> {
    let kind = match backend {
        "sqlite" => TestDatabase::Sqlite,
        "postgres" => TestDatabase::Postgres,
        "mysql" => TestDatabase::Mysql,
        other => anyhow::bail!("unknown backend {other}: sqlite, postgres or mysql"),
    };
    Ok(testkit::create_database(kind)
        .await
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("bench.db").display())))
}

/// Commits a change with its `UserUpdated` event, as the server's changes do
/// (`domain::change`: the events go with the commit).
async fn commit_with_event(tx: WriteTx, user: UserRecord) -> Result<(), StorageError> {
    let subject = EventSubject::User(user);
    let event = NewEvent {
        kind: EventKind::UserUpdated,
        subject: &subject,
        session_id: None,
    };
    tx.commit_with_events(&[event]).await
}

/// Changes per second with and without the outbox, measured in alternating slices of
/// `slice` (the order flipping each pair) until each side has run for `duration`: drift in the
/// machine's speed and the database's periodic work (SQLite's WAL checkpoints, PostgreSQL's
/// background writer) fall on both sides alike instead of on whichever ran second.
async fn paired_rates(
    store: &Store,
    user_ids: &[String],
    writers: usize,
    duration: Duration,
    slice: Duration,
) -> (f64, f64) {
    let pairs = (duration.as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as u32;
    let (mut with, mut without) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    for pair in 0..pairs {
        for outbox in [pair % 2 == 0, pair % 2 == 1] {
            let (done, took) = run_changes(store, user_ids, writers, slice, outbox).await;
            let side = if outbox { &mut with } else { &mut without };
            side.0 += done;
            side.1 += took;
        }
    }
    let rate = |(done, took): (u64, Duration)| done as f64 / took.as_secs_f64();
    (rate(with), rate(without))
}

/// `writers` tasks each change their own user as fast as they can for `duration`: the changes
/// committed and the time until the last writer finished.
async fn run_changes(
    store: &Store,
    user_ids: &[String],
    writers: usize,
    duration: Duration,
    outbox: bool,
) -> (u64, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in &user_ids[..writers] {
        let (store, done, stop, id) = (
            store.clone(),
            Arc::clone(&done),
            Arc::clone(&stop),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let tx = store.begin_write().await.expect("begin");
                let user = users::update_display_name(&*tx, &id, &format!("name {i}"))
                    .await
                    .expect("update")
                    .expect("user");
                if outbox {
                    commit_with_event(tx, user).await.expect("commit");
                } else {
                    tx.commit().await.expect("commit");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    (done.load(Ordering::Relaxed), start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = database_url(&args.backend, dir.path()).await?;
    let duration = Duration::from_secs(args.seconds);
    let slice = Duration::from_millis(args.slice_ms);

    // A server instance (the subscriber's side) on the database; it also migrates it.
    let mut settings = Settings::for_data_dir(dir.path().join("data"), Some(url.clone()));
    settings.hashing = CHEAP;
    settings.protection.rate_limit = None;
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    // The writer's side: its own connection pool and sequencer, as another replica would have.
    let store = Store::connect(&testkit::detached_url(&url), 20).await?;
    let (stop_sequencer, stopped) = tokio::sync::watch::channel(false);
    let writer_sequencer = tokio::spawn(sequencer::run(
        store.clone(),
        Duration::from_secs(1),
        stopped,
    ));
    let hasher = HashPool::new(&CHEAP, 1, 64)?;
    let mut user_ids = Vec::new();
    for i in 0..16 {
        let new = NewAccount {
            email: &format!("bench{i}@example.com"),
            password: Password::new("bench passphrase".into()),
            display_name: "",
            roles: if i == 0 {
                vec!["events.subscriber".into()]
            } else {
                vec![]
            },
        };
        user_ids.push(create_account(&store, &hasher, 8, new).await?.id);
    }

    println!(
        "backend {}; {} cores; {} s per side of each measurement, in alternating {} ms slices",
        args.backend,
        std::thread::available_parallelism()?,
        args.seconds,
        args.slice_ms
    );
    for round in 1..=args.rounds {
        for writers in [1, 16] {
            let (with, without) = paired_rates(&store, &user_ids, writers, duration, slice).await;
            println!(
                "round {round}, {writers:>2} writer(s): {with:>8.0} changes+events/s with outbox vs {without:>8.0} changes/s without  ({:.0} %)",
                100.0 * with / without
            );
        }
    }

    // Delivery latency: commit on the writer's pool, receive on the server's stream.
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = AuthServiceClient::new(channel);
    let login = client
        .login(pb::LoginRequest {
            email: "bench0@example.com".into(),
            password: "bench passphrase".into(),
        })
        .await?
        .into_inner();
    sequencer::drain(&store).await?;
    let head = auth_server::storage::events::find_head_sequence(store.conn()).await?;
    let mut request = tonic::Request::new(pb::UserEventsRequest {
        after_sequence: u64::try_from(head)?,
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", login.access_token))?,
    );
    let mut stream = client.user_events(request).await?.into_inner();
    let mut latencies = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let tx = store.begin_write().await?;
        let user = users::update_display_name(&*tx, &user_ids[1], &format!("latency {i}"))
            .await?
            .expect("user");
        commit_with_event(tx, user).await?;
        let committed = Instant::now();
        let event = stream
            .message()
            .await?
            .and_then(|m| m.event)
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        latencies.push(committed.elapsed());
        let name = event.user.map(|u| u.display_name).unwrap_or_default();
        anyhow::ensure!(
            name == format!("latency {i}"),
            "expected event {i}, got {name:?}"
        );
    }
    latencies.sort();
    let q = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    println!(
        "commit-to-delivery on another instance: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms over {} events",
        q(0.5),
        q(0.99),
        q(1.0),
        args.events
    );
    drop(stream);
    stop_sequencer.send_replace(true);
    writer_sequencer.await?;

    if args.total_events > 0 {
        two_replicas(
            &url,
            dir.path(),
            addr,
            &user_ids,
            args.total_events,
            &login.access_token,
        )
        .await?;
    }
    store.close().await;
    testkit::drop_database(&url);
    Ok(())
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    gaps: u64,
    repeats: u64,
    user_disorder: u64,
}

/// Reads `stream` until `last`, checking every sequence is the previous + 1 and every user's
/// versions only grow.
async fn follow(
    mut stream: tonic::Streaming<pb::UserEventsResponse>,
    start: u64,
    last: u64,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut cursor = start;
    let mut versions = std::collections::HashMap::<String, u64>::new();
    while cursor < last {
        let Some(message) = stream.message().await? else {
            anyhow::bail!("stream ended at {cursor}");
        };
        let Some(event) = message.event else { continue };
        seen.received += 1;
        if event.sequence <= cursor {
            seen.repeats += 1;
            continue;
        }
        if event.sequence != cursor + 1 {
            seen.gaps += 1;
        }
        cursor = event.sequence;
        if let Some(user) = event.user {
            let before = versions.insert(user.id, user.version).unwrap_or(0);
            if user.version <= before {
                seen.user_disorder += 1;
            }
        }
    }
    Ok(seen)
}

/// `total` events from 16 writers on two server instances, 4 subscribers.
async fn two_replicas(
    url: &str,
    dir: &std::path::Path,
    addr_a: std::net::SocketAddr,
    user_ids: &[String],
    total: u64,
    token: &str,
) -> anyhow::Result<()> {
    let replica_url = testkit::detached_url(url);
    let mut settings = Settings::for_data_dir(dir.join("data"), Some(replica_url.clone()));
    settings.hashing = CHEAP;
    settings.protection.rate_limit = None;
    let replica = Application::build(settings).await?;
    let addr_b = replica.local_addr();
    tokio::spawn(replica.run_until_stopped(std::future::pending()));
    // Writer pools that share each instance's signals, so each instance's sequencer numbers
    // its own writers' events (one set of signals per database URL in a process).
    let on_a = Store::connect(url, 10).await?;
    let on_b = Store::connect(&replica_url, 10).await?;
    sequencer::drain(&on_a).await?;
    let start =
        u64::try_from(auth_server::storage::events::find_head_sequence(on_a.conn()).await?)?;
    let last = start + total;

    let mut readers = Vec::new();
    for addr in [addr_a, addr_a, addr_b, addr_b] {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut request = tonic::Request::new(pb::UserEventsRequest {
            after_sequence: start,
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}"))?,
        );
        let stream = AuthServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .user_events(request)
            .await?
            .into_inner();
        readers.push(tokio::spawn(follow(stream, start, last)));
    }

    let began = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (w, id) in user_ids.iter().enumerate() {
        let (store, next, id) = (
            if w % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            },
            Arc::clone(&next),
            id.clone(),
        );
        writers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let tx = store.begin_write().await?;
                let user = users::update_display_name(&*tx, &id, "replicated")
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("user gone"))?;
                commit_with_event(tx, user).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let written = began.elapsed();
    let mut all = Vec::new();
    for reader in readers {
        all.push(reader.await??);
    }
    let delivered = began.elapsed();
    println!(
        "two instances, 16 writers (8 on each), 4 subscribers (2 on each): {total} events written in {:.1} s ({:.0}/s), all delivered after {:.1} s",
        written.as_secs_f64(),
        total as f64 / written.as_secs_f64(),
        delivered.as_secs_f64()
    );
    for (i, seen) in all.iter().enumerate() {
        println!(
            "  subscriber {} on instance {}: {} received, {} gaps, {} repeats, {} per-user disorder",
            i + 1,
            if i < 2 { 'A' } else { 'B' },
            seen.received,
            seen.gaps,
            seen.repeats,
            seen.user_disorder
        );
    }
    on_a.close().await;
    on_b.close().await;
    Ok(())
}
