//! The Validator's cache, coalescing, negative cache, outage grace and pushed revocations.

use std::time::Duration;

use auth_client::{AuthClientError, Credentials, Subscriber};
use futures::future::join_all;

use crate::helpers::*;

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hit_needs_no_rpc() {
    let mut server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let session = server.user("hit@example.com").await;
    let validator = server.validator(LONG, Duration::ZERO);
    let first = validator
        .validate(&session.access_token)
        .await
        .expect("valid");
    assert_eq!(first.session_id, session.session_id);
    let second = validator
        .validate(&session.access_token)
        .await
        .expect("valid");
    assert_eq!(first, second);
    assert_eq!((validator.stats().misses, validator.stats().hits), (1, 1));
    // With the server gone, a fresh entry still answers (no RPC, and no grace needed).
    server.stop().await;
    validator
        .validate(&session.access_token)
        .await
        .expect("cached");
    let stats = validator.stats();
    assert_eq!((stats.misses, stats.hits, stats.grace_serves), (1, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_never_outlives_the_token_exp_even_with_longer_ttl_and_grace() {
    let mut server = Server::start(TestDatabase::Sqlite, |s| {
        s.access_token_ttl = Duration::from_secs(10)
    })
    .await;
    let session = server.user("exp@example.com").await;
    let validator = server.validator(LONG, LONG);
    validator
        .validate(&session.access_token)
        .await
        .expect("valid");
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let answer = validator.validate(&session.access_token).await;
    assert!(
        matches!(answer, Err(AuthClientError::Unavailable(_))),
        "{answer:?}"
    );
    server.resume().await;
    let answer = validator.validate(&session.access_token).await;
    assert_eq!(
        answer
            .err()
            .and_then(|e| e.reason().map(str::to_owned))
            .as_deref(),
        Some("TOKEN_EXPIRED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_lookups_of_one_token_share_one_rpc() {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let session = server.user("burst@example.com").await;
    let validator = server.validator(LONG, Duration::ZERO);
    let answers = join_all((0..100).map(|_| validator.validate(&session.access_token))).await;
    assert!(answers.iter().all(Result::is_ok));
    let stats = validator.stats();
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.coalesced + stats.hits, 99, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_negatively_cached() {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let validator = server.validator(LONG, Duration::ZERO);
    for _ in 0..3 {
        let answer = validator.validate("v4.public.garbage").await;
        let error = answer.expect_err("refused");
        assert!(error.is_denied());
        assert_eq!(error.reason(), Some("TOKEN_INVALID"));
    }
    let stats = validator.stats();
    assert_eq!((stats.misses, stats.negative_hits), (1, 2));
    let empty = validator.validate("").await.expect_err("refused");
    assert_eq!(empty.reason(), Some("TOKEN_MISSING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_grace_serves_recent_tokens_and_fails_closed_for_the_rest() {
    let mut server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let seen = server.user("seen@example.com").await;
    let unseen = server.user("unseen@example.com").await;
    let validator = server.validator(Duration::from_millis(200), Duration::from_secs(2));
    validator.validate(&seen.access_token).await.expect("valid");
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Stale but within grace: served and counted.
    validator
        .validate(&seen.access_token)
        .await
        .expect("served within grace");
    assert_eq!(validator.stats().grace_serves, 1);
    // Never seen: fails closed, as "unavailable", not "denied".
    let error = validator
        .validate(&unseen.access_token)
        .await
        .expect_err("fail closed");
    assert!(
        matches!(error, AuthClientError::Unavailable(_)) && !error.is_denied(),
        "{error:?}"
    );
    // Past grace: denied too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let error = validator
        .validate(&seen.access_token)
        .await
        .expect_err("past grace");
    assert!(matches!(error, AuthClientError::Unavailable(_)));
    assert_eq!(validator.stats().unavailable_denials, 2);

    // The server comes back on the same address: everything recovers by itself.
    server.resume().await;
    validator
        .validate(&seen.access_token)
        .await
        .expect("recovered");
    validator
        .validate(&unseen.access_token)
        .await
        .expect("recovered");
}

/// On PostgreSQL: a session revoked on the server is evicted from a subscribing validator's
/// cache within a second, while a validator without the feed keeps trusting it until its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_events_evict_cached_tokens_within_a_second() {
    let server = Server::start(TestDatabase::Postgres, |_| {}).await;
    server
        .account_with_roles("feed@example.com", &["events.subscriber"])
        .await;
    let session = server.user("victim@example.com").await;
    let pushed = server.validator(LONG, Duration::ZERO);
    let unpushed = server.validator(LONG, Duration::ZERO);
    pushed.validate(&session.access_token).await.expect("valid");
    unpushed
        .validate(&session.access_token)
        .await
        .expect("valid");

    let subscriber = Subscriber::new(
        server.client(),
        Credentials::Password {
            email: "feed@example.com".into(),
            password: PASSWORD.into(),
        },
    );
    let head = subscriber
        .snapshot()
        .await
        .expect("snapshot")
        .as_of_sequence;
    let feed = pushed.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        subscriber
            .run(
                head,
                |event| {
                    feed.apply_event(&event);
                    async { Ok::<(), std::convert::Infallible>(()) }
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
    });

    server
        .client()
        .logout(&session.access_token)
        .await
        .expect("logout");
    let started = std::time::Instant::now();
    loop {
        match pushed.validate(&session.access_token).await {
            Err(error) => {
                assert_eq!(error.reason(), Some("SESSION_REVOKED"));
                break;
            }
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "revocation did not reach the cache"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(pushed.stats().evictions >= 1);
    // Without the feed the entry stays trusted until its TTL: this is what the feed is for.
    unpushed
        .validate(&session.access_token)
        .await
        .expect("still cached without the feed");
    let _ = stop.send(());
    task.await.expect("task").expect("subscriber");
}

/// Offline mode: no Validate RPC at all; a key rotation on the server is picked up through
/// `GetPublicKeys`; revocation comes from events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_verifies_locally_and_follows_a_key_rotation() {
    let server = Server::start(TestDatabase::Sqlite, |s| {
        s.key_refresh_interval = Duration::from_millis(100);
    })
    .await;
    let before = server.user("offline@example.com").await;
    let validator = auth_client::Validator::builder(server.client())
        .ttl(LONG)
        .offline(true)
        .key_refetch_interval(Duration::ZERO)
        .build();
    let principal = validator
        .validate(&before.access_token)
        .await
        .expect("valid offline");
    assert_eq!(principal.session_id, before.session_id);

    // Rotate while the server runs, as `auth-server keys rotate --activate-in-secs 0` does.
    server.rotate_key().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = server
        .client()
        .login("offline@example.com", PASSWORD)
        .await
        .expect("login")
        .into_session()
        .expect("no MFA on this account");
    assert_ne!(
        after.access_token.rsplit('.').next(),
        before.access_token.rsplit('.').next(),
        "new kid"
    );

    validator
        .validate(&after.access_token)
        .await
        .expect("new key fetched and verified");
    validator
        .validate(&before.access_token)
        .await
        .expect("old key still verifies");
    // A token from an unrelated server (another key) is refused.
    let other = Server::start(TestDatabase::Sqlite, |_| {}).await;
    let foreign = other.user("offline@example.com").await;
    let error = validator
        .validate(&foreign.access_token)
        .await
        .expect_err("foreign key");
    assert_eq!(error.reason(), Some("TOKEN_INVALID"));

    // Revocation arrives as an event.
    server
        .client()
        .logout(&after.access_token)
        .await
        .expect("logout");
    validator
        .validate(&after.access_token)
        .await
        .expect("offline does not ask the server");
    validator.apply_event(&auth_client::pb::UserEvent {
        sequence: 99,
        kind: auth_client::pb::UserEventKind::SessionRevoked.into(),
        session_id: after.session_id.clone(),
        ..Default::default()
    });
    let error = validator
        .validate(&after.access_token)
        .await
        .expect_err("revoked by event");
    assert_eq!(error.reason(), Some("SESSION_REVOKED"));
    assert_eq!(
        validator.stats().misses,
        0,
        "offline mode sent a Validate RPC"
    );
}

/// An `https://` auth service with mutual TLS: a client with the CA and its certificate is
/// served; one without a certificate cannot decide and fails closed (`Unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_works_over_mutual_tls_and_fails_closed_without_a_client_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = auth_server::testkit::TestCerts::generate(dir.path());
    let server = Server::start(TestDatabase::Sqlite, |s| {
        s.tls = Some(auth_server::tls::TlsSettings {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: Some(certs.ca.clone()),
            watch_interval: Duration::from_secs(5),
        });
    })
    .await;
    let tls = auth_client::ClientTls::new()
        .ca_file(&certs.ca)
        .expect("ca")
        .identity_files(&certs.client_cert, &certs.client_key)
        .expect("identity");
    let client = auth_client::AuthClient::connect_lazy_with(&server.tls_url(), &tls)
        .expect("client")
        .with_timeout(Duration::from_secs(2));
    client
        .register("mtls@example.com", PASSWORD, "")
        .await
        .expect("register over mTLS");
    let session = client
        .login("mtls@example.com", PASSWORD)
        .await
        .expect("login over mTLS")
        .into_session()
        .expect("no MFA on this account");
    let validator = auth_client::Validator::builder(client).build();
    let principal = validator
        .validate(&session.access_token)
        .await
        .expect("valid over mTLS");
    assert_eq!(principal.session_id, session.session_id);

    let anonymous = auth_client::AuthClient::connect_lazy_with(
        &server.tls_url(),
        &auth_client::ClientTls::new()
            .ca_file(&certs.ca)
            .expect("ca"),
    )
    .expect("client")
    .with_timeout(Duration::from_secs(2));
    let refused = auth_client::Validator::builder(anonymous)
        .build()
        .validate(&session.access_token)
        .await
        .expect_err("no client certificate");
    assert!(
        matches!(refused, AuthClientError::Unavailable(_)),
        "{refused:?}"
    );
}
