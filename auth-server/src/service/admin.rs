//! `auth.v1.AdminService`: every call authenticates the bearer as a current admin, then
//! decodes, calls the admin domain, and encodes.

use auth_proto::pb::{self, admin_service_server::AdminService};
use tonic::{Request, Response, Status};

use super::{
    RequestGuard, bearer_token, count, millis_of, non_empty, timestamp, timestamp_millis, unsigned,
    user_pb,
};
use crate::{
    domain::{Accounts, Actor, Admin, CreateUser, ROLE_ADMIN, ROLE_EVENTS_SUBSCRIBER, UserUpdate},
    error::AuthError,
    passwords::Password,
    storage::{api_keys::ApiKeyRecord, audit::AuditFilter, users::UserFilter},
};

/// The gRPC face of [`Admin`].
#[derive(Debug, Clone)]
pub struct AdminApi {
    accounts: Accounts,
    pub(super) admin: Admin,
    guard: RequestGuard,
}

impl AdminApi {
    /// Wraps the account domain.
    pub fn new(accounts: Accounts, guard: RequestGuard) -> Self {
        Self {
            admin: accounts.admin(),
            accounts,
            guard,
        }
    }

    /// An admin, or a subscriber (role `events.subscriber`) for the reads a mirror needs.
    pub(super) async fn reader<T>(&self, request: &Request<T>) -> Result<(), AuthError> {
        let claims = self.accounts.validate(bearer_token(request.metadata())?)?;
        if claims.roles.iter().any(|r| r == ROLE_ADMIN) {
            crate::observe::record_user(&claims.user_id);
            self.admin
                .authorize(claims, self.guard.admit(request)?)
                .await?;
            return Ok(());
        }
        if claims.roles.iter().any(|r| r == ROLE_EVENTS_SUBSCRIBER) {
            crate::observe::record_user(&claims.user_id);
            return Ok(());
        }
        Err(AuthError::PermissionDenied(
            "role admin or events.subscriber required",
        ))
    }

    pub(super) async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, AuthError> {
        let claims = self.accounts.validate(bearer_token(request.metadata())?)?;
        crate::observe::record_user(&claims.user_id);
        self.admin
            .authorize(claims, self.guard.admit(request)?)
            .await
    }
}

fn api_key_pb(key: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id,
        user_id: key.user_id,
        name: key.name,
        created_at: Some(timestamp_millis(key.created_at)),
        expires_at: key.expires_at.map(timestamp_millis),
        revoked_at: key.revoked_at.map(timestamp_millis),
    }
}

/// Maps an `update_mask` onto the request's fields; unknown paths are INVALID_ARGUMENT. Paths
/// are the proto field names; their JSON (lowerCamelCase) spellings are accepted too, since
/// grpcurl passes a mask written as `{"paths": [...]}` through unchanged.
pub(crate) fn user_update(req: &pb::UpdateUserRequest) -> Result<UserUpdate, AuthError> {
    let paths = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.as_slice())
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(AuthError::InvalidArgument(
            "update_mask must name at least one of email, display_name, email_verified, roles, metadata"
                .into(),
        ));
    }
    let mut update = UserUpdate::default();
    for path in paths {
        match path.as_str() {
            "email" => update.email = Some(req.email.clone()),
            "display_name" | "displayName" => update.display_name = Some(req.display_name.clone()),
            "email_verified" | "emailVerified" => update.email_verified = Some(req.email_verified),
            "roles" => update.roles = Some(req.roles.clone()),
            "metadata" => {
                update.metadata = Some(super::metadata_of(req.metadata.clone())?);
            }
            other => {
                return Err(AuthError::InvalidArgument(format!(
                    "update_mask path {other:?} is not one of email, display_name, email_verified, roles, metadata"
                )));
            }
        }
    }
    Ok(update)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        self.create_organization_rpc(request).await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        self.get_organization_rpc(request).await
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        self.list_organizations_rpc(request).await
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        self.update_organization_rpc(request).await
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        self.delete_organization_rpc(request).await
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.add_member_rpc(request).await
    }

    async fn update_member(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Result<Response<pb::UpdateMemberResponse>, Status> {
        self.update_member_rpc(request).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.remove_member_rpc(request).await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.list_members_rpc(request).await
    }

    async fn list_user_organizations(
        &self,
        request: Request<pb::ListUserOrganizationsRequest>,
    ) -> Result<Response<pb::ListUserOrganizationsResponse>, Status> {
        self.list_user_organizations_rpc(request).await
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let user = self
            .admin
            .create_service_account(&actor, &req.email, &req.display_name, req.roles)
            .await?;
        Ok(Response::new(pb::CreateServiceAccountResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn issue_api_key(
        &self,
        request: Request<pb::IssueApiKeyRequest>,
    ) -> Result<Response<pb::IssueApiKeyResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let expires_at = req.expires_at.as_ref().map(millis_of);
        let (key, record) = self
            .admin
            .issue_api_key(&actor, &req.user_id, &req.name, expires_at)
            .await?;
        Ok(Response::new(pb::IssueApiKeyResponse {
            api_key: key.expose().to_owned(),
            key: Some(api_key_pb(record)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.actor(&request).await?;
        let keys = self.admin.list_api_keys(&request.get_ref().user_id).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(api_key_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let actor = self.actor(&request).await?;
        let key = self
            .admin
            .revoke_api_key(&actor, &request.get_ref().key_id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            key: Some(api_key_pb(key)),
        }))
    }

    async fn import_users(
        &self,
        request: Request<tonic::Streaming<pb::ImportUsersRequest>>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        let actor = self.actor(&request).await?;
        let importer = self.admin.importer(&actor);
        let report = super::import::import_stream(importer, request.into_inner()).await?;
        Ok(Response::new(report))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let password = (!req.password.is_empty()).then(|| Password::new(req.password));
        let new = CreateUser {
            email: req.email,
            password,
            display_name: req.display_name,
            roles: req.roles,
            email_verified: req.email_verified,
            metadata: super::metadata_of(req.metadata)?,
        };
        let (user, invite) = self.admin.create_user(&actor, new).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_pb(&user)),
            invite_token: invite
                .as_ref()
                .map(|i| i.token.expose().to_owned())
                .unwrap_or_default(),
            invite_expires_at: invite.map(|i| timestamp(i.expires_at)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.reader(&request).await?;
        let d = self.admin.get_user(&request.get_ref().user_id).await?;
        Ok(Response::new(pb::GetUserResponse {
            details: Some(pb::UserDetails {
                user: Some(user_pb(&d.user)),
                has_password: d.has_password,
                mfa_enabled: d.mfa_enabled,
                locked_until: d.locked_until.map(timestamp_millis),
                failed_logins: d.failed_logins,
                live_sessions: count(d.live_sessions),
            }),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.actor(&request).await?;
        let req = request.into_inner();
        let filter = UserFilter {
            email_prefix: non_empty(&req.email_prefix),
            role: non_empty(&req.role),
            disabled: req.disabled,
        };
        let (users, next) = self
            .admin
            .list_users(req.page_size, &req.page_token, filter)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let update = user_update(&req)?;
        let expected = super::expected(req.expected_version)?;
        let user = self
            .admin
            .update_user(&actor, &req.user_id, update, expected)
            .await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let (user, revoked) = self
            .admin
            .disable_user(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::DisableUserResponse {
            user: Some(user_pb(&user)),
            revoked_sessions: count(revoked),
        }))
    }

    async fn enable_user(
        &self,
        request: Request<pb::EnableUserRequest>,
    ) -> Result<Response<pb::EnableUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let user = self
            .admin
            .enable_user(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::EnableUserResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let revoked = self
            .admin
            .delete_user(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.get_ref();
        let session = non_empty(&req.session_id);
        let revoked = self
            .admin
            .revoke_sessions(&actor, &req.user_id, session.as_deref())
            .await?;
        Ok(Response::new(pb::RevokeSessionsResponse {
            revoked_session_ids: revoked,
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.actor(&request).await?;
        let req = request.get_ref();
        let sessions = self
            .admin
            .list_sessions(&req.user_id, req.include_inactive)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::Session {
                    id: s.id,
                    created_at: Some(timestamp_millis(s.created_at)),
                    last_used_at: Some(timestamp_millis(s.last_used_at)),
                    expires_at: Some(timestamp_millis(s.expires_at)),
                    revoked_at: s.revoked_at.map(timestamp_millis),
                    revoked_reason: s.revoked_reason.unwrap_or_default(),
                    client_address: s.client_addr.unwrap_or_default(),
                    user_agent: s.user_agent.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let was_locked = self
            .admin
            .unlock_user(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::UnlockUserResponse { was_locked }))
    }

    async fn issue_password_reset(
        &self,
        request: Request<pb::IssuePasswordResetRequest>,
    ) -> Result<Response<pb::IssuePasswordResetResponse>, Status> {
        let actor = self.actor(&request).await?;
        let issued = self
            .admin
            .issue_password_reset(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::IssuePasswordResetResponse {
            reset_token: issued.token.expose().to_owned(),
            expires_at: Some(timestamp(issued.expires_at)),
        }))
    }

    async fn reset_user_mfa(
        &self,
        request: Request<pb::ResetUserMfaRequest>,
    ) -> Result<Response<pb::ResetUserMfaResponse>, Status> {
        let actor = self.actor(&request).await?;
        let was_enrolled = self
            .admin
            .reset_mfa(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::ResetUserMfaResponse { was_enrolled }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        self.actor(&request).await?;
        let req = request.into_inner();
        let filter = AuditFilter {
            subject_id: non_empty(&req.user_id),
            kind: non_empty(&req.kind),
            since: req.since.as_ref().map(millis_of),
            until: req.until.as_ref().map(millis_of),
        };
        let (entries, next) = self
            .admin
            .list_audit_events(req.page_size, &req.page_token, filter)
            .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: entries
                .into_iter()
                .map(|e| pb::AuditEvent {
                    id: unsigned(e.id),
                    occurred_at: Some(timestamp_millis(e.occurred_at)),
                    kind: e.kind,
                    outcome: e.outcome,
                    actor_id: e.actor_id.unwrap_or_default(),
                    subject_id: e.subject_id.unwrap_or_default(),
                    session_id: e.session_id.unwrap_or_default(),
                    client_address: e.client_addr.unwrap_or_default(),
                    user_agent: e.user_agent.unwrap_or_default(),
                    detail: e.detail.unwrap_or_default(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
