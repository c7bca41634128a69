//! The gRPC router (services and the layers every call passes) and serving it until shutdown.

use std::{future::Future, time::Duration};

use auth_proto::pb::{
    admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::codec::CompressionEncoding;
use tonic::transport::{
    Server,
    server::{Connected, Router},
};
use tonic_web::GrpcWebLayer;
use tower_layer::{Identity, Stack};

use super::{Core, MAX_IMPORT_MESSAGE_BYTES, MAX_REQUEST_BYTES, StartupError};
use crate::{
    config::Settings,
    cors::CorsLayer,
    domain::Accounts,
    events::EventHub,
    limits::{ClassLimitLayer, MessageLimitLayer},
    observe::ObserveLayer,
    service::{AdminApi, AuthApi, RequestGuard},
};

/// The layers every call passes, outermost last (tonic's `Server::layer` stacks them so).
pub(super) type Layers = Stack<
    ClassLimitLayer,
    Stack<MessageLimitLayer, Stack<ObserveLayer, Stack<GrpcWebLayer, Stack<CorsLayer, Identity>>>>,
>;

/// The gRPC services behind their layers.
pub(super) fn router(
    settings: &Settings,
    core: &Core,
    accounts: Accounts,
    hub: EventHub,
    guard: RequestGuard,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<Router<Layers>, StartupError> {
    // google.rpc error details too, so grpcurl decodes the ErrorInfo reasons.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(auth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Unary messages are held to MAX_REQUEST_BYTES by ClassLimit before they reach tonic; an
    // ImportUsers message (up to 1,000 rows) may be larger.
    // gzip both ways for clients that ask; decoding limits hold for the decompressed message.
    let gzip = CompressionEncoding::Gzip;
    let admin = AdminServiceServer::new(AdminApi::new(accounts.clone(), guard.clone()))
        .max_decoding_message_size(MAX_IMPORT_MESSAGE_BYTES)
        .accept_compressed(gzip)
        .send_compressed(gzip);
    let auth = AuthServiceServer::new(AuthApi::new(accounts, hub, guard))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .accept_compressed(gzip)
        .send_compressed(gzip);
    let health = health.accept_compressed(gzip).send_compressed(gzip);
    let limits = settings.limits;
    Ok(Server::builder()
        // HTTP/1.1 too, for gRPC-Web from browsers (HTTP/2 clients are unaffected).
        .accept_http1(true)
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        // One connection opens at most this many streams at once (stalled ones included).
        .max_concurrent_streams(Some(limits.streams_per_connection))
        // Outermost: browsers' origins checked against the allowlist, preflights answered.
        .layer(CorsLayer::new(settings.cors_origins.clone()))
        // Then: gRPC-Web (HTTP/1.1 or 2, binary or base64 text) becomes plain gRPC.
        .layer(GrpcWebLayer::new())
        // Then: the request span and metrics see the final status.
        .layer(ObserveLayer::new(
            settings
                .metrics_listen
                .is_some()
                .then(|| core.metrics.clone()),
        ))
        // Then: rewrites tonic's OUT_OF_RANGE for oversized messages.
        .layer(MessageLimitLayer)
        // Then: per-class concurrency (shed at once) and deadlines.
        .layer(ClassLimitLayer::new(&limits, MAX_REQUEST_BYTES))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(admin))
}

/// Serves `incoming` (plain TCP or TLS) until `signal`; then in-flight calls get `drain` to
/// finish before the connections close.
pub(super) async fn serve<I, IO, IE>(
    router: Router<Layers>,
    incoming: I,
    signal: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        signal.await;
        let _ = draining.send(());
    };
    let deadline = async move {
        if drain_started.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = router.serve_with_incoming_shutdown(incoming, signal) => result,
        () = deadline => {
            tracing::warn!("in-flight calls did not finish within the shutdown timeout; closing");
            Ok(())
        }
    }
}
