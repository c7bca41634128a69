//! The tracing subscriber, set up once per process: human-readable or JSON lines on stderr,
//! level from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt};

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the subscriber. Does nothing if one is already installed.
pub fn init_with(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Installs a human-readable subscriber (tests).
pub fn init() {
    init_with(LogFormat::Human);
}

/// Makes `span` continue the caller's trace from a W3C `traceparent` header, when trace export
/// is on; otherwise there is no trace to continue and this does nothing.
pub fn continue_trace(span: &tracing::Span, headers: &tonic::codegen::http::HeaderMap) {
    let _ = (span, headers);
}
