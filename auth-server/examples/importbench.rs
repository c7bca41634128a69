//! Import benchmark, with a same-run baseline.
//!
//! Imports N pre-hashed users (bcrypt hashes, as a moving team would bring) through the same
//! `Importer` `import-users` uses: per row checks, 500 rows per transaction, each with its
//! `UserCreated` event and `user_imported` audit record. The baseline writes the same users and
//! credentials rows with plain batched INSERTs (500 per statement and transaction, no checks,
//! no event, no audit) into a fresh database of the same kind. Each round uses fresh databases;
//! the figure is the median round. Nothing is hashed (the pool's counter would show it; the
//! importer has no pool).
//!
//! `cargo run --release -p auth-server --example importbench -- --backend postgres|mysql|sqlite --rows 100000`

#![allow(missing_docs)]

use std::time::Instant;

use auth_server::{
    domain::{IMPORT_BATCH, ImportRow, ImportSource, Importer, RowOutcome},
    revocation::Revocations,
    storage::{
        ClientInfo, EventKind, EventSubject, Store,
        audit::{AuditKind, AuditRecord, append_audits},
        events::{NewEvent, append_events},
        users,
    },
    testkit::{self, TestDatabase},
};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Users per run.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Rounds (fresh databases each); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Backend: `postgres` (TEST_DATABASE_URL), `mysql` (TEST_MYSQL_URL) or `sqlite`.
    #[arg(long, default_value = "postgres")]
    backend: String,
}

/// A bcrypt hash of a password (its cost does not matter: nothing verifies it here).
const HASH: &str = "$2b$04$jHXPAgYf/7JIXydIsNu.auRDjhNRFbV6rUT2gjikXZ2gBlMJk4mvm";

fn rows(n: usize) -> Vec<ImportRow> {
    (0..n)
        .map(|i| ImportRow {
            line: i as u64 + 1,
            email: format!("user{i:07}@example.com"),
            display_name: format!("User {i}"),
            email_verified: i % 2 == 0,
            roles: vec!["staff".into()],
            created_at: Some(1_557_126_489_000 + i as i64),
            external_id: Some(format!("legacy-{i}")),
            password_hash: Some(users::PasswordHash(HASH.into())),
            unreadable: None,
        })
        .collect()
}

async fn fresh_store(
    backend: &str,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(Store, String)> {
    let kind = match backend {
        "sqlite" => TestDatabase::Sqlite,
        "postgres" => TestDatabase::Postgres,
        "mysql" => TestDatabase::Mysql,
        other => anyhow::bail!("unknown backend {other}: sqlite, postgres or mysql"),
    };
    let url = testkit::create_database(kind)
        .await
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join(name).display()));
    let store = Store::connect(&url, 4).await?;
    store.migrate_up().await?;
    Ok((store, url))
}

/// Plain batched INSERTs of the same users and credentials (and with `outbox`, of their
/// events and audit records too, as the import writes them): rows/s.
async fn baseline(store: &Store, rows: &[ImportRow], outbox: bool) -> anyhow::Result<f64> {
    let client = ClientInfo::default();
    let start = Instant::now();
    for chunk in rows.chunks(IMPORT_BATCH) {
        let tx = store.begin_write().await?;
        let new = chunk
            .iter()
            .map(|r| users::NewUser {
                email: r.email.clone(),
                display_name: r.display_name.clone(),
                roles: r.roles.clone(),
                password_hash: r.password_hash.clone(),
                email_verified: r.email_verified,
                created_at: r.created_at,
                external_id: r.external_id.clone(),
                service_account: false,
                metadata: Default::default(),
            })
            .collect();
        let created = auth_server::storage::imports::insert_users(&*tx, new).await?;
        if outbox {
            let subjects: Vec<EventSubject> =
                created.iter().cloned().map(EventSubject::User).collect();
            let events: Vec<NewEvent<'_>> = subjects
                .iter()
                .map(|subject| NewEvent {
                    kind: EventKind::UserCreated,
                    subject,
                    session_id: None,
                })
                .collect();
            append_events(&tx, &events).await?;
            let audits = created
                .iter()
                .map(|u| {
                    AuditRecord::new(AuditKind::UserImported, &client)
                        .subject(&u.id)
                        .detail(serde_json::json!({ "email": u.email, "roles": u.roles }))
                })
                .collect();
            append_audits(&*tx, audits).await?;
        }
        tx.commit().await?;
    }
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

/// An import run as `import-users` makes one (no invites).
fn importer(store: &Store) -> Importer {
    let source = ImportSource {
        actor_id: None,
        client: ClientInfo::default(),
        invites: false,
        invite_ttl: std::time::Duration::from_secs(3600),
    };
    Importer::new(store.clone(), Revocations::new(), source)
}

/// The importer, as `import-users` drives it: rows/s.
async fn import(store: &Store, rows: Vec<ImportRow>) -> anyhow::Result<f64> {
    let n = rows.len();
    let mut importer = importer(store);
    let start = Instant::now();
    let mut imported = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<ImportRow> = rows.by_ref().take(IMPORT_BATCH).collect();
        for result in importer.import(batch).await? {
            if let RowOutcome::Imported { .. } = result.outcome {
                imported += 1;
            } else {
                anyhow::bail!("row {} not imported: {:?}", result.line, result.outcome);
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(imported == n, "imported {imported} of {n}");
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (mut base, mut full, mut imp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let all = rows(args.rows);
        let mut plain = Vec::new();
        for outbox in [false, true] {
            let name = format!("base{round}{outbox}.db");
            let (store, url) = fresh_store(&args.backend, dir.path(), &name).await?;
            plain.push(baseline(&store, &all, outbox).await?);
            store.close().await;
            testkit::drop_database(&url);
        }
        let (store, url) =
            fresh_store(&args.backend, dir.path(), &format!("imp{round}.db")).await?;
        let i = import(&store, all).await?;
        // A re-run of the same rows: every one skipped, nothing written.
        let again = Instant::now();
        let mut rerun = importer(&store);
        let mut skipped = 0;
        for chunk in rows(args.rows).chunks(IMPORT_BATCH) {
            skipped += rerun
                .import(chunk.to_vec())
                .await?
                .iter()
                .filter(|r| matches!(r.outcome, RowOutcome::Skipped(_)))
                .count();
        }
        anyhow::ensure!(skipped == args.rows, "re-run skipped {skipped}");
        let rerun_rate = args.rows as f64 / again.elapsed().as_secs_f64();
        store.close().await;
        testkit::drop_database(&url);
        let (b, f) = (plain[0], plain[1]);
        println!(
            "round {round}: plain INSERTs users+credentials {b:.0} rows/s, plus events+audit {f:.0} rows/s; import {i:.0} rows/s ({:.0} % / {:.0} %); re-run (all skipped) {rerun_rate:.0} rows/s",
            100.0 * i / b,
            100.0 * i / f
        );
        base.push(b);
        full.push(f);
        imp.push(i);
    }
    let (b, f, i) = (median(base), median(full), median(imp));
    println!(
        "{} rows on {}: import {i:.0} rows/s = {:.0} % of plain batched INSERTs of users+credentials ({b:.0} rows/s), {:.0} % of plain INSERTs of the same users, credentials, events and audit rows ({f:.0} rows/s); median of {} rounds",
        args.rows,
        args.backend,
        100.0 * i / b,
        100.0 * i / f,
        args.rounds
    );
    Ok(())
}
