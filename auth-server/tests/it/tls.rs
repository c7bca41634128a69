//! TLS and mutual TLS on the gRPC listener: TLS works with the CA, plaintext is refused, a
//! client certificate is demanded under mTLS, and a replaced certificate is picked up for new
//! connections while open ones carry on.

use std::{path::Path, time::Duration};

use auth_proto::pb::{self, auth_service_client::AuthServiceClient};
use auth_server::{testkit::TestCerts, tls::TlsSettings};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::*;

fn tls_settings(certs: &TestCerts, mutual: bool) -> TlsSettings {
    TlsSettings {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: mutual.then(|| certs.ca.clone()),
        watch_interval: Duration::from_millis(100),
    }
}

async fn tls_channel(
    app: &TestApp,
    ca: &Path,
    identity: Option<&TestCerts>,
) -> Result<Channel, tonic::transport::Error> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
        .domain_name("localhost");
    if let Some(certs) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(&certs.client_cert).expect("cert"),
            std::fs::read(&certs.client_key).expect("key"),
        ));
    }
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("uri")
        .tls_config(config)?
        .connect()
        .await
}

async fn register(channel: Channel, email: &str) -> Result<pb::User, tonic::Status> {
    AuthServiceClient::new(channel)
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_works_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = TestCerts::generate(dir.path());
    let app = spawn_app_with(Db::Sqlite, |s| s.tls = Some(tls_settings(&certs, false))).await;
    let channel = tls_channel(&app, &certs.ca, None)
        .await
        .expect("TLS connects");
    let user = register(channel.clone(), "tls@example.com")
        .await
        .expect("register over TLS");
    let login = AuthServiceClient::new(channel)
        .login(pb::LoginRequest {
            email: "tls@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login over TLS")
        .into_inner();
    assert_eq!(login.user.expect("user").id, user.id);
    // Plaintext HTTP/2 to the TLS port fails.
    let plaintext = register(app.channel.clone(), "plain@example.com").await;
    assert!(plaintext.is_err(), "plaintext call answered: {plaintext:?}");
    // A client trusting another CA refuses the server.
    let other = TestCerts::generate(&dir.path().join("other"));
    let foreign = match tls_channel(&app, &other.ca, None).await {
        Ok(channel) => register(channel, "x@example.com").await.is_err(),
        Err(_) => true,
    };
    assert!(
        foreign,
        "a server certificate from an untrusted CA was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_demands_a_client_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = TestCerts::generate(dir.path());
    let app = spawn_app_with(Db::Sqlite, |s| s.tls = Some(tls_settings(&certs, true))).await;
    let without = match tls_channel(&app, &certs.ca, None).await {
        Ok(channel) => register(channel, "anon@example.com").await.is_err(),
        Err(_) => true,
    };
    assert!(without, "a client without a certificate got through");
    let channel = tls_channel(&app, &certs.ca, Some(&certs))
        .await
        .expect("mTLS connects");
    register(channel, "mtls@example.com")
        .await
        .expect("a client with a certificate is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_serves_new_connections_and_open_ones_carry_on() {
    let dir = tempfile::tempdir().expect("dir");
    let first = TestCerts::generate(&dir.path().join("first"));
    let app = spawn_app_with(Db::Sqlite, |s| s.tls = Some(tls_settings(&first, false))).await;
    let open = tls_channel(&app, &first.ca, None).await.expect("connect");
    register(open.clone(), "a@example.com")
        .await
        .expect("first cert");

    // Rotate: a certificate from a new CA is written over the configured files.
    let second = TestCerts::generate(&dir.path().join("second"));
    std::fs::copy(&second.server_key, &first.server_key).expect("key");
    std::fs::copy(&second.server_cert, &first.server_cert).expect("cert");
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(channel) = tls_channel(&app, &second.ca, None).await
            && register(channel, "b@example.com").await.is_ok()
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "new connections never got the new certificate");
    let stale = match tls_channel(&app, &first.ca, None).await {
        Ok(channel) => register(channel, "c@example.com").await.is_err(),
        Err(_) => true,
    };
    assert!(stale, "new connections still get the old certificate");
    register(open, "d@example.com")
        .await
        .expect("the connection opened before the reload still works");
}

/// `devcerts` (and the tests) write private keys for the owner only.
#[test]
fn generated_private_keys_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let mode = |p: &Path| std::fs::metadata(p).expect("written").permissions().mode() & 0o777;
    assert_eq!(mode(&certs.server_key), 0o600);
    assert_eq!(mode(&certs.client_key), 0o600);
}
