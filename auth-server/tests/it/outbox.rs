//! The staged outbox and its sequencer: writers on two replicas with subscribers on both, an
//! aborted writer, an event refused at commit, and events staged by a replica that stopped
//! before numbering them.

use std::{collections::HashMap, time::Duration};

use auth_proto::pb;
use auth_server::{
    storage::{
        EventKind, EventSubject, Store, StoredEvent, WriteTx, erasure,
        events::{NewEvent, append_event, find_events_after},
        sequencer, users,
    },
    testkit,
};
use futures::future::join_all;
use sea_orm::ConnectionTrait;

use crate::{every_backend, helpers::*};

every_backend!(an_aborted_writer_leaves_no_hole);
every_backend!(an_event_refused_at_commit_takes_its_change_with_it);
every_backend!(closing_a_store_does_not_wait_forever_on_a_busy_connection);
every_backend!(a_cancelled_commit_keeps_the_change_and_its_event_together);
every_backend!(a_commit_hands_its_numbered_events_to_the_tailers_as_stored);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_another_process_is_read_at_once_not_at_the_next_poll_sqlite() {
    an_event_from_another_process_is_read_at_once_not_at_the_next_poll(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_replicas_never_leave_a_gap_on_either_postgres() {
    writers_on_two_replicas_never_leave_a_gap_on_either(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_replicas_never_leave_a_gap_on_either_mysql() {
    writers_on_two_replicas_never_leave_a_gap_on_either(Db::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_staged_by_a_stopped_replica_are_numbered_by_another_postgres() {
    events_staged_by_a_stopped_replica_are_numbered_by_another(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_staged_by_a_stopped_replica_are_numbered_by_another_mysql() {
    events_staged_by_a_stopped_replica_are_numbered_by_another(Db::Mysql).await;
}

/// 16 writers, half of them on each of two replicas (each replica numbers its own writers'
/// events, so two sequencers race for the counter), and two subscribers on each replica:
/// every subscriber sees every sequence exactly once and in order, and each user's last event
/// carries the user's state in the database.
async fn writers_on_two_replicas_never_leave_a_gap_on_either(db: Db) {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 40;
    let a = spawn_app_with(db, |s| s.db_pool.max_connections = 16).await;
    let b = a.spawn_detached_replica().await;
    let token = a
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let start = a.head().await;
    let mut subscribers = Vec::new();
    for replica in [&a, &a, &b, &b] {
        subscribers.push(replica.subscribe(&token, start).await.expect("subscribe"));
    }
    let last = start + (WRITERS * (ROUNDS + 1)) as u64;
    let writers = (0..WRITERS).map(|w| {
        let replica = if w % 2 == 0 { &a } else { &b };
        async move {
            let email = format!("writer{w}@example.com");
            replica.register(&email, PASSWORD).await.expect("register");
            for _ in 0..ROUNDS {
                // One SessionRevoked event per round.
                let s = replica.login(&email, PASSWORD).await.expect("login");
                replica.logout(&s.access_token).await.expect("logout");
            }
        }
    });
    let readers = subscribers
        .iter_mut()
        .map(|stream| async move { events_until(stream, last).await });
    let ((), seen) = tokio::join!(
        async {
            join_all(writers).await;
        },
        join_all(readers)
    );
    assert_eq!(a.head().await, last);
    let store = a.store().await;
    for events in seen {
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (start + 1..=last).collect::<Vec<_>>(),
            "a subscriber saw a gap, a repeat or disorder"
        );
        let mut last_state: HashMap<String, pb::User> = HashMap::new();
        for event in events {
            let user = event.user.expect("user");
            last_state.insert(user.id.clone(), user);
        }
        assert_eq!(last_state.len(), WRITERS);
        for (id, user) in last_state {
            let db_user = users::find_user(store.conn(), &id)
                .await
                .expect("query")
                .expect("user");
            assert_eq!(user.version, db_user.version as u64, "{}", user.email);
        }
    }
    store.close().await;
}

/// A writer whose transaction rolls back after appending its event leaves no hole: the next
/// committed event is the next sequence, and subscribers receive it at once.
async fn an_aborted_writer_leaves_no_hole(db: Db) {
    let app = spawn_app(db).await;
    let (user, start, mut stream) = user_and_stream(&app, "aborted@example.com").await;

    let store = app.store().await;
    drop(rename_with_event(&store, &user.id, "never committed").await);

    app.register("after@example.com", PASSWORD)
        .await
        .expect("register");
    let event = next_event(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(event.sequence, start + 1, "the aborted event left a hole");
    assert_eq!(
        event.user.map(|u| u.email).as_deref(),
        Some("after@example.com")
    );
    assert_eq!(app.head().await, start + 1);
    store.close().await;
}

/// When the database refuses a change's event at commit (here a test trigger), the change is
/// not committed either and the writer's connection is fine afterwards: on SQLite the events
/// ride in the commit's own call (`INSERT …; COMMIT; BEGIN`), so this checks that a failed
/// insert stops before the `COMMIT`, and that the same connection then commits, twice.
async fn an_event_refused_at_commit_takes_its_change_with_it(db: Db) {
    let app = spawn_app(db).await;
    let (user, start, mut stream) = user_and_stream(&app, "refused@example.com").await;
    // One connection: every transaction below reuses the one that failed.
    let store = one_connection(&app).await;
    let refuse = match db {
        Db::Sqlite => vec![
            "CREATE TRIGGER refuse_event BEFORE INSERT ON user_events \
             WHEN NEW.payload LIKE '%refused name%' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
        Db::Postgres => vec![
            "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.payload LIKE '%refused name%' THEN RAISE EXCEPTION 'refused by the test'; \
             END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_event BEFORE INSERT ON staged_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_event()",
        ],
        Db::Mysql => vec![
            "CREATE TRIGGER refuse_event BEFORE INSERT ON staged_events FOR EACH ROW \
             BEGIN IF NEW.payload LIKE '%refused name%' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END",
        ],
    };
    for sql in refuse {
        store.conn().execute_unprepared(sql).await.expect("trigger");
    }

    let refused = rename_and_commit(&store, &user.id, "refused name").await;
    assert!(refused.is_err(), "the refused event must fail the commit");
    let kept = users::find_user(store.conn(), &user.id)
        .await
        .expect("read")
        .expect("user");
    assert_eq!(
        kept.display_name, "",
        "the change went in without its event"
    );
    assert_eq!(kept.version, 1);

    for (n, name) in ["first after", "second after"].into_iter().enumerate() {
        rename_and_commit(&store, &user.id, name)
            .await
            .expect("commit on the same connection");
        let event = next_event(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(event.sequence, start + 1 + n as u64);
        let changed = event.user.expect("user");
        assert_eq!(changed.display_name, name);
        assert_eq!(changed.version, 2 + n as u64);
    }
    assert_eq!(app.head().await, start + 2);
    store.close().await;
}

/// Callers that go away at any point of a commit (a deadline, a client that hung up) leave
/// each change with exactly its one event or neither, and the connection's transactions
/// intact: a later rollback really ends its transaction, so another connection writes at once.
async fn a_cancelled_commit_keeps_the_change_and_its_event_together(db: Db) {
    let app = spawn_app(db).await;
    let user = app
        .register("cancelled@example.com", PASSWORD)
        .await
        .expect("register");
    let url = testkit::detached_url(&app.db.url);
    let store = Store::connect(&url, 1).await.expect("store");
    for step in 0..80u64 {
        let name = format!("attempt {step}");
        let rename = rename_and_commit(&store, &user.id, &name);
        let _ = tokio::time::timeout(Duration::from_micros(step * 40), rename).await;
    }
    sequencer::drain(&store)
        .await
        .expect("number staged events");
    let current = users::find_user(store.conn(), &user.id)
        .await
        .expect("read")
        .expect("user");
    let events = erasure::find_user_event_payloads(store.conn(), &user.id)
        .await
        .expect("events");
    // One `UserCreated`, then one `UserUpdated` per committed rename.
    assert_eq!(events.len() as i64, current.version, "{current:?}");
    assert!(
        events
            .last()
            .is_some_and(|(_, payload)| payload.contains(&current.display_name)),
        "the newest event is not the committed state"
    );

    let tx = store.begin_write().await.expect("begin");
    users::update_display_name(&*tx, &user.id, "rolled back")
        .await
        .expect("update");
    tx.rollback().await.expect("rollback");
    let other = Store::connect(&url, 1).await.expect("store");
    tokio::time::timeout(
        Duration::from_secs(5),
        rename_and_commit(&other, &user.id, "after the cancellations"),
    )
    .await
    .expect("another connection waited on a transaction left open")
    .expect("another connection writes");
    other.close().await;
    store.close().await;
}

/// A connection that is never given back (here an open transaction; at shutdown, one whose
/// query was cancelled mid-flight) does not make closing the store hang: `close` gives up
/// waiting after `CLOSE_WAIT`.
async fn closing_a_store_does_not_wait_forever_on_a_busy_connection(db: Db) {
    let app = spawn_app(db).await;
    let store = Store::connect(&testkit::detached_url(&app.db.url), 2)
        .await
        .expect("store");
    let held = store.begin_snapshot().await.expect("begin");
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(
        auth_server::storage::CLOSE_WAIT + Duration::from_secs(10),
        store.close(),
    )
    .await;
    assert!(
        closed.is_ok(),
        "close still waiting after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= auth_server::storage::CLOSE_WAIT);
    drop(held);
}

/// Renames the user and commits the change with its `UserUpdated` event, as the server's
/// changes do.
async fn rename_and_commit(
    store: &Store,
    user_id: &str,
    name: &str,
) -> auth_server::storage::StorageResult<()> {
    let tx = store.begin_write().await?;
    let changed = users::update_display_name(&*tx, user_id, name)
        .await?
        .expect("user");
    let subject = EventSubject::User(changed);
    let event = NewEvent {
        kind: EventKind::UserUpdated,
        subject: &subject,
        session_id: None,
    };
    tx.commit_with_events(&[event]).await
}

/// On SQLite a commit hands the events it numbered to this process's tailers, exactly as the
/// database holds them (so a tailer need not read them back); on PostgreSQL and MySQL the
/// sequencer numbers them after the commit, and nothing is handed over.
async fn a_commit_hands_its_numbered_events_to_the_tailers_as_stored(db: Db) {
    let app = spawn_app(db).await;
    let user = app
        .register("handed@example.com", PASSWORD)
        .await
        .expect("register");
    let start = app.head().await;
    let store = app.store().await;
    for name in ["one", "two", "three"] {
        rename_and_commit(&store, &user.id, name)
            .await
            .expect("commit");
    }
    // Numbered (PostgreSQL and MySQL number staged events after the commit).
    assert_eq!(app.head().await, start + 3);
    let start = i64::try_from(start).expect("head");
    let handed: Vec<StoredEvent> = store
        .recent_events()
        .after(start)
        .expect("nothing missing")
        .into_iter()
        .map(|event| (*event).clone())
        .collect();
    let stored = find_events_after(store.conn(), start, 10)
        .await
        .expect("read");
    assert_eq!(stored.len(), 3);
    if db == Db::Sqlite {
        assert_eq!(handed, stored);
    } else {
        assert!(handed.is_empty(), "{handed:?}");
    }
    store.close().await;
}

/// SQLite: the tailer takes its own process's events from memory. When an event came from
/// elsewhere (another process writing the same file), the next one from memory does not follow
/// the last published: the tailer reads the database at once instead of waiting for its poll.
async fn an_event_from_another_process_is_read_at_once_not_at_the_next_poll(db: Db) {
    let app = spawn_app_with(db, |s| s.event_poll_interval = Duration::from_secs(3600)).await;
    let (user, start, mut stream) = user_and_stream(&app, "mixed@example.com").await;
    // Another URL for the same file: its own writer lock and wake-ups, as another process has.
    let elsewhere = Store::connect(&format!("{}&cache=private", app.db.url), 1)
        .await
        .expect("store");
    rename_and_commit(&elsewhere, &user.id, "from elsewhere")
        .await
        .expect("commit elsewhere");
    let here = app.store().await;
    rename_and_commit(&here, &user.id, "from here")
        .await
        .expect("commit here");
    for (sequence, name) in [(start + 1, "from elsewhere"), (start + 2, "from here")] {
        let event = next_event(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(event.sequence, sequence);
        assert_eq!(event.user.expect("user").display_name, name);
    }
    elsewhere.close().await;
    here.close().await;
}

/// A replica that staged events and stopped before numbering them (here: a pool with no
/// sequencer, never closed): another replica's sequencer numbers them on its poll.
async fn events_staged_by_a_stopped_replica_are_numbered_by_another(db: Db) {
    let app = spawn_app(db).await;
    let (user, start, mut stream) = user_and_stream(&app, "orphan@example.com").await;

    let stopped = one_connection(&app).await;
    rename_with_event(&stopped, &user.id, "staged by a stopped replica")
        .await
        .commit()
        .await
        .expect("commit");
    // No close: closing would number them.
    drop(stopped);

    let event = next_event(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(event.sequence, start + 1);
    assert_eq!(
        event.user.map(|u| u.display_name).as_deref(),
        Some("staged by a stopped replica")
    );
}

/// A store of its own on the app's database with a single connection, so every transaction
/// reuses the one before.
async fn one_connection(app: &TestApp) -> Store {
    Store::connect(&testkit::detached_url(&app.db.url), 1)
        .await
        .expect("store")
}

/// A registered user, the head after it, and a subscriber's stream from there.
async fn user_and_stream(
    app: &TestApp,
    email: &str,
) -> (pb::User, u64, tonic::Streaming<pb::UserEventsResponse>) {
    let token = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let user = app.register(email, PASSWORD).await.expect("register");
    let start = app.head().await;
    let stream = app.subscribe(&token, start).await.expect("subscribe");
    (user, start, stream)
}

/// An open write transaction that renamed the user and appended its `UserUpdated` event.
async fn rename_with_event(store: &Store, user_id: &str, name: &str) -> WriteTx {
    let tx = store.begin_write().await.expect("begin");
    let changed = users::update_display_name(&*tx, user_id, name)
        .await
        .expect("update")
        .expect("user");
    append_event(&tx, EventKind::UserUpdated, &changed, None)
        .await
        .expect("append");
    tx
}

/// The bundled SQLite is built with the query planner stability guarantee (the workspace's
/// `.cargo/config.toml`): without it, every cached statement with a `LIMIT ?` (every `.one()`)
/// was compiled again on each run, about a tenth of a busy writer's CPU.
#[tokio::test]
async fn sqlite_plans_each_cached_statement_once_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("plans.db").display()
    );
    let store = Store::connect(&url, 1).await.expect("store");
    let options = store
        .sqlite_compile_options()
        .await
        .expect("compile options");
    assert!(
        options.iter().any(|o| o == "ENABLE_QPSG"),
        "SQLite built without ENABLE_QPSG: {options:?}"
    );
    store.close().await;
}
