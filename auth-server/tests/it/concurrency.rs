//! Races: concurrent refreshes of one token, and a hash-queue overflow.

use futures::future::join_all;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    exactly_one_of_64_concurrent_refreshes_succeeds,
    hash_queue_overflow_is_resource_exhausted_and_validate_still_answers,
    a_full_hash_pool_refuses_logins_before_any_database_work,
);

async fn exactly_one_of_64_concurrent_refreshes_succeeds(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("race@example.com").await;
    let attempts = (0..64).map(|_| app.refresh(&a.refresh_token));
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok,
        1,
        "results: {:?}",
        results
            .iter()
            .map(|r| r.as_ref().map(|_| ()).map_err(|s| s.code()))
            .collect::<Vec<_>>()
    );
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    // Everyone but one presented a spent token: reuse detection revoked the session.
    assert_code(app.validate(&a.access_token).await, Code::Unauthenticated);
}

async fn hash_queue_overflow_is_resource_exhausted_and_validate_still_answers(db: Db) {
    // Real OWASP parameters, one hashing thread and room for one waiter.
    let app = spawn_app_with(db, |s| {
        s.hash_threads = 1;
        s.hash_queue = 1;
        s.hashing.memory_kib = 19_456;
        s.hashing.iterations = 2;
        // This is about the hash queue: on a slow machine five or more of the 16 wrong
        // passwords get hashed, and the lockout would then refuse the right one afterwards.
        s.protection.lockout.lockout_max_failures = 0;
    })
    .await;
    let a = app.signed_up("storm@example.com").await;
    let storm = join_all((0..16).map(|_| app.login("storm@example.com", "wrong password")));
    let validate = async {
        // While the storm runs, Validate answers without waiting for the hash pool.
        for _ in 0..20 {
            app.validate(&a.access_token)
                .await
                .expect("validate during storm");
        }
    };
    let (results, ()) = tokio::join!(storm, validate);
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    assert!(exhausted >= 1, "no RESOURCE_EXHAUSTED among {results:?}");
    assert!(refused >= 1, "no login was even tried: {results:?}");
    assert_eq!(exhausted + refused, 16);
    // Once the storm is over, logins work again.
    app.login("storm@example.com", PASSWORD)
        .await
        .expect("login after storm");
}

/// A deadlock victim is classified as contention (the RPC answers ABORTED: retry), not as an
/// internal error, on both servers that have row locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_contention_postgres() {
    a_deadlock_victim_is_contention(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_contention_mysql() {
    a_deadlock_victim_is_contention(Db::Mysql).await;
}

async fn a_deadlock_victim_is_contention(db: Db) {
    use auth_server::storage::{StorageError, Store};
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let dir = tempfile::tempdir().expect("temp dir");
    let test_db = TestDb::create(db, &dir).await;
    let store = Store::connect(&test_db.url, 4).await.expect("store");
    let conn = store.conn();
    conn.execute_unprepared("CREATE TABLE dl (id INT PRIMARY KEY, v INT NOT NULL)")
        .await
        .expect("table");
    conn.execute_unprepared("INSERT INTO dl (id, v) VALUES (1, 0), (2, 0)")
        .await
        .expect("rows");
    let first = conn.begin().await.expect("tx 1");
    let second = conn.begin().await.expect("tx 2");
    first
        .execute_unprepared("UPDATE dl SET v = 1 WHERE id = 1")
        .await
        .expect("1 locks row 1");
    second
        .execute_unprepared("UPDATE dl SET v = 2 WHERE id = 2")
        .await
        .expect("2 locks row 2");
    let (a, b) = tokio::join!(
        first.execute_unprepared("UPDATE dl SET v = 1 WHERE id = 2"),
        second.execute_unprepared("UPDATE dl SET v = 2 WHERE id = 1"),
    );
    let victim = match (a, b) {
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => error,
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    let classified = StorageError::from(victim);
    assert!(
        matches!(classified, StorageError::Contention(_)),
        "{classified:?}"
    );
    drop(first);
    drop(second);
    store.close().await;
}

/// Login takes its place in the hash pool before any database work: with every place taken,
/// logins are RESOURCE_EXHAUSTED without running a single SQL statement, and are served again
/// once places free up.
async fn a_full_hash_pool_refuses_logins_before_any_database_work(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.hash_threads = 1;
        s.hash_queue = 1;
        s.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        // No background statements while we count (health pings, event polls, key reloads).
        s.health_interval = std::time::Duration::from_secs(3600);
        s.event_poll_interval = std::time::Duration::from_secs(3600);
        s.key_refresh_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    app.register("full@example.com", PASSWORD)
        .await
        .expect("register");
    let metrics = app.metrics_addr.expect("metrics listener");
    let statements = || async move {
        let (_, text) = http_get(metrics, "/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("auth_db_query_duration_seconds_count{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    // One thread + one waiting place: take both.
    let places: Vec<_> = (0..2)
        .map(|_| app.hash_pool.reserve().expect("a place"))
        .collect();
    assert!(app.hash_pool.reserve().is_err(), "the pool is full");
    // Let the start-up and registration work settle (the event tailer reading the new event,
    // first housekeeping): the count must hold still before we measure.
    let mut before = statements().await;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = statements().await;
        if now == before {
            break;
        }
        before = now;
    }
    for _ in 0..5 {
        assert_code(
            app.login("full@example.com", PASSWORD).await,
            Code::ResourceExhausted,
        );
    }
    assert_eq!(statements().await, before, "refused logins ran SQL");
    drop(places);
    app.login("full@example.com", PASSWORD)
        .await
        .expect("served once places are free");
}
