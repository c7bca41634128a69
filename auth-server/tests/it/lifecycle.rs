//! Data lifecycle: housekeeping prunes ended sessions and spent refresh tokens after the
//! retention (live sessions keep working), and a deleted user's email, display name and
//! metadata leave every table of the auth database (at once, or after the erasure delay)
//! while the event sequence keeps every number and kind.

use std::time::Duration;

use auth_proto::pb::{self, UserEventKind};
use auth_server::storage::{Store, retention::count_rows};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::{admin::mask, every_backend, helpers::*, organizations::metadata};

every_backend!(
    ended_sessions_and_spent_refresh_tokens_are_pruned_after_the_retention,
    a_deleted_users_personal_data_leaves_every_table,
    erasure_waits_for_the_configured_delay,
    events_past_the_retention_are_pruned_and_an_older_cursor_is_cursor_pruned,
    a_connected_subscriber_keeps_the_events_it_has_not_received,
    the_retention_boundary_is_the_newest_event_before_the_cutoff,
);

/// (sessions, refresh tokens) in the database.
async fn session_rows(app: &TestApp) -> (u64, u64) {
    let store = app.store().await;
    let (sessions, tokens, _) = count_rows(store.conn()).await.expect("counts");
    store.close().await;
    (sessions, tokens)
}

async fn wait_for_rows(app: &TestApp, want: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = session_rows(app).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ended_sessions_and_spent_refresh_tokens_are_pruned_after_the_retention(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.lifecycle.session_retention = Duration::from_secs(1);
        s.lifecycle.housekeeping_interval = Duration::from_millis(200);
        // Several batches per run.
        s.lifecycle.prune_batch = 2;
    })
    .await;
    let live = app.signed_up("keep@example.com").await;
    let mut refresh = live.refresh_token;
    for _ in 0..4 {
        refresh = app.refresh(&refresh).await.expect("refresh").refresh_token;
    }
    for _ in 0..3 {
        let ended = app
            .login("keep@example.com", PASSWORD)
            .await
            .expect("login");
        app.logout(&ended.access_token).await.expect("logout");
    }
    // One live session with its current token is all that stays.
    wait_for_rows(&app, (1, 1)).await;
    let pair = app
        .refresh(&refresh)
        .await
        .expect("the live session still refreshes");
    app.validate(&pair.access_token)
        .await
        .expect("and its access token is valid");
    // A session revoked just now is kept for the retention, then goes too.
    app.logout(&pair.access_token).await.expect("logout");
    assert_eq!(session_rows(&app).await.0, 1);
    wait_for_rows(&app, (0, 0)).await;
}

/// Every row of every table of the auth database, as text (table name first).
async fn every_row(store: &Store) -> Vec<String> {
    let conn = store.conn();
    let backend = conn.get_database_backend();
    let tables_sql = match backend {
        DbBackend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        DbBackend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'"
        }
        _ => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()"
        }
    };
    let tables: Vec<String> = conn
        .query_all_raw(Statement::from_string(backend, tables_sql))
        .await
        .expect("tables")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("name"))
        .collect();
    assert!(tables.len() >= 15, "{tables:?}");
    let mut rows = Vec::new();
    for table in tables {
        let sql = match backend {
            DbBackend::Postgres => format!("SELECT t::text FROM \"{table}\" t"),
            DbBackend::Sqlite => {
                let columns = conn
                    .query_all_raw(Statement::from_string(
                        backend,
                        format!("SELECT name FROM pragma_table_info('{table}')"),
                    ))
                    .await
                    .expect("columns");
                let parts: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let name = c.try_get_by_index::<String>(0).expect("column");
                        format!("COALESCE(CAST(\"{name}\" AS TEXT), '')")
                    })
                    .collect();
                format!("SELECT {} FROM \"{table}\"", parts.join(" || '|' || "))
            }
            _ => {
                let columns = conn
                    .query_all_raw(Statement::from_string(
                        backend,
                        format!(
                            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                             WHERE table_schema = DATABASE() AND table_name = '{table}'"
                        ),
                    ))
                    .await
                    .expect("columns");
                let parts: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let name = c.try_get_by_index::<String>(0).expect("column");
                        format!("COALESCE(CAST(`{name}` AS CHAR), '')")
                    })
                    .collect();
                format!("SELECT CONCAT_WS('|', {}) FROM `{table}`", parts.join(", "))
            }
        };
        for row in conn
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|e| panic!("rows of {table}: {e}"))
        {
            let text = row
                .try_get_by_index::<Vec<u8>>(0)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .or_else(|_| row.try_get_by_index::<String>(0))
                .expect("row text");
            rows.push(format!("{table}: {text}"));
        }
    }
    rows
}

/// The rows of the auth database that mention any of `needles`.
async fn rows_mentioning(app: &TestApp, needles: &[&str]) -> Vec<String> {
    let store = app.store().await;
    let rows = every_row(&store).await;
    store.close().await;
    rows.into_iter()
        .filter(|row| needles.iter().any(|n| row.contains(n)))
        .collect()
}

const ERIN: [&str; 4] = [
    "erin@example.com",
    "erin.new@example.com",
    "Erin Quuxley",
    "erin-meta-7f3",
];

/// A user with an address, a changed address, a display name, metadata, sessions, failed
/// logins (with and without a known subject) and a lockout row; returns (admin, user id,
/// head before the deletion).
async fn erin_with_history(app: &TestApp) -> (Admin, String) {
    let (admin, _) = crate::admin::admin_of(app, "root@example.com").await;
    app.signed_up("bob@example.com").await;
    let created = admin
        .clone()
        .create_user(pb::CreateUserRequest {
            email: ERIN[0].into(),
            password: PASSWORD.into(),
            display_name: ERIN[2].into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .user
        .expect("user");
    admin
        .clone()
        .update_user(pb::UpdateUserRequest {
            user_id: created.id.clone(),
            metadata: metadata(&[("nick", ERIN[3])]),
            update_mask: mask(&["metadata"]),
            ..Default::default()
        })
        .await
        .expect("metadata");
    let login = app.login(ERIN[0], PASSWORD).await.expect("login");
    app.client
        .clone()
        .change_email(bearer(
            pb::ChangeEmailRequest {
                current_password: PASSWORD.into(),
                new_email: ERIN[1].into(),
            },
            &login.access_token,
        ))
        .await
        .expect("change email");
    // A failed login for the new address (subject known) and one for the old address (now
    // nobody's, so its audit record names no subject, only the address).
    assert!(app.login(ERIN[1], "wrong password").await.is_err());
    assert!(app.login(ERIN[0], "wrong password").await.is_err());
    app.refresh(&login.refresh_token).await.expect("refresh");
    (admin, created.id)
}

async fn a_deleted_users_personal_data_leaves_every_table(db: Db) {
    let app = spawn_app(db).await;
    let (admin, id) = erin_with_history(&app).await;
    assert!(
        rows_mentioning(&app, &ERIN).await.len() > 5,
        "the history mentions the user before the deletion"
    );
    let token = app
        .token_with_roles("events@example.com", &["events.subscriber"])
        .await;
    let before = events_until(
        &mut app.subscribe(&token, 0).await.expect("stream"),
        app.head().await,
    )
    .await;

    admin
        .clone()
        .delete_user(pb::DeleteUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("delete");

    let left = rows_mentioning(&app, &ERIN).await;
    assert!(left.is_empty(), "still in the database: {left:#?}");
    // Other users are untouched.
    assert!(!rows_mentioning(&app, &["bob@example.com"]).await.is_empty());
    assert!(app.find_user_by_email("bob@example.com").await.is_some());

    // The stream from the start: the same sequences and kinds as before, gap-free, then the
    // deletion's; every one of the user's events carries the tombstone.
    let head = app.head().await;
    let after = events_until(&mut app.subscribe(&token, 0).await.expect("stream"), head).await;
    let sequences: Vec<u64> = after.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    for (old, new) in before.iter().zip(&after) {
        assert_eq!((old.sequence, old.kind), (new.sequence, new.kind));
        let (Some(old_user), Some(new_user)) = (&old.user, &new.user) else {
            continue;
        };
        if new_user.id == id {
            assert_eq!(new_user.email, format!("#deleted:{id}"));
            assert!(new_user.display_name.is_empty() && new_user.metadata.is_none());
            assert_eq!(new_user.version, old_user.version);
        } else {
            assert_eq!(new_user, old_user);
        }
    }
    let last = after.last().expect("events");
    assert_eq!(last.kind, UserEventKind::UserDeleted as i32);
    assert_eq!(last.user.as_ref().map(|u| u.id.as_str()), Some(id.as_str()));
    // The admin still sees that a deletion happened, and by whom.
    let kinds: Vec<String> = app.audit_rows().await.into_iter().map(|r| r.kind).collect();
    assert!(kinds.iter().any(|k| k == "admin_user_deleted"), "{kinds:?}");
}

async fn erasure_waits_for_the_configured_delay(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.lifecycle.erasure_delay = Duration::from_secs(2);
        s.lifecycle.housekeeping_interval = Duration::from_millis(200);
    })
    .await;
    let (admin, id) = erin_with_history(&app).await;
    admin
        .clone()
        .delete_user(pb::DeleteUserRequest { user_id: id })
        .await
        .expect("delete");
    // Within the delay the history still holds the address (the user row does not).
    assert!(!rows_mentioning(&app, &ERIN[..2]).await.is_empty());
    assert!(app.find_user_by_email(ERIN[1]).await.is_none());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = rows_mentioning(&app, &ERIN).await;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not erased after the delay: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn events_past_the_retention_are_pruned_and_an_older_cursor_is_cursor_pruned(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.lifecycle.event_retention = Some(Duration::from_secs(1));
        s.lifecycle.housekeeping_interval = Duration::from_millis(200);
        s.lifecycle.prune_batch = 2;
    })
    .await;
    let token = app
        .token_with_roles("events@example.com", &["events.subscriber"])
        .await;
    for i in 0..4 {
        app.signed_up(&format!("u{i}@example.com")).await;
    }
    let head = app.head().await;
    assert!(head >= 4);
    wait_until_events_pruned(&app).await;
    // A cursor before the pruned events: OUT_OF_RANGE CURSOR_PRUNED, with the oldest kept.
    for cursor in [0, head - 1] {
        let status = assert_code(app.subscribe(&token, cursor).await, tonic::Code::OutOfRange);
        assert_eq!(
            reason(&status).as_deref(),
            Some("CURSOR_PRUNED"),
            "{status:?}"
        );
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
        assert_eq!(info.metadata["oldest_sequence"], (head + 1).to_string());
    }
    // From the head, the stream works and numbering goes on (no sequence is reused).
    let mut stream = app.subscribe(&token, head).await.expect("from the head");
    app.signed_up("later@example.com").await;
    let next = next_event(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(next.sequence, head + 1);
}

async fn a_connected_subscriber_keeps_the_events_it_has_not_received(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.lifecycle.event_retention = Some(Duration::from_secs(1));
        s.lifecycle.housekeeping_interval = Duration::from_millis(200);
    })
    .await;
    let token = app
        .token_with_roles("events@example.com", &["events.subscriber"])
        .await;
    let (admin, _) = crate::admin::admin_of(&app, "root@example.com").await;
    let id = app
        .signed_up("busy@example.com")
        .await
        .user
        .expect("user")
        .id;
    // A subscriber that reads one event, then nothing for a while.
    let mut stream = app.subscribe(&token, 0).await.expect("stream");
    assert_eq!(
        next_event(&mut stream, Duration::from_secs(5))
            .await
            .sequence,
        1
    );
    // Large events, more than the stream's buffers and HTTP/2 windows hold.
    let blob = "x".repeat(7000);
    for i in 0..400 {
        admin
            .clone()
            .update_user(pb::UpdateUserRequest {
                user_id: id.clone(),
                metadata: metadata(&[("blob", &blob), ("i", &i.to_string())]),
                update_mask: mask(&["metadata"]),
                ..Default::default()
            })
            .await
            .expect("update");
    }
    let head = app.head().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = event_rows(&app).await;
    assert!(kept > 0, "the slow subscriber's events were pruned");
    // Every event still arrives, in order, none missing.
    let rest = events_until(&mut stream, head).await;
    let sequences: Vec<u64> = rest.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (2..=head).collect::<Vec<_>>());
    drop(stream);
    // With the subscriber gone, pruning catches up.
    wait_until_events_pruned(&app).await;
}

/// Retention's boundary is found by a binary search on the sequence (there is no index on the
/// time): for outboxes of 1 to 9 events and every cutoff around each event's time, it is
/// exactly the newest event that occurred before the cutoff.
async fn the_retention_boundary_is_the_newest_event_before_the_cutoff(db: Db) {
    let mut app = spawn_app_with(db, |s| s.lifecycle.event_retention = None).await;
    assert_eq!(app.head().await, 0, "a new database has no events");
    app.stop().await;
    let store = app.store().await;
    let conn = store.conn();
    for count in 1..=9_i64 {
        conn.execute_unprepared("DELETE FROM user_events")
            .await
            .expect("empty");
        // Events 100 + i, each occurring at 1000 * i ms (two share a time when count > 4).
        let times: Vec<i64> = (1..=count)
            .map(|i| 1000 * if i == 5 { 4 } else { i })
            .collect();
        for (i, at) in (1..).zip(&times) {
            conn.execute_unprepared(&format!(
                "INSERT INTO user_events (sequence, kind, user_id, session_id, payload, occurred_at) \
                 VALUES ({}, 'user_updated', 'u', NULL, '{{}}', {at})",
                100 + i
            ))
            .await
            .expect("insert");
        }
        for before in [
            0,
            999,
            1000,
            1001,
            3999,
            4000,
            4001,
            5000,
            9000,
            9001,
            i64::MAX,
        ] {
            let want = (1..)
                .zip(&times)
                .filter(|(_, at)| **at < before)
                .map(|(i, _)| 100 + i)
                .max();
            let found = auth_server::storage::retention::find_last_event_before(conn, before)
                .await
                .expect("boundary");
            assert_eq!(found, want, "{count} events, before {before}");
        }
    }
    store.close().await;
}

/// Waits (up to 10 s) until housekeeping has pruned every event.
async fn wait_until_events_pruned(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while event_rows(app).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn event_rows(app: &TestApp) -> u64 {
    let store = app.store().await;
    let (_, _, events) = count_rows(store.conn()).await.expect("counts");
    store.close().await;
    events
}
