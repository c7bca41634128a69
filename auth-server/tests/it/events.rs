//! `UserEvents` and `UserSnapshot`: replay, tail, auth, gap-freedom under concurrent writers,
//! stalled subscribers, replicas, snapshot + tail, shutdown.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use auth_proto::pb::{self, UserEventKind};
use futures::future::join_all;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    replay_from_zero_and_from_a_cursor_then_tail_live,
    event_streams_require_a_subscriber_role_and_a_known_cursor,
    concurrent_writers_never_leave_a_gap_for_any_subscriber,
    stalled_subscriber_blocks_neither_writers_nor_other_subscribers,
    snapshot_then_tail_rebuilds_the_database,
    streams_end_cleanly_on_shutdown,
);

async fn replay_from_zero_and_from_a_cursor_then_tail_live(db: Db) {
    let app = spawn_app(db).await;
    let token = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let a = app.signed_up("ann@example.com").await;
    app.change_password(&a.access_token, PASSWORD, "another passphrase")
        .await
        .expect("change");
    let head = app.head().await;
    assert_eq!(head, 3, "feed account, ann created, ann's password changed");

    let mut all = app.subscribe(&token, 0).await.expect("subscribe");
    let events = events_until(&mut all, head).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(events[1].kind(), UserEventKind::UserCreated);
    assert_eq!(
        events[1].user.as_ref().map(|u| u.email.as_str()),
        Some("ann@example.com")
    );
    assert_eq!(events[2].kind(), UserEventKind::PasswordChanged);
    assert_eq!(events[2].user.as_ref().map(|u| u.version), Some(2));
    assert!(events.iter().all(|e| e.occurred_at.is_some()));

    // Resuming after the first gives exactly the rest.
    let mut rest = app.subscribe(&token, 1).await.expect("subscribe");
    let resumed = events_until(&mut rest, head).await;
    assert_eq!(
        resumed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2, 3]
    );

    // Both tail live changes without reconnecting.
    app.register("bob@example.com", PASSWORD)
        .await
        .expect("register");
    for stream in [&mut all, &mut rest] {
        let event = next_event(stream, Duration::from_secs(5)).await;
        assert_eq!(
            (event.sequence, event.kind()),
            (4, UserEventKind::UserCreated)
        );
        assert_eq!(event.user.map(|u| u.email), Some("bob@example.com".into()));
    }
    // A revoked session carries its id.
    let b = app.login("bob@example.com", PASSWORD).await.expect("login");
    app.logout(&b.access_token).await.expect("logout");
    let event = next_event(&mut all, Duration::from_secs(5)).await;
    assert_eq!(
        (event.sequence, event.kind()),
        (5, UserEventKind::SessionRevoked)
    );
    assert_eq!(event.session_id, b.session_id);
}

async fn event_streams_require_a_subscriber_role_and_a_known_cursor(db: Db) {
    let app = spawn_app(db).await;
    let plain = app.signed_up("plain@example.com").await;
    let admin = app.token_with_roles("admin@example.com", &["admin"]).await;

    let anonymous = app
        .client
        .clone()
        .user_events(pb::UserEventsRequest { after_sequence: 0 })
        .await;
    assert_code(anonymous.map(|_| ()), Code::Unauthenticated);
    assert_code(
        app.subscribe("garbage", 0).await.map(|_| ()),
        Code::Unauthenticated,
    );
    assert_code(
        app.subscribe(&plain.access_token, 0).await.map(|_| ()),
        Code::PermissionDenied,
    );
    let head = app.head().await;
    let status = assert_code(
        app.subscribe(&admin, head + 1).await.map(|_| ()),
        Code::OutOfRange,
    );
    assert_eq!(reason(&status).as_deref(), Some("CURSOR_BEYOND_HEAD"));
    app.subscribe(&admin, head)
        .await
        .expect("the head itself is a valid cursor");

    let snapshot = |token: &str| {
        let request = bearer(pb::UserSnapshotRequest {}, token);
        let mut client = app.client.clone();
        async move { client.user_snapshot(request).await.map(|_| ()) }
    };
    assert_code(snapshot(&plain.access_token).await, Code::PermissionDenied);
    assert_code(snapshot("garbage").await, Code::Unauthenticated);
    snapshot(&admin).await.expect("admin may take a snapshot");
}

/// 16 writers commit while 4 subscribers tail: every subscriber must see every sequence exactly
/// once, in order, and the last event of each user must carry its final state.
async fn concurrent_writers_never_leave_a_gap_for_any_subscriber(db: Db) {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 120;
    let app = spawn_app_with(db, |s| s.db_pool.max_connections = 24).await;
    let token = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let mut subscribers = Vec::new();
    for _ in 0..4 {
        subscribers.push(app.subscribe(&token, 0).await.expect("subscribe"));
    }
    let writers = (0..WRITERS).map(|w| {
        let app = &app;
        async move {
            let email = format!("writer{w}@example.com");
            app.register(&email, PASSWORD).await.expect("register");
            for _ in 0..ROUNDS {
                // One SessionRevoked event per round, from 16 writers at once.
                let s = app.login(&email, PASSWORD).await.expect("login");
                app.logout(&s.access_token).await.expect("logout");
            }
        }
    });
    let readers = subscribers.iter_mut().map(|stream| async {
        let last = 1 + (WRITERS * (ROUNDS + 1)) as u64;
        events_until(stream, last).await
    });
    let ((), seen) = tokio::join!(
        async {
            join_all(writers).await;
        },
        join_all(readers)
    );
    let head = app.head().await;
    assert_eq!(head, 1 + (WRITERS * (ROUNDS + 1)) as u64);
    let store = app.store().await;
    for events in seen {
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=head).collect::<Vec<_>>(),
            "a subscriber saw a gap, a repeat or disorder"
        );
        let mut last_state: HashMap<String, pb::User> = HashMap::new();
        for event in events {
            let user = event.user.expect("user");
            last_state.insert(user.id.clone(), user);
        }
        for (id, user) in last_state {
            let db_user = auth_server::storage::users::find_user(store.conn(), &id)
                .await
                .expect("query")
                .expect("user");
            assert_eq!(
                (user.email.as_str(), user.version),
                (db_user.email.as_str(), db_user.version as u64)
            );
        }
    }
    store.close().await;
}

async fn stalled_subscriber_blocks_neither_writers_nor_other_subscribers(db: Db) {
    // A tiny in-memory feed, so the stalled stream also has to fall back to the database.
    let app = spawn_app_with(db, |s| s.event_feed_capacity = 8).await;
    let token = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let mut stalled = app.subscribe(&token, 0).await.expect("subscribe");
    let mut live = app.subscribe(&token, 0).await.expect("subscribe");
    let email = "busy@example.com";
    let started = Instant::now();
    let writes = async {
        app.register(email, PASSWORD).await.expect("register");
        for _ in 0..300 {
            let s = app.login(email, PASSWORD).await.expect("login");
            app.logout(&s.access_token).await.expect("logout");
        }
    };
    // Writers finish while `stalled` is never read, and `live` keeps up all along.
    let (_, live_events) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), writes),
        events_until(&mut live, 302)
    );
    assert_eq!(live_events.len(), 302);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "writers were held up"
    );
    // The stalled subscriber resumes at its own pace and still gets everything, in order.
    let late = events_until(&mut stalled, 302).await;
    assert_eq!(
        late.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=302).collect::<Vec<_>>()
    );
}

/// A mirror built from a snapshot taken while writers run, then the stream after
/// `as_of_sequence`, equals the database at the end: nothing lost, nothing doubled.
async fn snapshot_then_tail_rebuilds_the_database(db: Db) {
    let app = spawn_app(db).await;
    let token = app
        .token_with_roles("mirror@example.com", &["events.subscriber"])
        .await;
    for i in 0..20 {
        app.register(&format!("early{i}@example.com"), PASSWORD)
            .await
            .expect("register");
    }
    let writers = (0..4).map(|w| {
        let app = &app;
        async move {
            for i in 0..15 {
                let email = format!("w{w}-{i}@example.com");
                let s = app.signed_up(&email).await;
                app.change_password(&s.access_token, PASSWORD, "changed passphrase")
                    .await
                    .expect("change");
            }
        }
    });
    let mirror = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = bearer(pb::UserSnapshotRequest {}, &token);
        let mut snapshot = app
            .client
            .clone()
            .user_snapshot(request)
            .await
            .expect("snapshot")
            .into_inner();
        let mut users: HashMap<String, pb::User> = HashMap::new();
        let mut as_of = None;
        let mut count = None;
        while let Some(message) = snapshot.message().await.expect("snapshot stream") {
            match message.item.expect("item") {
                pb::user_snapshot_response::Item::Header(h) => {
                    assert!(as_of.is_none(), "one header, first");
                    as_of = Some(h.as_of_sequence);
                    count = Some(h.user_count);
                }
                pb::user_snapshot_response::Item::User(u) => {
                    assert!(as_of.is_some(), "header comes first");
                    assert!(users.insert(u.id.clone(), u).is_none(), "user sent twice");
                }
                other => panic!("no organizations here, got {other:?}"),
            }
        }
        let as_of = as_of.expect("header");
        assert_eq!(count, Some(users.len() as u64));
        (
            users,
            as_of,
            app.subscribe(&token, as_of).await.expect("subscribe"),
        )
    };
    let ((), (mut users, as_of, mut stream)) = tokio::join!(
        async {
            join_all(writers).await;
        },
        mirror
    );
    let head = app.head().await;
    let mut cursor = as_of;
    if head > as_of {
        for event in events_until(&mut stream, head).await {
            assert_eq!(
                event.sequence,
                cursor + 1,
                "gap or repeat after the snapshot"
            );
            cursor = event.sequence;
            let user = event.user.expect("user");
            let newer = users.get(&user.id).is_none_or(|u| u.version < user.version);
            if newer {
                users.insert(user.id.clone(), user);
            }
        }
    }
    let store = app.store().await;
    let db_users = auth_server::storage::users::find_users_after(store.conn(), "", 10_000)
        .await
        .expect("users");
    store.close().await;
    assert_eq!(users.len(), db_users.len());
    for db_user in db_users {
        let mirrored = users.get(&db_user.id).expect("user mirrored");
        assert_eq!(
            (mirrored.email.as_str(), mirrored.version, &mirrored.roles),
            (
                db_user.email.as_str(),
                db_user.version as u64,
                &db_user.roles
            )
        );
    }
}

async fn streams_end_cleanly_on_shutdown(db: Db) {
    let mut app = spawn_app(db).await;
    let token = app.token_with_roles("feed@example.com", &["admin"]).await;
    let mut stream = app.subscribe(&token, 0).await.expect("subscribe");
    next_event(&mut stream, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown does not hang on streams");
    match tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream ends")
    {
        Ok(None) => {}
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Some(message)) => panic!("unexpected message after shutdown: {message:?}"),
    }
}

/// Two servers on one PostgreSQL or MySQL database: events and revocations cross replicas
/// (through LISTEN/NOTIFY on PostgreSQL, the 100 ms poll on MySQL), not through this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_events_and_revocations_within_a_second_postgres() {
    replicas_share_events_and_revocations_within_a_second(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_events_and_revocations_within_a_second_mysql() {
    replicas_share_events_and_revocations_within_a_second(Db::Mysql).await;
}

async fn replicas_share_events_and_revocations_within_a_second(db: Db) {
    let a = spawn_app(db).await;
    let b = a.spawn_detached_replica().await;
    let token = a
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let mut on_a = a
        .subscribe(&token, a.head().await)
        .await
        .expect("subscribe on A");

    let written = Instant::now();
    b.register("via-b@example.com", PASSWORD)
        .await
        .expect("register on B");
    let event = next_event(&mut on_a, Duration::from_secs(1)).await;
    let delay = written.elapsed();
    assert_eq!(
        event.user.map(|u| u.email),
        Some("via-b@example.com".into())
    );
    eprintln!("event written on B reached a stream on A after {delay:?}");

    // A session revoked through B stops validating on A within one second.
    let s = b
        .login("via-b@example.com", PASSWORD)
        .await
        .expect("login on B");
    a.validate(&s.access_token)
        .await
        .expect("A accepts B's token");
    b.logout(&s.access_token).await.expect("logout on B");
    let revoked = Instant::now();
    loop {
        match a.validate(&s.access_token).await {
            Err(status) => {
                assert_eq!(reason(&status).as_deref(), Some("SESSION_REVOKED"));
                break;
            }
            Ok(_) => {
                assert!(
                    revoked.elapsed() < Duration::from_secs(1),
                    "A still accepts a session revoked on B"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    eprintln!("revocation on B reached A after {:?}", revoked.elapsed());
}
