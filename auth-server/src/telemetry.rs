//! The tracing subscriber, set up once per process: human-readable or JSON lines on stderr,
//! level from `RUST_LOG` (default `info`), and, when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, OpenTelemetry trace export over OTLP/gRPC (service name from `OTEL_SERVICE_NAME`,
//! default `auth-server`). Incoming W3C `traceparent` headers continue the caller's trace.
//! Without the variable nothing of OpenTelemetry is installed: no cost.

use std::sync::{
    OnceLock,
    atomic::{AtomicBool, Ordering},
};

use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

static EXPORTING: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP trace pipeline, if `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable)
/// is set. Must run inside a Tokio runtime (the exporter's gRPC client lives on it).
fn otlp_provider() -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("auth-server: OTLP trace export disabled: {error}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "auth-server".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the subscriber (and the OTLP exporter when configured) with the level `info`
/// unless `RUST_LOG` says otherwise. Does nothing if a subscriber is already installed.
pub fn init_with(format: LogFormat) {
    init_with_level(format, "info");
}

/// Like [`init_with`], with `level` as the default (`warn` for the CLI's one-shot commands,
/// whose results go to standard output).
pub fn init_with_level(format: LogFormat, level: &str) {
    // sqlx reports PostgreSQL notices ("relation … already exists, skipping" from the
    // migrations' IF NOT EXISTS on every start) at INFO with the whole statement: noise.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx::postgres::notice=warn")))
    };
    let logs = match format {
        // Colour only for a person at a terminal: escape codes in files, journald or a log
        // shipper are noise.
        LogFormat::Human => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = otlp_provider();
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("auth-server"))
            .with_filter(filter())
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && let Some(provider) = provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = PROVIDER.set(provider);
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces over OTLP");
    }
}

/// Installs a human-readable subscriber (tests).
pub fn init() {
    init_with(LogFormat::Human);
}

/// Flushes and stops trace export (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        eprintln!("auth-server: flushing traces failed: {error}");
    }
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the caller's trace from a W3C `traceparent` header, when trace export
/// is on (otherwise there is no trace to continue).
pub fn continue_trace(span: &tracing::Span, headers: &tonic::codegen::http::HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}
