//! `auth-server` binary: parse the command line, set up tracing, run the subcommand.

use std::process::ExitCode;

use auth_server::{
    Application, cli,
    config::{Cli, Command},
    telemetry,
};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does; a one-shot command prints its result and logs only trouble.
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    telemetry::init_with_level(cli.log_format, level);
    let code = match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("auth-server: {}", one_line(&error));
            ExitCode::FAILURE
        }
    };
    // Flush spans still in the batch (blocks on export; off the async workers).
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    code
}

/// The error and its causes on one line, each said once: a cause whose text its parent
/// already printed is skipped, and PostgreSQL's "at line N" (a line of the server's own C
/// source) is dropped.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let mut text = cause.to_string();
        while let Some(at) = text.find(" at line ") {
            let digits = text[at + 9..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            if digits == 0 {
                break;
            }
            text.replace_range(at..at + 9 + digits, "");
        }
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Prints a line of a command's result; a closed stdout (`… | head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings()?;
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate { store, action } => {
            for line in cli::migrate(&store, action).await? {
                say!("{line}");
            }
        }
        Command::CreateUser(args) => {
            let user = cli::create_user(&args.account, args.roles).await?;
            say!(
                "created user {} <{}> roles [{}]",
                user.id,
                user.email,
                user.roles.join(", ")
            );
        }
        Command::CreateAdmin(args) => {
            let user = cli::create_user(&args.account, cli::admin_roles()).await?;
            say!("created admin {} <{}>", user.id, user.email);
        }
        Command::ImportUsers(args) => {
            let report = cli::import_users(&args, |line| say!("{line}")).await?;
            let s = report.summary;
            say!(
                "imported {}, skipped {} (already there), rejected {} ({} rows/s)",
                s.imported,
                s.skipped,
                s.rejected,
                report.rows_per_sec
            );
            if let Some(path) = &args.invites_file {
                say!(
                    "invite tokens written to {}: {}",
                    path.display(),
                    report.invites
                );
            }
            if s.rejected > 0 {
                anyhow::bail!(
                    "{} rows rejected (listed above); the others were imported",
                    s.rejected
                );
            }
        }
        Command::Keys { keys, action } => {
            for line in cli::keys(&keys, action).await? {
                say!("{line}");
            }
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; draining");
}
