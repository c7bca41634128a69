//! The caller's own account: GetMe, ListMySessions, RevokeMySessions (the other session's
//! token refused at once), with every bad input.

use auth_proto::pb;
use tonic::Code;

use crate::{
    every_backend,
    helpers::*,
    mfa::{enrolled, first_step, second_step},
};

every_backend!(
    a_user_reads_their_account_and_ends_their_other_sessions,
    a_user_deletes_their_account_with_password_and_totp,
);

async fn my_sessions(app: &TestApp, token: &str) -> Vec<pb::MySession> {
    app.client
        .clone()
        .list_my_sessions(bearer(pb::ListMySessionsRequest {}, token))
        .await
        .expect("list my sessions")
        .into_inner()
        .sessions
}

async fn revoke(
    app: &TestApp,
    token: &str,
    request: pb::RevokeMySessionsRequest,
) -> Result<Vec<String>, tonic::Status> {
    app.client
        .clone()
        .revoke_my_sessions(bearer(request, token))
        .await
        .map(|r| r.into_inner().revoked_session_ids)
}

async fn a_user_reads_their_account_and_ends_their_other_sessions(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let before = std::time::SystemTime::now();
    let user = app
        .register("ann@example.com", PASSWORD)
        .await
        .expect("ann");
    let a = app
        .login("ann@example.com", PASSWORD)
        .await
        .expect("login a");
    let b = app
        .login("ann@example.com", PASSWORD)
        .await
        .expect("login b");

    // GetMe: the account now, with its organizations.
    let org = admin
        .create_organization(pb::CreateOrganizationRequest {
            name: "Acme".into(),
            ..Default::default()
        })
        .await
        .expect("org")
        .into_inner()
        .organization
        .expect("org");
    admin
        .add_member(pb::AddMemberRequest {
            organization_id: org.id.clone(),
            user_id: user.id.clone(),
            roles: vec!["editor".into()],
        })
        .await
        .expect("member");
    let me = app
        .client
        .clone()
        .get_me(bearer(pb::GetMeRequest {}, &a.access_token))
        .await
        .expect("get me")
        .into_inner();
    assert_eq!(
        me.user.as_ref().map(|u| u.email.as_str()),
        Some("ann@example.com")
    );
    assert!(me.has_password && !me.mfa_enabled);
    let seconds = |t: Option<prost_types::Timestamp>| t.map(|t| t.seconds).unwrap_or_default();
    let started = before
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        seconds(me.last_login_at) >= started,
        "last login is the newest login"
    );
    assert!(seconds(me.password_changed_at) >= started);
    assert_eq!(
        me.organizations.len(),
        1,
        "current memberships, not the token's"
    );
    assert_eq!(me.organizations[0].roles, ["editor"]);
    assert_eq!(
        me.organizations[0]
            .organization
            .as_ref()
            .map(|o| o.id.as_str()),
        Some(org.id.as_str())
    );

    // Two live sessions, the caller's marked.
    let listed = my_sessions(&app, &a.access_token).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, b.session_id, "newest first");
    let current: Vec<&str> = listed
        .iter()
        .filter(|s| s.current)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(current, [a.session_id.as_str()]);

    // Bad input.
    for request in [
        pb::RevokeMySessionsRequest::default(),
        pb::RevokeMySessionsRequest {
            session_id: b.session_id.clone(),
            all_but_current: true,
        },
        pb::RevokeMySessionsRequest {
            session_id: "not-a-session".into(),
            all_but_current: false,
        },
    ] {
        assert_code(
            revoke(&app, &a.access_token, request).await,
            Code::InvalidArgument,
        );
    }
    let other = app.signed_up("bob@example.com").await;
    let foreign = pb::RevokeMySessionsRequest {
        session_id: other.session_id.clone(),
        all_but_current: false,
    };
    assert_code(revoke(&app, &a.access_token, foreign).await, Code::NotFound);
    assert_code(
        app.client
            .clone()
            .get_me(tonic::Request::new(pb::GetMeRequest {}))
            .await,
        Code::Unauthenticated,
    );

    // End the other session: its token is refused at once, the caller's is not.
    let revoked = revoke(
        &app,
        &a.access_token,
        pb::RevokeMySessionsRequest {
            session_id: b.session_id.clone(),
            all_but_current: false,
        },
    )
    .await
    .expect("revoke b");
    assert_eq!(revoked, vec![b.session_id.clone()]);
    let status = assert_code(app.validate(&b.access_token).await, Code::Unauthenticated);
    assert_eq!(reason(&status).as_deref(), Some("SESSION_REVOKED"));
    assert_code(app.refresh(&b.refresh_token).await, Code::Unauthenticated);
    app.validate(&a.access_token).await.expect("a still valid");
    assert!(
        app.validate(&other.access_token).await.is_ok(),
        "bob untouched"
    );

    // All but the current one.
    let c = app
        .login("ann@example.com", PASSWORD)
        .await
        .expect("login c");
    let d = app
        .login("ann@example.com", PASSWORD)
        .await
        .expect("login d");
    let mut revoked = revoke(
        &app,
        &a.access_token,
        pb::RevokeMySessionsRequest {
            session_id: String::new(),
            all_but_current: true,
        },
    )
    .await
    .expect("revoke all but current");
    revoked.sort();
    let mut expected = vec![c.session_id.clone(), d.session_id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    for gone in [&c, &d] {
        assert_code(
            app.validate(&gone.access_token).await,
            Code::Unauthenticated,
        );
    }
    let left = my_sessions(&app, &a.access_token).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].current);
    let kinds: Vec<String> = app.audit_rows().await.into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "sessions_revoked").count(), 2);
}

async fn delete_me(
    app: &TestApp,
    token: &str,
    password: &str,
    code: &str,
) -> Result<u32, tonic::Status> {
    app.client
        .clone()
        .delete_my_account(bearer(
            pb::DeleteMyAccountRequest {
                current_password: password.into(),
                totp_code: code.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().revoked_sessions)
}

async fn a_user_deletes_their_account_with_password_and_totp(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;

    // Without MFA: the password decides.
    let a = app.signed_up("dan@example.com").await;
    let b = app
        .login("dan@example.com", PASSWORD)
        .await
        .expect("second session");
    let status = assert_code(
        delete_me(&app, &a.access_token, "wrong password", "").await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status).as_deref(), Some("INVALID_CREDENTIALS"));
    let head = app.head().await;
    assert_eq!(
        delete_me(&app, &a.access_token, PASSWORD, "")
            .await
            .expect("deleted"),
        2
    );
    for gone in [&a, &b] {
        assert_code(
            app.validate(&gone.access_token).await,
            Code::Unauthenticated,
        );
    }
    assert_code(
        app.login("dan@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    let mut stream = app.subscribe(&root, head).await.expect("subscribe");
    let events = events_until(&mut stream, app.head().await).await;
    assert_eq!(
        events.last().map(pb::UserEvent::kind),
        Some(pb::UserEventKind::UserDeleted),
        "the same events as an admin delete"
    );
    app.register("dan@example.com", PASSWORD)
        .await
        .expect("the email is free again");

    // With MFA: a current code too, spent by the deletion.
    let (secret, codes, t0) = enrolled(&app, "mia@example.com").await;
    let mfa_token = first_step(&app, "mia@example.com", PASSWORD).await;
    let session = second_step(&app, &mfa_token, "", &codes[0])
        .await
        .expect("recovery code login");
    assert_code(
        delete_me(&app, &session.access_token, PASSWORD, "").await,
        Code::InvalidArgument,
    );
    let wrong = if secret.code_at(t0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let status = assert_code(
        delete_me(&app, &session.access_token, PASSWORD, wrong).await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status).as_deref(), Some("MFA_CODE_INVALID"));
    delete_me(&app, &session.access_token, PASSWORD, &secret.code_at(t0))
        .await
        .expect("deleted with password and code");
    assert_code(
        app.validate(&session.access_token).await,
        Code::Unauthenticated,
    );

    // The last admin cannot delete themselves.
    let status = assert_code(
        delete_me(&app, &root, PASSWORD, "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status).as_deref(), Some("LAST_ADMIN"));
    let kinds: Vec<String> = app.audit_rows().await.into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "account_deleted").count(), 2);
}
