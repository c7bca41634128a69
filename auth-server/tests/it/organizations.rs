//! Organizations and memberships: the admin walk with every bad input, keyset pages over
//! 1,200 organizations, concurrent membership changes decided by versions, events and snapshot
//! equal to the database under concurrent writers, tokens carrying memberships after refresh,
//! and an older subscriber skipping the new event kinds.

use std::collections::{BTreeMap, HashSet};

use auth_proto::pb;
use prost::Message as _;
use prost_types::{FieldMask, Struct, Value, value::Kind};
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    the_admin_walk_with_bad_input_events_and_audit,
    organizations_page_by_id_with_a_prefix_filter,
    concurrent_membership_changes_are_decided_by_versions,
    events_and_snapshot_equal_the_database_under_concurrent_writers,
    tokens_carry_memberships_after_refresh,
);

pub(crate) fn metadata(pairs: &[(&str, &str)]) -> Option<Struct> {
    Some(Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value {
                        kind: Some(Kind::StringValue((*v).to_owned())),
                    },
                )
            })
            .collect(),
    })
}

async fn create_org(admin: &mut Admin, name: &str, slug: &str) -> pb::Organization {
    admin
        .create_organization(pb::CreateOrganizationRequest {
            name: name.into(),
            slug: slug.into(),
            metadata: None,
        })
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
}

async fn add_member(admin: &mut Admin, org: &str, user: &str, roles: &[&str]) -> pb::Membership {
    admin
        .add_member(pb::AddMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        })
        .await
        .expect("add member")
        .into_inner()
        .membership
        .expect("membership")
}

async fn the_admin_walk_with_bad_input_events_and_audit(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let alice = app
        .register("alice@example.com", PASSWORD)
        .await
        .expect("alice");
    let mirror = app
        .token_with_roles("mirror@example.com", &["events.subscriber"])
        .await;
    let head = app.head().await;

    // Create: the slug is made from the name; metadata is a JSON object.
    let acme = admin
        .create_organization(pb::CreateOrganizationRequest {
            name: "  Acme Corp, Ltd. ".into(),
            slug: String::new(),
            metadata: metadata(&[("plan", "enterprise")]),
        })
        .await
        .expect("create")
        .into_inner()
        .organization
        .expect("org");
    assert_eq!(acme.name, "Acme Corp, Ltd.");
    assert_eq!(acme.slug, "acme-corp-ltd");
    assert_eq!(acme.version, 1);
    assert_eq!(acme.metadata, metadata(&[("plan", "enterprise")]));

    // Bad input, each with its code.
    let dup = admin
        .create_organization(pb::CreateOrganizationRequest {
            name: "Other".into(),
            slug: "acme-corp-ltd".into(),
            metadata: None,
        })
        .await;
    let status = assert_code(dup, Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("SLUG_TAKEN"));
    for (name, slug) in [
        ("", "x"),
        ("Acme", "Bad Slug"),
        ("Acme", "-x"),
        ("a\u{0}b", "nul"),
    ] {
        let bad = admin
            .create_organization(pb::CreateOrganizationRequest {
                name: name.into(),
                slug: slug.into(),
                metadata: None,
            })
            .await;
        assert_code(bad, Code::InvalidArgument);
    }
    let big = "x".repeat(9000);
    let oversized = admin
        .create_organization(pb::CreateOrganizationRequest {
            name: "Big".into(),
            slug: String::new(),
            metadata: metadata(&[("blob", &big)]),
        })
        .await;
    let status = assert_code(oversized, Code::InvalidArgument);
    assert!(status.message().contains("8192"), "{}", status.message());
    assert_code(
        admin
            .get_organization(pb::GetOrganizationRequest {
                organization_id: "not-a-uuid".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    let unknown = "0190c1d2-0000-7000-8000-000000000000";
    assert_code(
        admin
            .get_organization(pb::GetOrganizationRequest {
                organization_id: unknown.into(),
            })
            .await,
        Code::NotFound,
    );

    // Update with a mask; a stale expected_version is ABORTED.
    let updated = admin
        .update_organization(pb::UpdateOrganizationRequest {
            organization_id: acme.id.clone(),
            name: "Acme".into(),
            slug: "acme".into(),
            update_mask: Some(FieldMask {
                paths: vec!["name".into(), "slug".into()],
            }),
            expected_version: 1,
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner()
        .organization
        .expect("org");
    assert_eq!(
        (
            updated.name.as_str(),
            updated.slug.as_str(),
            updated.version
        ),
        ("Acme", "acme", 2)
    );
    assert_eq!(updated.metadata, acme.metadata, "metadata not in the mask");
    let stale = admin
        .update_organization(pb::UpdateOrganizationRequest {
            organization_id: acme.id.clone(),
            name: "Late".into(),
            update_mask: Some(FieldMask {
                paths: vec!["name".into()],
            }),
            expected_version: 1,
            ..Default::default()
        })
        .await;
    assert_code(stale, Code::Aborted);
    let no_mask = admin
        .update_organization(pb::UpdateOrganizationRequest {
            organization_id: acme.id.clone(),
            name: "x".into(),
            ..Default::default()
        })
        .await;
    assert_code(no_mask, Code::InvalidArgument);

    // Members.
    let member = add_member(&mut admin, &acme.id, &alice.id, &["editor"]).await;
    assert_eq!(
        (member.roles.clone(), member.version),
        (vec!["editor".to_owned()], 1)
    );
    let again = admin
        .add_member(pb::AddMemberRequest {
            organization_id: acme.id.clone(),
            user_id: alice.id.clone(),
            roles: vec![],
        })
        .await;
    let status = assert_code(again, Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("ALREADY_MEMBER"));
    for (org, user, roles, code) in [
        (acme.id.as_str(), unknown, vec![], Code::NotFound),
        (unknown, alice.id.as_str(), vec![], Code::NotFound),
        (
            acme.id.as_str(),
            alice.id.as_str(),
            vec!["Bad Role".to_owned()],
            Code::InvalidArgument,
        ),
        (acme.id.as_str(), "nope", vec![], Code::InvalidArgument),
    ] {
        let result = admin
            .add_member(pb::AddMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
                roles,
            })
            .await;
        assert_code(result, code);
    }
    let changed = admin
        .update_member(pb::UpdateMemberRequest {
            organization_id: acme.id.clone(),
            user_id: alice.id.clone(),
            roles: vec!["owner".into(), "editor".into()],
            expected_version: 1,
        })
        .await
        .expect("update member")
        .into_inner()
        .membership
        .expect("membership");
    assert_eq!(changed.roles, ["editor", "owner"], "sorted");
    assert_eq!(changed.version, 2);
    let listed = admin
        .list_members(pb::ListMembersRequest {
            organization_id: acme.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner();
    assert_eq!(listed.memberships, vec![changed.clone()]);
    let mine = admin
        .list_user_organizations(pb::ListUserOrganizationsRequest {
            user_id: alice.id.clone(),
        })
        .await
        .expect("user orgs")
        .into_inner()
        .organizations;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].organization.as_ref().map(|o| o.slug.as_str()),
        Some("acme")
    );
    let got = admin
        .get_organization(pb::GetOrganizationRequest {
            organization_id: acme.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.member_count, 1);

    // Reads are open to a mirror's account; writes are not, nor to a plain user.
    let mut reader = app.admin_with(&mirror);
    reader
        .get_organization(pb::GetOrganizationRequest {
            organization_id: acme.id.clone(),
        })
        .await
        .expect("subscriber reads");
    assert_code(
        reader
            .create_organization(pb::CreateOrganizationRequest {
                name: "Mine".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    let plain = app
        .login("alice@example.com", PASSWORD)
        .await
        .expect("login");
    assert_code(
        app.admin_with(&plain.access_token)
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await,
        Code::PermissionDenied,
    );

    // Remove, then delete the organization with another member in it.
    let removed = admin
        .remove_member(pb::RemoveMemberRequest {
            organization_id: acme.id.clone(),
            user_id: alice.id.clone(),
            expected_version: 2,
        })
        .await
        .expect("remove")
        .into_inner()
        .membership
        .expect("membership");
    assert!(removed.removed);
    assert_eq!(removed.version, 3);
    let readded = add_member(&mut admin, &acme.id, &alice.id, &["viewer"]).await;
    assert_eq!(readded.version, 4, "versions keep counting across a re-add");
    let deleted = admin
        .delete_organization(pb::DeleteOrganizationRequest {
            organization_id: acme.id.clone(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.removed_memberships, 1);
    assert_code(
        admin
            .get_organization(pb::GetOrganizationRequest {
                organization_id: acme.id.clone(),
            })
            .await,
        Code::NotFound,
    );
    let reused = create_org(&mut admin, "Acme again", "acme").await;
    assert_ne!(reused.id, acme.id, "the slug is free again");

    // The events, in order, self-contained.
    let mut stream = app.subscribe(&root, head).await.expect("subscribe");
    let events = events_until(&mut stream, app.head().await).await;
    let kinds: Vec<pb::UserEventKind> = events.iter().map(pb::UserEvent::kind).collect();
    use pb::UserEventKind as K;
    assert_eq!(
        kinds,
        [
            K::OrganizationCreated,
            K::OrganizationUpdated,
            K::MembershipAdded,
            K::MembershipChanged,
            K::MembershipRemoved,
            K::MembershipAdded,
            K::MembershipRemoved,
            K::OrganizationDeleted,
            K::OrganizationCreated,
        ]
    );
    assert!(
        events.iter().all(|e| e.user.is_none()),
        "no user on organization events"
    );
    assert_eq!(events[1].organization.as_ref(), Some(&updated));
    assert_eq!(events[3].membership.as_ref(), Some(&changed));
    let gone = events[7].organization.as_ref().expect("org");
    assert!(gone.deleted);
    assert_eq!(gone.slug, "acme", "the last slug, not the released one");

    // Every change wrote its audit record.
    let kinds: Vec<String> = app.audit_rows().await.into_iter().map(|r| r.kind).collect();
    for kind in [
        "admin_organization_created",
        "admin_organization_updated",
        "admin_organization_deleted",
        "admin_member_added",
        "admin_member_updated",
        "admin_member_removed",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }

    // Deleting a user ends the user's memberships, each with its event.
    let beta = create_org(&mut admin, "Beta", "").await;
    add_member(&mut admin, &beta.id, &alice.id, &[]).await;
    let before = app.head().await;
    admin
        .delete_user(pb::DeleteUserRequest {
            user_id: alice.id.clone(),
        })
        .await
        .expect("delete user");
    let mut stream = app.subscribe(&root, before).await.expect("subscribe");
    let events = events_until(&mut stream, app.head().await).await;
    let removal = events
        .iter()
        .find(|e| e.kind() == K::MembershipRemoved)
        .expect("membership removed on user delete");
    assert_eq!(
        removal
            .membership
            .as_ref()
            .map(|m| m.organization_id.as_str()),
        Some(beta.id.as_str())
    );
}

async fn organizations_page_by_id_with_a_prefix_filter(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    // 1,200 organizations straight into the database (their events are not under test here).
    let store = app.store().await;
    let tx = store.begin_write().await.expect("tx");
    for i in 0..1200 {
        let org = auth_server::storage::organizations::OrganizationRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: format!("{} {i:04}", if i % 4 == 0 { "Globex" } else { "Initech" }),
            slug: format!("org-{i:04}"),
            metadata: Default::default(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            deleted: false,
        };
        auth_server::storage::organizations::insert_organization(&*tx, &org)
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
    store.close().await;

    let mut page_token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = admin
            .list_organizations(pb::ListOrganizationsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                prefix: String::new(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.organizations.len() <= 500);
        seen.extend(page.organizations.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 1200);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "by id");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1200, "each once");

    // The prefix matches the name ignoring ASCII case, or the slug.
    let mut globex = 0;
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_organizations(pb::ListOrganizationsRequest {
                page_size: 120,
                page_token: page_token.clone(),
                prefix: "gLoBeX".into(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(
            page.organizations
                .iter()
                .all(|o| o.name.starts_with("Globex"))
        );
        globex += page.organizations.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(globex, 300);
    let by_slug = admin
        .list_organizations(pb::ListOrganizationsRequest {
            prefix: "org-001".into(),
            ..Default::default()
        })
        .await
        .expect("slug prefix")
        .into_inner();
    assert_eq!(by_slug.organizations.len(), 10);
    for bad in ["%", "_"] {
        let none = admin
            .list_organizations(pb::ListOrganizationsRequest {
                prefix: bad.into(),
                ..Default::default()
            })
            .await
            .expect("wildcards are literal")
            .into_inner();
        assert!(none.organizations.is_empty(), "{bad}");
    }
    assert_code(
        admin
            .list_organizations(pb::ListOrganizationsRequest {
                prefix: "a\u{0}".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        admin
            .list_organizations(pb::ListOrganizationsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

async fn concurrent_membership_changes_are_decided_by_versions(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let org = create_org(&mut admin, "Acme", "").await;
    let user = app
        .register("bob@example.com", PASSWORD)
        .await
        .expect("bob");

    // Eight concurrent adds of the same user: exactly one wins.
    let adds = (0..8).map(|i| {
        let mut admin = admin.clone();
        let (org, user) = (org.id.clone(), user.id.clone());
        tokio::spawn(async move {
            admin
                .add_member(pb::AddMemberRequest {
                    organization_id: org,
                    user_id: user,
                    roles: vec![format!("r{i}")],
                })
                .await
                .map_err(|s| s.code())
        })
    });
    let results: Vec<_> = futures::future::join_all(adds)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Code::AlreadyExists)))
    );

    // Eight concurrent role changes, all expecting version 1: exactly one applies.
    let updates = (0..8).map(|i| {
        let mut admin = admin.clone();
        let (org, user) = (org.id.clone(), user.id.clone());
        tokio::spawn(async move {
            admin
                .update_member(pb::UpdateMemberRequest {
                    organization_id: org,
                    user_id: user,
                    roles: vec![format!("editor{i}")],
                    expected_version: 1,
                })
                .await
                .map(|r| r.into_inner().membership.expect("membership"))
                .map_err(|s| s.code())
        })
    });
    let results: Vec<_> = futures::future::join_all(updates)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let winners: Vec<&pb::Membership> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Code::Aborted)))
    );
    let now = admin
        .list_members(pb::ListMembersRequest {
            organization_id: org.id.clone(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner()
        .memberships;
    assert_eq!(
        now,
        vec![winners[0].clone()],
        "the winner's roles, version 2"
    );
    assert_eq!(now[0].version, 2);
}

/// What a mirror holds: organizations and memberships by key.
#[derive(Debug, Default, PartialEq)]
struct Mirror {
    orgs: BTreeMap<String, pb::Organization>,
    members: BTreeMap<(String, String), pb::Membership>,
}

impl Mirror {
    fn apply(&mut self, event: &pb::UserEvent) {
        if let Some(org) = &event.organization {
            if org.deleted {
                self.orgs.remove(&org.id);
            } else {
                self.orgs.insert(org.id.clone(), org.clone());
            }
        }
        if let Some(m) = &event.membership {
            let key = (m.organization_id.clone(), m.user_id.clone());
            if m.removed {
                self.members.remove(&key);
            } else {
                self.members.insert(key, m.clone());
            }
        }
    }
}

async fn snapshot(app: &TestApp, token: &str) -> (u64, Mirror) {
    let mut stream = app
        .client
        .clone()
        .user_snapshot(bearer(pb::UserSnapshotRequest {}, token))
        .await
        .expect("snapshot")
        .into_inner();
    let mut mirror = Mirror::default();
    let mut header = None;
    while let Some(message) = stream.message().await.expect("snapshot stream") {
        match message.item.expect("item") {
            pb::user_snapshot_response::Item::Header(h) => header = Some(h),
            pb::user_snapshot_response::Item::User(_) => {}
            pb::user_snapshot_response::Item::Organization(o) => {
                mirror.orgs.insert(o.id.clone(), o);
            }
            pb::user_snapshot_response::Item::Membership(m) => {
                mirror
                    .members
                    .insert((m.organization_id.clone(), m.user_id.clone()), m);
            }
        }
    }
    let header = header.expect("header");
    assert_eq!(header.organization_count, mirror.orgs.len() as u64);
    assert_eq!(header.membership_count, mirror.members.len() as u64);
    (header.as_of_sequence, mirror)
}

async fn events_and_snapshot_equal_the_database_under_concurrent_writers(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(
            app.register(&format!("u{i}@example.com"), PASSWORD)
                .await
                .expect("user")
                .id,
        );
    }
    let mut orgs = Vec::new();
    for i in 0..3 {
        orgs.push(create_org(&mut admin, &format!("Org {i}"), "").await.id);
    }
    // Writers: each adds, changes and removes members in its own organization, and renames it.
    let writers = orgs.iter().cloned().enumerate().map(|(w, org)| {
        let mut admin = admin.clone();
        let users = users.clone();
        tokio::spawn(async move {
            for round in 0..4 {
                for user in &users {
                    let _ = admin
                        .add_member(pb::AddMemberRequest {
                            organization_id: org.clone(),
                            user_id: user.clone(),
                            roles: vec![format!("r{round}")],
                        })
                        .await;
                }
                for user in users.iter().step_by(2) {
                    admin
                        .update_member(pb::UpdateMemberRequest {
                            organization_id: org.clone(),
                            user_id: user.clone(),
                            roles: vec!["editor".into()],
                            expected_version: 0,
                        })
                        .await
                        .expect("update member");
                }
                for user in users.iter().skip(round % 2).step_by(3) {
                    admin
                        .remove_member(pb::RemoveMemberRequest {
                            organization_id: org.clone(),
                            user_id: user.clone(),
                            expected_version: 0,
                        })
                        .await
                        .expect("remove member");
                }
                admin
                    .update_organization(pb::UpdateOrganizationRequest {
                        organization_id: org.clone(),
                        name: format!("Org {w} round {round}"),
                        update_mask: Some(FieldMask {
                            paths: vec!["name".into()],
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("rename");
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    // Snapshots taken while they write, each completed by the events after it, must equal
    // the final state; so must the whole event history from the start.
    let mut snapshots = Vec::new();
    for _ in 0..3 {
        snapshots.push(snapshot(&app, &root).await);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let head = app.head().await;
    let (final_as_of, truth) = snapshot(&app, &root).await;
    assert_eq!(final_as_of, head);
    // The database itself, through the admin reads.
    let mut from_reads = Mirror::default();
    let page = admin
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("orgs")
        .into_inner();
    for org in page.organizations {
        let members = admin
            .list_members(pb::ListMembersRequest {
                organization_id: org.id.clone(),
                ..Default::default()
            })
            .await
            .expect("members")
            .into_inner()
            .memberships;
        for m in members {
            from_reads
                .members
                .insert((m.organization_id.clone(), m.user_id.clone()), m);
        }
        from_reads.orgs.insert(org.id.clone(), org);
    }
    assert_eq!(truth, from_reads, "the final snapshot is the database");
    let mut stream = app.subscribe(&root, 0).await.expect("subscribe");
    let all = events_until(&mut stream, head).await;
    let mut replayed = Mirror::default();
    for event in &all {
        replayed.apply(event);
    }
    assert_eq!(
        replayed, truth,
        "the whole event history rebuilds the database"
    );
    for (as_of, mut mirror) in snapshots {
        for event in all.iter().filter(|e| e.sequence > as_of) {
            mirror.apply(event);
        }
        assert_eq!(mirror, truth, "snapshot at {as_of} plus the later events");
    }
}

async fn tokens_carry_memberships_after_refresh(db: Db) {
    let app = spawn_app(db).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let user = app
        .register("carol@example.com", PASSWORD)
        .await
        .expect("carol");
    let session = app
        .login("carol@example.com", PASSWORD)
        .await
        .expect("login");
    let org = create_org(&mut admin, "Acme", "").await;
    add_member(&mut admin, &org.id, &user.id, &["editor"]).await;

    let before = app.validate(&session.access_token).await.expect("valid");
    assert!(
        before.organizations.is_empty(),
        "issued before the membership"
    );
    let refreshed = app.refresh(&session.refresh_token).await.expect("refresh");
    let after = app.validate(&refreshed.access_token).await.expect("valid");
    assert_eq!(
        after.organizations,
        vec![pb::OrganizationRoles {
            organization_id: org.id.clone(),
            roles: vec!["editor".into()],
        }]
    );
    assert!(!after.organizations_truncated);

    // More memberships than a token carries: the first 32 by id, and the flag.
    let mut ids = vec![org.id.clone()];
    for i in 0..32 {
        let extra = create_org(&mut admin, &format!("Extra {i}"), "").await;
        add_member(&mut admin, &extra.id, &user.id, &["viewer"]).await;
        ids.push(extra.id);
    }
    ids.sort();
    let refreshed = app
        .refresh(&refreshed.refresh_token)
        .await
        .expect("refresh");
    let full = app.validate(&refreshed.access_token).await.expect("valid");
    assert!(full.organizations_truncated);
    let carried: Vec<String> = full
        .organizations
        .iter()
        .map(|o| o.organization_id.clone())
        .collect();
    assert_eq!(carried, ids[..32].to_vec());

    // A removal and an organization delete reach the token at the next refresh.
    admin
        .remove_member(pb::RemoveMemberRequest {
            organization_id: ids[0].clone(),
            user_id: user.id.clone(),
            expected_version: 0,
        })
        .await
        .expect("remove");
    admin
        .delete_organization(pb::DeleteOrganizationRequest {
            organization_id: ids[1].clone(),
        })
        .await
        .expect("delete org");
    let still = app
        .validate(&refreshed.access_token)
        .await
        .expect("valid until refresh");
    assert!(
        still
            .organizations
            .iter()
            .any(|o| o.organization_id == ids[0])
    );
    let refreshed = app
        .refresh(&refreshed.refresh_token)
        .await
        .expect("refresh");
    let now = app.validate(&refreshed.access_token).await.expect("valid");
    let carried: Vec<String> = now
        .organizations
        .iter()
        .map(|o| o.organization_id.clone())
        .collect();
    assert_eq!(carried, ids[2..].to_vec());
    assert!(!now.organizations_truncated, "31 fit");
}

/// `UserEvent` as a subscriber built before organizations knows it: fields 1 to 6 and kinds
/// up to API_KEY_REVOKED.
#[derive(Clone, PartialEq, prost::Message)]
struct OlderUserEvent {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(enumeration = "OlderKind", tag = "3")]
    kind: i32,
    #[prost(message, optional, tag = "4")]
    user: Option<pb::User>,
    #[prost(string, tag = "5")]
    session_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum OlderKind {
    Unspecified = 0,
    UserCreated = 1,
    UserUpdated = 2,
    UserDisabled = 3,
    UserEnabled = 4,
    UserDeleted = 5,
    PasswordChanged = 6,
    RolesChanged = 7,
    SessionRevoked = 8,
    ApiKeyIssued = 9,
    ApiKeyRevoked = 10,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_subscriber_decodes_new_kinds_as_unknown_and_skips_them() {
    let app = spawn_app(Db::Sqlite).await;
    let root = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&root);
    let head = app.head().await;
    let user = app
        .register("dave@example.com", PASSWORD)
        .await
        .expect("dave");
    let org = create_org(&mut admin, "Acme", "").await;
    add_member(&mut admin, &org.id, &user.id, &["editor"]).await;
    app.register("erin@example.com", PASSWORD)
        .await
        .expect("erin");

    let mut stream = app.subscribe(&root, head).await.expect("subscribe");
    let events = events_until(&mut stream, app.head().await).await;
    // The bytes as they travel, decoded by the older message: an older mirror that applies
    // `user` when set and advances its cursor on every event stays exact.
    let mut cursor = head;
    let mut emails = Vec::new();
    let mut unknown = 0;
    for event in &events {
        let older = OlderUserEvent::decode(event.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(older.sequence, cursor + 1, "no gap");
        cursor = older.sequence;
        match OlderKind::try_from(older.kind) {
            Ok(_) => emails.extend(older.user.map(|u| u.email)),
            Err(_) => {
                unknown += 1;
                assert!(
                    older.user.is_none(),
                    "a new kind carries no user to misapply"
                );
            }
        }
    }
    assert_eq!(unknown, 2, "OrganizationCreated and MembershipAdded");
    assert_eq!(emails, ["dave@example.com", "erin@example.com"]);
}
