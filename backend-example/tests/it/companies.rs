//! The company mirror: organizations and memberships reach `companies` and `user_companies`
//! through the snapshot and the stream, `GET /orgs/{id}` answers members only from current
//! data, and the mirror converges after a backend restart.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use auth_client::pb::{self, admin_service_client::AdminServiceClient};
use auth_server::testkit::bearer;
use sea_orm::EntityTrait as _;
use tonic::transport::Channel;

use crate::{every_backend_db, helpers::*};

every_backend_db!(
    companies_reach_the_mirror_and_orgs_answers_members_only,
    the_company_mirror_converges_after_a_backend_restart,
);

struct AdminApi {
    client: AdminServiceClient<Channel>,
    token: String,
}

impl AdminApi {
    async fn new(auth: &Server) -> Self {
        let (client, token) = auth.admin("root@example.com").await;
        Self { client, token }
    }

    async fn create_org(&mut self, name: &str) -> pb::Organization {
        let request = pb::CreateOrganizationRequest {
            name: name.into(),
            ..Default::default()
        };
        self.client
            .create_organization(bearer(request, &self.token))
            .await
            .expect("create organization")
            .into_inner()
            .organization
            .expect("organization")
    }

    async fn add_member(&mut self, org: &str, user: &str, roles: &[&str]) {
        let request = pb::AddMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        self.client
            .add_member(bearer(request, &self.token))
            .await
            .expect("add member");
    }

    async fn remove_member(&mut self, org: &str, user: &str) {
        let request = pb::RemoveMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            expected_version: 0,
        };
        self.client
            .remove_member(bearer(request, &self.token))
            .await
            .expect("remove member");
    }

    /// Every live organization and membership, as AdminService reads them now.
    async fn state(
        &mut self,
    ) -> (
        BTreeMap<String, String>,
        BTreeMap<(String, String), Vec<String>>,
    ) {
        let orgs = self
            .client
            .list_organizations(bearer(pb::ListOrganizationsRequest::default(), &self.token))
            .await
            .expect("orgs")
            .into_inner()
            .organizations;
        let mut members = BTreeMap::new();
        for org in &orgs {
            let request = pb::ListMembersRequest {
                organization_id: org.id.clone(),
                ..Default::default()
            };
            for m in self
                .client
                .list_members(bearer(request, &self.token))
                .await
                .expect("members")
                .into_inner()
                .memberships
            {
                members.insert((m.organization_id, m.user_id), m.roles);
            }
        }
        let names = orgs.into_iter().map(|o| (o.id, o.name)).collect();
        (names, members)
    }
}

/// What the backend's tables hold (live rows only).
async fn mirrored(
    url: &str,
) -> (
    BTreeMap<String, String>,
    BTreeMap<(String, String), Vec<String>>,
) {
    use backend_example::orgs::{companies, user_companies};
    let conn = backend_example::db::connect(url).await.expect("backend db");
    let names = companies::Entity::find()
        .all(&conn)
        .await
        .expect("companies")
        .into_iter()
        .filter(|c| !c.deleted)
        .map(|c| (c.id, c.name))
        .collect();
    let members = user_companies::Entity::find()
        .all(&conn)
        .await
        .expect("user_companies")
        .into_iter()
        .filter(|m| !m.removed)
        .map(|m| {
            let roles = serde_json::from_str(&m.roles).expect("roles");
            ((m.company_id, m.user_id), roles)
        })
        .collect();
    conn.close().await.ok();
    (names, members)
}

/// Polls `GET path` with `token` until it answers `status`; how long that took (at most 1 s).
async fn within_a_second(backend: &TestBackend, path: &str, token: &str, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        let response = backend.request("GET", path, Some(token), None).await;
        if response.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{path} still {} after 1 s, want {status}: {:?}",
            response.status,
            response.json
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn companies_reach_the_mirror_and_orgs_answers_members_only(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    let mut admin = AdminApi::new(&auth).await;
    let (alice, alice_id) = user(&auth, "alice@example.com").await;
    let (bob, _) = user(&auth, "bob@example.com").await;
    // Before the backend exists: reaches it through the snapshot.
    let early = admin.create_org("Early Co").await;
    admin.add_member(&early.id, &alice_id, &["viewer"]).await;
    let backend = TestBackend::start(&auth, database.url.clone()).await;
    backend.wait_applied(auth_head(&auth).await).await;
    let health = backend.health().await;
    assert_eq!(health["mirrored_companies"], 1, "{health}");
    assert_eq!(health["mirrored_memberships"], 1, "{health}");

    // After: through the stream, within a second.
    let acme = admin.create_org("Acme").await;
    admin.add_member(&acme.id, &alice_id, &["editor"]).await;
    let path = format!("/orgs/{}", acme.id);
    within_a_second(&backend, &path, &alice, 200).await;
    let org = backend.request("GET", &path, Some(&alice), None).await;
    assert_eq!(org.json["slug"], "acme");
    assert_eq!(org.json["roles"], serde_json::json!(["editor"]));
    assert_eq!(
        backend.request("GET", &path, Some(&bob), None).await.status,
        403
    );
    let unknown = "/orgs/0190c1d2-0000-7000-8000-000000000000";
    assert_eq!(
        backend
            .request("GET", unknown, Some(&alice), None)
            .await
            .status,
        403,
        "an unknown company looks like one you are not in"
    );
    assert_eq!(backend.request("GET", &path, None, None).await.status, 401);

    let me = backend.me(Some(&alice)).await;
    let mut listed: Vec<(String, String)> = me.json["organizations"]
        .as_array()
        .expect("organizations")
        .iter()
        .map(|o| {
            (
                o["slug"].as_str().unwrap_or_default().to_owned(),
                o["roles"].to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("acme".to_owned(), "[\"editor\"]".to_owned()),
            ("early-co".to_owned(), "[\"viewer\"]".to_owned())
        ]
    );
    assert_eq!(
        backend.me(Some(&bob)).await.json["organizations"],
        serde_json::json!([])
    );

    // A removal is mirrored within a second: the member's unexpired token no longer opens it.
    admin.remove_member(&acme.id, &alice_id).await;
    let took = within_a_second(&backend, &path, &alice, 403).await;
    tracing::info!(?took, "removal mirrored");
}

async fn the_company_mirror_converges_after_a_backend_restart(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = backend_db(db, &dir).await;
    let auth = auth_server().await;
    let mut admin = AdminApi::new(&auth).await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(user(&auth, &format!("u{i}@example.com")).await.1);
    }
    let a = admin.create_org("Alpha").await;
    let b = admin.create_org("Beta").await;
    for u in &users {
        admin.add_member(&a.id, u, &["member"]).await;
    }
    let mut backend = TestBackend::start(&auth, database.url.clone()).await;
    backend.wait_applied(auth_head(&auth).await).await;
    assert_eq!(mirrored(&database.url).await, admin.state().await);

    // While the backend is down: renames, role changes, removals, a delete, a new company.
    backend.stop().await;
    let request = pb::UpdateOrganizationRequest {
        organization_id: a.id.clone(),
        name: "Alpha Renamed".into(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    admin
        .client
        .update_organization(bearer(request, &admin.token))
        .await
        .expect("rename");
    let request = pb::UpdateMemberRequest {
        organization_id: a.id.clone(),
        user_id: users[0].clone(),
        roles: vec!["owner".into()],
        expected_version: 0,
    };
    admin
        .client
        .update_member(bearer(request, &admin.token))
        .await
        .expect("roles");
    admin.remove_member(&a.id, &users[1]).await;
    admin.add_member(&b.id, &users[2], &["editor"]).await;
    let request = pb::DeleteOrganizationRequest {
        organization_id: b.id.clone(),
    };
    admin
        .client
        .delete_organization(bearer(request, &admin.token))
        .await
        .expect("delete");
    let c = admin.create_org("Gamma").await;
    admin.add_member(&c.id, &users[3], &[]).await;

    backend.resume().await;
    backend.wait_applied(auth_head(&auth).await).await;
    let (names, members) = mirrored(&database.url).await;
    assert_eq!((names.clone(), members.clone()), admin.state().await);
    assert_eq!(names.get(&a.id).map(String::as_str), Some("Alpha Renamed"));
    assert!(!names.contains_key(&b.id), "deleted company is a tombstone");
    assert_eq!(
        members.get(&(a.id.clone(), users[0].clone())),
        Some(&vec!["owner".to_owned()])
    );
}
