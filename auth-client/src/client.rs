//! [`AuthClient`]: typed calls to `auth.v1.AuthService`.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use auth_proto::pb::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{AuthClientError, Principal};

/// Default deadline of unary calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the identity service. Cheap to clone (clones share one HTTP/2 connection).
///
/// The connection is made lazily on first use and re-made after failures, so building a client
/// never fails because the server is down.
///
/// ```
/// # async fn example() -> Result<(), auth_client::AuthClientError> {
/// let client = auth_client::AuthClient::connect_lazy("http://127.0.0.1:50051")?;
/// // An account with TOTP answers a challenge instead: see [`LoginOutcome`].
/// let session = client
///     .login("ann@example.com", "correct horse battery")
///     .await?
///     .into_session()?;
/// let principal = client.validate(&session.access_token).await?;
/// assert_eq!(principal.session_id, session.session_id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuthClient {
    pub(crate) inner: AuthServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    timeout: Duration,
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Tokens of a session, from [`AuthClient::login`] or [`AuthClient::refresh`]. `Debug` hides
/// the tokens.
#[derive(Clone)]
pub struct Session {
    /// Access token, for `authorization: Bearer`.
    pub access_token: String,
    /// When the access token expires.
    pub access_token_expires_at: SystemTime,
    /// Refresh token (single use).
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_token_expires_at: SystemTime,
    /// Session id.
    pub session_id: String,
    /// The user.
    pub user: Option<pb::User>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"[redacted]")
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("refresh_token", &"[redacted]")
            .field("session_id", &self.session_id)
            .field("user", &self.user)
            .finish()
    }
}

/// What [`AuthClient::login`] leads to: a session, or (for an account with TOTP) a challenge
/// to answer with [`AuthClient::complete_mfa_login`].
#[derive(Debug, Clone)]
// A login result is built once per login; boxing `Session` would change the public API.
#[allow(clippy::large_enum_variant)]
pub enum LoginOutcome {
    /// The password was enough: a new session.
    Session(Session),
    /// The account has TOTP: no session yet.
    MfaRequired(MfaChallenge),
}

impl LoginOutcome {
    /// The session; [`AuthClientError::MfaRequired`] for an account with TOTP (for callers
    /// that cannot ask a person for a code, such as a service account).
    pub fn into_session(self) -> Result<Session, AuthClientError> {
        match self {
            LoginOutcome::Session(session) => Ok(session),
            LoginOutcome::MfaRequired(_) => Err(AuthClientError::MfaRequired),
        }
    }
}

/// The second step of an MFA login. `Debug` hides the token.
#[derive(Clone)]
pub struct MfaChallenge {
    /// Single-use token for [`AuthClient::complete_mfa_login`].
    pub mfa_token: String,
    /// When it expires (5 minutes after the login).
    pub expires_at: SystemTime,
}

impl fmt::Debug for MfaChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaChallenge")
            .field("mfa_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The second factor for [`AuthClient::complete_mfa_login`]. `Debug` hides the code.
#[derive(Clone)]
pub enum MfaCode {
    /// A current 6-digit TOTP code.
    Totp(String),
    /// One of the single-use recovery codes.
    Recovery(String),
}

impl fmt::Debug for MfaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MfaCode::Totp(_) => "Totp([redacted])",
            MfaCode::Recovery(_) => "Recovery([redacted])",
        })
    }
}

pub(crate) fn system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Adds `authorization: Bearer <token>`.
pub(crate) fn with_bearer<T>(message: T, token: &str) -> Result<Request<T>, AuthClientError> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| AuthClientError::InvalidArgument("token is not valid header text".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

macro_rules! session_from {
    ($response:expr) => {{
        let r = $response;
        Session {
            access_token: r.access_token,
            access_token_expires_at: system_time(r.access_token_expires_at),
            refresh_token: r.refresh_token,
            refresh_token_expires_at: system_time(r.refresh_token_expires_at),
            session_id: r.session_id,
            user: r.user,
        }
    }};
}

/// TLS options for an `https://` auth service URL: the CA to trust (default: the system's
/// roots) and, for mutual TLS, the client certificate and key.
#[derive(Clone, Default)]
pub struct ClientTls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, AuthClientError> {
    std::fs::read(path)
        .map_err(|e| AuthClientError::InvalidArgument(format!("{what} {}: {e}", path.display())))
}

impl ClientTls {
    /// Trust the system's roots (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust only the CA certificate(s) in this PEM file.
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, AuthClientError> {
        self.ca_pem = Some(read_pem(path.as_ref(), "CA file")?);
        Ok(self)
    }

    /// Present this certificate and key (PEM files) for mutual TLS.
    pub fn identity_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self, AuthClientError> {
        self.identity = Some((
            read_pem(cert.as_ref(), "client certificate")?,
            read_pem(key.as_ref(), "client key")?,
        ));
        Ok(self)
    }

    /// Expect this name in the server certificate instead of the URL's host.
    pub fn domain_name(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

impl AuthClient {
    /// A client for `url` (`http://host:port`, or `https://…` trusting the system's roots) that
    /// connects on first use.
    pub fn connect_lazy(url: &str) -> Result<Self, AuthClientError> {
        Self::connect_lazy_with(url, &ClientTls::new())
    }

    /// Like [`connect_lazy`](Self::connect_lazy), with TLS options for an `https://` URL (a CA
    /// file, a client identity for mutual TLS). An `http://` URL ignores them.
    pub fn connect_lazy_with(url: &str, tls: &ClientTls) -> Result<Self, AuthClientError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| AuthClientError::InvalidArgument(format!("auth service URL: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tls.config())
                .map_err(|e| AuthClientError::InvalidArgument(format!("TLS: {e}")))?;
        }
        Ok(Self::from_channel(endpoint.connect_lazy()))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: AuthServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the deadline of unary calls (default 5 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        crate::trace::inject(request.metadata_mut());
        request
    }

    pub(crate) fn bearer<T>(&self, message: T, token: &str) -> Result<Request<T>, AuthClientError> {
        let mut request = with_bearer(message, token)?;
        request.set_timeout(self.timeout);
        crate::trace::inject(request.metadata_mut());
        Ok(request)
    }

    /// `Register`: creates an account (when the server allows self-registration).
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<pb::User, AuthClientError> {
        let message = pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            display_name: display_name.into(),
        };
        let response = self
            .inner
            .clone()
            .register(self.request(message))
            .await?
            .into_inner();
        response
            .user
            .ok_or_else(|| AuthClientError::Unavailable("Register answered no user".into()))
    }

    /// `Login`: a new session, or an MFA challenge for an account with TOTP.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<LoginOutcome, AuthClientError> {
        let message = pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        };
        let response = self
            .inner
            .clone()
            .login(self.request(message))
            .await?
            .into_inner();
        if response.mfa_required {
            return Ok(LoginOutcome::MfaRequired(MfaChallenge {
                expires_at: system_time(response.mfa_token_expires_at),
                mfa_token: response.mfa_token,
            }));
        }
        if response.access_token.is_empty() {
            return Err(AuthClientError::Unavailable(
                "Login answered neither tokens nor an MFA challenge".into(),
            ));
        }
        Ok(LoginOutcome::Session(session_from!(response)))
    }

    /// `CompleteMfaLogin`: the second step, with the challenge's token and a TOTP or recovery
    /// code. A wrong code is `Unauthenticated` (reason `MFA_CODE_INVALID`) and counts toward
    /// the account's lockout.
    pub async fn complete_mfa_login(
        &self,
        mfa_token: &str,
        code: MfaCode,
    ) -> Result<Session, AuthClientError> {
        let (code, recovery_code) = match code {
            MfaCode::Totp(code) => (code, String::new()),
            MfaCode::Recovery(code) => (String::new(), code),
        };
        let message = pb::CompleteMfaLoginRequest {
            mfa_token: mfa_token.into(),
            code,
            recovery_code,
        };
        let response = self
            .inner
            .clone()
            .complete_mfa_login(self.request(message))
            .await?
            .into_inner();
        Ok(session_from!(response))
    }

    /// `Refresh`: rotates the refresh token. Presenting a spent one revokes the session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AuthClientError> {
        let message = pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        let response = self
            .inner
            .clone()
            .refresh(self.request(message))
            .await?
            .into_inner();
        Ok(session_from!(response))
    }

    /// `Logout`: revokes the session of `access_token`.
    pub async fn logout(&self, access_token: &str) -> Result<(), AuthClientError> {
        self.inner
            .clone()
            .logout(self.bearer(pb::LogoutRequest {}, access_token)?)
            .await?;
        Ok(())
    }

    /// `ChangePassword`: returns how many other sessions were revoked.
    pub async fn change_password(
        &self,
        access_token: &str,
        current: &str,
        new: &str,
    ) -> Result<u32, AuthClientError> {
        let message = pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
        };
        let response = self
            .inner
            .clone()
            .change_password(self.bearer(message, access_token)?)
            .await?
            .into_inner();
        Ok(response.revoked_sessions)
    }

    /// `Validate`, uncached: prefer [`Validator`](crate::Validator) on request paths.
    pub async fn validate(&self, access_token: &str) -> Result<Principal, AuthClientError> {
        let message = pb::ValidateRequest {
            token: access_token.into(),
        };
        let r = self
            .inner
            .clone()
            .validate(self.request(message))
            .await?
            .into_inner();
        Ok(Principal {
            user_id: r.user_id,
            session_id: r.session_id,
            roles: r.roles,
            expires_at: system_time(r.expires_at),
            token_id: r.token_id,
            organizations: r
                .organizations
                .into_iter()
                .map(|o| (o.organization_id, o.roles))
                .collect(),
            organizations_truncated: r.organizations_truncated,
        })
    }

    /// `GetPublicKeys`: the keys that verify access tokens.
    pub async fn public_keys(&self) -> Result<pb::GetPublicKeysResponse, AuthClientError> {
        Ok(self
            .inner
            .clone()
            .get_public_keys(self.request(pb::GetPublicKeysRequest {}))
            .await?
            .into_inner())
    }

    /// `UserEvents`: the raw event stream after `after_sequence` (no deadline). Most callers
    /// want [`Subscriber`](crate::Subscriber), which reconnects and resumes.
    pub async fn user_events(
        &self,
        access_token: &str,
        after_sequence: u64,
    ) -> Result<tonic::Streaming<pb::UserEventsResponse>, AuthClientError> {
        let request = with_bearer(pb::UserEventsRequest { after_sequence }, access_token)?;
        Ok(self.inner.clone().user_events(request).await?.into_inner())
    }

    /// `AdminService/GetUser`: one user, for a caller with role `admin` or `events.subscriber`
    /// (a mirror fetching a user it has not seen yet). `credential` is an access token or an
    /// API key. An unknown or deleted user is an error for which
    /// [`AuthClientError::is_not_found`] holds.
    pub async fn get_user(
        &self,
        credential: &str,
        user_id: &str,
    ) -> Result<pb::User, AuthClientError> {
        let request = self.bearer(
            pb::GetUserRequest {
                user_id: user_id.to_owned(),
            },
            credential,
        )?;
        self.admin
            .clone()
            .get_user(request)
            .await?
            .into_inner()
            .details
            .and_then(|d| d.user)
            .ok_or_else(|| AuthClientError::InvalidArgument("GetUser answered no user".into()))
    }

    /// `UserSnapshot`: the raw snapshot stream (header, then users).
    pub async fn user_snapshot(
        &self,
        access_token: &str,
    ) -> Result<tonic::Streaming<pb::UserSnapshotResponse>, AuthClientError> {
        let request = with_bearer(pb::UserSnapshotRequest {}, access_token)?;
        Ok(self
            .inner
            .clone()
            .user_snapshot(request)
            .await?
            .into_inner())
    }
}
