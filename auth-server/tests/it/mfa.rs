//! TOTP MFA: enrollment, the two-step login, replay refusal, the ±1 step window, recovery
//! codes, lockout through wrong codes, disabling, and the admin reset.

use std::time::Duration;

use auth_proto::pb;
use auth_server::mfa::TotpSecret;
use tonic::Code;

use crate::{admin::admin_of, every_backend, helpers::*};

every_backend!(
    totp_enrollment_then_login_needs_a_fresh_code_each_time,
    recovery_codes_work_once,
    wrong_codes_count_toward_lockout,
    disabling_totp_needs_the_password_and_admins_can_reset_it,
);

fn unix_now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).expect("after 1970")
}

/// Waits until at least 10 s remain in the current 30 s step, so codes computed now stay in the
/// server's ±1 window for the rest of the test.
async fn fresh_step() -> u64 {
    let now = unix_now();
    if now % 30 > 20 {
        tokio::time::sleep(Duration::from_secs(30 - now % 30)).await;
    }
    unix_now()
}

/// Signs up, enrolls TOTP (confirming with the code of the previous step, inside the skew
/// window) and returns the secret, the recovery codes and the base time.
pub(crate) async fn enrolled(app: &TestApp, email: &str) -> (TotpSecret, Vec<String>, u64) {
    let session = app.signed_up(email).await;
    let mut client = app.client.clone();
    let begun = client
        .begin_totp_enrollment(bearer(
            pb::BeginTotpEnrollmentRequest {},
            &session.access_token,
        ))
        .await
        .expect("begin")
        .into_inner();
    assert!(begun.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(begun.otpauth_uri.contains("secret="));
    let secret = TotpSecret::from_base32(&begun.secret).expect("base32 secret");
    let t0 = fresh_step().await;
    // A wrong code does not confirm.
    let wrong = client
        .confirm_totp_enrollment(bearer(
            pb::ConfirmTotpEnrollmentRequest {
                code: "000000".into(),
            },
            &session.access_token,
        ))
        .await;
    if secret.code_at(t0) != "000000" {
        assert_code(wrong, Code::Unauthenticated);
    }
    let codes = client
        .confirm_totp_enrollment(bearer(
            pb::ConfirmTotpEnrollmentRequest {
                code: secret.code_at(t0 - 30),
            },
            &session.access_token,
        ))
        .await
        .expect("confirm with the previous step's code")
        .into_inner()
        .recovery_codes;
    assert_eq!(codes.len(), 10);
    // Enrolling again while enabled is refused.
    assert_code(
        client
            .begin_totp_enrollment(bearer(
                pb::BeginTotpEnrollmentRequest {},
                &session.access_token,
            ))
            .await,
        Code::FailedPrecondition,
    );
    (secret, codes, t0)
}

/// First step of a login that must ask for the second factor: its mfa token.
pub(crate) async fn first_step(app: &TestApp, email: &str, password: &str) -> String {
    let response = app.login(email, password).await.expect("password step");
    assert!(response.mfa_required);
    assert!(response.access_token.is_empty() && response.refresh_token.is_empty());
    assert!(response.mfa_token_expires_at.is_some());
    response.mfa_token
}

pub(crate) async fn second_step(
    app: &TestApp,
    mfa_token: &str,
    code: &str,
    recovery_code: &str,
) -> Result<pb::CompleteMfaLoginResponse, tonic::Status> {
    Ok(app
        .client
        .clone()
        .complete_mfa_login(pb::CompleteMfaLoginRequest {
            mfa_token: mfa_token.into(),
            code: code.into(),
            recovery_code: recovery_code.into(),
        })
        .await?
        .into_inner())
}

async fn totp_enrollment_then_login_needs_a_fresh_code_each_time(db: Db) {
    let app = spawn_app(db).await;
    let (secret, _, t0) = enrolled(&app, "olga@example.com").await;

    let token = first_step(&app, "olga@example.com", PASSWORD).await;
    let session = second_step(&app, &token, &secret.code_at(t0), "")
        .await
        .expect("current code");
    app.validate(&session.access_token)
        .await
        .expect("valid session");
    // The mfa token is single use.
    assert_code(
        second_step(&app, &token, &secret.code_at(t0 + 30), "").await,
        Code::Unauthenticated,
    );

    // The same code again (a replay within its window) is refused, and so is an older one.
    let token = first_step(&app, "olga@example.com", PASSWORD).await;
    let replay = assert_code(
        second_step(&app, &token, &secret.code_at(t0), "").await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&replay).as_deref(), Some("MFA_CODE_INVALID"));
    assert_code(
        second_step(&app, &token, &secret.code_at(t0 - 30), "").await,
        Code::Unauthenticated,
    );
    // The next step's code is inside the +1 skew window; two steps ahead is not.
    assert_code(
        second_step(&app, &token, &secret.code_at(t0 + 90), "").await,
        Code::Unauthenticated,
    );
    second_step(&app, &token, &secret.code_at(t0 + 30), "")
        .await
        .expect("next step's code within skew");

    // Bad input: both or neither of code and recovery code, garbage tokens.
    let token = first_step(&app, "olga@example.com", PASSWORD).await;
    assert_code(
        second_step(&app, &token, "", "").await,
        Code::InvalidArgument,
    );
    assert_code(
        second_step(&app, &token, "123456", "abcd-efgh-jkmn-pqrs").await,
        Code::InvalidArgument,
    );
    assert_code(
        second_step(&app, "not-a-token", "123456", "").await,
        Code::Unauthenticated,
    );
}

async fn recovery_codes_work_once(db: Db) {
    let app = spawn_app(db).await;
    let (_, codes, _) = enrolled(&app, "pia@example.com").await;
    let token = first_step(&app, "pia@example.com", PASSWORD).await;
    // Typed in upper case without dashes still works.
    let typed = codes[3].to_uppercase().replace('-', "");
    second_step(&app, &token, "", &typed)
        .await
        .expect("recovery code");
    let token = first_step(&app, "pia@example.com", PASSWORD).await;
    assert_code(
        second_step(&app, &token, "", &codes[3]).await,
        Code::Unauthenticated,
    );
    second_step(&app, &token, "", &codes[4])
        .await
        .expect("another recovery code");
    let rows = app.audit_rows().await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.kind == "mfa_recovery_code_used")
            .count(),
        2
    );
    for row in &rows {
        let text = format!("{row:?}");
        assert!(codes.iter().all(|c| !text.contains(c.as_str())), "{text}");
    }
}

async fn wrong_codes_count_toward_lockout(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let (secret, _, t0) = enrolled(&app, "quinn@example.com").await;
    let user = app
        .find_user_by_email("quinn@example.com")
        .await
        .expect("user");
    let token = first_step(&app, "quinn@example.com", PASSWORD).await;
    let good = secret.code_at(t0);
    let bad = if good == "111111" { "222222" } else { "111111" };
    for _ in 0..5 {
        assert_code(
            second_step(&app, &token, bad, "").await,
            Code::Unauthenticated,
        );
    }
    // Locked: the right code is refused, and so is the password step, without hashing.
    assert_code(
        second_step(&app, &token, &good, "").await,
        Code::Unauthenticated,
    );
    let before = app.hashes();
    assert_code(
        app.login("quinn@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    assert_eq!(app.hashes(), before);
    let failed = app
        .audit_rows()
        .await
        .into_iter()
        .filter(|r| r.kind == "mfa_failed" && r.subject_id.as_deref() == Some(user.id.as_str()))
        // The wrong code at enrollment is audited too, but does not count toward lockout.
        .filter(|r| {
            !r.detail
                .as_deref()
                .is_some_and(|d| d.contains("enrollment"))
        })
        .count();
    assert_eq!(failed, 5);

    admin
        .unlock_user(pb::UnlockUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("unlock");
    second_step(&app, &token, &good, "")
        .await
        .expect("after unlock the pending login completes");
}

async fn disabling_totp_needs_the_password_and_admins_can_reset_it(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, admin_id) = admin_of(&app, "root@example.com").await;
    let (secret, _, t0) = enrolled(&app, "rosa@example.com").await;
    let token = first_step(&app, "rosa@example.com", PASSWORD).await;
    let session = second_step(&app, &token, &secret.code_at(t0), "")
        .await
        .expect("login");
    let mut client = app.client.clone();
    assert_code(
        client
            .disable_totp(bearer(
                pb::DisableTotpRequest {
                    current_password: "not my password".into(),
                },
                &session.access_token,
            ))
            .await,
        Code::Unauthenticated,
    );
    client
        .disable_totp(bearer(
            pb::DisableTotpRequest {
                current_password: PASSWORD.into(),
            },
            &session.access_token,
        ))
        .await
        .expect("disable");
    let plain = app
        .login("rosa@example.com", PASSWORD)
        .await
        .expect("login");
    assert!(!plain.mfa_required && !plain.access_token.is_empty());

    // Enroll again, then an admin removes it (lost phone).
    let begun = client
        .begin_totp_enrollment(bearer(
            pb::BeginTotpEnrollmentRequest {},
            &plain.access_token,
        ))
        .await
        .expect("begin again")
        .into_inner();
    let secret = TotpSecret::from_base32(&begun.secret).expect("secret");
    let t1 = fresh_step().await;
    client
        .confirm_totp_enrollment(bearer(
            pb::ConfirmTotpEnrollmentRequest {
                code: secret.code_at(t1),
            },
            &plain.access_token,
        ))
        .await
        .expect("confirm");
    let user = app
        .find_user_by_email("rosa@example.com")
        .await
        .expect("user");
    let details = admin
        .get_user(pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .details
        .expect("details");
    assert!(details.mfa_enabled);
    let reset = admin
        .reset_user_mfa(pb::ResetUserMfaRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("reset mfa")
        .into_inner();
    assert!(reset.was_enrolled);
    let plain = app
        .login("rosa@example.com", PASSWORD)
        .await
        .expect("login");
    assert!(!plain.mfa_required);
    let audited = app
        .audit_rows()
        .await
        .into_iter()
        .find(|r| r.kind == "admin_mfa_reset")
        .expect("audited");
    assert_eq!(audited.actor_id.as_deref(), Some(admin_id.as_str()));
    assert_eq!(audited.subject_id.as_deref(), Some(user.id.as_str()));
    for kind in ["mfa_enrolled", "mfa_disabled", "mfa_failed"] {
        assert!(
            app.audit_rows().await.iter().any(|r| r.kind == kind),
            "{kind}"
        );
    }
}
