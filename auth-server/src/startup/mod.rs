//! `Application`: builds everything from `Settings`, binds the listener, and serves until a
//! shutdown signal. Tests use it with port 0 and read the port back. The background tasks
//! live in `background.rs`, owned by one `JoinSet`.

mod accounts;
mod background;
mod router;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use self::{
    accounts::account_settings,
    background::{Background, HEALTH_SERVICES, read_at_start},
    router::{router, serve},
};
use crate::{
    accept,
    apikeys::ApiKeys,
    audit_rollup::AuditRollup,
    clock,
    config::Settings,
    domain::{AccountExtras, Accounts, EventRetention, RetentionPolicy},
    events::{EventHub, FeedSettings, FeedSinks},
    keys::{KeyManager, refresh_keys},
    mail::{MailError, Mailer},
    metrics::{self, Metrics, Sources},
    mfa::{MfaCipher, MfaError},
    passwords::{HashError, HashPool},
    rate_limit::{ClientAddrResolver, RateLimiter},
    revocation::Revocations,
    service::RequestGuard,
    storage::{self, StorageError, Store},
    tls::{TlsConfig, TlsError},
    tokens::{KeyError, TokenIssuer},
};

/// Largest request message accepted; larger ones are `RESOURCE_EXHAUSTED`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message of an `ImportUsers` stream.
pub const MAX_IMPORT_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// How long the second step of an MFA login may take.
const MFA_CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

/// How long background tasks get to finish after the server stopped.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data directory could not be created.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("database")]
    Storage(#[from] StorageError),
    /// The database schema is behind and migrations were not asked for.
    #[error("database schema is not current; run `auth-server migrate up` or pass --migrate true")]
    NotMigrated,
    /// The signing keys could not be loaded.
    #[error("signing keys")]
    Keys(#[from] KeyError),
    /// The hash pool could not be built.
    #[error("password hashing: {0}")]
    Hashing(#[from] HashError),
    /// The MFA key could not be loaded.
    #[error("{0}")]
    Mfa(#[from] MfaError),
    /// The SMTP settings are unusable.
    #[error("{0}")]
    Mail(#[from] MailError),
    /// The TLS certificate, key or client CA is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reflection descriptors are broken (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The mechanisms the domain, the event feed and the background tasks share.
#[derive(Debug, Clone)]
struct Core {
    store: Store,
    hasher: HashPool,
    tokens: Arc<TokenIssuer>,
    revocations: Revocations,
    api_keys: ApiKeys,
    metrics: Metrics,
    audit_rollup: AuditRollup,
}

/// A built, bound server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    settings: Settings,
    core: Core,
    accounts: Accounts,
    keys: KeyManager,
    tls: Option<TlsConfig>,
}

/// Creates the data dir with mode 0700.
pub fn ensure_data_dir(path: &std::path::Path) -> Result<(), StartupError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StartupError::DataDir {
            path: path.to_owned(),
            source,
        })
}

/// Opens the database (creating the data dir for the SQLite default) and applies migrations
/// if `migrate`; otherwise checks they are current.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    ensure_data_dir(&settings.data_dir)?;
    let store = Store::connect_with(&settings.database_url, &settings.db_pool).await?;
    if settings.migrate {
        store.migrate_up().await?;
    } else if !store.is_migrated().await? {
        return Err(StartupError::NotMigrated);
    }
    Ok(store)
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

impl Application {
    /// Opens storage, loads keys, builds the domain, and binds the listeners.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Every connection, waiting or served, is a file descriptor: take what the system allows.
        let fd_limit = accept::raise_fd_limit();
        let mut settings = settings;
        settings.limits.max_connections =
            accept::connection_cap(settings.limits.max_connections, fd_limit);
        let store = open_store(&settings).await?;
        let keys = KeyManager::new(store.clone(), &settings.key_file, settings.access_token_ttl)?;
        keys.ensure_keys(&settings.data_dir).await?;
        let tokens = Arc::new(TokenIssuer::new(
            keys.load().await?,
            settings.issuer.clone(),
            settings.access_token_ttl,
        ));
        let hasher = HashPool::with_priority(
            &settings.hashing,
            settings.hash_threads,
            settings.hash_queue,
            settings.hash_priority,
        )?;
        let tls = settings.tls.clone().map(TlsConfig::new).transpose()?;
        let metrics = Metrics::new();
        hasher.record_waits(metrics.hash_wait());
        hasher.limit_wait(settings.hash_queue_max_wait);
        metrics.observe_store(&store, settings.db_pool.max_connections);
        let core = Core {
            audit_rollup: AuditRollup::new(store.clone()),
            store,
            hasher,
            tokens,
            revocations: Revocations::new(),
            api_keys: ApiKeys::new(settings.protection.api_key_rate),
            metrics,
        };
        let mailer = match &settings.protection.mail {
            Some(mail) => Some(Mailer::new(mail)?),
            None => None,
        };
        let accounts = Accounts::new(
            core.store.clone(),
            core.hasher.clone(),
            Arc::clone(&core.tokens),
            core.revocations.clone(),
            account_settings(&settings),
            AccountExtras {
                mfa: MfaCipher::load_or_generate(&settings.data_dir)?,
                mailer,
                metrics: core.metrics.clone(),
                api_keys: core.api_keys.clone(),
                audit_rollup: core.audit_rollup.clone(),
            },
        );
        let (listener, local_addr) = bind(settings.listen).await?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(bind(addr).await?.0),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            metrics_listener,
            settings,
            core,
            accounts,
            keys,
            tls,
        })
    }

    /// The bound address of the metrics listener, if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The password hash pool (its counter shows how many argon2 computations ran).
    pub fn hash_pool(&self) -> HashPool {
        self.core.hasher.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            listener,
            local_addr,
            metrics_listener,
            settings,
            core,
            accounts,
            keys,
            tls,
        } = self;
        let mut background = Background::new();
        // The feed reads the event head first; every revocation up to it is in the sessions
        // table, loaded next, and every later one reaches the set through the feed.
        let feed_settings = FeedSettings {
            poll_interval: settings.event_poll_interval,
            database_url: settings.database_url.clone(),
            feed_capacity: settings.event_feed_capacity,
        };
        let sinks = FeedSinks {
            revocations: core.revocations.clone(),
            api_keys: core.api_keys.clone(),
        };
        let (hub, feed) = read_at_start("event head", || {
            EventHub::start(core.store.clone(), sinks.clone(), feed_settings.clone())
        })
        .await?;
        // The API keys as of now, before the feed runs: every key change after the head it read
        // reaches the set through the feed, after this load.
        let live = || storage::api_keys::live_keys(core.store.conn(), None);
        core.api_keys.load(&read_at_start("API keys", live).await?);
        for task in feed.tasks {
            background.spawn("event feed", task);
        }
        // A session revoked longer ago than an access token lives cannot matter any more.
        let revocation_horizon = settings.access_token_ttl + Duration::from_secs(60);
        let since = clock::millis_ago(revocation_horizon);
        let revoked = || storage::sessions::find_revoked_session_ids(core.store.conn(), since);
        core.revocations
            .revoke_all(read_at_start("revoked sessions", revoked).await?);

        let (reporter, health_service) = tonic_health::server::health_reporter();
        for name in HEALTH_SERVICES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let guard = RequestGuard::new(
            ClientAddrResolver::new(settings.protection.trusted_proxies.clone()),
            RateLimiter::new(settings.protection.rate_limit),
            core.audit_rollup.clone(),
        );
        background.spawn(
            "health",
            background::check_health(core.store.clone(), reporter, settings.health_interval),
        );
        background.spawn(
            "revocation pruning",
            background::prune_revocations(core.revocations.clone(), revocation_horizon),
        );
        let lifecycle = settings.lifecycle;
        background.spawn(
            "housekeeping",
            background::housekeeping(
                accounts.clone(),
                guard.limiter().clone(),
                RetentionPolicy {
                    sessions: lifecycle.session_retention,
                    audit: settings.protection.audit_retention,
                    batch: lifecycle.prune_batch,
                },
                lifecycle.event_retention.map(|keep| {
                    let retention = EventRetention {
                        keep,
                        grace: lifecycle.event_retention_grace,
                        batch: lifecycle.prune_batch,
                    };
                    (retention, hub.clone())
                }),
                lifecycle.housekeeping_interval,
            ),
        );
        background.spawn(
            "audit rollup",
            background::flush_audit_rollup(core.audit_rollup.clone()),
        );
        background.spawn(
            "erasure",
            background::erase_due(accounts.clone(), lifecycle.housekeeping_interval),
        );
        background.spawn(
            "key reload",
            refresh_keys(
                keys,
                Arc::clone(&core.tokens),
                settings.key_refresh_interval,
            ),
        );
        if let Some(listener) = metrics_listener {
            let sources = Sources {
                hasher: core.hasher.clone(),
                revocations: core.revocations.clone(),
                events: hub.clone(),
                store: core.store.clone(),
                tokens: Arc::clone(&core.tokens),
            };
            let serve = metrics::serve(
                listener,
                core.metrics.clone(),
                sources,
                background.stopped(),
            );
            background.spawn("metrics listener", async move {
                if let Err(error) = serve.await {
                    tracing::error!(error.message = %error, "metrics listener failed");
                }
            });
        }
        if let Some(tls) = &tls {
            background.spawn("TLS reload", tls.watch());
        }

        let router = router(
            &settings,
            &core,
            accounts,
            hub.clone(),
            guard,
            health_service,
        )?;
        tracing::info!(%local_addr, registration = settings.allow_registration, "auth-server listening");
        let signal = async move {
            shutdown.await;
            // End the event streams so the graceful drain does not wait on them forever.
            hub.close();
        };
        let result = match &tls {
            Some(tls) => {
                tracing::info!(
                    client_certificates =
                        settings.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                    "TLS on"
                );
                serve(
                    router,
                    tls.incoming(listener, settings.limits.max_connections),
                    signal,
                    settings.shutdown_timeout,
                )
                .await
            }
            None => {
                let incoming =
                    accept::incoming(listener, settings.limits.max_connections, |socket, _| {
                        std::future::ready(Some(socket))
                    });
                serve(router, incoming, signal, settings.shutdown_timeout).await
            }
        };
        background.stop(BACKGROUND_GRACE).await;
        // The counts of aggregated audit records since the last flush.
        if let Err(error) = core.audit_rollup.flush().await {
            tracing::warn!(error.message = %error, "audit counts not written at shutdown");
        }
        // Also numbers the events staged by calls that finished after the sequencer stopped.
        core.store.close().await;
        tracing::info!("auth-server stopped");
        Ok(result?)
    }
}
