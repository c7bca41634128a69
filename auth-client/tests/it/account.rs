//! Typed calls for MFA logins, TOTP enrollment and password resets.

use std::time::Duration;

use auth_client::{
    AuthClientError, Credentials, LoginOutcome, MfaCode, Subscriber, SubscriberError, pb,
};
use auth_server::mfa::TotpSecret;

use crate::helpers::{PASSWORD, Server, ServerExt as _, TestDatabase};

fn unix_now() -> u64 {
    u64::try_from(time_now()).expect("after 1970")
}

fn time_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// Waits until at least 10 s remain in the current 30 s TOTP step, so the codes computed now
/// stay valid for the rest of the test.
async fn fresh_step() -> u64 {
    let now = unix_now();
    if now % 30 > 20 {
        tokio::time::sleep(Duration::from_secs(30 - now % 30)).await;
    }
    unix_now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mfa_account_gets_a_challenge_and_the_second_step_a_session() {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let client = server.client();
    let first = server.user("mfa@example.com").await;

    // Enroll: secret, then confirm with the previous step's code (inside the ±1 window).
    let enrollment = client
        .begin_totp_enrollment(&first.access_token)
        .await
        .expect("begin");
    assert!(enrollment.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(!format!("{enrollment:?}").contains(&enrollment.secret));
    let secret = TotpSecret::from_base32(&enrollment.secret).expect("base32");
    let t0 = fresh_step().await;
    let codes = client
        .confirm_totp_enrollment(&first.access_token, &secret.code_at(t0 - 30))
        .await
        .expect("confirm");
    assert_eq!(codes.0.len(), 10);
    assert!(!format!("{codes:?}").contains(&codes.0[0]));

    // The password alone is a challenge now, never an empty session.
    let outcome = client
        .login("mfa@example.com", PASSWORD)
        .await
        .expect("password step");
    let LoginOutcome::MfaRequired(challenge) = outcome else {
        panic!("expected an MFA challenge, got {outcome:?}");
    };
    assert!(!challenge.mfa_token.is_empty());
    assert!(!format!("{challenge:?}").contains(&challenge.mfa_token));
    assert!(challenge.expires_at > std::time::SystemTime::now());
    let refused = client
        .login("mfa@example.com", PASSWORD)
        .await
        .expect("password step")
        .into_session();
    assert_eq!(refused.err(), Some(AuthClientError::MfaRequired));

    // A wrong code is refused; the right one gives a working session.
    let wrong = client
        .complete_mfa_login(&challenge.mfa_token, MfaCode::Totp("000000".into()))
        .await
        .expect_err("wrong code");
    assert_eq!(wrong.reason(), Some("MFA_CODE_INVALID"), "{wrong:?}");
    let session = client
        .complete_mfa_login(&challenge.mfa_token, MfaCode::Totp(secret.code_at(t0)))
        .await
        .expect("second step");
    let principal = client.validate(&session.access_token).await.expect("valid");
    assert_eq!(principal.session_id, session.session_id);

    // A recovery code works once.
    let LoginOutcome::MfaRequired(challenge) = client
        .login("mfa@example.com", PASSWORD)
        .await
        .expect("password step")
    else {
        panic!("expected an MFA challenge");
    };
    client
        .complete_mfa_login(&challenge.mfa_token, MfaCode::Recovery(codes.0[0].clone()))
        .await
        .expect("recovery code");

    // A subscriber with this account's password is refused at once (no empty bearer token).
    let subscriber = Subscriber::new(
        client.clone(),
        Credentials::Password {
            email: "mfa@example.com".into(),
            password: PASSWORD.into(),
        },
    );
    let run = tokio::time::timeout(
        Duration::from_secs(5),
        subscriber.run(
            0,
            |_| async { Ok::<(), String>(()) },
            std::future::pending(),
        ),
    )
    .await
    .expect("refused, not retried");
    assert!(
        matches!(
            run,
            Err(SubscriberError::Refused(AuthClientError::MfaRequired))
        ),
        "{run:?}"
    );

    // Disabling needs the password; afterwards the password alone logs in again.
    let denied = client
        .disable_totp(&session.access_token, "not the password")
        .await
        .expect_err("wrong password");
    assert!(denied.is_denied(), "{denied:?}");
    client
        .disable_totp(&session.access_token, PASSWORD)
        .await
        .expect("disable");
    let outcome = client
        .login("mfa@example.com", PASSWORD)
        .await
        .expect("login");
    assert!(matches!(outcome, LoginOutcome::Session(_)), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_token_sets_the_password_once() {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let client = server.client();
    server
        .account_with_roles("root@example.com", &["admin"])
        .await;
    let admin = client
        .login("root@example.com", PASSWORD)
        .await
        .expect("login")
        .into_session()
        .expect("no MFA on this account");
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::CreateUserRequest {
        email: "invited@example.com".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", admin.access_token)
            .parse()
            .expect("ascii"),
    );
    let invite = pb::admin_service_client::AdminServiceClient::new(channel)
        .create_user(request)
        .await
        .expect("create user")
        .into_inner()
        .invite_token;
    assert!(!invite.is_empty());

    assert_eq!(
        client
            .reset_password(&invite, "invited passphrase")
            .await
            .expect("set the password"),
        0
    );
    let again = client
        .reset_password(&invite, "another passphrase")
        .await
        .expect_err("single use");
    assert_eq!(again.reason(), Some("RESET_TOKEN_INVALID"), "{again:?}");
    client
        .login("invited@example.com", "invited passphrase")
        .await
        .expect("login")
        .into_session()
        .expect("a session");

    // Without SMTP the server says so (FAILED_PRECONDITION), it does not pretend to mail.
    let no_smtp = client
        .request_password_reset("invited@example.com")
        .await
        .expect_err("no SMTP configured");
    assert!(
        matches!(
            no_smtp,
            AuthClientError::Other {
                code: tonic::Code::FailedPrecondition,
                ..
            }
        ),
        "{no_smtp:?}"
    );
}
