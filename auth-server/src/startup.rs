//! `Application`: builds everything from `Settings`, binds the listener, and serves until a
//! shutdown signal. Tests use it with port 0 and read the port back.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use auth_proto::pb::{
    admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    accounts::{AccountExtras, AccountSettings, Accounts},
    config::Settings,
    events::{EventHub, FeedSettings},
    keys::{KeyManager, spawn_key_refresher},
    limits::{ClassLimitLayer, MessageLimitLayer},
    mail::{MailError, Mailer},
    metrics::{self, Metrics, Sources},
    mfa::{MfaCipher, MfaError},
    observe::ObserveLayer,
    passwords::{HashError, HashPool},
    protection::{ClientAddrResolver, RateLimiter},
    revocation::Revocations,
    service::{AdminApi, AuthApi, RequestGuard},
    storage::{self, StorageError, Store},
    tls::{TlsConfig, TlsError},
    tokens::{KeyError, TokenIssuer},
};

/// Largest request message accepted; larger ones are `RESOURCE_EXHAUSTED`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The names the health service reports on.
const HEALTH_SERVICES: [&str; 3] = ["", "auth.v1.AuthService", "auth.v1.AdminService"];

/// How long the second step of an MFA login may take.
const MFA_CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

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
    #[error("database: {0}")]
    Storage(#[from] StorageError),
    /// The database schema is behind and migrations were not asked for.
    #[error("database schema is not current; run `auth-server migrate up` or pass --migrate true")]
    NotMigrated,
    /// The signing keys could not be loaded.
    #[error("signing keys: {0}")]
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

/// A built, bound server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    accounts: Accounts,
    store: Store,
    settings: Settings,
    hash_pool: HashPool,
    keys: KeyManager,
    tokens: Arc<TokenIssuer>,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
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
    let store = Store::connect(&settings.database_url, settings.db_max_connections).await?;
    if settings.migrate {
        store.migrate_up().await?;
    } else if !store.is_migrated().await? {
        return Err(StartupError::NotMigrated);
    }
    Ok(store)
}

impl Application {
    /// Opens storage, loads keys and revocations, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = open_store(&settings).await?;
        let keys = KeyManager::new(store.clone(), &settings.key_file, settings.access_token_ttl)?;
        keys.ensure_keys(&settings.data_dir).await?;
        let tokens = Arc::new(TokenIssuer::new(
            keys.load().await?,
            settings.issuer.clone(),
            settings.access_token_ttl,
        ));
        let hasher = HashPool::new(
            &settings.hashing,
            settings.hash_threads,
            settings.hash_queue,
        )?;
        let tls = settings.tls.clone().map(TlsConfig::new).transpose()?;
        let hash_pool = hasher.clone();
        let metrics = Metrics::new();
        hasher.record_waits(metrics.hash_wait());
        let mfa = MfaCipher::load_or_generate(&settings.data_dir)?;
        let mailer = match &settings.protection.mail {
            Some(mail) => Some(Mailer::new(mail)?),
            None => None,
        };
        let revocations = Revocations::new();
        let horizon = settings.access_token_ttl + Duration::from_secs(60);
        let since = storage::now_millis() - i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
        revocations
            .revoke_all(storage::sessions::find_revoked_session_ids(store.conn(), since).await?);
        let accounts = Accounts::new(
            store.clone(),
            hasher,
            Arc::clone(&tokens),
            revocations,
            AccountSettings {
                allow_registration: settings.allow_registration,
                refresh_ttl: settings.refresh_token_ttl,
                min_password_length: settings.hashing.min_password_length,
                lockout: settings.protection.lockout,
                reset_token_ttl: settings.protection.reset_token_ttl,
                invite_ttl: settings.protection.invite_ttl,
                mfa_challenge_ttl: MFA_CHALLENGE_TTL,
                totp_issuer: settings.issuer.clone(),
            },
            AccountExtras {
                mfa,
                mailer,
                metrics: metrics.clone(),
            },
        );
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                metrics::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            accounts,
            store,
            settings,
            hash_pool,
            keys,
            tokens,
            metrics,
            metrics_listener,
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
        self.hash_pool.clone()
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
            accounts,
            store,
            settings,
            hash_pool,
            keys,
            tokens,
            metrics,
            metrics_listener,
            tls,
        } = self;
        // The feed reads the event head first; every revocation up to it is in the sessions
        // table, loaded next, and every later one reaches the set through the feed.
        let feed_settings = FeedSettings {
            poll_interval: settings.event_poll_interval,
            database_url: settings.database_url.clone(),
            feed_capacity: settings.event_feed_capacity,
        };
        let (hub, feed_tasks) =
            EventHub::start(store.clone(), accounts.revocations().clone(), feed_settings).await?;
        let horizon = settings.access_token_ttl + Duration::from_secs(60);
        let since = storage::now_millis() - i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
        accounts
            .revocations()
            .revoke_all(storage::sessions::find_revoked_session_ids(store.conn(), since).await?);

        let (reporter, health_service) = tonic_health::server::health_reporter();
        for name in HEALTH_SERVICES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let health_task = spawn_health_checker(store.clone(), reporter, settings.health_interval);
        let prune_task =
            spawn_revocation_pruner(accounts.revocations().clone(), settings.access_token_ttl);
        let guard = RequestGuard::new(
            ClientAddrResolver::new(settings.protection.trusted_proxies.clone()),
            RateLimiter::new(settings.protection.rate_limit),
        );
        let key_task =
            spawn_key_refresher(keys, Arc::clone(&tokens), settings.key_refresh_interval);
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = metrics_listener.map(|listener| {
            let sources = Sources {
                hasher: hash_pool.clone(),
                revocations: accounts.revocations().clone(),
                events: hub.clone(),
                store: store.clone(),
                tokens: Arc::clone(&tokens),
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let stopped = async {
                    let _ = metrics_stopped.await;
                };
                if let Err(error) = metrics::serve(listener, metrics, sources, stopped).await {
                    tracing::error!(error.message = %error, "metrics listener failed");
                }
            })
        });
        let housekeeping_task = spawn_housekeeping(
            store.clone(),
            guard.limiter().clone(),
            settings.protection.audit_retention,
        );

        // google.rpc error details too, so grpcurl decodes the ErrorInfo reasons.
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(auth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(auth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let admin = AdminServiceServer::new(AdminApi::new(accounts.clone(), guard.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let auth = AuthServiceServer::new(AuthApi::new(accounts, hub.clone(), guard))
            .max_decoding_message_size(MAX_REQUEST_BYTES);

        tracing::info!(%local_addr, registration = settings.allow_registration, "auth-server listening");
        let limits = settings.limits;
        let router = Server::builder()
            .http2_keepalive_interval(Some(limits.keepalive))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_nodelay(true)
            // Outermost: the request span and metrics see the final status.
            .layer(ObserveLayer::new(
                settings.metrics_listen.is_some().then(|| metrics.clone()),
            ))
            // Then: rewrites tonic's OUT_OF_RANGE for oversized messages.
            .layer(MessageLimitLayer)
            // Then: per-class concurrency (shed at once) and deadlines.
            .layer(ClassLimitLayer::new(&limits))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(admin);
        let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            // End the event streams so the graceful drain does not wait on them forever.
            hub.close();
            let _ = draining.send(());
        };
        // After the signal, in-flight calls get `shutdown_timeout` to finish.
        let deadline = async move {
            if drain_started.await.is_ok() {
                tokio::time::sleep(settings.shutdown_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let watcher = tls.as_ref().map(TlsConfig::spawn_watcher);
        let result = match &tls {
            Some(tls) => {
                tracing::info!(
                    client_certificates =
                        settings.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                    "TLS on"
                );
                let serve = router.serve_with_incoming_shutdown(tls.incoming(listener), signal);
                tokio::select! {
                    result = serve => result,
                    () = deadline => {
                        tracing::warn!("in-flight calls did not finish within the shutdown timeout; closing");
                        Ok(())
                    }
                }
            }
            None => {
                let serve =
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
                tokio::select! {
                    result = serve => result,
                    () = deadline => {
                        tracing::warn!("in-flight calls did not finish within the shutdown timeout; closing");
                        Ok(())
                    }
                }
            }
        };
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        feed_tasks.abort();
        health_task.abort();
        prune_task.abort();
        housekeeping_task.abort();
        key_task.abort();
        let _ = metrics_stop.send(());
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        store.close().await;
        tracing::info!("auth-server stopped");
        Ok(result?)
    }
}

/// Pings the database every `interval`; NOT_SERVING while it fails, SERVING again after.
fn spawn_health_checker(
    store: Store,
    reporter: HealthReporter,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healthy = matches!(
                tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()).await,
                Ok(Ok(()))
            );
            if healthy != serving {
                serving = healthy;
                let status = if healthy {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                if healthy {
                    tracing::info!("database reachable again: SERVING");
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                }
                for name in HEALTH_SERVICES {
                    reporter.set_service_status(name, status).await;
                }
            }
        }
    })
}

fn spawn_revocation_pruner(revocations: Revocations, access_ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let max_age = access_ttl + Duration::from_secs(60);
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            ticker.tick().await;
            revocations.prune(max_age);
        }
    })
}

/// Hourly: drops audit records past retention, expired reset tokens and MFA challenges, stale
/// lockout rows, and idle rate-limit buckets.
fn spawn_housekeeping(
    store: Store,
    limiter: RateLimiter,
    audit_retention: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(3600));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            limiter.prune();
            let now = storage::now_millis();
            let retention = i64::try_from(audit_retention.as_millis()).unwrap_or(i64::MAX);
            let day = 24 * 3600 * 1000;
            let conn = store.conn();
            let result = async {
                let audit =
                    storage::audit::delete_audit_before(conn, now.saturating_sub(retention))
                        .await?;
                let resets = storage::resets::delete_expired_resets(conn, now - day).await?;
                let challenges = storage::mfa::delete_expired_challenges(conn, now - day).await?;
                let throttles =
                    storage::throttle::delete_stale_throttles(conn, now - day, now).await?;
                Ok::<_, StorageError>((audit, resets, challenges, throttles))
            }
            .await;
            match result {
                Ok((0, 0, 0, 0)) => tracing::debug!("housekeeping: nothing to prune"),
                Ok((audit, resets, challenges, throttles)) => {
                    tracing::info!(
                        audit,
                        resets,
                        challenges,
                        throttles,
                        "housekeeping pruned old rows"
                    )
                }
                Err(error) => {
                    tracing::warn!(error.message = %error, error.cause_chain = ?error, "housekeeping failed; retrying next hour")
                }
            }
        }
    })
}
