//! Connection pool settings, the TLS parameters of a database URL, and what a failed connection
//! says about itself.
//!
//! TLS is configured by the URL alone, with libpq's parameters on PostgreSQL (`sslmode` =
//! `disable | prefer | require | verify-ca | verify-full`, `sslrootcert`, `sslcert`, `sslkey`)
//! and MySQL's on MySQL/MariaDB (`ssl-mode` = `disabled | preferred | required | verify_ca |
//! verify_identity`, `ssl-ca`, `ssl-cert`, `ssl-key`). The pool (sqlx, rustls) reads them
//! itself; the PostgreSQL `LISTEN` connection builds the same TLS from [`DbTls`].

use std::{path::PathBuf, time::Duration};

use sea_orm::{ConnectOptions, DbBackend, DbErr};

/// Pool sizing and connection lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long a caller waits for a free connection before the call fails UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// An idle connection above the minimum is closed after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A connection is closed and replaced after this long (`None`: never), so server-side
    /// failovers and credential rotations reach every connection.
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
        }
    }
}

impl PoolSettings {
    /// The defaults with `max_connections` connections (CLI commands and tests).
    pub fn with_max(max_connections: u32) -> Self {
        Self {
            max_connections,
            min_connections: 1.min(max_connections),
            ..Self::default()
        }
    }

    pub(super) fn apply(&self, url: &str) -> ConnectOptions {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(self.max_connections.max(1))
            .min_connections(self.min_connections.min(self.max_connections.max(1)))
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(self.acquire_timeout)
            .sqlx_logging(false);
        if let Some(idle) = self.idle_timeout {
            options.idle_timeout(idle);
        }
        if let Some(lifetime) = self.max_lifetime {
            options.max_lifetime(lifetime);
        }
        options.map_sqlx_mysql_pool_opts(|pool| pool.after_release(check_mysql_on_release));
        if backend_of(url) == Some(DbBackend::Sqlite) {
            // A SQLite connection is a file handle on the driver's own thread: nothing between
            // here and the file can drop it, so a ping before every use only costs a hand-off
            // to that thread and back. PostgreSQL and MySQL keep theirs: a server restart or a
            // failover does drop their connections.
            options.test_before_acquire(false);
        }
        options
    }
}

/// How long a MySQL connection given back to the pool may take to answer a ping.
const RELEASE_CHECK: Duration = Duration::from_secs(2);

/// MySQL: a connection whose query was cancelled mid-flight (a caller's deadline, a client
/// that hung up, a task stopped at shutdown) can wait forever in sqlx's own check when it is
/// given back, and its pool slot never returns: with a pool of one, the next call timed out
/// acquiring (test `a_cancelled_commit_keeps_the_change_and_its_event_together`). Ping it here
/// with a bound first; one that does not answer in time is closed and its slot freed.
fn check_mysql_on_release(
    conn: &mut sea_orm::sqlx::MySqlConnection,
    _meta: sea_orm::sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sea_orm::sqlx::Error>> {
    use sea_orm::sqlx::Connection;
    Box::pin(async move {
        match tokio::time::timeout(RELEASE_CHECK, conn.ping()).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(sea_orm::sqlx::Error::PoolTimedOut),
        }
    })
}

/// The backend a URL names, by its scheme.
pub fn backend_of(url: &str) -> Option<DbBackend> {
    let scheme = url.split(':').next()?;
    match scheme {
        "sqlite" => Some(DbBackend::Sqlite),
        "postgres" | "postgresql" => Some(DbBackend::Postgres),
        "mysql" => Some(DbBackend::MySql),
        _ => None,
    }
}

/// How (and whether) the connection to the database is encrypted and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext only.
    Disable,
    /// TLS if the server offers it, unverified; plaintext otherwise.
    Prefer,
    /// TLS, certificate not verified (libpq and sqlx `require`).
    Require,
    /// TLS, certificate chain verified against the root CA, host name not checked.
    VerifyCa,
    /// TLS, chain verified and the certificate must name the host.
    VerifyFull,
}

/// The TLS parameters of a database URL (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    /// The mode (`prefer` when the URL names none, as libpq and sqlx do).
    pub mode: TlsMode,
    /// `sslrootcert` / `ssl-ca`: the CA the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` / `ssl-cert`: client certificate.
    pub client_cert: Option<PathBuf>,
    /// `sslkey` / `ssl-key`: client key.
    pub client_key: Option<PathBuf>,
}

/// A URL's TLS parameters that this server cannot understand.
#[derive(Debug, thiserror::Error)]
#[error("database URL: {0}")]
pub struct TlsParamError(String);

/// The query parameters of a URL, percent-decoded.
pub(crate) fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl DbTls {
    /// Reads the TLS parameters of a PostgreSQL or MySQL URL.
    pub fn from_url(url: &str) -> Result<Self, TlsParamError> {
        let mysql = backend_of(url) == Some(DbBackend::MySql);
        let mut tls = DbTls {
            mode: TlsMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
        };
        for (key, value) in query_params(url) {
            match (mysql, key.as_str()) {
                (false, "sslmode") => {
                    tls.mode = match value.as_str() {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(TlsParamError(format!(
                                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                            )));
                        }
                    }
                }
                (true, "ssl-mode" | "sslmode") => {
                    tls.mode = match value.to_ascii_lowercase().as_str() {
                        "disabled" => TlsMode::Disable,
                        "preferred" => TlsMode::Prefer,
                        "required" => TlsMode::Require,
                        "verify_ca" => TlsMode::VerifyCa,
                        "verify_identity" => TlsMode::VerifyFull,
                        other => {
                            return Err(TlsParamError(format!(
                                "ssl-mode={other} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                            )));
                        }
                    }
                }
                (false, "sslrootcert") | (true, "ssl-ca") => tls.root_cert = Some(value.into()),
                (false, "sslcert") | (true, "ssl-cert") => tls.client_cert = Some(value.into()),
                (false, "sslkey") | (true, "ssl-key") => tls.client_key = Some(value.into()),
                _ => {}
            }
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            let (cert, key) = if mysql {
                ("ssl-cert", "ssl-key")
            } else {
                ("sslcert", "sslkey")
            };
            return Err(TlsParamError(format!("{cert} and {key} go together")));
        }
        Ok(tls)
    }

    /// The URL's name for the root CA parameter.
    fn root_param(url: &str) -> &'static str {
        if backend_of(url) == Some(DbBackend::MySql) {
            "ssl-ca"
        } else {
            "sslrootcert"
        }
    }
}

/// `host:port/database` of a URL: what error messages name (never the user or password).
pub fn describe_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split('?').next().unwrap_or(rest);
    rest.rsplit('@').next().unwrap_or(rest).to_owned()
}

/// What went wrong with TLS while connecting, in words that name the certificate and why; `None`
/// if the error is not about TLS.
pub fn describe_tls_failure(url: &str, error: &DbErr) -> Option<String> {
    // sea-orm's RuntimeErr does not expose the sqlx error as its source: start from it.
    let mut current: Option<&(dyn std::error::Error + 'static)> = match error {
        DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => Some(&**e),
        other => Some(other),
    };
    let mut tls_seen = false;
    while let Some(e) = current {
        if let Some(rustls_error) = e.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(url, rustls_error));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(rustls_error) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(explain_rustls(url, rustls_error));
        }
        if let Some(sqlx) = e.downcast_ref::<sea_orm::sqlx::Error>() {
            match sqlx {
                sea_orm::sqlx::Error::Tls(inner) => {
                    tls_seen = true;
                    if let Some(rustls_error) = inner.downcast_ref::<rustls::Error>() {
                        return Some(explain_rustls(url, rustls_error));
                    }
                    current = inner.source();
                    if current.is_none() {
                        return Some(format!("TLS setup failed: {inner}"));
                    }
                    continue;
                }
                sea_orm::sqlx::Error::Configuration(inner) => {
                    let text = inner.to_string();
                    if text.contains("ssl") || text.contains("TLS") || text.contains("cert") {
                        return Some(format!("TLS setup failed: {text}"));
                    }
                }
                _ => {}
            }
        }
        current = e.source();
    }
    tls_seen.then(|| "TLS setup failed".to_owned())
}

fn explain_rustls(url: &str, error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let tls = DbTls::from_url(url).ok();
    let root = tls
        .as_ref()
        .and_then(|t| t.root_cert.as_ref())
        .map(|p| format!("{}={}", DbTls::root_param(url), p.display()));
    let root = root.unwrap_or_else(|| "the built-in public roots (no root CA file given)".into());
    match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the server's certificate is not signed by a CA in {root} ({error})")
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            format!(
                "the server's certificate does not name the host in the URL ({error}); verify-full checks the name, verify-ca does not"
            )
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!("the server's certificate is outside its validity period ({error})"),
        rustls::Error::InvalidCertificate(_) => {
            format!("the server's certificate was refused ({error}); checked against {root}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the TLS handshake ({alert:?}); if it asks for a client certificate, give sslcert and sslkey"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libpq_parameters() {
        let tls = DbTls::from_url(
            "postgres://u:p@db:5432/auth?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=c.pem&sslkey=k.pem",
        )
        .expect("valid");
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.client_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(
            DbTls::from_url("postgres://db/auth").expect("valid").mode,
            TlsMode::Prefer
        );
        assert!(DbTls::from_url("postgres://db/auth?sslmode=verify").is_err());
        assert!(DbTls::from_url("postgres://db/auth?sslcert=c.pem").is_err());
    }

    #[test]
    fn reads_mysql_parameters() {
        let tls = DbTls::from_url("mysql://root@db/auth?ssl-mode=VERIFY_IDENTITY&ssl-ca=ca.pem")
            .expect("valid");
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn targets_never_show_credentials() {
        assert_eq!(
            describe_target("postgres://auth:s3cret@db.internal:5432/auth?sslmode=require"),
            "db.internal:5432/auth"
        );
        assert_eq!(
            describe_target("mysql://root@127.0.0.1:3306/auth"),
            "127.0.0.1:3306/auth"
        );
    }

    #[test]
    fn schemes_name_backends() {
        assert_eq!(backend_of("postgresql://x/y"), Some(DbBackend::Postgres));
        assert_eq!(backend_of("mysql://x/y"), Some(DbBackend::MySql));
        assert_eq!(backend_of("sqlite://x.db"), Some(DbBackend::Sqlite));
        assert_eq!(backend_of("oracle://x"), None);
    }
}
