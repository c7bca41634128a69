//! Tests of `serve`'s flags and their validation.

use clap::Parser as _;

use super::*;

#[test]
fn debug_output_hides_the_database_password() {
    let settings = Settings::for_data_dir(
        "/d".into(),
        Some("postgres://auth:s3cr3t@db:5432/auth".into()),
    );
    let printed = format!("{settings:?}");
    assert!(
        !printed.contains("s3cr3t") && printed.contains("postgres://auth:[redacted]@db:5432/auth")
    );
    assert_eq!(
        redact_url("sqlite://./auth-data/auth.db?mode=rwc"),
        "sqlite://./auth-data/auth.db?mode=rwc"
    );
}

#[test]
fn allow_registration_works_as_a_bare_flag_or_with_a_value() {
    for (args, want) in [
        (&["auth-server", "serve"][..], false),
        (&["auth-server", "serve", "--allow-registration"][..], true),
        (
            &["auth-server", "serve", "--allow-registration", "false"][..],
            false,
        ),
        (
            &["auth-server", "serve", "--allow-registration=true"][..],
            true,
        ),
    ] {
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.allow_registration, want, "{args:?}");
    }
    assert!(Cli::try_parse_from(["auth-server", "serve", "--listen", "nonsense"]).is_err());
}

fn serve_settings(args: &[&str]) -> Result<Settings, ConfigError> {
    let mut all = vec!["auth-server", "serve"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).expect("parses");
    let Command::Serve(serve) = cli.command else {
        panic!("serve")
    };
    serve.settings()
}

#[test]
fn pool_flags_reach_the_pool_settings_and_zero_means_never() {
    let settings = serve_settings(&[
        "--db-max-connections",
        "40",
        "--db-min-connections",
        "4",
        "--db-acquire-timeout-ms",
        "250",
        "--db-idle-timeout-secs",
        "0",
        "--db-max-lifetime-secs",
        "300",
    ])
    .expect("valid");
    assert_eq!(
        settings.db_pool,
        PoolSettings {
            max_connections: 40,
            min_connections: 4,
            acquire_timeout: Duration::from_millis(250),
            idle_timeout: None,
            max_lifetime: Some(Duration::from_secs(300)),
        }
    );
    let defaults = serve_settings(&[]).expect("valid");
    assert_eq!(defaults.db_pool, PoolSettings::default());
    let error = serve_settings(&["--db-max-connections", "2", "--db-min-connections", "3"])
        .expect_err("min over max");
    assert!(error.0.contains("min connections"), "{}", error.0);
    assert!(serve_settings(&["--db-acquire-timeout-ms", "0"]).is_err());
}

#[test]
fn the_event_poll_defaults_to_100_ms_on_mysql_and_1_s_elsewhere() {
    let poll = |url: &str| {
        serve_settings(&["--database-url", url])
            .expect("valid")
            .event_poll_interval
    };
    assert_eq!(poll("mysql://root@db/auth"), Duration::from_millis(100));
    assert_eq!(poll("postgres://db/auth"), Duration::from_secs(1));
    assert_eq!(poll("sqlite://x.db?mode=rwc"), Duration::from_secs(1));
    let explicit = serve_settings(&["--database-url", "mysql://db/a", "--event-poll-ms", "40"])
        .expect("valid");
    assert_eq!(explicit.event_poll_interval, Duration::from_millis(40));
}

#[test]
fn hash_queue_wait_and_priority_flags_are_checked() {
    let settings = serve_settings(&[
        "--hash-queue-max-wait-ms",
        "500",
        "--hash-priority",
        "nice",
        "--hash-nice",
        "3",
    ])
    .expect("valid");
    assert_eq!(settings.hash_queue_max_wait, Duration::from_millis(500));
    assert_eq!(settings.hash_priority, HashPriority::Nice(3));
    let nice = serve_settings(&["--hash-priority", "nice"]).expect("valid");
    assert_eq!(nice.hash_priority, HashPriority::Nice(10));
    let normal = serve_settings(&["--hash-priority", "normal"]).expect("valid");
    assert_eq!(normal.hash_priority, HashPriority::Normal);
    let defaults = serve_settings(&[]).expect("valid");
    assert_eq!(defaults.hash_queue_max_wait, Duration::from_secs(2));
    assert_eq!(defaults.hash_priority, HashPriority::Mixed(10));
    let idle = serve_settings(&["--hash-priority", "idle"]).expect("valid");
    assert_eq!(idle.hash_priority, HashPriority::Idle);
    assert!(Cli::try_parse_from(["auth-server", "serve", "--hash-priority", "low"]).is_err());
    // A wait as long as the call deadline would spend hashes on answers nobody reads.
    let error = serve_settings(&["--hash-queue-max-wait-ms", "10000"]).expect_err("too long");
    assert!(error.0.contains("deadline"), "{}", error.0);
    assert!(serve_settings(&["--hash-queue-max-wait-ms", "0"]).is_err());
    assert!(Cli::try_parse_from(["auth-server", "serve", "--hash-nice", "20"]).is_err());
}
