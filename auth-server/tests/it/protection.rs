//! Account protection: lockout (no hash spent while locked), the per-address rate limit, and
//! the audit trail (every kind with its subject, never a secret).

use std::time::Duration;

use auth_proto::pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::{admin::admin_of, every_backend, helpers::*};

every_backend!(
    five_failures_lock_an_unknown_email_without_hashing,
    locked_account_refuses_the_right_password_until_unlocked,
    a_success_resets_the_failure_count,
    rate_limit_answers_resource_exhausted_with_retry_info_before_hashing,
    only_password_class_calls_draw_on_the_rate_limit,
    audit_trail_records_each_kind_with_its_subject_and_no_secret,
    audit_retention_prunes_only_records_past_the_cutoff,
);

async fn five_failures_lock_an_unknown_email_without_hashing(db: Db) {
    let app = spawn_app(db).await;
    for _ in 0..5 {
        let status = assert_code(
            app.login("nobody@example.com", "wrong password").await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid email or password");
    }
    // Locked now: same answer, no argon2 computation at all, even for a flood.
    let before = app.hashes();
    for _ in 0..20 {
        let status = assert_code(
            app.login("NoBody@Example.com", "anything at all").await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid email or password");
        assert_eq!(reason(&status).as_deref(), Some("INVALID_CREDENTIALS"));
    }
    assert_eq!(app.hashes(), before, "no hash while locked");
    // Other emails are not affected.
    app.signed_up("somebody@example.com").await;
}

async fn locked_account_refuses_the_right_password_until_unlocked(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let user = app
        .register("gina@example.com", PASSWORD)
        .await
        .expect("register");
    for _ in 0..6 {
        assert_code(
            app.login("gina@example.com", "not the password").await,
            Code::Unauthenticated,
        );
    }
    let before = app.hashes();
    let status = assert_code(
        app.login("gina@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    assert_eq!(status.message(), "invalid email or password");
    assert_eq!(
        app.hashes(),
        before,
        "the right password is not even checked"
    );

    let details = admin
        .get_user(pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .details
        .expect("details");
    let until = details.locked_until.expect("locked");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // First lock: one minute.
    assert!((50..=61).contains(&(until.seconds - now)), "{until:?}");

    assert!(unlock(&mut admin, &user.id).await);
    app.login("gina@example.com", PASSWORD)
        .await
        .expect("login after unlock");
    // One failure is counted but locks nothing: unlocking reports no lock.
    assert_code(
        app.login("gina@example.com", "wrong password").await,
        Code::Unauthenticated,
    );
    assert!(!unlock(&mut admin, &user.id).await, "never locked");
}

/// UnlockUser; whether a lock was in force.
async fn unlock(admin: &mut Admin, user_id: &str) -> bool {
    admin
        .unlock_user(pb::UnlockUserRequest {
            user_id: user_id.to_owned(),
        })
        .await
        .expect("unlock")
        .into_inner()
        .was_locked
}

async fn a_success_resets_the_failure_count(db: Db) {
    let app = spawn_app(db).await;
    app.register("hank@example.com", PASSWORD)
        .await
        .expect("register");
    for _ in 0..4 {
        assert_code(
            app.login("hank@example.com", "nope nope").await,
            Code::Unauthenticated,
        );
    }
    app.login("hank@example.com", PASSWORD)
        .await
        .expect("4 failures do not lock");
    for _ in 0..4 {
        assert_code(
            app.login("hank@example.com", "nope nope").await,
            Code::Unauthenticated,
        );
    }
    app.login("hank@example.com", PASSWORD)
        .await
        .expect("the count started again after the success");
}

fn rate_limited(settings: &mut auth_server::Settings, per_minute: u32, burst: u32) {
    settings.protection.rate_limit =
        Some(auth_server::rate_limit::RateLimitSettings { per_minute, burst });
}

async fn rate_limit_answers_resource_exhausted_with_retry_info_before_hashing(db: Db) {
    let app = spawn_app_with(db, |s| rate_limited(s, 60, 3)).await;
    for _ in 0..3 {
        assert_code(
            app.login("ivy@example.com", "wrong password").await,
            Code::Unauthenticated,
        );
    }
    let before = app.hashes();
    let status = assert_code(
        app.login("ivy@example.com", "wrong password").await,
        Code::ResourceExhausted,
    );
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    assert_eq!(reason(&status).as_deref(), Some("RATE_LIMITED"));
    // Register and Refresh share the bucket; Validate is not limited.
    assert_code(
        app.register("jo@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert_code(app.refresh(&"a".repeat(43)).await, Code::ResourceExhausted);
    assert_code(app.validate("v4.public.x").await, Code::Unauthenticated);
    assert_eq!(app.hashes(), before, "refused before any hashing");
    // The bucket refills: 60 per minute is one a second.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    assert_code(
        app.login("ivy@example.com", "wrong password").await,
        Code::Unauthenticated,
    );
}

async fn only_password_class_calls_draw_on_the_rate_limit(db: Db) {
    let app = spawn_app_with(db, |s| rate_limited(s, 1, 1)).await;
    // The one token of the bucket: a Login (password class).
    let admin = app.token_with_roles("root@example.com", &["admin"]).await;
    // AdminService, Validate and Logout are other classes: never refused by the limit.
    for _ in 0..5 {
        app.admin_with(&admin)
            .list_users(pb::ListUsersRequest::default())
            .await
            .expect("admin calls are not rate-limited");
        app.validate(&admin).await.expect("validate is not limited");
    }
    // Every password-class call is refused now, whichever it is.
    let status = assert_code(
        app.login("root@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert_eq!(reason(&status).as_deref(), Some("RATE_LIMITED"));
    assert_code(
        app.change_password(&admin, PASSWORD, "another passphrase")
            .await,
        Code::ResourceExhausted,
    );
    app.logout(&admin)
        .await
        .expect("logout is not rate-limited");
}

async fn audit_trail_records_each_kind_with_its_subject_and_no_secret(db: Db) {
    let app = spawn_app_with(db, |s| s.protection.lockout.lockout_max_failures = 2).await;
    let (mut admin, admin_id) = admin_of(&app, "root@example.com").await;
    let user = app
        .register("kim@example.com", PASSWORD)
        .await
        .expect("register");
    let id = user.id.clone();
    let wrong = "Wrong-Secret-Password-1";
    assert_code(
        app.login("kim@example.com", wrong).await,
        Code::Unauthenticated,
    );
    let first = app.login("kim@example.com", PASSWORD).await.expect("login");
    // Refresh, then present the spent token again: reuse revokes the session.
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );
    let third = app.login("kim@example.com", PASSWORD).await.expect("login");
    let new_password = "Kim's New Secret Passphrase";
    app.change_password(&third.access_token, PASSWORD, new_password)
        .await
        .expect("change");
    app.logout(&third.access_token).await.expect("logout");
    let reset = admin
        .issue_password_reset(pb::IssuePasswordResetRequest {
            user_id: id.clone(),
        })
        .await
        .expect("issue reset")
        .into_inner();
    let reset_password = "Reset Secret Passphrase 9";
    app.client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            reset_token: reset.reset_token.clone(),
            new_password: reset_password.into(),
        })
        .await
        .expect("reset");
    // Two failures lock (this app's policy), the third attempt is refused unchecked.
    for _ in 0..2 {
        assert_code(
            app.login("kim@example.com", wrong).await,
            Code::Unauthenticated,
        );
    }
    assert_code(
        app.login("kim@example.com", reset_password).await,
        Code::Unauthenticated,
    );
    admin
        .unlock_user(pb::UnlockUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("unlock");
    let unknown = assert_code(
        app.login("ghost@example.com", wrong).await,
        Code::Unauthenticated,
    );
    drop(unknown);

    let rows = app.audit_rows().await;
    let of = |kind: &str| rows.iter().filter(|r| r.kind == kind).collect::<Vec<_>>();
    for (kind, subject) in [
        ("user_registered", Some(id.as_str())),
        ("login_failed", Some(id.as_str())),
        ("login_succeeded", Some(id.as_str())),
        ("refresh_reuse_detected", Some(id.as_str())),
        ("password_changed", Some(id.as_str())),
        ("logout", Some(id.as_str())),
        ("admin_password_reset_issued", Some(id.as_str())),
        ("password_reset_used", Some(id.as_str())),
        ("login_locked", Some(id.as_str())),
        ("admin_user_unlocked", Some(id.as_str())),
    ] {
        let found = of(kind);
        assert!(!found.is_empty(), "{kind} missing");
        assert!(
            found.iter().any(|r| r.subject_id.as_deref() == subject),
            "{kind} subject"
        );
    }
    assert!(
        of("admin_user_unlocked")
            .iter()
            .all(|r| r.actor_id.as_deref() == Some(admin_id.as_str()))
    );
    assert_eq!(of("login_locked")[0].outcome, "denied");
    assert_eq!(of("login_failed")[0].outcome, "failure");
    let ghost = of("login_failed")
        .into_iter()
        .find(|r| {
            r.detail
                .as_deref()
                .is_some_and(|d| d.contains("ghost@example.com"))
        })
        .expect("unknown email audited");
    assert_eq!(ghost.subject_id, None);
    assert_eq!(
        of("refresh_reuse_detected")[0].session_id.as_deref(),
        Some(first.session_id.as_str())
    );
    let _ = second;

    // No column of any row holds a password, token or hash.
    let store = app.store().await;
    let hash = auth_server::storage::users::find_password_hash(store.conn(), &id)
        .await
        .expect("hash")
        .expect("has one");
    store.close().await;
    let secrets = [
        PASSWORD,
        wrong,
        new_password,
        reset_password,
        first.access_token.as_str(),
        first.refresh_token.as_str(),
        third.access_token.as_str(),
        reset.reset_token.as_str(),
        hash.0.as_str(),
        "$argon2",
    ];
    for row in &rows {
        let text = format!("{row:?}");
        for secret in secrets {
            assert!(!text.contains(secret), "audit row leaks a secret: {text}");
        }
    }
    // The refresh token's stored form (its SHA-256) is not in the audit trail either.
    let refresh_hash = auth_server::secrets::sha256_hex(&first.refresh_token);
    assert!(
        rows.iter()
            .all(|r| !format!("{r:?}").contains(&refresh_hash))
    );
}

async fn audit_retention_prunes_only_records_past_the_cutoff(db: Db) {
    let app = spawn_app(db).await;
    app.signed_up("old@example.com").await;
    let cutoff = auth_server::clock::now_millis() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.signed_up("new@example.com").await;
    let before = app.audit_rows().await.len();
    assert_eq!(before, 4, "two registrations and two logins");
    let store = app.store().await;
    let pruned = auth_server::storage::audit::delete_audit_before(store.conn(), cutoff)
        .await
        .expect("prune");
    store.close().await;
    assert_eq!(pruned, 2);
    let left = app.audit_rows().await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|r| r.occurred_at >= cutoff));
}
