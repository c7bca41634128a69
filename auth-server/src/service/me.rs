//! The caller's own account calls of `auth.v1.AuthService`: `GetMe`, `ListMySessions`,
//! `RevokeMySessions`, `DeleteMyAccount`, `RequestEmailVerification`, `VerifyEmail`,
//! `ChangeEmail`.

use auth_proto::pb;
use tonic::{Request, Response, Status};

use super::{
    auth::AuthApi, count, non_empty, organizations::organization_pb, timestamp, timestamp_millis,
    user_pb,
};
use crate::{domain::MySessions, error::AuthError, passwords::Password};

impl AuthApi {
    pub(super) async fn get_me_rpc(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let claims = self.bearer(&request)?;
        let me = self.accounts.me(&claims).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(user_pb(&me.user)),
            last_login_at: me.last_login_at.map(timestamp_millis),
            password_changed_at: me.password_changed_at.map(timestamp_millis),
            has_password: me.password_changed_at.is_some(),
            mfa_enabled: me.mfa_enabled,
            organizations: me
                .organizations
                .iter()
                .map(|o| pb::MyOrganization {
                    organization: Some(organization_pb(&o.organization)),
                    roles: o.membership.roles.clone(),
                })
                .collect(),
        }))
    }

    pub(super) async fn list_my_sessions_rpc(
        &self,
        request: Request<pb::ListMySessionsRequest>,
    ) -> Result<Response<pb::ListMySessionsResponse>, Status> {
        let claims = self.bearer(&request)?;
        let sessions = self.accounts.my_sessions(&claims).await?;
        Ok(Response::new(pb::ListMySessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::MySession {
                    current: s.id == claims.session_id,
                    id: s.id,
                    created_at: Some(timestamp_millis(s.created_at)),
                    last_refreshed_at: Some(timestamp_millis(s.last_used_at)),
                    expires_at: Some(timestamp_millis(s.expires_at)),
                    client_address: s.client_addr.unwrap_or_default(),
                    user_agent: s.user_agent.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    pub(super) async fn revoke_my_sessions_rpc(
        &self,
        request: Request<pb::RevokeMySessionsRequest>,
    ) -> Result<Response<pb::RevokeMySessionsResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let req = request.get_ref();
        let which = match (non_empty(&req.session_id), req.all_but_current) {
            (Some(_), false) => MySessions::One(req.session_id.trim()),
            (None, true) => MySessions::AllButCurrent,
            _ => {
                return Err(AuthError::InvalidArgument(
                    "give exactly one of session_id and all_but_current".into(),
                )
                .into());
            }
        };
        let revoked = self
            .accounts
            .revoke_my_sessions(&claims, which, &client)
            .await?;
        Ok(Response::new(pb::RevokeMySessionsResponse {
            revoked_session_ids: revoked,
        }))
    }

    pub(super) async fn delete_my_account_rpc(
        &self,
        request: Request<pb::DeleteMyAccountRequest>,
    ) -> Result<Response<pb::DeleteMyAccountResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let revoked = self
            .accounts
            .delete_my_account(
                &claims,
                Password::new(req.current_password),
                &req.totp_code,
                &client,
            )
            .await?;
        Ok(Response::new(pb::DeleteMyAccountResponse {
            revoked_sessions: count(revoked),
        }))
    }
}

impl AuthApi {
    pub(super) async fn request_email_verification_rpc(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let sent = self
            .accounts
            .request_email_verification(&claims, &client)
            .await?;
        Ok(Response::new(pb::RequestEmailVerificationResponse {
            email: sent.email,
            expires_at: Some(timestamp(sent.expires_at)),
        }))
    }

    pub(super) async fn verify_email_rpc(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let user = self
            .accounts
            .verify_email(&request.get_ref().token, &client)
            .await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(user_pb(&user)),
        }))
    }

    pub(super) async fn change_email_rpc(
        &self,
        request: Request<pb::ChangeEmailRequest>,
    ) -> Result<Response<pb::ChangeEmailResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let changed = self
            .accounts
            .change_email(
                &claims,
                Password::new(req.current_password),
                &req.new_email,
                &client,
            )
            .await?;
        Ok(Response::new(pb::ChangeEmailResponse {
            user: Some(user_pb(&changed.user)),
            verification_sent: changed.verification_sent,
        }))
    }
}
