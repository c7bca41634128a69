//! `auth.v1.AuthService`.

use std::pin::Pin;

use auth_proto::pb::{self, auth_service_server::AuthService};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{bearer_token, client_info, timestamp, user_pb};
use crate::{accounts::Accounts, passwords::Password};

/// The gRPC face of [`Accounts`].
#[derive(Debug, Clone)]
pub struct AuthApi {
    accounts: Accounts,
}

impl AuthApi {
    /// Wraps the domain service.
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::UserEventsResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(name = "rpc.register", skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let user = self
            .accounts
            .register(&req.email, Password::new(req.password), &req.display_name)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_pb(&user)),
        }))
    }

    #[tracing::instrument(name = "rpc.login", skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client_info(&request);
        let req = request.into_inner();
        let s = self
            .accounts
            .login(&req.email, Password::new(req.password), &client)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            access_token: s.access.token,
            access_token_expires_at: Some(timestamp(s.access.expires_at)),
            refresh_token: s.refresh.expose().to_owned(),
            refresh_token_expires_at: Some(timestamp(s.refresh_expires_at)),
            session_id: s.session_id,
            user: Some(user_pb(&s.user)),
        }))
    }

    #[tracing::instrument(name = "rpc.refresh", skip_all)]
    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let s = self
            .accounts
            .refresh(&request.get_ref().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            access_token: s.access.token,
            access_token_expires_at: Some(timestamp(s.access.expires_at)),
            refresh_token: s.refresh.expose().to_owned(),
            refresh_token_expires_at: Some(timestamp(s.refresh_expires_at)),
            session_id: s.session_id,
            user: Some(user_pb(&s.user)),
        }))
    }

    #[tracing::instrument(name = "rpc.logout", skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let claims = self.accounts.validate(bearer_token(request.metadata())?)?;
        self.accounts.logout(&claims).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let claims = self.accounts.validate(&request.get_ref().token)?;
        Ok(Response::new(pb::ValidateResponse {
            user_id: claims.user_id,
            session_id: claims.session_id,
            roles: claims.roles,
            expires_at: Some(timestamp(claims.expires_at)),
            token_id: claims.token_id,
        }))
    }

    #[tracing::instrument(name = "rpc.change_password", skip_all)]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let claims = self.accounts.validate(bearer_token(request.metadata())?)?;
        let req = request.into_inner();
        let revoked = self
            .accounts
            .change_password(
                &claims,
                Password::new(req.current_password),
                Password::new(req.new_password),
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        let tokens = self.accounts.tokens();
        let signer = tokens.keys().signer().kid().to_owned();
        let keys = tokens
            .keys()
            .keys()
            .map(|k| pb::PublicKey {
                key_id: k.kid().to_owned(),
                paserk: k.public_paserk(),
                signing: k.kid() == signer,
            })
            .collect();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys,
            issuer: tokens.issuer().to_owned(),
        }))
    }

    type UserEventsStream = EventStream;

    async fn user_events(
        &self,
        _request: Request<pb::UserEventsRequest>,
    ) -> Result<Response<Self::UserEventsStream>, Status> {
        Err(Status::unimplemented(
            "UserEvents streaming is not available in this version yet",
        ))
    }
}
