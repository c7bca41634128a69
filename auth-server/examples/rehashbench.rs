//! Login latency after an argon2 parameter change, known vs unknown email, wall clock.
//!
//! Users are registered under older parameters (`--old-memory-kib`, `--old-iterations`), then
//! the server restarts with the production ones (m=19456 KiB, t=2, p=1) on the same database.
//! One caller at a time, it measures: the first login of each user (verifies the old hash, then
//! re-hashes: two hashes), their second login (verifies the new hash), and a login with an unknown
//! email (a dummy hash with the current parameters). The ratio that matters for enumeration is
//! unknown / known-after-upgrade; the first login's extra cost is the price of the upgrade.
//!
//! `cargo run --release -p auth-server --example rehashbench -- --users 30`

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{Application, Settings, passwords::HashingSettings};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Users (each logs in twice; as many unknown-email logins).
    #[arg(long, default_value_t = 30)]
    users: usize,
    /// argon2 memory of the old parameters, KiB.
    #[arg(long, default_value_t = 8192)]
    old_memory_kib: u32,
    /// argon2 iterations of the old parameters.
    #[arg(long, default_value_t = 1)]
    old_iterations: u32,
}

const PASSWORD: &str = "correct horse battery";

async fn serve(
    settings: Settings,
) -> anyhow::Result<(
    AuthServiceClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = AuthServiceClient::new(channel);
    Ok((client, stop, handle))
}

async fn login(
    client: &mut AuthServiceClient<tonic::transport::Channel>,
    email: &str,
) -> (Duration, bool) {
    let start = Instant::now();
    let ok = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .is_ok();
    (start.elapsed(), ok)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_data_dir(dir.path().join("data"), None);
    settings.allow_registration = true;
    settings.protection.rate_limit = None;
    let current = settings.hashing;
    settings.hashing = HashingSettings {
        memory_kib: args.old_memory_kib,
        iterations: args.old_iterations,
        ..current
    };
    let (mut client, stop, handle) = serve(settings.clone()).await?;
    for i in 0..args.users {
        client
            .register(pb::RegisterRequest {
                email: format!("user{i}@example.com"),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await?;
    }
    let _ = stop.send(());
    handle.await?;

    settings.hashing = current;
    settings.listen = "127.0.0.1:0".parse()?;
    let (mut client, stop, handle) = serve(settings).await?;
    let (mut first, mut second, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.users {
        let email = format!("user{i}@example.com");
        let (t, ok) = login(&mut client, &email).await;
        anyhow::ensure!(ok, "first login of {email}");
        first.push(t);
        let (t, ok) = login(&mut client, &format!("nobody{i}@example.com")).await;
        anyhow::ensure!(!ok, "unknown email logged in");
        unknown.push(t);
        let (t, ok) = login(&mut client, &email).await;
        anyhow::ensure!(ok, "second login of {email}");
        second.push(t);
    }
    let _ = stop.send(());
    handle.await?;
    let (f, s, u) = (median_ms(first), median_ms(second), median_ms(unknown));
    println!(
        "after m={} t={} -> m={} t={}: login p50 first (old hash + re-hash) {f:.1} ms, known after upgrade {s:.1} ms, unknown email {u:.1} ms; unknown/known = {:.2}, first/known = {:.2} ({} users)",
        args.old_memory_kib,
        args.old_iterations,
        current.memory_kib,
        current.iterations,
        u / s,
        f / s,
        args.users
    );
    Ok(())
}
