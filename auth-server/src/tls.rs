//! TLS and mutual TLS on the gRPC listener (rustls with the `ring` provider).
//!
//! `--tls-cert`/`--tls-key` (PEM) turn TLS on; `--tls-client-ca` additionally requires every
//! client to present a certificate signed by that CA. The files are read again on `SIGHUP` and
//! when their modification time changes (checked every few seconds): new connections get the
//! new certificate, open connections carry on undisturbed. A reload that fails keeps the old
//! configuration and logs why.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{RootCertStore, ServerConfig, crypto::ring, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;

use crate::accept;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes computing at most (after the client's first bytes); beyond, connections wait for a
/// turn (a flood of handshakes cannot take every core).
const MAX_HANDSHAKES: usize = 256;

/// Where the certificate, key and optional client CA live.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS), if any.
    pub client_ca: Option<PathBuf>,
    /// How often the files' modification times are checked.
    pub watch_interval: Duration,
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{0}: no PEM certificate or private key found")]
    Pem(PathBuf),
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem(path.to_owned()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(path.to_owned()));
    }
    Ok(certs)
}

/// Builds the rustls server configuration from the files (ALPN `h2`).
pub fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key)?)
        .map_err(|_| TlsError::Pem(settings.key.clone()))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The current configuration, swapped on reload.
#[derive(Clone)]
pub struct TlsConfig {
    settings: TlsSettings,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads the files (a bad file fails start-up).
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = load(&settings)?;
        Ok(Self {
            settings,
            current: Arc::new(RwLock::new(config)),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// Reads the files again; keeps the old configuration if they are broken.
    pub fn reload(&self) -> bool {
        match load(&self.settings) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::error!(error.message = %error, "TLS reload failed; keeping the current certificate");
                false
            }
        }
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        let mut files = vec![&self.settings.cert, &self.settings.key];
        files.extend(&self.settings.client_ca);
        files
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reloads on `SIGHUP` and when a file's modification time changes.
    pub fn watch(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tls = self.clone();
        async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticker = tokio::time::interval(tls.settings.watch_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = tls.modified();
            loop {
                let hup = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = hup => {
                        tracing::info!("SIGHUP: reloading the TLS certificate");
                        tls.reload();
                        seen = tls.modified();
                    }
                    _ = ticker.tick() => {
                        let now = tls.modified();
                        if now != seen {
                            // Files are often replaced one after the other; a half-written
                            // pair fails to load and the next tick tries again.
                            if tls.reload() {
                                seen = now;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Accepts TCP connections (see [`crate::accept`]) and hands out those that complete a TLS
    /// handshake; failed handshakes (plaintext clients, missing client certificates) are closed
    /// and logged at debug level.
    pub fn incoming(
        &self,
        listener: TcpListener,
        max_connections: usize,
    ) -> tokio_stream::wrappers::ReceiverStream<
        std::io::Result<accept::Counted<TlsStream<tokio::net::TcpStream>>>,
    > {
        let tls = self.clone();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        accept::incoming(listener, max_connections, move |socket, peer| {
            let acceptor = tls.acceptor();
            let handshakes = Arc::clone(&handshakes);
            async move {
                // The client has spoken (a ClientHello is waiting): now the handshake's CPU.
                let _slot = handshakes.acquire_owned().await.ok()?;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => Some(stream),
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, error.message = %error, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
    }
}
