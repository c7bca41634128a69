//! The PostgreSQL `LISTEN` connection (tokio-postgres), with the same TLS as the pool, from the
//! same URL: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, over rustls.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no certificate files, so
//! those parameters are taken out of the URL here and turned into a rustls client config:
//! `prefer`/`require` encrypt without checking the certificate (as libpq and sqlx do),
//! `verify-ca` checks the chain against `sslrootcert`, `verify-full` also the host name.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::StreamExt as _;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::pool::{DbTls, TlsMode, describe_target};

/// Why the listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The URL's TLS parameters or files are unusable.
    #[error("event LISTEN connection to {at}: {detail}")]
    Setup {
        /// `host:port/database`.
        at: String,
        /// What is wrong.
        detail: String,
    },
    /// The connection failed or was lost.
    #[error("event LISTEN connection: {0}")]
    Connection(#[from] tokio_postgres::Error),
}

/// libpq parameters that tokio-postgres does not take; they are applied through the connector.
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The URL without its TLS parameters, for tokio-postgres.
fn without_tls_params(url: &str) -> String {
    let Some((base, _)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = url
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && !TLS_PARAMS.contains(&key)
        })
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The rustls client config for `tls` (`None` for `disable`).
fn client_config(tls: &DbTls) -> Result<Option<rustls::ClientConfig>, String> {
    if tls.mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match tls.mode {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
            Arc::new(NoVerification(Arc::clone(&provider)))
        }
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &tls.root_cert {
                Some(path) => {
                    let pem = read_file(path, "sslrootcert")?;
                    for cert in CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert.map_err(|_| {
                            format!(
                                "sslrootcert {} is not a PEM certificate file",
                                path.display()
                            )
                        })?;
                        roots.add(cert).map_err(|e| {
                            format!("sslrootcert {}: unusable certificate: {e}", path.display())
                        })?;
                    }
                    if roots.is_empty() {
                        return Err(format!(
                            "sslrootcert {} holds no certificate",
                            path.display()
                        ));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("root certificates: {e}"))?;
            if tls.mode == TlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let pem = read_file(cert, "sslcert")?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("sslcert {} is not a PEM certificate", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read_file(key, "sslkey")?)
                .map_err(|_| format!("sslkey {} is not a PEM private key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

/// `verify-ca`: the chain must verify; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require`: encrypted, certificate not checked (handshake signatures still are).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS hook over tokio-rustls.
#[derive(Clone)]
struct RustlsConnect(Arc<rustls::ClientConfig>);

/// One connection's TLS step, for the host tokio-postgres connects to.
struct RustlsConnectHost {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// The encrypted stream.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnectHost;
    type Error = rustls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnectHost, rustls::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|_| rustls::Error::General(format!("invalid host name {domain:?}")))?;
        Ok(RustlsConnectHost {
            config: Arc::clone(&self.0),
            name,
        })
    }
}

impl<S> TlsConnect<S> for RustlsConnectHost
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, Result<RustlsStream<S>, std::io::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Connects to `url` and `LISTEN`s on `channel`, calling `wake.notify()` once subscribed (to
/// catch up with anything committed before) and for every notification; returns when the
/// connection ends.
pub async fn listen(
    url: &str,
    channel: &str,
    wake: &super::CommitSignal,
) -> Result<(), ListenError> {
    let setup = |detail: String| ListenError::Setup {
        at: describe_target(url),
        detail,
    };
    let tls = DbTls::from_url(url).map_err(|e| setup(e.to_string()))?;
    let mut config: tokio_postgres::Config = without_tls_params(url)
        .parse()
        .map_err(|e: tokio_postgres::Error| setup(e.to_string()))?;
    config.ssl_mode(match tls.mode {
        TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
        TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let (client, driver) = match client_config(&tls).map_err(setup)? {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, drive(connection, tx))
        }
        Some(rustls_config) => {
            let (client, connection) = config
                .connect(RustlsConnect(Arc::new(rustls_config)))
                .await?;
            (client, drive(connection, tx))
        }
    };
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    tracing::debug!("listening for event notifications");
    wake.notify();
    while notifications.recv().await.is_some() {
        wake.notify();
    }
    drop(client);
    match driver.await {
        Ok(result) => Ok(result?),
        Err(_) => Ok(()),
    }
}

/// Drives a connection, forwarding notifications; ends with the connection.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_for_tokio_postgres() {
        assert_eq!(
            without_tls_params(
                "postgres://u@h:5/db?sslmode=verify-full&application_name=a&sslrootcert=ca.pem"
            ),
            "postgres://u@h:5/db?application_name=a"
        );
        assert_eq!(
            without_tls_params("postgres://u@h/db?sslmode=require"),
            "postgres://u@h/db"
        );
        assert_eq!(without_tls_params("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn verify_modes_need_a_readable_root_certificate() {
        let tls =
            DbTls::from_url("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .expect("params");
        let error = client_config(&tls).expect_err("missing file");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let plain = DbTls::from_url("postgres://h/db?sslmode=disable").expect("params");
        assert!(client_config(&plain).expect("config").is_none());
    }
}
