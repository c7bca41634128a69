//! The caller's email address: verification through a real SMTP conversation with the
//! in-process mail sink, ChangeEmail with its mails and events, and every bad input.

use auth_proto::pb;
use tonic::Code;

use crate::{
    every_backend,
    helpers::*,
    reset::{mail_settings, mails, smtp_sink, token_in},
};

every_backend!(a_user_verifies_and_changes_their_email);

async fn request_verification(
    app: &TestApp,
    token: &str,
) -> Result<pb::RequestEmailVerificationResponse, tonic::Status> {
    app.client
        .clone()
        .request_email_verification(bearer(pb::RequestEmailVerificationRequest {}, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn verify(app: &TestApp, token: &str) -> Result<pb::User, tonic::Status> {
    app.client
        .clone()
        .verify_email(pb::VerifyEmailRequest {
            token: token.into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn change_email(
    app: &TestApp,
    token: &str,
    password: &str,
    new_email: &str,
) -> Result<pb::ChangeEmailResponse, tonic::Status> {
    app.client
        .clone()
        .change_email(bearer(
            pb::ChangeEmailRequest {
                current_password: password.into(),
                new_email: new_email.into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn me(app: &TestApp, token: &str) -> pb::User {
    app.client
        .clone()
        .get_me(bearer(pb::GetMeRequest {}, token))
        .await
        .expect("get me")
        .into_inner()
        .user
        .expect("user")
}

async fn a_user_verifies_and_changes_their_email(db: Db) {
    let (smtp_url, inbox) = smtp_sink().await;
    let app = spawn_app_with(db, |s| s.protection.mail = Some(mail_settings(smtp_url))).await;
    let subscriber = app
        .token_with_roles("mirror@example.com", &["events.subscriber"])
        .await;
    let ann = app
        .register("ann@example.com", PASSWORD)
        .await
        .expect("ann");
    assert!(!ann.email_verified);
    let session = app.login("ann@example.com", PASSWORD).await.expect("login");
    let token = session.access_token.as_str();
    let head = app.head().await;

    // A verification mail to the account's address, with a working single-use token.
    let sent = request_verification(&app, token).await.expect("request");
    assert_eq!(sent.email, "ann@example.com");
    let expires = sent.expires_at.expect("expiry").seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let in_a_day = i64::try_from(now).expect("now") + 24 * 3600;
    assert!(
        (in_a_day - 5..=in_a_day + 5).contains(&expires),
        "{expires}"
    );
    let inbox_now = mails(&inbox, 1).await;
    assert_eq!(inbox_now.len(), 1, "{inbox_now:?}");
    assert_eq!(inbox_now[0].to, "ann@example.com");
    assert!(
        inbox_now[0]
            .data
            .contains("Subject: Confirm your email address")
    );
    let mailed = token_in(&inbox_now[0].data).expect("a token in the mail");

    // Asking again at once is refused with a retry time; no second mail.
    let status = assert_code(
        request_verification(&app, token).await,
        Code::ResourceExhausted,
    );
    assert_eq!(reason(&status).as_deref(), Some("MAIL_COOLDOWN"));
    // Without a bearer: UNAUTHENTICATED.
    assert_code(
        app.client
            .clone()
            .request_email_verification(pb::RequestEmailVerificationRequest {})
            .await,
        Code::Unauthenticated,
    );
    // Garbage tokens, and the verification token used as a password reset token.
    for bad in ["", "short", &"!".repeat(43), &"A".repeat(43)] {
        let status = assert_code(verify(&app, bad).await, Code::Unauthenticated);
        assert_eq!(
            reason(&status).as_deref(),
            Some("VERIFICATION_TOKEN_INVALID")
        );
    }
    assert_code(
        app.client
            .clone()
            .reset_password(pb::ResetPasswordRequest {
                reset_token: mailed.clone(),
                new_password: "another passphrase".into(),
            })
            .await,
        Code::Unauthenticated,
    );

    let verified = verify(&app, &mailed).await.expect("verify");
    assert!(verified.email_verified);
    assert_eq!(verified.version, ann.version + 1);
    assert!(me(&app, token).await.email_verified);
    // Single use, and nothing more to verify.
    assert_code(verify(&app, &mailed).await, Code::Unauthenticated);
    let status = assert_code(
        request_verification(&app, token).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status).as_deref(), Some("EMAIL_ALREADY_VERIFIED"));

    // ChangeEmail: every bad input first, nothing changes.
    app.register("bob@example.com", PASSWORD)
        .await
        .expect("bob");
    let wrong = assert_code(
        change_email(&app, token, "wrong password", "ann2@example.com").await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&wrong).as_deref(), Some("INVALID_CREDENTIALS"));
    for bad in ["", "not an email", "ANN@example.com"] {
        assert_code(
            change_email(&app, token, PASSWORD, bad).await,
            Code::InvalidArgument,
        );
    }
    let taken = assert_code(
        change_email(&app, token, PASSWORD, "Bob@Example.com").await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&taken).as_deref(), Some("EMAIL_TAKEN"));
    assert_code(
        app.client
            .clone()
            .change_email(pb::ChangeEmailRequest {
                current_password: PASSWORD.into(),
                new_email: "ann2@example.com".into(),
            })
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(me(&app, token).await.email, "ann@example.com");
    assert_eq!(mails(&inbox, 1).await.len(), 1, "no mail for refused calls");

    let changed = change_email(&app, token, PASSWORD, " Ann2@Example.com ")
        .await
        .expect("change");
    assert!(changed.verification_sent);
    let user = changed.user.expect("user");
    assert_eq!(user.email, "ann2@example.com");
    assert!(!user.email_verified, "the new address is unverified");
    assert_eq!(user.version, verified.version + 1);
    // A verification mail to the new address, a notice to the old one.
    let all = mails(&inbox, 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let to_new = all
        .iter()
        .find(|m| m.to == "ann2@example.com")
        .expect("new");
    assert!(to_new.data.contains("Subject: Confirm your email address"));
    let to_old = all[1..]
        .iter()
        .find(|m| m.to == "ann@example.com")
        .expect("notice to the old address");
    assert!(
        to_old
            .data
            .contains("Subject: Your email address was changed")
    );
    assert!(to_old.data.contains("ann2@example.com"));
    assert!(
        token_in(&to_old.data).is_none(),
        "the notice holds no token"
    );
    // The session stays; the old address no longer logs in, the new one does.
    assert_eq!(me(&app, token).await.email, "ann2@example.com");
    assert_code(
        app.login("ann@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    app.login("ann2@example.com", PASSWORD)
        .await
        .expect("login with the new address");
    // The old address is free again.
    app.register("ann@example.com", PASSWORD)
        .await
        .expect("old address free");
    let new_token = token_in(&to_new.data).expect("token");
    assert!(
        verify(&app, &new_token)
            .await
            .expect("verify new")
            .email_verified
    );

    // A token mailed before a change cannot verify the new address.
    let bob = app.login("bob@example.com", PASSWORD).await.expect("bob");
    request_verification(&app, &bob.access_token)
        .await
        .expect("bob asks");
    let before_change = token_in(&mails(&inbox, 4).await[3].data).expect("bob's token");
    change_email(&app, &bob.access_token, PASSWORD, "bob2@example.com")
        .await
        .expect("bob changes");
    assert_code(verify(&app, &before_change).await, Code::Unauthenticated);
    let bob_user = app
        .find_user_by_email("bob2@example.com")
        .await
        .expect("bob2");
    assert!(!bob_user.email_verified);

    // The stream saw each change as USER_UPDATED with the state after it.
    let mut stream = app.subscribe(&subscriber, head).await.expect("subscribe");
    let events = events_until(&mut stream, app.head().await).await;
    let ann_events: Vec<(i32, String, bool)> = events
        .iter()
        .filter_map(|e| {
            let u = e.user.as_ref()?;
            (u.id == ann.id).then(|| (e.kind, u.email.clone(), u.email_verified))
        })
        .collect();
    let updated = pb::UserEventKind::UserUpdated as i32;
    assert_eq!(
        ann_events,
        vec![
            (updated, "ann@example.com".into(), true),
            (updated, "ann2@example.com".into(), false),
            (updated, "ann2@example.com".into(), true),
        ]
    );
    let kinds: Vec<String> = app
        .audit_rows()
        .await
        .into_iter()
        .filter(|r| r.subject_id.as_deref() == Some(ann.id.as_str()))
        .map(|r| r.kind)
        .collect();
    for kind in [
        "email_verification_issued",
        "email_verified",
        "email_changed",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind}: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_verification_is_failed_precondition_and_change_still_works() {
    let app = spawn_app(Db::Sqlite).await;
    let session = app.signed_up("lee@example.com").await;
    let status = assert_code(
        request_verification(&app, &session.access_token).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status).as_deref(), Some("MAIL_DISABLED"));
    let changed = change_email(&app, &session.access_token, PASSWORD, "lee2@example.com")
        .await
        .expect("change without SMTP");
    assert!(!changed.verification_sent);
    assert_eq!(changed.user.expect("user").email, "lee2@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mail_is_unavailable_and_can_be_asked_again_at_once() {
    // Nothing listens on this port: the SMTP connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.protection.mail = Some(mail_settings(format!("smtp://127.0.0.1:{port}")));
    })
    .await;
    let session = app.signed_up("kim@example.com").await;
    for _ in 0..2 {
        let status = assert_code(
            request_verification(&app, &session.access_token).await,
            Code::Unavailable,
        );
        assert_eq!(reason(&status).as_deref(), Some("MAIL_UNAVAILABLE"));
    }
}
