//! `Backend`: builds the database, validator, sync task and router from a [`Config`], then
//! serves until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;

use auth_client::{AuthClient, Subscriber, Validator};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    api::{AppState, router},
    config::Config,
    db,
    sync::{self, SyncStatus},
};

/// A built, bound backend.
pub struct Backend {
    listener: TcpListener,
    state: AppState,
    validator: Validator,
    subscriber: Arc<Subscriber>,
}

impl Backend {
    /// Opens and migrates the database and binds the listener. Does not need auth-server to
    /// be up: the client connects lazily and the sync retries.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Name where without the password: the part of the URL after its `@`.
        let db_at = config.database_url.rsplit('@').next().unwrap_or_default();
        let db = db::connect(&config.database_url)
            .await
            .with_context(|| format!("backend database at {db_at}"))?;
        let client = AuthClient::connect_lazy_with(&config.auth_url, &config.auth_tls()?)?
            .with_timeout(Duration::from_secs(2));
        let validator = Validator::builder(client.clone()).build();
        let subscriber = Arc::new(
            Subscriber::new(client, config.credentials()?)
                .with_backoff(Duration::from_millis(100), Duration::from_secs(5)),
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        tracing::info!(auth_url = %config.auth_url, "users mirrored from the auth service at this address");
        let state = AppState {
            db,
            sync: Arc::new(SyncStatus::default()),
            auth: Arc::clone(&subscriber),
        };
        Ok(Self {
            listener,
            state,
            validator,
            subscriber,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the API and runs the sync until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            validator,
            subscriber,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let sync_task = tokio::spawn(sync::run(
            state.db.clone(),
            subscriber,
            validator.clone(),
            Arc::clone(&state.sync),
            stopped,
        ));
        tracing::info!(addr = %listener.local_addr()?, "backend-example listening");
        let app = router(state.clone(), validator);
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = sync_task.await;
        state.db.close().await.ok();
        Ok(result?)
    }
}
