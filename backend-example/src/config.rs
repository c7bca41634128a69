//! `BACKEND_*` configuration (flags and environment).

use std::{fmt, net::SocketAddr};

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
    /// The backend's own database: `sqlite://file?mode=rwc` or `postgres://…`.
    #[arg(
        long,
        env = "BACKEND_DATABASE_URL",
        default_value = "sqlite://backend.db?mode=rwc"
    )]
    pub database_url: String,
    /// Service account email (role `events.subscriber`).
    #[arg(long, env = "BACKEND_AUTH_EMAIL")]
    pub auth_email: String,
    /// Service account password (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "BACKEND_AUTH_PASSWORD", hide_env_values = true)]
    pub auth_password: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("auth_url", &self.auth_url)
            .field("auth_email", &self.auth_email)
            .field("auth_password", &"[redacted]")
            .finish_non_exhaustive()
    }
}
