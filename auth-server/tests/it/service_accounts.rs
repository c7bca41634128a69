//! Service accounts and API keys: a key works as a bearer credential wherever a token with the
//! same roles does, checked in memory; lockout of the account's email touches nothing; a
//! revocation reaches another replica within a second through the event feed.

use std::time::{Duration, Instant};

use auth_proto::pb;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    a_service_accounts_key_subscribes_and_survives_a_lockout_of_its_email,
    a_revoked_key_is_refused_on_another_replica_within_a_second,
    each_key_has_its_own_rate_limit,
);

async fn service_account(admin: &mut Admin, email: &str, roles: &[&str]) -> pb::User {
    admin
        .create_service_account(pb::CreateServiceAccountRequest {
            email: email.into(),
            display_name: "user sync".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        })
        .await
        .expect("create service account")
        .into_inner()
        .user
        .expect("user")
}

async fn issue(admin: &mut Admin, user_id: &str) -> pb::IssueApiKeyResponse {
    admin
        .issue_api_key(pb::IssueApiKeyRequest {
            user_id: user_id.into(),
            name: "mirror in eu-1".into(),
            expires_at: None,
        })
        .await
        .expect("issue")
        .into_inner()
}

/// Validate's answer for `key` on `app`, until it is `want` (or 1 s has passed).
async fn until_code(app: &TestApp, key: &str, want: Code) -> Duration {
    let start = Instant::now();
    loop {
        let code = match app.validate(key).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if code == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still {code:?} after 1 s, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_service_accounts_key_subscribes_and_survives_a_lockout_of_its_email(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.protection.lockout.lockout_max_failures = 5;
    })
    .await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let head = app.head().await;
    let svc = service_account(&mut admin, "Sync@Example.com", &["events.subscriber"]).await;
    assert!(svc.service_account);
    assert_eq!(svc.email, "sync@example.com");
    let issued = issue(&mut admin, &svc.id).await;
    let key = issued.api_key.clone();
    let record = issued.key.expect("record");
    assert!(
        key.starts_with(&format!("ak_{}_", record.id.replace('-', ""))),
        "{key}"
    );
    assert_eq!(key.len(), 79);

    // Listed without the key; Validate knows it: the account, its roles, no session.
    let listed = admin
        .list_api_keys(pb::ListApiKeysRequest {
            user_id: svc.id.clone(),
        })
        .await
        .expect("list")
        .into_inner()
        .keys;
    assert_eq!(listed, std::slice::from_ref(&record));
    assert!(!format!("{listed:?}").contains(&key[36..]));
    let v = app.validate(&key).await.expect("valid key");
    assert_eq!(
        (v.user_id.as_str(), v.roles.as_slice()),
        (svc.id.as_str(), &["events.subscriber".to_owned()][..])
    );
    assert!(v.session_id.is_empty());
    assert_eq!(v.token_id, record.id);

    // It streams events (its own creation and key first) and may look one user up.
    let mut stream = app
        .subscribe(&key, head)
        .await
        .expect("subscribe with the key");
    let created = next_event(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(created.kind(), pb::UserEventKind::UserCreated);
    let key_event = next_event(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(key_event.kind(), pb::UserEventKind::ApiKeyIssued);
    assert_eq!(key_event.api_key_id, record.id);
    let alice = app.signed_up("alice@example.com").await;
    let alice_id = app
        .validate(&alice.access_token)
        .await
        .expect("alice")
        .user_id;
    let mut subscriber = app.admin_with(&key);
    let got = subscriber
        .get_user(pb::GetUserRequest {
            user_id: alice_id.clone(),
        })
        .await
        .expect("a subscriber may GetUser")
        .into_inner();
    assert_eq!(
        got.details.expect("details").user.expect("user").email,
        "alice@example.com"
    );
    assert_code(
        subscriber.list_users(pb::ListUsersRequest::default()).await,
        Code::PermissionDenied,
    );
    assert_code(app.logout(&key).await, Code::FailedPrecondition);

    // 20 wrong logins against its email: refused, the email may lock, the key does not care.
    for _ in 0..20 {
        let status = app
            .login("sync@example.com", "guessing a password")
            .await
            .expect_err("no password login");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    app.validate(&key).await.expect("the key still works");
    let mut again = app.subscribe(&key, head).await.expect("still subscribes");
    next_event(&mut again, Duration::from_secs(10)).await;

    // Bad requests.
    let plain = app
        .find_user_by_email("alice@example.com")
        .await
        .expect("alice");
    let code = |r: Result<tonic::Response<pb::IssueApiKeyResponse>, tonic::Status>| {
        r.map(|_| ()).expect_err("refused").code()
    };
    let req = |user_id: &str, name: &str, expires_at| pb::IssueApiKeyRequest {
        user_id: user_id.into(),
        name: name.into(),
        expires_at,
    };
    assert_eq!(
        code(admin.issue_api_key(req(&plain.id, "x", None)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(admin.issue_api_key(req(&svc.id, "", None)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.issue_api_key(req(&svc.id, "bell\u{7}", None)).await),
        Code::InvalidArgument
    );
    let past = prost_types::Timestamp {
        seconds: 1_000_000_000,
        nanos: 0,
    };
    assert_eq!(
        code(admin.issue_api_key(req(&svc.id, "old", Some(past))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.issue_api_key(req("not-a-uuid", "x", None)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            admin
                .issue_api_key(req("0190a000-0000-7000-8000-000000000000", "x", None))
                .await
        ),
        Code::NotFound
    );
    assert_code(
        app.admin_with(&alice.access_token)
            .create_service_account(pb::CreateServiceAccountRequest {
                email: "x@example.com".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        admin
            .create_service_account(pb::CreateServiceAccountRequest {
                email: "sync@example.com".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
    );
    let forged = format!("{}A", &key[..key.len() - 1]);
    let forged = if forged == key {
        format!("{}B", &key[..key.len() - 1])
    } else {
        forged
    };
    let refused = assert_code(app.validate(&forged).await, Code::Unauthenticated);
    assert_eq!(reason(&refused).as_deref(), Some("API_KEY_INVALID"));

    // The key follows its account: new roles at once, refused while disabled.
    admin
        .update_user(pb::UpdateUserRequest {
            user_id: svc.id.clone(),
            roles: vec!["admin".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["roles".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("roles");
    let start = Instant::now();
    while app.validate(&key).await.expect("valid").roles != ["admin"] {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "roles did not follow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.admin_with(&key)
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect("an admin's key may use AdminService");
    admin
        .disable_user(pb::DisableUserRequest {
            user_id: svc.id.clone(),
        })
        .await
        .expect("disable");
    until_code(&app, &key, Code::Unauthenticated).await;
    let refused = assert_code(app.validate(&key).await, Code::Unauthenticated);
    assert_eq!(reason(&refused).as_deref(), Some("ACCOUNT_DISABLED"));
    admin
        .enable_user(pb::EnableUserRequest {
            user_id: svc.id.clone(),
        })
        .await
        .expect("enable");
    until_code(&app, &key, Code::Ok).await;

    // Revoked: refused at once here; a second revoke changes nothing; unknown ids are NOT_FOUND.
    let revoked = admin
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: record.id.clone(),
        })
        .await
        .expect("revoke")
        .into_inner()
        .key
        .expect("key");
    assert!(revoked.revoked_at.is_some());
    let refused = assert_code(app.validate(&key).await, Code::Unauthenticated);
    assert_eq!(reason(&refused).as_deref(), Some("API_KEY_REVOKED"));
    let again = admin
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: record.id.clone(),
        })
        .await
        .expect("revoke again")
        .into_inner();
    assert_eq!(again.key.expect("key").revoked_at, revoked.revoked_at);
    assert_code(
        admin
            .revoke_api_key(pb::RevokeApiKeyRequest {
                key_id: "0190a000-0000-7000-8000-000000000000".into(),
            })
            .await,
        Code::NotFound,
    );
    let kinds: Vec<String> = app.audit_rows().await.into_iter().map(|r| r.kind).collect();
    for kind in [
        "admin_service_account_created",
        "admin_api_key_issued",
        "admin_api_key_revoked",
    ] {
        assert_eq!(
            kinds.iter().filter(|k| *k == kind).count(),
            1,
            "{kind}: {kinds:?}"
        );
    }
}

async fn a_revoked_key_is_refused_on_another_replica_within_a_second(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let svc = service_account(&mut admin, "sync@example.com", &["events.subscriber"]).await;
    // A key issued before the replica starts is loaded at its start ...
    let early = issue(&mut admin, &svc.id).await.api_key;
    let replica = if db == Db::Sqlite {
        app.spawn_replica().await
    } else {
        app.spawn_detached_replica().await
    };
    replica.validate(&early).await.expect("loaded at start");
    // ... one issued after reaches it through the feed.
    let issued = issue(&mut admin, &svc.id).await;
    until_code(&replica, &issued.api_key, Code::Ok).await;
    admin
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: issued.key.expect("key").id,
        })
        .await
        .expect("revoke");
    let took = until_code(&replica, &issued.api_key, Code::Unauthenticated).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    replica
        .validate(&early)
        .await
        .expect("the other key still works");
}

async fn each_key_has_its_own_rate_limit(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.protection.api_key_rate = std::num::NonZeroU32::new(5).expect("non-zero");
    })
    .await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let svc = service_account(&mut admin, "sync@example.com", &["events.subscriber"]).await;
    let (a, b) = (
        issue(&mut admin, &svc.id).await.api_key,
        issue(&mut admin, &svc.id).await.api_key,
    );
    for _ in 0..5 {
        app.validate(&a).await.expect("within the limit");
    }
    let limited = assert_code(app.validate(&a).await, Code::ResourceExhausted);
    assert_eq!(reason(&limited).as_deref(), Some("RATE_LIMITED"));
    app.validate(&b)
        .await
        .expect("the other key has its own bucket");
}
