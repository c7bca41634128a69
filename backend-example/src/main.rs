//! `backend-example` binary.

use std::process::ExitCode;

use backend_example::{Backend, Config};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = async {
        let backend = Backend::build(config).await?;
        backend.run_until_stopped(shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Each cause once: drivers repeat their source's text in their own.
            let mut line = String::new();
            for cause in error.chain().map(ToString::to_string) {
                if !line.contains(&cause) {
                    line.push_str(if line.is_empty() { "" } else { ": " });
                    line.push_str(&cause);
                }
            }
            eprintln!("backend-example: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
