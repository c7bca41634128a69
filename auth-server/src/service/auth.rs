//! `auth.v1.AuthService`.

use std::pin::Pin;

use auth_proto::pb::{self, auth_service_server::AuthService};
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::{
    RequestGuard, bearer_token, count, event_pb,
    organizations::{membership_pb, organization_pb},
    timestamp, unsigned, user_pb,
};

/// Login and Refresh answer the same fields in separate messages (so each can grow).
macro_rules! session_response {
    ($message:path, $tokens:expr $(, $field:ident: $value:expr)*) => {{
        let s = $tokens;
        record_user(&s.user.id);
        $message {
            access_token: s.access.token,
            access_token_expires_at: Some(timestamp(s.access.expires_at)),
            refresh_token: s.refresh.expose().to_owned(),
            refresh_token_expires_at: Some(timestamp(s.refresh_expires_at)),
            session_id: s.session_id,
            user: Some(user_pb(&s.user)),
            $($field: $value,)*
        }
    }};
}
use crate::{
    domain::{Accounts, LoginOutcome, ROLE_ADMIN, ROLE_EVENTS_SUBSCRIBER},
    error::AuthError,
    events::{EventHub, SnapshotItem},
    observe::record_user,
    passwords::Password,
    tokens::AccessClaims,
};

/// The gRPC face of [`Accounts`] and the event feed.
#[derive(Debug, Clone)]
pub struct AuthApi {
    pub(super) accounts: Accounts,
    events: EventHub,
    pub(super) guard: RequestGuard,
}

impl AuthApi {
    /// Wraps the domain service and the event feed.
    pub fn new(accounts: Accounts, events: EventHub, guard: RequestGuard) -> Self {
        Self {
            accounts,
            events,
            guard,
        }
    }

    pub(super) fn bearer<T>(&self, request: &Request<T>) -> Result<AccessClaims, AuthError> {
        let claims = self.accounts.validate(bearer_token(request.metadata())?)?;
        record_user(&claims.user_id);
        Ok(claims)
    }

    /// The bearer must hold `admin` or `events.subscriber`.
    fn authorize_subscriber<T>(&self, request: &Request<T>) -> Result<AccessClaims, AuthError> {
        let claims = self.bearer(request)?;
        let allowed = claims
            .roles
            .iter()
            .any(|r| r == ROLE_ADMIN || r == ROLE_EVENTS_SUBSCRIBER);
        if !allowed {
            return Err(AuthError::PermissionDenied(
                "role admin or events.subscriber required",
            ));
        }
        Ok(claims)
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::UserEventsResponse, Status>> + Send + 'static>>;
type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<pb::UserSnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let user = self
            .accounts
            .register(
                &req.email,
                Password::new(req.password),
                &req.display_name,
                &client,
            )
            .await?;
        record_user(&user.id);
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let outcome = self
            .accounts
            .login(&req.email, Password::new(req.password), &client)
            .await?;
        let response = match outcome {
            LoginOutcome::Session(s) => session_response!(
                pb::LoginResponse,
                s,
                mfa_required: false,
                mfa_token: String::new(),
                mfa_token_expires_at: None
            ),
            // No profile data before the second factor: the password alone shows nothing.
            LoginOutcome::MfaRequired {
                token, expires_at, ..
            } => pb::LoginResponse {
                mfa_required: true,
                mfa_token: token.expose().to_owned(),
                mfa_token_expires_at: Some(timestamp(expires_at)),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let s = self
            .accounts
            .refresh(&request.get_ref().refresh_token, &client)
            .await?;
        Ok(Response::new(session_response!(pb::RefreshResponse, s)))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        self.get_me_rpc(request).await
    }

    async fn list_my_sessions(
        &self,
        request: Request<pb::ListMySessionsRequest>,
    ) -> Result<Response<pb::ListMySessionsResponse>, Status> {
        self.list_my_sessions_rpc(request).await
    }

    async fn revoke_my_sessions(
        &self,
        request: Request<pb::RevokeMySessionsRequest>,
    ) -> Result<Response<pb::RevokeMySessionsResponse>, Status> {
        self.revoke_my_sessions_rpc(request).await
    }

    async fn delete_my_account(
        &self,
        request: Request<pb::DeleteMyAccountRequest>,
    ) -> Result<Response<pb::DeleteMyAccountResponse>, Status> {
        self.delete_my_account_rpc(request).await
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        self.request_email_verification_rpc(request).await
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.verify_email_rpc(request).await
    }

    async fn change_email(
        &self,
        request: Request<pb::ChangeEmailRequest>,
    ) -> Result<Response<pb::ChangeEmailResponse>, Status> {
        self.change_email_rpc(request).await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        self.accounts.logout(&claims, &client).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let claims = self.accounts.validate(&request.get_ref().token)?;
        record_user(&claims.user_id);
        Ok(Response::new(pb::ValidateResponse {
            user_id: claims.user_id,
            session_id: claims.session_id,
            roles: claims.roles,
            expires_at: Some(timestamp(claims.expires_at)),
            token_id: claims.token_id,
            organizations: claims
                .memberships
                .organizations
                .into_iter()
                .map(|(organization_id, roles)| pb::OrganizationRoles {
                    organization_id,
                    roles,
                })
                .collect(),
            organizations_truncated: claims.memberships.truncated,
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let revoked = self
            .accounts
            .change_password(
                &claims,
                Password::new(req.current_password),
                Password::new(req.new_password),
                &client,
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        let (set, issuer) = self.accounts.public_keys();
        let signer = set.signer().kid().to_owned();
        let keys = set
            .keys()
            .map(|k| pb::PublicKey {
                key_id: k.kid().to_owned(),
                paserk: k.public_paserk(),
                signing: k.kid() == signer,
                valid_from: Some(timestamp(k.signing_from())),
                valid_until: k.verify_until().map(timestamp),
            })
            .collect();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys,
            issuer: issuer.to_owned(),
        }))
    }

    type UserEventsStream = EventStream;

    async fn user_events(
        &self,
        request: Request<pb::UserEventsRequest>,
    ) -> Result<Response<Self::UserEventsStream>, Status> {
        let claims = self.authorize_subscriber(&request)?;
        // A cursor past i64::MAX is past any head: it reads as i64::MAX and is refused below.
        let after = i64::try_from(request.get_ref().after_sequence).unwrap_or(i64::MAX);
        let head = self.events.head_sequence().await.map_err(AuthError::from)?;
        if after > head {
            return Err(AuthError::CursorBeyondHead { head }.into());
        }
        self.events
            .check_cursor(after, head)
            .await
            .map_err(AuthError::from)?;
        tracing::info!(user_id = %claims.user_id, after, head, "event stream opened");
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(self.events.subscribe(after)).map(|item| {
                item.map(|event| pb::UserEventsResponse {
                    event: Some(event_pb(&event)),
                })
                .map_err(|end| Status::from(AuthError::from(end)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    type UserSnapshotStream = SnapshotStream;

    async fn user_snapshot(
        &self,
        request: Request<pb::UserSnapshotRequest>,
    ) -> Result<Response<Self::UserSnapshotStream>, Status> {
        let claims = self.authorize_subscriber(&request)?;
        tracing::info!(user_id = %claims.user_id, "snapshot requested");
        let items = self.events.snapshot();
        let stream = tokio_stream::wrappers::ReceiverStream::new(items).map(|item| {
            let item = match item.map_err(|e| Status::from(AuthError::from(e)))? {
                SnapshotItem::Header {
                    as_of_sequence,
                    user_count,
                    organization_count,
                    membership_count,
                } => pb::user_snapshot_response::Item::Header(pb::SnapshotHeader {
                    as_of_sequence: unsigned(as_of_sequence),
                    user_count,
                    organization_count,
                    membership_count,
                }),
                SnapshotItem::User(user) => pb::user_snapshot_response::Item::User(user_pb(&user)),
                SnapshotItem::Organization(org) => {
                    pb::user_snapshot_response::Item::Organization(organization_pb(&org))
                }
                SnapshotItem::Membership(m) => {
                    pb::user_snapshot_response::Item::Membership(membership_pb(&m))
                }
            };
            Ok(pb::UserSnapshotResponse { item: Some(item) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let client = self.guard.admit(&request)?;
        self.accounts
            .request_password_reset(&request.get_ref().email, &client)
            .await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        let revoked = self
            .accounts
            .reset_password(&req.reset_token, Password::new(req.new_password), &client)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        let claims = self.bearer(&request)?;
        self.guard.admit(&request)?;
        let (secret, otpauth_uri) = self.accounts.begin_totp_enrollment(&claims).await?;
        Ok(Response::new(pb::BeginTotpEnrollmentResponse {
            secret,
            otpauth_uri,
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let recovery_codes = self
            .accounts
            .confirm_totp_enrollment(&claims, &request.get_ref().code, &client)
            .await?;
        Ok(Response::new(pb::ConfirmTotpEnrollmentResponse {
            recovery_codes,
        }))
    }

    async fn complete_mfa_login(
        &self,
        request: Request<pb::CompleteMfaLoginRequest>,
    ) -> Result<Response<pb::CompleteMfaLoginResponse>, Status> {
        let client = self.guard.admit(&request)?;
        let req = request.get_ref();
        let s = self
            .accounts
            .complete_mfa_login(&req.mfa_token, &req.code, &req.recovery_code, &client)
            .await?;
        Ok(Response::new(session_response!(
            pb::CompleteMfaLoginResponse,
            s
        )))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let claims = self.bearer(&request)?;
        let client = self.guard.admit(&request)?;
        let req = request.into_inner();
        self.accounts
            .disable_totp(&claims, Password::new(req.current_password), &client)
            .await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }
}
