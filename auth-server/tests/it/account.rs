//! The whole account life through the public API.

use auth_server::storage::{EventKind, events::find_events_after};
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    account_life_register_login_validate_refresh_change_password_logout,
    refresh_token_reuse_revokes_the_whole_session,
    unknown_email_and_wrong_password_are_indistinguishable,
    users_and_tokens_survive_a_restart,
    registration_closed_is_permission_denied,
    public_keys_list_the_signing_key_of_issued_tokens,
);

async fn account_life_register_login_validate_refresh_change_password_logout(db: Db) {
    let app = spawn_app(db).await;
    let user = app
        .register("  Ann@Example.com ", PASSWORD)
        .await
        .expect("register");
    assert_eq!(user.email, "ann@example.com");
    assert_eq!(user.version, 1);
    assert!(user.roles.is_empty() && !user.disabled);

    // Login and validate.
    let a = app.login("ANN@example.com", PASSWORD).await.expect("login");
    assert_eq!(
        a.user.as_ref().map(|u| u.id.as_str()),
        Some(user.id.as_str())
    );
    let v = app.validate(&a.access_token).await.expect("valid");
    assert_eq!(
        (v.user_id.as_str(), v.session_id.as_str()),
        (user.id.as_str(), a.session_id.as_str())
    );
    assert!(v.expires_at.is_some() && !v.token_id.is_empty());

    // Refresh rotates: a new pair for the same session; the old refresh token is spent.
    let r = app.refresh(&a.refresh_token).await.expect("refresh");
    assert_eq!(r.session_id, a.session_id);
    assert_ne!(r.refresh_token, a.refresh_token);
    assert_ne!(r.access_token, a.access_token);
    app.validate(&r.access_token)
        .await
        .expect("refreshed token valid");

    // A second session; changing the password from it revokes the first, keeps itself.
    let b = app
        .login("ann@example.com", PASSWORD)
        .await
        .expect("second login");
    let revoked = app
        .change_password(&b.access_token, PASSWORD, "new password 2")
        .await
        .expect("change");
    assert_eq!(revoked, 1);
    let status = assert_code(app.validate(&r.access_token).await, Code::Unauthenticated);
    assert_eq!(reason(&status).as_deref(), Some("SESSION_REVOKED"));
    assert_code(app.refresh(&r.refresh_token).await, Code::Unauthenticated);
    app.validate(&b.access_token)
        .await
        .expect("the changing session stays valid");

    // Old password fails, new one works.
    assert_code(
        app.login("ann@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    app.login("ann@example.com", "new password 2")
        .await
        .expect("login with new password");

    // Logout kills the token at once.
    app.logout(&b.access_token).await.expect("logout");
    let status = assert_code(app.validate(&b.access_token).await, Code::Unauthenticated);
    assert_eq!(reason(&status).as_deref(), Some("SESSION_REVOKED"));
    assert_code(app.logout(&b.access_token).await, Code::Unauthenticated);
    assert_code(app.refresh(&b.refresh_token).await, Code::Unauthenticated);

    // The outbox holds the changes in gap-free order, in the same transactions.
    let store = app.store().await;
    // Staged events count too: number them first.
    auth_server::storage::sequencer::drain(&store)
        .await
        .expect("sequence staged events");
    let events = find_events_after(store.conn(), 0, 100)
        .await
        .expect("events");
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::UserCreated,
            EventKind::PasswordChanged,
            EventKind::SessionRevoked,
            EventKind::SessionRevoked
        ]
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    assert_eq!(
        events[1].user().map(|u| u.version),
        Some(2),
        "PasswordChanged carries the state after the change"
    );
    assert_eq!(events[2].session_id.as_deref(), Some(a.session_id.as_str()));
    assert_eq!(events[3].session_id.as_deref(), Some(b.session_id.as_str()));
    store.close().await;
}

async fn refresh_token_reuse_revokes_the_whole_session(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("reuse@example.com").await;
    let r1 = app.refresh(&a.refresh_token).await.expect("first refresh");

    let status = assert_code(app.refresh(&a.refresh_token).await, Code::Unauthenticated);
    assert_eq!(reason(&status).as_deref(), Some("REFRESH_TOKEN_REUSED"));
    // The whole session is dead: the newest refresh token and every access token.
    assert_code(app.refresh(&r1.refresh_token).await, Code::Unauthenticated);
    assert_code(app.validate(&r1.access_token).await, Code::Unauthenticated);
    assert_code(app.validate(&a.access_token).await, Code::Unauthenticated);
    // Other sessions of the user are untouched.
    let other = app
        .login("reuse@example.com", PASSWORD)
        .await
        .expect("login");
    app.validate(&other.access_token)
        .await
        .expect("other session valid");
}

async fn unknown_email_and_wrong_password_are_indistinguishable(db: Db) {
    let app = spawn_app(db).await;
    app.register("known@example.com", PASSWORD)
        .await
        .expect("register");
    let wrong = assert_code(
        app.login("known@example.com", "wrong password").await,
        Code::Unauthenticated,
    );
    let unknown = assert_code(
        app.login("nobody@example.com", "wrong password").await,
        Code::Unauthenticated,
    );
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(reason(&wrong), reason(&unknown));
    assert_eq!(wrong.details(), unknown.details());
}

async fn users_and_tokens_survive_a_restart(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("restart@example.com").await;
    let b = app
        .login("restart@example.com", PASSWORD)
        .await
        .expect("login");
    app.logout(&b.access_token).await.expect("logout");

    let app = app.restart().await;
    app.validate(&a.access_token)
        .await
        .expect("token issued before the restart still validates");
    // Revocations are reloaded from the database.
    assert_code(app.validate(&b.access_token).await, Code::Unauthenticated);
    app.refresh(&a.refresh_token)
        .await
        .expect("refresh after restart");
    app.login("restart@example.com", PASSWORD)
        .await
        .expect("login after restart");
}

async fn registration_closed_is_permission_denied(db: Db) {
    let app = spawn_app_with(db, |s| s.allow_registration = false).await;
    assert_code(
        app.register("closed@example.com", PASSWORD).await,
        Code::PermissionDenied,
    );
    assert!(app.find_user_by_email("closed@example.com").await.is_none());
}

async fn public_keys_list_the_signing_key_of_issued_tokens(db: Db) {
    let app = spawn_app(db).await;
    let keys = app
        .client
        .clone()
        .get_public_keys(auth_proto::pb::GetPublicKeysRequest {})
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys.issuer, "auth-server");
    assert_eq!(keys.keys.len(), 1);
    let key = &keys.keys[0];
    assert!(
        key.signing && key.key_id.starts_with("k4.pid.") && key.paserk.starts_with("k4.public.")
    );
    // The token footer names that key.
    let a = app.signed_up("keys@example.com").await;
    let footer = a.access_token.rsplit('.').next().expect("footer");
    use base64::Engine as _;
    let footer = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(footer)
        .expect("b64 footer");
    assert!(String::from_utf8_lossy(&footer).contains(&key.key_id));
}

/// The embedded database holds password hashes and MFA secrets: owner-only, like the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_and_secret_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app(Db::Sqlite).await;
    app.signed_up("perm@example.com").await;
    let db_file = app.dir.path().join("auth.db");
    let data_dir = &app.settings.data_dir;
    for path in [
        db_file.clone(),
        db_file.with_extension("db-wal"),
        data_dir.join("kek.key"),
        data_dir.join("mfa.key"),
    ] {
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{} is {:o}",
            path.display(),
            mode & 0o777
        );
    }
}
