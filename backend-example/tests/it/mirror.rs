//! The mirror, the guarded API and sync health, across outages and restarts.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{every_backend_db, helpers::*};

every_backend_db!(
    new_users_reach_the_mirror_and_me_answers_401_or_200,
    password_change_denies_the_other_session_at_once,
    auth_outage_serves_cached_tokens_refuses_unseen_ones_and_catches_up_after,
    backend_restart_resumes_from_its_stored_cursor,
    backend_owned_fields_survive_auth_changes,
    an_api_key_mirror_fetches_a_user_it_has_not_seen,
    a_mirror_behind_the_event_retention_recovers_through_a_snapshot,
);

async fn an_api_key_mirror_fetches_a_user_it_has_not_seen(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    // No password account: the mirror has only its API key.
    let auth = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let key = auth
        .service_account_key(SERVICE_EMAIL, &["events.subscriber"])
        .await;
    let backend = TestBackend::start_config(backend_example::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        auth_url: auth.url(),
        database_url: database.url.clone(),
        auth_api_key: Some(key),
        auth_email: None,
        auth_password: None,
        auth_ca_file: None,
        auth_client_cert: None,
        auth_client_key: None,
    })
    .await;
    let (token, id) = user(&auth, "fresh@example.com").await;
    backend.wait_applied(auth_head(&auth).await).await;
    assert_eq!(backend.me(Some(&token)).await.status, 200);

    // As if the stream had not brought it yet: the row is gone, the cursor is past its event.
    {
        use sea_orm::EntityTrait as _;
        let conn = backend_example::db::connect(&database.url)
            .await
            .expect("backend db");
        backend_example::db::userbase::Entity::delete_by_id(id.clone())
            .exec(&conn)
            .await
            .expect("delete");
        conn.close().await.ok();
    }
    let me = backend.me(Some(&token)).await;
    assert_eq!(me.status, 200, "{:?}", me.json);
    assert_eq!(me.json["email"], "fresh@example.com");
    assert_eq!(me.json["plan_tier"], "free");
}

async fn new_users_reach_the_mirror_and_me_answers_401_or_200(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    // One user before the backend exists (reaches it through the snapshot), one after (stream).
    let (early_token, early_id) = user(&auth, "early@example.com").await;
    let backend = TestBackend::start(&auth, database.url.clone()).await;
    backend.wait_applied(auth_head(&auth).await).await;
    assert_eq!(
        backend.health().await["snapshot_users"],
        2,
        "service account and early user"
    );
    let (late_token, _) = user(&auth, "late@example.com").await;

    let anonymous = backend.me(None).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.headers.contains_key("www-authenticate"));
    assert_eq!(backend.me(Some("garbage")).await.status, 401);

    let me = backend.me(Some(&early_token)).await;
    assert_eq!(me.status, 200, "{:?}", me.json);
    assert_eq!(
        (me.json["id"].as_str(), me.json["email"].as_str()),
        (Some(early_id.as_str()), Some("early@example.com"))
    );
    assert_eq!(me.json["plan_tier"], "free");
    let started = Instant::now();
    let me = backend.me(Some(&late_token)).await;
    assert_eq!(me.status, 200, "{:?}", me.json);
    assert_eq!(me.json["email"], "late@example.com");
    assert!(started.elapsed() < Duration::from_secs(3));

    backend.wait_applied(auth_head(&auth).await).await;
    let health = backend.health().await;
    assert_eq!(health["mirrored_users"], 3, "{health}");
    assert_eq!(health["snapshot_users"], 2, "{health}");
    assert_eq!(health["lag"], 0);
    assert!(
        health["last_event_at_ms"].is_i64(),
        "the late user came through the stream: {health}"
    );
}

async fn password_change_denies_the_other_session_at_once(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    let backend = TestBackend::start(&auth, database.url.clone()).await;
    let (token_a, _) = user(&auth, "two@example.com").await;
    assert_eq!(backend.me(Some(&token_a)).await.status, 200);

    let client = auth_client::AuthClient::connect_lazy(&auth.url()).expect("url");
    let b = client
        .login("two@example.com", PASSWORD)
        .await
        .expect("second session")
        .into_session()
        .expect("no MFA on this account");
    client
        .change_password(&b.access_token, PASSWORD, "a brand new passphrase")
        .await
        .expect("change");
    let changed = Instant::now();
    loop {
        let status = backend.me(Some(&token_a)).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "revoked session still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        backend.me(Some(&b.access_token)).await.status,
        200,
        "the changing session stays valid"
    );
}

async fn auth_outage_serves_cached_tokens_refuses_unseen_ones_and_catches_up_after(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let mut auth = auth_server().await;
    let backend = TestBackend::start(&auth, database.url.clone()).await;
    let (seen, _) = user(&auth, "seen@example.com").await;
    let (unseen, _) = user(&auth, "unseen@example.com").await;
    assert_eq!(backend.me(Some(&seen)).await.status, 200);

    auth.stop().await;
    assert_eq!(
        backend.me(Some(&seen)).await.status,
        200,
        "recently validated token is still served"
    );
    let refused = backend.me(Some(&unseen)).await;
    assert_eq!(
        refused.status, 503,
        "a token nobody can decide on fails closed"
    );
    assert!(refused.headers.contains_key("retry-after"));

    auth.resume().await;
    let (after, _) = user(&auth, "after-restart@example.com").await;
    let me = backend.me(Some(&after)).await;
    assert_eq!(
        (me.status, me.json["email"].as_str()),
        (200, Some("after-restart@example.com"))
    );
    assert_eq!(backend.me(Some(&unseen)).await.status, 200);
}

async fn backend_restart_resumes_from_its_stored_cursor(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    let mut backend = TestBackend::start(&auth, database.url.clone()).await;
    user(&auth, "first@example.com").await;
    let head = auth_head(&auth).await;
    backend.wait_applied(head).await;
    let snapshot_users = backend.health().await["snapshot_users"].clone();
    backend.stop().await;

    for i in 0..3 {
        user(&auth, &format!("while-down{i}@example.com")).await;
    }
    backend.resume().await;
    let new_head = auth_head(&auth).await;
    backend.wait_applied(new_head).await;
    let health = backend.health().await;
    assert_eq!(
        health["resumed_from"], head,
        "did not resume from its cursor: {health}"
    );
    assert_eq!(
        health["snapshot_users"], snapshot_users,
        "bootstrapped again: {health}"
    );
    assert_eq!(health["mirrored_users"], 5, "{health}");
    assert_eq!(health["last_applied_sequence"], new_head);
}

async fn backend_owned_fields_survive_auth_changes(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    let backend = TestBackend::start(&auth, database.url.clone()).await;
    let (token, _) = user(&auth, "owner@example.com").await;
    assert_eq!(backend.me(Some(&token)).await.status, 200);

    let patched = backend
        .request(
            "PATCH",
            "/me",
            Some(&token),
            Some(json!({"plan_tier": "pro", "preferences": {"theme": "dark"}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.json);
    assert_eq!(
        (
            patched.json["plan_tier"].as_str(),
            &patched.json["preferences"]
        ),
        (Some("pro"), &json!({"theme": "dark"}))
    );
    for body in [
        json!({"email": "evil@example.com"}),
        json!({"roles": ["admin"]}),
        json!({"nonsense": 1}),
        json!({"plan_tier": 5}),
    ] {
        let refused = backend
            .request("PATCH", "/me", Some(&token), Some(body.clone()))
            .await;
        assert_eq!(refused.status, 400, "{body} -> {:?}", refused.json);
    }
    assert_eq!(
        backend
            .request("PATCH", "/me", None, Some(json!({"plan_tier": "x"})))
            .await
            .status,
        401
    );

    // An auth-side change (a new version of the user) is mirrored; backend fields stay.
    let client = auth_client::AuthClient::connect_lazy(&auth.url()).expect("url");
    client
        .change_password(&token, PASSWORD, "another passphrase")
        .await
        .expect("change");
    backend.wait_applied(auth_head(&auth).await).await;
    let me = backend.me(Some(&token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json["version"], 2);
    assert_eq!(
        (me.json["plan_tier"].as_str(), &me.json["preferences"]),
        (Some("pro"), &json!({"theme": "dark"}))
    );
    assert_eq!(me.json["email"], "owner@example.com");
}

/// auth-server behind mutual TLS: the backend syncs and validates over `https://` with the CA
/// and its client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_syncs_and_me_answers_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = auth_server::testkit::TestCerts::generate(&dir.path().join("certs"));
    let auth = Server::start(TestDatabase::Sqlite, |s| {
        s.tls = Some(auth_server::tls::TlsSettings {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: Some(certs.ca.clone()),
            watch_interval: Duration::from_secs(5),
        });
    })
    .await;
    auth.account_with_roles(SERVICE_EMAIL, &["events.subscriber"])
        .await;
    auth.account_with_roles("tls-user@example.com", &[]).await;
    let database = backend_db(Db::Sqlite, &dir).await;
    let backend = TestBackend::start_config(backend_example::config::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        auth_url: auth.tls_url(),
        database_url: database.url.clone(),
        auth_api_key: None,
        auth_email: Some(SERVICE_EMAIL.into()),
        auth_password: Some(PASSWORD.into()),
        auth_ca_file: Some(certs.ca.clone()),
        auth_client_cert: Some(certs.client_cert.clone()),
        auth_client_key: Some(certs.client_key.clone()),
    })
    .await;
    backend.wait_applied(auth_head(&auth).await).await;
    assert_eq!(backend.health().await["mirrored_users"], 2);
    let tls = auth_client::ClientTls::new()
        .ca_file(&certs.ca)
        .expect("ca")
        .identity_files(&certs.client_cert, &certs.client_key)
        .expect("identity");
    let client = auth_client::AuthClient::connect_lazy_with(&auth.tls_url(), &tls).expect("client");
    let session = client
        .login("tls-user@example.com", PASSWORD)
        .await
        .expect("login over mTLS")
        .into_session()
        .expect("no MFA on this account");
    let me = backend.me(Some(&session.access_token)).await;
    assert_eq!(me.status, 200, "{:?}", me.json);
    assert_eq!(me.json["email"], "tls-user@example.com");
}

/// A mirror away longer than auth-server keeps events: the subscriber is told its cursor was
/// pruned, loads a snapshot, and the mirror is reconciled to it (the user deleted meanwhile
/// becomes a tombstone, the new one appears, backend-owned fields stay), then follows on.
async fn a_mirror_behind_the_event_retention_recovers_through_a_snapshot(db: Db) {
    use auth_client::{AuthClientError, Credentials, Subscriber};
    use backend_example::db::userbase;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = Server::start(TestDatabase::Sqlite, |s| {
        s.lifecycle.event_retention = Some(Duration::from_secs(1));
        s.lifecycle.housekeeping_interval = Duration::from_millis(200);
    })
    .await;
    auth.account_with_roles(SERVICE_EMAIL, &["events.subscriber"])
        .await;
    let mut backend = TestBackend::start(&auth, database.url.clone()).await;
    let (keep_token, _) = user(&auth, "keep@example.com").await;
    let (_, gone_id) = user(&auth, "gone@example.com").await;
    backend.wait_applied(auth_head(&auth).await).await;
    let patched = backend
        .request(
            "PATCH",
            "/me",
            Some(&keep_token),
            Some(json!({"plan_tier": "pro"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let cursor = backend.health().await["last_applied_sequence"]
        .as_u64()
        .expect("cursor");
    backend.stop().await;

    // While the mirror is away: a deletion, a new user, and the retention prunes them all.
    let (mut admin, admin_token) = auth.admin("root@example.com").await;
    admin
        .delete_user(auth_server::testkit::bearer(
            auth_client::pb::DeleteUserRequest {
                user_id: gone_id.clone(),
            },
            &admin_token,
        ))
        .await
        .expect("delete");
    let (new_token, _) = user(&auth, "new@example.com").await;
    let subscriber = Subscriber::new(
        auth_client::AuthClient::connect_lazy(&auth.url()).expect("url"),
        Credentials::Password {
            email: SERVICE_EMAIL.into(),
            password: PASSWORD.into(),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let token = subscriber.access_token().await.expect("token");
        let client = auth_client::AuthClient::connect_lazy(&auth.url()).expect("url");
        match client.user_events(&token, cursor).await {
            Err(AuthClientError::CursorPruned { oldest_sequence }) => {
                assert!(oldest_sequence > cursor + 1);
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "never pruned: {:?}", other.err());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    backend.resume().await;
    let head = auth_head(&auth).await;
    backend.wait_applied(head).await;
    // The mirror equals the auth service's users, field by field.
    let snapshot = subscriber.snapshot().await.expect("snapshot");
    let mirror = sea_orm::Database::connect(&database.url).await.expect("db");
    let rows = userbase::Entity::find()
        .filter(userbase::Column::Deleted.eq(false))
        .all(&mirror)
        .await
        .expect("rows");
    let mut mirrored: Vec<_> = rows
        .iter()
        .map(|r| (r.id.clone(), r.email.clone(), r.version, r.disabled))
        .collect();
    let mut expected: Vec<_> = snapshot
        .users
        .iter()
        .map(|u| {
            (
                u.id.clone(),
                u.email.clone(),
                i64::try_from(u.version).expect("version"),
                u.disabled,
            )
        })
        .collect();
    mirrored.sort();
    expected.sort();
    assert_eq!(mirrored, expected);
    let gone = userbase::Entity::find_by_id(gone_id)
        .one(&mirror)
        .await
        .expect("row")
        .expect("a tombstone stays");
    assert!(gone.deleted);
    assert!(gone.email.is_empty() && gone.display_name.is_empty());
    mirror.close().await.ok();
    assert_eq!(backend.me(Some(&new_token)).await.status, 200);
    let me = backend.me(Some(&keep_token)).await;
    assert_eq!(
        (me.status, me.json["plan_tier"].as_str()),
        (200, Some("pro"))
    );
    // And it follows live events again.
    user(&auth, "after@example.com").await;
    backend.wait_applied(auth_head(&auth).await).await;
    assert_eq!(backend.health().await["lag"], 0);
}
