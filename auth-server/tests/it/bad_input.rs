//! Every bad input gets the right code and writes nothing.

use auth_proto::pb;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::{every_backend, helpers::*};

every_backend!(
    malformed_registrations_are_invalid_argument_and_write_nothing,
    duplicate_email_is_already_exists_case_insensitively,
    oversized_and_empty_login_input_is_invalid_argument,
    bad_authorization_headers_are_unauthenticated,
    garbage_and_tampered_tokens_are_unauthenticated,
    change_password_needs_the_current_password,
    oversized_request_message_is_resource_exhausted,
);

async fn malformed_registrations_are_invalid_argument_and_write_nothing(db: Db) {
    let app = spawn_app(db).await;
    let long_pw = "x".repeat(10 * 1024);
    let cases = [
        ("", PASSWORD),
        ("   ", PASSWORD),
        ("not-an-email", PASSWORD),
        ("two@@example.com", PASSWORD),
        ("a@b", PASSWORD),
        ("short@example.com", "short"),
        ("long@example.com", long_pw.as_str()),
        ("same@example.com", "same@example.com"),
    ];
    for (email, password) in cases {
        let status = assert_code(app.register(email, password).await, Code::InvalidArgument);
        assert!(
            !status.message().contains(password) || password.len() < 8,
            "password echoed back"
        );
    }
    let long_email = format!("{}@example.com", "a".repeat(250));
    assert_code(
        app.register(&long_email, PASSWORD).await,
        Code::InvalidArgument,
    );
    for email in ["short@example.com", "long@example.com", "same@example.com"] {
        assert!(
            app.find_user_by_email(email).await.is_none(),
            "{email} was written"
        );
    }
    let store = app.store().await;
    // Staged events count too: number them first.
    auth_server::storage::sequencer::drain(&store)
        .await
        .expect("sequence staged events");
    let events = auth_server::storage::events::find_events_after(store.conn(), 0, 10)
        .await
        .expect("events");
    assert!(
        events.is_empty(),
        "refused registrations wrote events: {events:?}"
    );
    store.close().await;
}

async fn duplicate_email_is_already_exists_case_insensitively(db: Db) {
    let app = spawn_app(db).await;
    let first = app
        .register("dup@example.com", PASSWORD)
        .await
        .expect("register");
    assert_code(
        app.register("dup@example.com", PASSWORD).await,
        Code::AlreadyExists,
    );
    assert_code(
        app.register(" DUP@Example.com", "another password").await,
        Code::AlreadyExists,
    );
    // The original account is untouched.
    let login = app.login("dup@example.com", PASSWORD).await.expect("login");
    assert_eq!(login.user.map(|u| u.id), Some(first.id));
}

async fn oversized_and_empty_login_input_is_invalid_argument(db: Db) {
    let app = spawn_app(db).await;
    app.register("big@example.com", PASSWORD)
        .await
        .expect("register");
    assert_code(
        app.login("big@example.com", &"x".repeat(10 * 1024)).await,
        Code::InvalidArgument,
    );
    assert_code(
        app.login("big@example.com", "").await,
        Code::InvalidArgument,
    );
    assert_code(app.login("", PASSWORD).await, Code::InvalidArgument);
    assert_code(
        app.login("no-at-sign", PASSWORD).await,
        Code::InvalidArgument,
    );
    assert_code(app.refresh("").await, Code::Unauthenticated);
    assert_code(app.refresh(&"r".repeat(5000)).await, Code::Unauthenticated);
}

async fn bad_authorization_headers_are_unauthenticated(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("hdr@example.com").await;
    let headers: [&[String]; 6] = [
        &[],
        &["Basic dXNlcjpwYXNz".to_owned()],
        &["Bearer".to_owned()],
        &["Bearer not-a-token".to_owned()],
        std::slice::from_ref(&a.access_token),
        &[
            format!("Bearer {}", a.access_token),
            format!("Bearer {}", a.access_token),
        ],
    ];
    for values in headers {
        let mut request = Request::new(pb::LogoutRequest {});
        for value in values {
            request.metadata_mut().append(
                "authorization",
                MetadataValue::try_from(value.as_str()).expect("ascii"),
            );
        }
        let status = assert_code(
            app.client.clone().logout(request).await,
            Code::Unauthenticated,
        );
        assert!(
            reason(&status).is_some(),
            "no ErrorInfo reason for {values:?}"
        );
    }
    // Nothing was revoked by all that.
    app.validate(&a.access_token).await.expect("still valid");
}

async fn garbage_and_tampered_tokens_are_unauthenticated(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("tamper@example.com").await;
    let mut tampered = a.access_token.clone().into_bytes();
    let i = "v4.public.".len() + 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let bare = a
        .access_token
        .rsplit_once('.')
        .expect("footer")
        .0
        .to_owned();
    for token in [
        "",
        "garbage",
        "v4.public.",
        "v4.local.abc",
        tampered.as_str(),
        bare.as_str(),
    ] {
        let status = assert_code(app.validate(token).await, Code::Unauthenticated);
        let why = reason(&status).unwrap_or_default();
        assert!(why.starts_with("TOKEN_"), "reason {why} for {token:?}");
    }
    // A token from another server (another key) is refused too.
    let other = spawn_app(Db::Sqlite).await;
    let foreign = other.signed_up("tamper@example.com").await;
    let status = assert_code(
        app.validate(&foreign.access_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status).as_deref(), Some("TOKEN_INVALID"));
}

async fn change_password_needs_the_current_password(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("cp@example.com").await;
    let no_token = app
        .client
        .clone()
        .change_password(pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "brand new password".into(),
        })
        .await;
    assert_code(no_token, Code::Unauthenticated);
    let wrong = app
        .change_password(&a.access_token, "wrong password", "brand new password")
        .await;
    assert_code(wrong, Code::Unauthenticated);
    assert_code(
        app.change_password(&a.access_token, "", "brand new password")
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        app.change_password(&a.access_token, PASSWORD, "short")
            .await,
        Code::InvalidArgument,
    );
    let huge = "y".repeat(10 * 1024);
    assert_code(
        app.change_password(&a.access_token, PASSWORD, &huge).await,
        Code::InvalidArgument,
    );
    // None of it changed anything.
    app.login("cp@example.com", PASSWORD)
        .await
        .expect("old password still works");
    let user = app
        .find_user_by_email("cp@example.com")
        .await
        .expect("user");
    assert_eq!(user.version, 1);
}

async fn oversized_request_message_is_resource_exhausted(db: Db) {
    let app = spawn_app(db).await;
    let req = pb::RegisterRequest {
        email: "huge@example.com".into(),
        password: PASSWORD.into(),
        display_name: "z".repeat(100 * 1024),
    };
    assert_code(
        app.client.clone().register(req).await,
        Code::ResourceExhausted,
    );
    assert!(app.find_user_by_email("huge@example.com").await.is_none());
    // The connection is still usable.
    app.register("after@example.com", PASSWORD)
        .await
        .expect("register after refusal");
}
