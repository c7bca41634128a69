//! TLS to PostgreSQL, against a second cluster this test starts (`initdb`, `pg_ctl`) on its own
//! port with `ssl = on` and only `hostssl` lines in `pg_hba.conf`, with certificates from the
//! test kit.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use auth_server::{Application, Settings, testkit::TestCerts};
use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;

use crate::helpers::*;

/// A running TLS-only PostgreSQL cluster; stopped (immediately) when dropped.
struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    certs: TestCerts,
    _dir: TempDir,
}

/// The newest PostgreSQL server binaries on the machine.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool as user `postgres` when we are root (the server refuses to run as
/// root), as ourselves otherwise.
fn run_pg(bin: &Path, tool: &str, args: &[&str]) {
    let program = bin.join(tool);
    let output = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .output()
    } else {
        Command::new(&program).args(args).output()
    }
    .expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

impl TlsPostgres {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let certs = TestCerts::generate(&dir.path().join("certs"));
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).expect("socket dir");
        give_to_postgres(&run);
        let data_arg = data.to_str().expect("utf-8 path");
        let init_parent = dir.path().to_path_buf();
        give_to_postgres(&init_parent);
        run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                data_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        // The server's key and certificate inside its data dir, owned by it, key 0600.
        std::fs::copy(&certs.server_cert, data.join("server.crt")).expect("cert");
        std::fs::copy(&certs.server_key, data.join("server.key")).expect("key");
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod key");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\nmax_connections = 60\n",
            run.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // TLS only: no `host`, no `local` line; every connection must be `hostssl`.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        give_to_postgres(&data);
        let log = dir.path().join("postgres.log");
        run_pg(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data_arg,
                "-l",
                log.to_str().expect("utf-8 path"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Self {
            bin,
            data,
            port,
            certs,
            _dir: dir,
        }
    }

    /// `postgres://…@localhost:port/db?query` (the server certificate names `localhost`).
    fn url(&self, db: &str, query: &str) -> String {
        format!(
            "postgres://postgres:not-the-password@localhost:{}/{db}?{query}",
            self.port
        )
    }

    fn verify_full(&self, db: &str) -> String {
        self.url(
            db,
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                self.certs.ca.display()
            ),
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let bin = self.bin.clone();
        let _ = std::panic::catch_unwind(move || {
            run_pg(&bin, "pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
        });
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("append");
}

/// The whole error chain of a failed start, one message after another.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

async fn build_error(url: String) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::for_data_dir(dir.path().join("data"), Some(url));
    match Application::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(error) => chain(&error),
    }
}

/// verify-full works for the pool and the LISTEN connection (events cross two replicas within a
/// second with the poll turned down to 30 s, so only NOTIFY can carry them); a wrong CA is
/// refused naming the CA file; `sslmode=disable` is refused by the server; no message shows the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_postgres_verify_full_works_and_wrong_ca_or_plaintext_is_refused() {
    let pg = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("cluster");
    let admin = Database::connect(pg.url("postgres", "sslmode=require"))
        .await
        .expect("TLS admin connection");
    admin
        .execute_unprepared("CREATE DATABASE auth")
        .await
        .expect("create database");
    admin.close().await.ok();

    // verify-full: logins and events across two replicas.
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::external(pg.verify_full("auth"), Db::Postgres));
    let a = spawn_app_on(Arc::clone(&db), Arc::clone(&dir), |s| {
        s.event_poll_interval = Duration::from_secs(30);
    })
    .await;
    let b = a.spawn_detached_replica().await;
    let token = a
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let mut on_a = a
        .subscribe(&token, a.head().await)
        .await
        .expect("subscribe on A");
    let written = Instant::now();
    b.register("over-tls@example.com", PASSWORD)
        .await
        .expect("register on B");
    let event = next_event(&mut on_a, Duration::from_secs(1)).await;
    assert_eq!(
        event.user.map(|u| u.email),
        Some("over-tls@example.com".into())
    );
    eprintln!(
        "over TLS, B's event reached A after {:?}",
        written.elapsed()
    );
    let session = a
        .login("over-tls@example.com", PASSWORD)
        .await
        .expect("login over a verify-full pool");
    b.validate(&session.access_token)
        .await
        .expect("validated on the replica");
    drop(on_a);
    drop(b);
    drop(a);

    // A CA that did not sign the server's certificate.
    let other = TestCerts::generate(&dir.path().join("other-ca"));
    let wrong_ca = pg.url(
        "auth",
        &format!("sslmode=verify-full&sslrootcert={}", other.ca.display()),
    );
    let error = build_error(wrong_ca).await;
    eprintln!("wrong CA: {error}");
    assert!(
        error.contains("not signed by a CA in sslrootcert=")
            && error.contains(&other.ca.display().to_string()),
        "{error}"
    );
    assert!(
        error.contains(&format!("localhost:{}/auth", pg.port)),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");

    // Plaintext: the server's hostssl-only rules refuse it.
    let error = build_error(pg.url("auth", "sslmode=disable")).await;
    eprintln!("sslmode=disable: {error}");
    assert!(
        error.contains("refused the connection") && error.contains("no encryption"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");
    drop(db);
}

/// MySQL takes its TLS settings from the URL too: `ssl-mode=REQUIRED` against a server that
/// offers no TLS (the machine's MariaDB) is refused before any query, and says it is about TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_ssl_mode_required_without_server_tls_is_a_clear_tls_error() {
    let url = auth_server::testkit::create_mysql_database().await;
    let plain = auth_server::storage::Store::connect(&url, 1).await;
    let server_has_tls = match &plain {
        Ok(store) => {
            let row = store
                .conn()
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::MySql,
                    "SELECT @@have_ssl",
                ))
                .await
                .expect("query")
                .expect("row");
            row.try_get_by_index::<String>(0).expect("have_ssl") == "YES"
        }
        Err(error) => panic!("plain connection: {error}"),
    };
    if let Ok(store) = plain {
        store.close().await;
    }
    let required = format!("{url}?ssl-mode=REQUIRED");
    let result = auth_server::storage::Store::connect(&required, 1).await;
    if server_has_tls {
        assert!(result.is_ok(), "TLS to a server that offers it");
    } else {
        let error = chain(&result.expect_err("no TLS on the server"));
        eprintln!("ssl-mode=REQUIRED: {error}");
        assert!(error.contains("TLS"), "{error}");
    }
    let bad = format!("{url}?ssl-mode=sometimes");
    let error = chain(
        &auth_server::storage::Store::connect(&bad, 1)
            .await
            .expect_err("unknown ssl-mode"),
    );
    assert!(error.contains("ssl-mode=sometimes"), "{error}");
    auth_server::testkit::drop_mysql_database(&url);
}

/// A running TLS-only MariaDB instance (`require_secure_transport`), on its own port and data
/// dir; killed when dropped.
struct TlsMariaDb {
    port: u16,
    certs: TestCerts,
    child: std::process::Child,
    _dir: TempDir,
}

impl TlsMariaDb {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let certs = TestCerts::generate(&dir.path().join("certs"));
        let data = dir.path().join("data");
        let user = if is_root() { "mysql" } else { "" };
        let chown = |path: &Path| {
            if is_root() {
                let ok = Command::new("chown")
                    .args(["-R", "mysql:mysql"])
                    .arg(path)
                    .status()
                    .expect("chown")
                    .success();
                assert!(ok);
            }
        };
        chown(dir.path());
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if !user.is_empty() {
            install.arg(format!("--user={user}"));
        }
        let out = install.output().expect("mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        chown(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Command::new("/usr/sbin/mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--ssl-ca={}", certs.ca.display()))
            .arg(format!("--ssl-cert={}", certs.server_cert.display()))
            .arg(format!("--ssl-key={}", certs.server_key.display()))
            .arg("--require-secure-transport=ON")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if !user.is_empty() {
            server.arg(format!("--user={user}"));
        }
        let child = server.spawn().expect("mariadbd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            port,
            certs,
            child,
            _dir: dir,
        }
    }

    fn url(&self, db: &str, query: &str) -> String {
        format!("mysql://root@localhost:{}/{db}?{query}", self.port)
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MySQL over TLS: `ssl-mode=VERIFY_IDENTITY` with `ssl-ca` creates the database, serves logins
/// and carries events across two replicas; a wrong CA names the CA file; plaintext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_mariadb_verify_identity_works_and_wrong_ca_or_plaintext_is_refused() {
    let my = tokio::task::spawn_blocking(TlsMariaDb::start)
        .await
        .expect("instance");
    let verify = my.url(
        "auth",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", my.certs.ca.display()),
    );
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::external(verify, Db::Mysql));
    let a = spawn_app_on(Arc::clone(&db), Arc::clone(&dir), |_| {}).await;
    let b = a.spawn_detached_replica().await;
    let token = a
        .token_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let mut on_a = a
        .subscribe(&token, a.head().await)
        .await
        .expect("subscribe on A");
    b.register("over-tls@example.com", PASSWORD)
        .await
        .expect("register on B");
    let event = next_event(&mut on_a, Duration::from_secs(1)).await;
    assert_eq!(
        event.user.map(|u| u.email),
        Some("over-tls@example.com".into())
    );
    a.login("over-tls@example.com", PASSWORD)
        .await
        .expect("login over TLS");
    drop(on_a);
    drop(b);
    drop(a);

    let other = TestCerts::generate(&dir.path().join("other-ca"));
    let error = build_error(my.url(
        "auth",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", other.ca.display()),
    ))
    .await;
    eprintln!("wrong CA: {error}");
    assert!(
        error.contains("not signed by a CA in ssl-ca=")
            && error.contains(&other.ca.display().to_string()),
        "{error}"
    );
    let error = build_error(my.url("auth", "ssl-mode=DISABLED")).await;
    eprintln!("ssl-mode=DISABLED: {error}");
    assert!(
        error.contains(&format!("localhost:{}/auth", my.port)),
        "{error}"
    );
    drop(db);
}
