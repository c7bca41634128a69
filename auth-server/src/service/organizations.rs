//! The organization calls of `auth.v1.AdminService`, and the protobuf forms of organizations,
//! memberships and metadata (`google.protobuf.Struct` <-> a JSON object).

use auth_proto::pb;
use tonic::{Request, Response, Status};

use super::{
    admin::AdminApi, count, expected, metadata_of, non_empty, struct_pb, timestamp_millis, unsigned,
};
use crate::{
    domain::{NewOrganization, OrganizationUpdate},
    error::AuthError,
    storage::organizations::{MembershipRecord, OrganizationRecord},
};

pub(crate) fn organization_pb(org: &OrganizationRecord) -> pb::Organization {
    pb::Organization {
        id: org.id.clone(),
        name: org.name.clone(),
        slug: org.slug.clone(),
        metadata: struct_pb(&org.metadata),
        version: unsigned(org.version),
        created_at: Some(timestamp_millis(org.created_at)),
        updated_at: Some(timestamp_millis(org.updated_at)),
        deleted: org.deleted,
    }
}

pub(crate) fn membership_pb(m: &MembershipRecord) -> pb::Membership {
    pb::Membership {
        organization_id: m.organization_id.clone(),
        user_id: m.user_id.clone(),
        roles: m.roles.clone(),
        version: unsigned(m.version),
        created_at: Some(timestamp_millis(m.created_at)),
        updated_at: Some(timestamp_millis(m.updated_at)),
        removed: m.removed,
    }
}

/// Maps an `update_mask` onto the request's fields (proto or JSON spellings).
pub(crate) fn organization_update(
    req: pb::UpdateOrganizationRequest,
) -> Result<OrganizationUpdate, AuthError> {
    const PATHS: &str = "name, slug, metadata";
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(AuthError::InvalidArgument(format!(
            "update_mask must name at least one of {PATHS}"
        )));
    }
    let mut update = OrganizationUpdate::default();
    let mut metadata = Some(req.metadata);
    for path in paths {
        match path.as_str() {
            "name" => update.name = Some(req.name.clone()),
            "slug" => update.slug = Some(req.slug.clone()),
            "metadata" => {
                if let Some(value) = metadata.take() {
                    update.metadata = Some(metadata_of(value)?);
                }
            }
            other => {
                return Err(AuthError::InvalidArgument(format!(
                    "update_mask path {other:?} is not one of {PATHS}"
                )));
            }
        }
    }
    Ok(update)
}

impl AdminApi {
    pub(super) async fn create_organization_rpc(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let new = NewOrganization {
            name: req.name,
            slug: req.slug,
            metadata: metadata_of(req.metadata)?,
        };
        let org = self.admin.create_organization(&actor, new).await?;
        Ok(Response::new(pb::CreateOrganizationResponse {
            organization: Some(organization_pb(&org)),
        }))
    }

    pub(super) async fn get_organization_rpc(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        self.reader(&request).await?;
        let (org, members) = self
            .admin
            .get_organization(&request.get_ref().organization_id)
            .await?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(organization_pb(&org)),
            member_count: members,
        }))
    }

    pub(super) async fn list_organizations_rpc(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        let prefix = non_empty(&req.prefix);
        let (orgs, next) = self
            .admin
            .list_organizations(req.page_size, &req.page_token, prefix.as_deref())
            .await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: orgs.iter().map(organization_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    pub(super) async fn update_organization_rpc(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let id = req.organization_id.clone();
        let version = expected(req.expected_version)?;
        let update = organization_update(req)?;
        let org = self
            .admin
            .update_organization(&actor, &id, update, version)
            .await?;
        Ok(Response::new(pb::UpdateOrganizationResponse {
            organization: Some(organization_pb(&org)),
        }))
    }

    pub(super) async fn delete_organization_rpc(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        let actor = self.actor(&request).await?;
        let removed = self
            .admin
            .delete_organization(&actor, &request.get_ref().organization_id)
            .await?;
        Ok(Response::new(pb::DeleteOrganizationResponse {
            removed_memberships: count(removed),
        }))
    }

    pub(super) async fn add_member_rpc(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let membership = self
            .admin
            .add_member(&actor, &req.organization_id, &req.user_id, req.roles)
            .await?;
        Ok(Response::new(pb::AddMemberResponse {
            membership: Some(membership_pb(&membership)),
        }))
    }

    pub(super) async fn update_member_rpc(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Result<Response<pb::UpdateMemberResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let membership = self
            .admin
            .update_member(
                &actor,
                &req.organization_id,
                &req.user_id,
                req.roles,
                expected(req.expected_version)?,
            )
            .await?;
        Ok(Response::new(pb::UpdateMemberResponse {
            membership: Some(membership_pb(&membership)),
        }))
    }

    pub(super) async fn remove_member_rpc(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let membership = self
            .admin
            .remove_member(
                &actor,
                &req.organization_id,
                &req.user_id,
                expected(req.expected_version)?,
            )
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            membership: Some(membership_pb(&membership)),
        }))
    }

    pub(super) async fn list_members_rpc(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.reader(&request).await?;
        let req = request.into_inner();
        let (members, next) = self
            .admin
            .list_members(&req.organization_id, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            memberships: members.iter().map(membership_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    pub(super) async fn list_user_organizations_rpc(
        &self,
        request: Request<pb::ListUserOrganizationsRequest>,
    ) -> Result<Response<pb::ListUserOrganizationsResponse>, Status> {
        self.reader(&request).await?;
        let orgs = self
            .admin
            .list_user_organizations(&request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::ListUserOrganizationsResponse {
            organizations: orgs
                .iter()
                .map(|o| pb::UserOrganization {
                    organization: Some(organization_pb(&o.organization)),
                    membership: Some(membership_pb(&o.membership)),
                })
                .collect(),
        }))
    }
}
