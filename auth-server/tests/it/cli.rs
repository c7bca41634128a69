//! The `auth-server` binary's account and migration commands.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use crate::{both_backends, helpers::*};

both_backends!(
    create_user_with_role_reads_the_password_from_stdin,
    migrate_down_and_up_round_trips_the_schema,
);

pub fn auth_server(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .args(args)
        .env("AUTH_DATABASE_URL", &app.db.url)
        .env("AUTH_DATA_DIR", &app.settings.data_dir)
        .env("AUTH_ARGON2_MEMORY_KIB", "256")
        .env("AUTH_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run auth-server");
    // A command refused by argument parsing exits before reading: a broken pipe is fine.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("auth-server exits")
}

async fn create_user_with_role_reads_the_password_from_stdin(db: Db) {
    let app = spawn_app(db).await;
    let password = "service account secret";
    let out = auth_server(
        &app,
        &[
            "create-user",
            "--email",
            "svc@example.com",
            "--role",
            "events.subscriber",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "create-user failed: {stderr}");
    assert!(
        !stdout.contains(password) && !stderr.contains(password),
        "password printed"
    );

    let login = app
        .login("svc@example.com", password)
        .await
        .expect("login as the new account");
    let v = app.validate(&login.access_token).await.expect("valid");
    assert_eq!(v.roles, ["events.subscriber"]);

    let out = auth_server(
        &app,
        &[
            "create-admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ],
        "admin secret 1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let login = app
        .login("root@example.com", "admin secret 1")
        .await
        .expect("admin login");
    assert_eq!(login.user.expect("user").roles, ["admin"]);

    // Refusals: duplicate, bad role, no password, short password. Each exits non-zero.
    for (args, stdin) in [
        (
            &[
                "create-user",
                "--email",
                "svc@example.com",
                "--password-stdin",
            ][..],
            "another password\n",
        ),
        (
            &[
                "create-user",
                "--email",
                "x@example.com",
                "--role",
                "Bad Role",
                "--password-stdin",
            ][..],
            "long enough pw\n",
        ),
        (
            &[
                "create-user",
                "--email",
                "y@example.com",
                "--password-stdin",
            ][..],
            "",
        ),
        (
            &[
                "create-user",
                "--email",
                "z@example.com",
                "--password-stdin",
            ][..],
            "short\n",
        ),
        (
            &["create-user", "--email", "w@example.com"][..],
            "long enough pw\n",
        ),
    ] {
        let out = auth_server(&app, args, stdin);
        assert!(!out.status.success(), "{args:?} should fail");
    }

    let out = auth_server(&app, &["migrate", "status"], "");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied m20261126_000001_core"));
}

async fn migrate_down_and_up_round_trips_the_schema(db: Db) {
    let mut app = spawn_app(db).await;
    app.register("kept@example.com", PASSWORD)
        .await
        .expect("register");
    app.stop().await;

    let status = |app: &TestApp| {
        let out = auth_server(app, &["migrate", "status"], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    const ALL: [&str; 3] = [
        "m20261126_000001_core",
        "m20261126_000002_protection",
        "m20261126_000003_signing_keys",
    ];
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("applied {m}"))),
        "{now}"
    );
    // One step down undoes only the newest migration.
    let out = auth_server(&app, &["migrate", "down"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(now.contains("applied m20261126_000002_protection"), "{now}");
    assert!(
        now.contains("pending m20261126_000003_signing_keys"),
        "{now}"
    );
    let out = auth_server(&app, &["migrate", "down", "--steps", "10"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("pending {m}"))),
        "{now}"
    );
    let out = auth_server(&app, &["migrate", "up"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = status(&app);
    assert!(
        ALL.iter().all(|m| now.contains(&format!("applied {m}"))),
        "{now}"
    );

    // The schema is back and empty: the server starts, the old account is gone.
    let app = app.restart().await;
    assert!(app.login("kept@example.com", PASSWORD).await.is_err());
    app.register("kept@example.com", PASSWORD)
        .await
        .expect("register again");
}
