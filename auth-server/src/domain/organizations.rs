//! Organizations (companies) and memberships: the admin flows behind the organization calls
//! of `AdminService`, and the memberships an access token carries.
//!
//! Every change writes its events (`Organization*`, `Membership*`, each with the whole state
//! after the change) and an `admin_*` audit record in one [`Change`](super::Change). Deleting
//! an organization removes its memberships first, one `MembershipRemoved` each, then writes
//! `OrganizationDeleted`; deleting a user removes the user's memberships the same way.
//!
//! Adding a member share-locks the organization and user rows (PostgreSQL, MySQL), so a
//! concurrent delete of either waits for it and then removes the new membership too; SQLite has
//! one writer at a time anyway.

use serde_json::json;

use super::{
    Admin, Change,
    admin::Actor,
    admin_views::{cut_page, decode_page_token, encode_page_token, page_size},
    memberships::{UserOrganization, remove_memberships, user_organizations},
    rules::{
        check_id, check_metadata, check_organization_name, check_roles, check_slug, slug_from_name,
    },
};
use crate::{
    error::AuthError,
    storage::{
        self, EventKind, StorageError,
        audit::{AuditKind, AuditRecord},
        organizations::{
            MembershipRecord, MembershipsOf, Metadata, OrganizationChanges, OrganizationRecord,
        },
    },
};

/// A new organization.
#[derive(Debug, Default)]
pub struct NewOrganization {
    /// Display name.
    pub name: String,
    /// Slug; empty: made from the name.
    pub slug: String,
    /// Metadata.
    pub metadata: Metadata,
}

/// The fields an organization update may change (`None`: not in the mask).
#[derive(Debug, Default)]
pub struct OrganizationUpdate {
    /// New name.
    pub name: Option<String>,
    /// New slug.
    pub slug: Option<String>,
    /// New metadata, replacing the old.
    pub metadata: Option<Metadata>,
}

fn slug_taken(error: StorageError) -> AuthError {
    match error {
        StorageError::Duplicate(_) => AuthError::AlreadyExists {
            reason: "SLUG_TAKEN",
            message: "an organization with this slug exists",
        },
        other => other.into(),
    }
}

/// An organization audit record: no subject user, the organization in the detail.
fn org_audit(actor: &Actor, kind: AuditKind) -> AuditRecord<'_> {
    AuditRecord::new(kind, &actor.client).actor(&actor.user_id)
}

fn conflict(what: &'static str, current: i64) -> AuthError {
    AuthError::VersionConflict { what, current }
}

impl Admin {
    async fn live_organization(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        organization_id: &str,
        lock: bool,
    ) -> Result<OrganizationRecord, AuthError> {
        let id = check_id("organization_id", organization_id)?;
        storage::organizations::find_organization(conn, id, lock)
            .await?
            .ok_or(AuthError::NotFound("organization"))
    }

    /// Creates an organization; a taken slug is `ALREADY_EXISTS`.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn create_organization(
        &self,
        actor: &Actor,
        new: NewOrganization,
    ) -> Result<OrganizationRecord, AuthError> {
        let name = check_organization_name(&new.name)?;
        let slug = match new.slug.trim() {
            "" => slug_from_name(&name)?,
            slug => check_slug(slug)?,
        };
        check_metadata(&new.metadata)?;
        let now = crate::clock::now_millis();
        let org = OrganizationRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            slug,
            metadata: new.metadata,
            version: 1,
            created_at: now,
            updated_at: now,
            deleted: false,
        };
        let mut change = self.d().begin().await?;
        storage::organizations::insert_organization(change.db(), &org)
            .await
            .map_err(slug_taken)?;
        change.organization_event(EventKind::OrganizationCreated, &org);
        let record = org_audit(actor, AuditKind::AdminOrganizationCreated)
            .detail(json!({ "organization_id": org.id, "slug": org.slug }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %org.id, "organization created");
        Ok(org)
    }

    /// One live organization with its member count.
    pub async fn get_organization(
        &self,
        organization_id: &str,
    ) -> Result<(OrganizationRecord, u64), AuthError> {
        let conn = self.d().store.conn();
        let org = self.live_organization(conn, organization_id, false).await?;
        let members = storage::organizations::count_members(conn, &org.id).await?;
        Ok((org, members))
    }

    /// One page of live organizations by id (optionally those whose slug or name starts with
    /// `prefix`); the next page's token if there may be more.
    pub async fn list_organizations(
        &self,
        requested_size: u32,
        page_token: &str,
        prefix: Option<&str>,
    ) -> Result<(Vec<OrganizationRecord>, Option<String>), AuthError> {
        let after = decode_page_token("o", page_token)?.unwrap_or_default();
        if prefix.is_some_and(|p| p.chars().any(char::is_control)) {
            return Err(AuthError::InvalidArgument(
                "prefix must not contain control characters".into(),
            ));
        }
        let size = page_size(requested_size);
        let mut orgs = storage::organizations::find_organizations_page(
            self.d().store.conn(),
            &after,
            size + 1,
            prefix,
        )
        .await?;
        let next = cut_page(&mut orgs, size).map(|o| encode_page_token("o", &o.id));
        Ok((orgs, next))
    }

    /// Changes the fields given; with `expected_version` a concurrent change is `ABORTED`.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn update_organization(
        &self,
        actor: &Actor,
        organization_id: &str,
        update: OrganizationUpdate,
        expected_version: Option<i64>,
    ) -> Result<OrganizationRecord, AuthError> {
        let id = check_id("organization_id", organization_id)?;
        let mut changes = OrganizationChanges {
            name: update
                .name
                .as_deref()
                .map(check_organization_name)
                .transpose()?,
            slug: update
                .slug
                .as_deref()
                .map(|s| check_slug(s.trim()))
                .transpose()?,
            metadata: update.metadata,
        };
        if let Some(metadata) = &changes.metadata {
            check_metadata(metadata)?;
        }
        let mut change = self.d().begin().await?;
        let org = self.live_organization(change.db(), id, false).await?;
        if let Some(expected) = expected_version
            && expected != org.version
        {
            return Err(conflict("organization", org.version));
        }
        // Only what really changes counts; nothing changing writes nothing.
        if changes.name.as_ref() == Some(&org.name) {
            changes.name = None;
        }
        if changes.slug.as_ref() == Some(&org.slug) {
            changes.slug = None;
        }
        if changes.metadata.as_ref() == Some(&org.metadata) {
            changes.metadata = None;
        }
        let fields: Vec<&str> = [
            changes.name.as_ref().map(|_| "name"),
            changes.slug.as_ref().map(|_| "slug"),
            changes.metadata.as_ref().map(|_| "metadata"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if fields.is_empty() {
            return Ok(org);
        }
        let updated = storage::organizations::update_organization(
            change.db(),
            id,
            Some(org.version),
            &changes,
        )
        .await
        .map_err(slug_taken)?
        .ok_or_else(|| conflict("organization", org.version))?;
        change.organization_event(EventKind::OrganizationUpdated, &updated);
        let record = org_audit(actor, AuditKind::AdminOrganizationUpdated)
            .detail(json!({ "organization_id": id, "fields": fields }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %id, ?fields, "organization updated");
        Ok(updated)
    }

    /// Deletes an organization: its memberships are removed (one `MembershipRemoved` each),
    /// then it becomes a tombstone with its slug released. Returns how many memberships ended.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn delete_organization(
        &self,
        actor: &Actor,
        organization_id: &str,
    ) -> Result<usize, AuthError> {
        let mut change = self.d().begin().await?;
        let org = self
            .live_organization(change.db(), organization_id, false)
            .await?;
        let deleted = storage::organizations::delete_organization(change.db(), &org)
            .await?
            .ok_or(AuthError::NotFound("organization"))?;
        let removed = remove_memberships(&mut change, MembershipsOf::Organization(&org.id)).await?;
        change.organization_event(EventKind::OrganizationDeleted, &deleted);
        let record = org_audit(actor, AuditKind::AdminOrganizationDeleted).detail(json!({
            "organization_id": org.id,
            "slug": org.slug,
            "removed_memberships": removed,
        }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %org.id, removed_memberships = removed, "organization deleted");
        Ok(removed)
    }

    /// Adds a user to an organization with `roles`; already a member is `ALREADY_EXISTS`.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn add_member(
        &self,
        actor: &Actor,
        organization_id: &str,
        user_id: &str,
        roles: Vec<String>,
    ) -> Result<MembershipRecord, AuthError> {
        let org_id = check_id("organization_id", organization_id)?;
        let user_id = check_id("user_id", user_id)?;
        let roles = check_roles(roles)?;
        let mut change = self.d().begin().await?;
        let org = self.live_organization(change.db(), org_id, true).await?;
        if !storage::organizations::lock_live_user(change.db(), user_id).await? {
            return Err(AuthError::NotFound("user"));
        }
        let membership =
            storage::organizations::add_membership(change.db(), &org.id, user_id, &roles)
                .await?
                .ok_or(AuthError::AlreadyExists {
                    reason: "ALREADY_MEMBER",
                    message: "the user is a member of this organization already; use UpdateMember",
                })?;
        change.membership_event(EventKind::MembershipAdded, &membership);
        let record = Self::audit(actor, AuditKind::AdminMemberAdded, user_id)
            .detail(json!({ "organization_id": org.id, "roles": roles }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %org.id, user_id, "member added");
        Ok(membership)
    }

    /// The live membership, or NOT_FOUND naming what is missing.
    async fn live_membership(
        &self,
        change: &Change,
        organization_id: &str,
        user_id: &str,
    ) -> Result<MembershipRecord, AuthError> {
        let org = self
            .live_organization(change.db(), organization_id, false)
            .await?;
        let user_id = check_id("user_id", user_id)?;
        storage::organizations::find_membership(change.db(), &org.id, user_id)
            .await?
            .filter(|m| !m.removed)
            .ok_or(AuthError::NotFound("membership"))
    }

    /// Replaces a member's roles; with `expected_version` a concurrent change is `ABORTED`.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn update_member(
        &self,
        actor: &Actor,
        organization_id: &str,
        user_id: &str,
        roles: Vec<String>,
        expected_version: Option<i64>,
    ) -> Result<MembershipRecord, AuthError> {
        let roles = check_roles(roles)?;
        let mut change = self.d().begin().await?;
        let current = self
            .live_membership(&change, organization_id, user_id)
            .await?;
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(conflict("membership", current.version));
        }
        if current.roles == roles {
            return Ok(current);
        }
        let updated = storage::organizations::update_membership(
            change.db(),
            &current.organization_id,
            &current.user_id,
            Some(current.version),
            &roles,
        )
        .await?
        .ok_or_else(|| conflict("membership", current.version))?;
        change.membership_event(EventKind::MembershipChanged, &updated);
        let record = Self::audit(actor, AuditKind::AdminMemberUpdated, &updated.user_id)
            .detail(json!({ "organization_id": updated.organization_id, "roles": updated.roles }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %updated.organization_id, user_id = %updated.user_id, "member updated");
        Ok(updated)
    }

    /// Removes a member; with `expected_version` a concurrent change is `ABORTED`.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn remove_member(
        &self,
        actor: &Actor,
        organization_id: &str,
        user_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MembershipRecord, AuthError> {
        let mut change = self.d().begin().await?;
        let current = self
            .live_membership(&change, organization_id, user_id)
            .await?;
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(conflict("membership", current.version));
        }
        let removed = storage::organizations::remove_membership(
            change.db(),
            &current.organization_id,
            &current.user_id,
            Some(current.version),
        )
        .await?
        .ok_or_else(|| conflict("membership", current.version))?;
        change.membership_event(EventKind::MembershipRemoved, &removed);
        let record = Self::audit(actor, AuditKind::AdminMemberRemoved, &removed.user_id)
            .detail(json!({ "organization_id": removed.organization_id }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(organization_id = %removed.organization_id, user_id = %removed.user_id, "member removed");
        Ok(removed)
    }

    /// One page of an organization's members by user id.
    pub async fn list_members(
        &self,
        organization_id: &str,
        requested_size: u32,
        page_token: &str,
    ) -> Result<(Vec<MembershipRecord>, Option<String>), AuthError> {
        let conn = self.d().store.conn();
        let org = self.live_organization(conn, organization_id, false).await?;
        let after = decode_page_token("m", page_token)?.unwrap_or_default();
        let size = page_size(requested_size);
        let mut members =
            storage::organizations::find_members_page(conn, &org.id, &after, size + 1).await?;
        let next = cut_page(&mut members, size).map(|m| encode_page_token("m", &m.user_id));
        Ok((members, next))
    }

    /// Every live organization the user belongs to, with the membership, by organization id.
    pub async fn list_user_organizations(
        &self,
        user_id: &str,
    ) -> Result<Vec<UserOrganization>, AuthError> {
        let user = self.find_user(user_id).await?;
        user_organizations(self.d().store.conn(), &user.id).await
    }
}
