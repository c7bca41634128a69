//! The tracing subscriber, set up once per process.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs a human-readable subscriber on stderr, level from `RUST_LOG` (default `info`).
/// Does nothing if a subscriber is already installed.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
