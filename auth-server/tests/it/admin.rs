//! AdminService: the grpcurl-shaped admin walk, authorization, paging, field masks, optimistic
//! concurrency, disable/delete effects, the last-admin rule, invites.

use std::collections::HashSet;

use auth_proto::pb::{self, UserEventKind};
use futures::future::join_all;
use prost_types::FieldMask;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    admin_walks_a_user_through_create_update_disable_enable_delete,
    only_current_admins_may_call_admin_service,
    paging_over_1200_users_sees_each_exactly_once,
    update_mask_changes_only_the_named_fields,
    concurrent_updates_with_one_expected_version_one_wins_rest_aborted,
    the_last_enabled_admin_cannot_be_removed,
    invite_without_password_sets_it_with_the_invite_token,
    admin_sessions_listing_and_revocation,
    nul_characters_are_invalid_argument_in_every_text_field,
);

pub(crate) fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// An admin account, its token and its user id.
pub async fn admin_of(app: &TestApp, email: &str) -> (Admin, String) {
    let token = app.token_with_roles(email, &["admin"]).await;
    let id = app.validate(&token).await.expect("valid").user_id;
    (app.admin_with(&token), id)
}

pub async fn create(admin: &mut Admin, email: &str, roles: &[&str]) -> pb::User {
    admin
        .create_user(pb::CreateUserRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            email_verified: false,
            ..Default::default()
        })
        .await
        .expect("create user")
        .into_inner()
        .user
        .expect("user")
}

async fn admin_walks_a_user_through_create_update_disable_enable_delete(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, admin_id) = admin_of(&app, "root@example.com").await;
    let feed = app
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let start = app.head().await;

    let created = admin
        .create_user(pb::CreateUserRequest {
            email: "  Alice@Example.COM ".into(),
            password: PASSWORD.into(),
            display_name: "Alice".into(),
            roles: vec!["support".into()],
            email_verified: false,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert!(created.invite_token.is_empty(), "a password was given");
    let alice = created.user.expect("user");
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.roles, ["support"]);
    let id = alice.id.clone();

    // A duplicate email is ALREADY_EXISTS, a bad role INVALID_ARGUMENT.
    let dup = admin
        .create_user(pb::CreateUserRequest {
            email: "alice@example.com".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await;
    assert_code(dup, Code::AlreadyExists);
    let bad_role = admin
        .create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            roles: vec!["Not A Role".into()],
            ..Default::default()
        })
        .await;
    assert_code(bad_role, Code::InvalidArgument);

    let session = app
        .login("alice@example.com", PASSWORD)
        .await
        .expect("login");
    let details = admin
        .get_user(pb::GetUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .details
        .expect("details");
    assert!(details.has_password && !details.mfa_enabled);
    assert_eq!(details.live_sessions, 1);
    assert!(details.locked_until.is_none());

    let updated = admin
        .update_user(pb::UpdateUserRequest {
            user_id: id.clone(),
            display_name: "Alice A.".into(),
            update_mask: mask(&["display_name"]),
            expected_version: 1,
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(updated.display_name, "Alice A.");
    assert_eq!(updated.version, 2);

    // Disable: the live token fails Validate at once, login is refused.
    let disabled = admin
        .disable_user(pb::DisableUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("disable")
        .into_inner();
    assert_eq!(disabled.revoked_sessions, 1);
    assert!(disabled.user.expect("user").disabled);
    let refused = assert_code(
        app.validate(&session.access_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&refused).as_deref(), Some("SESSION_REVOKED"));
    assert_code(
        app.refresh(&session.refresh_token).await,
        Code::Unauthenticated,
    );
    // Refused like a wrong password, but the right password on a disabled account is not a
    // guess: five of them do not lock the email (the login after enable below succeeds).
    for _ in 0..5 {
        let status = assert_code(
            app.login("alice@example.com", PASSWORD).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid email or password");
    }

    admin
        .enable_user(pb::EnableUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("enable");
    let again = app
        .login("alice@example.com", PASSWORD)
        .await
        .expect("login after enable");

    // Delete: sessions revoked, the user is gone, the email is free again.
    let deleted = admin
        .delete_user(pb::DeleteUserRequest {
            user_id: id.clone(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.revoked_sessions, 1);
    assert_code(
        app.validate(&again.access_token).await,
        Code::Unauthenticated,
    );
    assert_code(
        admin
            .get_user(pb::GetUserRequest {
                user_id: id.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        app.login("alice@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    let listed = admin
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.users.iter().all(|u| u.id != id));
    let reborn = create(&mut admin, "alice@example.com", &[]).await;
    assert_ne!(reborn.id, id, "a new account, not the old one");
    app.login("alice@example.com", PASSWORD)
        .await
        .expect("the email is reusable");

    // Every change reached the event stream, in order.
    let head = app.head().await;
    let mut stream = app.subscribe(&feed, start).await.expect("subscribe");
    let events = events_until(&mut stream, head).await;
    let kinds: Vec<UserEventKind> = events
        .iter()
        .filter(|e| e.user.as_ref().is_some_and(|u| u.id == id))
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            UserEventKind::UserCreated,
            UserEventKind::UserUpdated,
            UserEventKind::UserDisabled,
            UserEventKind::SessionRevoked,
            UserEventKind::UserEnabled,
            UserEventKind::SessionRevoked,
            UserEventKind::UserDeleted,
        ]
    );
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e.user.as_ref().is_some_and(|u| u.id == id))
        .filter(|e| e.kind() != UserEventKind::SessionRevoked)
        .map(|e| e.user.as_ref().map_or(0, |u| u.version))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5], "every change bumps the version");

    // And the audit trail names the admin as actor and Alice as subject.
    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            user_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    let mut kinds: Vec<&str> = audit.events.iter().map(|e| e.kind.as_str()).collect();
    kinds.reverse();
    for kind in [
        "admin_user_created",
        "admin_user_updated",
        "admin_user_disabled",
        "admin_user_enabled",
        "admin_user_deleted",
    ] {
        let event = audit
            .events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("{kind} missing from {kinds:?}"));
        assert_eq!(event.actor_id, admin_id, "{kind}");
        assert_eq!(event.subject_id, id, "{kind}");
        assert_eq!(event.outcome, "success");
        assert!(
            !event.client_address.is_empty(),
            "{kind} records the address"
        );
    }
    assert!(kinds.contains(&"login_succeeded"));
    let only_disabled = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            kind: "admin_user_disabled".into(),
            ..Default::default()
        })
        .await
        .expect("audit by kind")
        .into_inner();
    assert_eq!(only_disabled.events.len(), 1);
    assert_code(
        admin
            .list_audit_events(pb::ListAuditEventsRequest {
                kind: "no_such_kind".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

async fn only_current_admins_may_call_admin_service(db: Db) {
    let app = spawn_app(db).await;
    let (mut root, _) = admin_of(&app, "root@example.com").await;
    let plain = app.signed_up("plain@example.com").await;
    let mut as_plain = app.admin_with(&plain.access_token);
    let denied = as_plain.list_users(pb::ListUsersRequest::default()).await;
    assert_code(denied, Code::PermissionDenied);
    let denied = as_plain
        .create_user(pb::CreateUserRequest {
            email: "sneaky@example.com".into(),
            password: PASSWORD.into(),
            roles: vec!["admin".into()],
            ..Default::default()
        })
        .await;
    assert_code(denied, Code::PermissionDenied);
    assert!(app.find_user_by_email("sneaky@example.com").await.is_none());

    // No token at all.
    let mut anonymous = app.admin.clone();
    assert_code(
        anonymous.list_users(pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );
    // A garbage token.
    let mut garbage = app.admin_with("v4.public.garbage");
    assert_code(
        garbage.list_users(pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );

    // A second admin demoted by the first: its unexpired token (still saying `admin`) is refused.
    let second = app.token_with_roles("second@example.com", &["admin"]).await;
    let second_id = app.validate(&second).await.expect("valid").user_id;
    let mut as_second = app.admin_with(&second);
    as_second
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect("admin may list");
    root.update_user(pb::UpdateUserRequest {
        user_id: second_id,
        roles: vec![],
        update_mask: mask(&["roles"]),
        ..Default::default()
    })
    .await
    .expect("demote");
    assert_code(
        as_second.list_users(pb::ListUsersRequest::default()).await,
        Code::PermissionDenied,
    );

    // Malformed ids are INVALID_ARGUMENT, unknown ones NOT_FOUND.
    assert_code(
        root.get_user(pb::GetUserRequest {
            user_id: "nope".into(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        root.get_user(pb::GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await,
        Code::NotFound,
    );
}

async fn paging_over_1200_users_sees_each_exactly_once(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    // 1,200 accounts straight into the database (no passwords: hashing is not under test).
    let store = app.store().await;
    let tx = store.begin_write().await.expect("tx");
    let mut expected = HashSet::new();
    for i in 0..1200 {
        let user = auth_server::storage::users::create_user(
            &*tx,
            auth_server::storage::users::NewUser {
                email: format!(
                    "user{i:04}@{}.example.com",
                    if i % 3 == 0 { "ops" } else { "dev" }
                ),
                display_name: String::new(),
                roles: if i % 10 == 0 {
                    vec!["support_team".into()]
                } else {
                    vec![]
                },
                password_hash: None,
                email_verified: false,
                created_at: None,
                metadata: Default::default(),
                external_id: None,
                service_account: false,
            },
        )
        .await
        .expect("insert");
        expected.insert(user.id);
    }
    tx.commit().await.expect("commit");
    store.close().await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_users(pb::ListUsersRequest {
                page_size: 10_000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.users.len() <= 500, "page size is capped at 500");
        seen.extend(page.users.into_iter().map(|u| u.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3, "1,201 users in pages of 500");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    assert_eq!(seen.len(), 1201, "every user plus the admin");
    assert!(
        expected.iter().all(|id| unique.contains(id)),
        "none missing"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "stable order by id");

    // Filters: role, email prefix (case-insensitive), disabled; `_` in a role is literal.
    let count = |req: pb::ListUsersRequest| {
        let mut admin = admin.clone();
        async move {
            let mut n = 0;
            let mut req = req;
            loop {
                let page = admin
                    .list_users(req.clone())
                    .await
                    .expect("page")
                    .into_inner();
                n += page.users.len();
                if page.next_page_token.is_empty() {
                    return n;
                }
                req.page_token = page.next_page_token;
            }
        }
    };
    let support = count(pb::ListUsersRequest {
        role: "support_team".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(support, 120);
    let lookalike = count(pb::ListUsersRequest {
        role: "supportxteam".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(lookalike, 0);
    let ops = count(pb::ListUsersRequest {
        email_prefix: "USER00".into(),
        page_size: 7,
        ..Default::default()
    })
    .await;
    assert_eq!(ops, 100);
    let disabled = count(pb::ListUsersRequest {
        disabled: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(disabled, 0);
    assert_code(
        admin
            .list_users(pb::ListUsersRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

async fn update_mask_changes_only_the_named_fields(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let user = admin
        .create_user(pb::CreateUserRequest {
            email: "bob@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Bob".into(),
            roles: vec!["reader".into()],
            email_verified: true,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .user
        .expect("user");
    // Every field set in the message, only `roles` in the mask.
    let after = admin
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: "other@example.com".into(),
            display_name: "Robert".into(),
            email_verified: false,
            roles: vec!["writer".into(), "reader".into(), "writer".into()],
            update_mask: mask(&["roles"]),
            expected_version: 0,
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(after.email, "bob@example.com");
    assert_eq!(after.display_name, "Bob");
    assert!(after.email_verified);
    assert_eq!(after.roles, ["reader", "writer"], "sorted, deduplicated");

    // A new email clears verification unless the mask sets it too.
    let moved = admin
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: "Bob.New@Example.com".into(),
            update_mask: mask(&["email"]),
            ..Default::default()
        })
        .await
        .expect("update email")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(moved.email, "bob.new@example.com");
    assert!(!moved.email_verified);
    app.login("bob.new@example.com", PASSWORD)
        .await
        .expect("login with the new email");

    for (bad_mask, why) in [
        (None, "no mask"),
        (mask(&["password"]), "unknown path"),
        (mask(&["disabled"]), "not updatable here"),
    ] {
        let result = admin
            .update_user(pb::UpdateUserRequest {
                user_id: user.id.clone(),
                update_mask: bad_mask,
                ..Default::default()
            })
            .await;
        assert_code(result, Code::InvalidArgument);
        let _ = why;
    }
    // Taking another user's email is ALREADY_EXISTS.
    let taken = admin
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: "root@example.com".into(),
            update_mask: mask(&["email"]),
            ..Default::default()
        })
        .await;
    assert_code(taken, Code::AlreadyExists);
}

async fn concurrent_updates_with_one_expected_version_one_wins_rest_aborted(db: Db) {
    let app = spawn_app(db).await;
    let (admin, _) = admin_of(&app, "root@example.com").await;
    let user = create(&mut admin.clone(), "carol@example.com", &[]).await;
    let attempts = (0..8).map(|i| {
        let mut admin = admin.clone();
        let id = user.id.clone();
        async move {
            admin
                .update_user(pb::UpdateUserRequest {
                    user_id: id,
                    display_name: format!("writer {i}"),
                    update_mask: mask(&["display_name"]),
                    expected_version: 1,
                    ..Default::default()
                })
                .await
        }
    });
    let results = join_all(attempts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for result in results.into_iter().filter(|r| r.is_err()) {
        let status = assert_code(result, Code::Aborted);
        assert_eq!(reason(&status).as_deref(), Some("VERSION_MISMATCH"));
    }
    let now = app
        .find_user_by_email("carol@example.com")
        .await
        .expect("user");
    assert_eq!(now.version, 2, "exactly one change applied");
}

async fn the_last_enabled_admin_cannot_be_removed(db: Db) {
    let app = spawn_app(db).await;
    let (mut root, root_id) = admin_of(&app, "root@example.com").await;
    let strip = |id: String| pb::UpdateUserRequest {
        user_id: id,
        roles: vec!["support".into()],
        update_mask: mask(&["roles"]),
        ..Default::default()
    };
    for result in [
        root.disable_user(pb::DisableUserRequest {
            user_id: root_id.clone(),
        })
        .await
        .map(|_| ()),
        root.delete_user(pb::DeleteUserRequest {
            user_id: root_id.clone(),
        })
        .await
        .map(|_| ()),
        root.update_user(strip(root_id.clone())).await.map(|_| ()),
    ] {
        let status = assert_code(result, Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("LAST_ADMIN"));
    }
    // With a second admin, either may go, but not both at once.
    let second = create(&mut root, "second@example.com", &["admin"]).await;
    let (mut r1, mut r2) = (root.clone(), root.clone());
    let (a, b) = tokio::join!(
        r1.update_user(strip(root_id.clone())),
        r2.update_user(strip(second.id.clone())),
    );
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "exactly one demotion: {a:?} {b:?}"
    );
}

async fn invite_without_password_sets_it_with_the_invite_token(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let invited = admin
        .create_user(pb::CreateUserRequest {
            email: "dora@example.com".into(),
            display_name: "Dora".into(),
            ..Default::default()
        })
        .await
        .expect("invite")
        .into_inner();
    assert_eq!(invited.invite_token.len(), 43);
    assert!(invited.invite_expires_at.is_some());
    let id = invited.user.expect("user").id;
    let details = admin
        .get_user(pb::GetUserRequest { user_id: id })
        .await
        .expect("get")
        .into_inner()
        .details
        .expect("details");
    assert!(!details.has_password);
    // No password yet: any login fails like a wrong password.
    assert_code(
        app.login("dora@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    app.client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            reset_token: invited.invite_token.clone(),
            new_password: PASSWORD.into(),
        })
        .await
        .expect("set password with the invite");
    app.login("dora@example.com", PASSWORD)
        .await
        .expect("login with the chosen password");
    let again = app
        .client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            reset_token: invited.invite_token,
            new_password: "another passphrase".into(),
        })
        .await;
    assert_code(again, Code::Unauthenticated);
}

async fn admin_sessions_listing_and_revocation(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let user = create(&mut admin, "erin@example.com", &[]).await;
    let one = app
        .login("erin@example.com", PASSWORD)
        .await
        .expect("login");
    let two = app
        .login("erin@example.com", PASSWORD)
        .await
        .expect("login");
    let listed = admin
        .list_sessions(pb::ListSessionsRequest {
            user_id: user.id.clone(),
            include_inactive: false,
        })
        .await
        .expect("sessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, two.session_id, "newest first");
    assert!(listed.iter().all(|s| s.client_address == "127.0.0.1"));
    assert!(listed.iter().all(|s| !s.user_agent.is_empty()));

    let revoked = admin
        .revoke_sessions(pb::RevokeSessionsRequest {
            user_id: user.id.clone(),
            session_id: one.session_id.clone(),
        })
        .await
        .expect("revoke one")
        .into_inner();
    assert_eq!(
        revoked.revoked_session_ids,
        std::slice::from_ref(&one.session_id)
    );
    assert_code(app.validate(&one.access_token).await, Code::Unauthenticated);
    app.validate(&two.access_token)
        .await
        .expect("the other lives");

    // Another user's session id is NOT_FOUND.
    let other = app.signed_up("frank@example.com").await;
    assert_code(
        admin
            .revoke_sessions(pb::RevokeSessionsRequest {
                user_id: user.id.clone(),
                session_id: other.session_id.clone(),
            })
            .await,
        Code::NotFound,
    );
    app.validate(&other.access_token).await.expect("untouched");

    let all = admin
        .revoke_sessions(pb::RevokeSessionsRequest {
            user_id: user.id.clone(),
            session_id: String::new(),
        })
        .await
        .expect("revoke all")
        .into_inner();
    assert_eq!(
        all.revoked_session_ids,
        std::slice::from_ref(&two.session_id)
    );
    assert_code(app.validate(&two.access_token).await, Code::Unauthenticated);
    let inactive = admin
        .list_sessions(pb::ListSessionsRequest {
            user_id: user.id,
            include_inactive: true,
        })
        .await
        .expect("sessions")
        .into_inner()
        .sessions;
    assert_eq!(inactive.len(), 2);
    assert!(inactive.iter().all(|s| s.revoked_reason == "admin"));
}

/// A NUL (PostgreSQL cannot store one) or another control character in any text a caller sends
/// is INVALID_ARGUMENT on every backend, before it reaches the database.
async fn nul_characters_are_invalid_argument_in_every_text_field(db: Db) {
    use base64::Engine as _;
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let user = create(&mut admin, "bob@example.com", &[]).await;
    assert_code(
        app.register("nul\0@example.com", PASSWORD).await,
        Code::InvalidArgument,
    );
    assert_code(
        app.login("bob\0@example.com", PASSWORD).await,
        Code::InvalidArgument,
    );
    let page_token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("u:\0abc");
    for request in [
        pb::ListUsersRequest {
            email_prefix: "bo\0".into(),
            ..Default::default()
        },
        pb::ListUsersRequest {
            role: "x\0".into(),
            ..Default::default()
        },
        pb::ListUsersRequest {
            page_token,
            ..Default::default()
        },
    ] {
        assert_code(admin.list_users(request).await, Code::InvalidArgument);
    }
    assert_code(
        admin
            .create_user(pb::CreateUserRequest {
                email: "carol@example.com".into(),
                password: PASSWORD.into(),
                display_name: "Carol\0".into(),
                roles: vec![],
                email_verified: false,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        admin
            .create_user(pb::CreateUserRequest {
                email: "dave@example.com".into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                roles: vec!["ops\0".into()],
                email_verified: false,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        admin
            .update_user(pb::UpdateUserRequest {
                user_id: user.id.clone(),
                display_name: "Bob\0".into(),
                update_mask: mask(&["display_name"]),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        admin
            .get_user(pb::GetUserRequest {
                user_id: "\0".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        admin
            .list_audit_events(pb::ListAuditEventsRequest {
                kind: "login\0".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    // Nothing was written: bob is unchanged and the others do not exist.
    let page = admin
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect("list")
        .into_inner();
    let emails: Vec<_> = page.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails.len(), 2, "{emails:?}");
    assert!(emails.contains(&"bob@example.com"), "{emails:?}");
}
