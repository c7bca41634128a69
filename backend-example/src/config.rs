//! `BACKEND_*` configuration (flags and environment).

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::Parser;

/// backend-example: a service that mirrors users from auth-server and trusts auth-client.
#[derive(Clone, Parser)]
#[command(name = "backend-example", version, about)]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "BACKEND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// auth-server gRPC URL.
    #[arg(
        long,
        env = "BACKEND_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// The backend's own database: `sqlite://file?mode=rwc`, `postgres://…` or `mysql://…`.
    #[arg(
        long,
        env = "BACKEND_DATABASE_URL",
        default_value = "sqlite://backend.db?mode=rwc"
    )]
    pub database_url: String,
    /// The service account's API key (role `events.subscriber`; from `AdminService/IssueApiKey`):
    /// preferred over an email and password, since no lockout of an email can stop it.
    #[arg(long, env = "BACKEND_AUTH_API_KEY", hide_env_values = true)]
    pub auth_api_key: Option<String>,
    /// Service account email (role `events.subscriber`), when no API key is given.
    #[arg(
        long,
        env = "BACKEND_AUTH_EMAIL",
        required_unless_present = "auth_api_key"
    )]
    pub auth_email: Option<String>,
    /// Service account password (prefer the environment variable: flags show in `ps`).
    #[arg(
        long,
        env = "BACKEND_AUTH_PASSWORD",
        hide_env_values = true,
        required_unless_present = "auth_api_key"
    )]
    pub auth_password: Option<String>,
    /// CA (PEM) that auth-server's certificate chains to, for an `https://` auth URL (default:
    /// the system's roots).
    #[arg(long, env = "BACKEND_AUTH_CA_FILE")]
    pub auth_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for auth-server's mutual TLS.
    #[arg(long, env = "BACKEND_AUTH_CLIENT_CERT", requires = "auth_client_key")]
    pub auth_client_cert: Option<PathBuf>,
    /// Client key (PEM) for auth-server's mutual TLS.
    #[arg(long, env = "BACKEND_AUTH_CLIENT_KEY", requires = "auth_client_cert")]
    pub auth_client_key: Option<PathBuf>,
}

impl Config {
    /// How the mirror authenticates: the API key if given, else email and password.
    pub fn credentials(&self) -> Result<auth_client::Credentials, auth_client::AuthClientError> {
        match (&self.auth_api_key, &self.auth_email, &self.auth_password) {
            (Some(key), _, _) => Ok(auth_client::Credentials::ApiKey(key.trim().to_owned())),
            (None, Some(email), Some(password)) => Ok(auth_client::Credentials::Password {
                email: email.clone(),
                password: password.clone(),
            }),
            _ => Err(auth_client::AuthClientError::InvalidArgument(
                "set BACKEND_AUTH_API_KEY, or BACKEND_AUTH_EMAIL and BACKEND_AUTH_PASSWORD".into(),
            )),
        }
    }

    /// TLS options for the auth-server URL.
    pub fn auth_tls(&self) -> Result<auth_client::ClientTls, auth_client::AuthClientError> {
        let mut tls = auth_client::ClientTls::new();
        if let Some(ca) = &self.auth_ca_file {
            tls = tls.ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.auth_client_cert, &self.auth_client_key) {
            tls = tls.identity_files(cert, key)?;
        }
        Ok(tls)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("auth_url", &self.auth_url)
            .field("auth_email", &self.auth_email)
            .field("auth_password", &"[redacted]")
            .field(
                "auth_api_key",
                &self.auth_api_key.as_ref().map(|_| "[redacted]"),
            )
            .field("auth_ca_file", &self.auth_ca_file)
            .field("auth_client_cert", &self.auth_client_cert)
            .finish_non_exhaustive()
    }
}
