//! In-process costs of the client, each next to its baseline in the same run:
//! - a cached `Validator::validate` hit vs a bare moka `get` of the same key and value types,
//!   and the server's in-memory API key check (`ApiKeys::check`: SHA-256, constant-time
//!   compare, per-key rate limit) next to them;
//! - offline verification (TTL 0, so every call verifies) vs raw `pasetors` verify;
//! - the `AuthLayer` per request (cached token) vs the same axum router without it.
//!
//! `cargo bench -p auth-client --bench validator`

#![allow(missing_docs)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use auth_client::{AuthClient, AuthLayer, Validator};
use auth_server::{Application, Settings, passwords::HashingSettings};
use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use pasetors::{
    Public,
    keys::{AsymmetricKeyPair, Generate},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use tower::ServiceExt as _;

struct Fixture {
    rt: tokio::runtime::Runtime,
    client: AuthClient,
    token: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = Settings::for_data_dir(dir.path().join("data"), None);
    settings.protection.rate_limit = None;
    settings.hashing = HashingSettings {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
        min_password_length: 8,
    };
    let (client, token) = rt.block_on(async {
        let app = Application::build(settings).await.expect("server");
        let addr = app.local_addr();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let client = AuthClient::connect_lazy(&format!("http://{addr}")).expect("url");
        client
            .register("bench@example.com", "bench passphrase", "")
            .await
            .expect("register");
        let token = client
            .login("bench@example.com", "bench passphrase")
            .await
            .expect("login")
            .into_session()
            .expect("no MFA on this account")
            .access_token;
        (client, token)
    });
    Fixture {
        rt,
        client,
        token,
        _dir: dir,
    }
}

fn validator(c: &mut Criterion) {
    let f = fixture();
    let cached = Validator::builder(f.client.clone()).build();
    f.rt.block_on(cached.validate(&f.token)).expect("valid");
    let moka: moka::future::Cache<[u8; 32], Arc<String>> =
        moka::future::Cache::builder().max_capacity(100_000).build();
    let key = [7u8; 32];
    f.rt.block_on(moka.insert(key, Arc::new("principal".into())));
    // The naive cache a service would write: keyed by the token itself, value cloned out.
    let by_token: moka::future::Cache<String, auth_client::Principal> =
        moka::future::Cache::builder().max_capacity(100_000).build();
    let principal = f.rt.block_on(cached.validate(&f.token)).expect("valid");
    f.rt.block_on(by_token.insert(f.token.clone(), principal));

    let mut group = c.benchmark_group("cached validate");
    group.bench_function("Validator::validate (hit)", |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cached.validate(black_box(&f.token)).await.expect("valid"));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function(
        "bare moka get keyed by the token, Principal cloned out",
        |b| {
            b.iter_custom(|iters| {
                f.rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            by_token
                                .get(black_box(f.token.as_str()))
                                .await
                                .expect("cached"),
                        );
                    }
                    start.elapsed()
                })
            })
        },
    );
    let keys = auth_server::apikeys::ApiKeys::new(std::num::NonZeroU32::MAX);
    let api_key = auth_server::apikeys::NewApiKey::generate();
    keys.insert(&auth_server::storage::api_keys::LiveKey {
        key: auth_server::storage::api_keys::ApiKeyRecord {
            id: api_key.id.clone(),
            user_id: "0190a000-0000-7000-8000-000000000000".into(),
            name: "bench".into(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
        },
        secret_hash: api_key.hash(),
        user: auth_server::storage::UserRecord {
            id: "0190a000-0000-7000-8000-000000000000".into(),
            email: "svc@example.com".into(),
            email_verified: false,
            display_name: String::new(),
            roles: vec!["events.subscriber".into()],
            disabled: false,
            version: 1,
            created_at: 0,
            external_id: None,
            service_account: true,
            metadata: Default::default(),
        },
    });
    group.bench_function("server ApiKeys::check (API key, in memory)", |b| {
        b.iter(|| black_box(keys.check(black_box(api_key.expose())).expect("valid")))
    });
    group.bench_function("bare moka get (fixed 32-byte key, Arc value)", |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(moka.get(black_box(&key)).await);
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    let offline = Validator::builder(f.client.clone())
        .offline(true)
        .ttl(Duration::ZERO)
        .build();
    f.rt.block_on(offline.validate(&f.token))
        .expect("valid offline");
    let pair = AsymmetricKeyPair::<V4>::generate().expect("key");
    let payload = vec![b'x'; f.token.len() * 3 / 4 - 64];
    let raw = PublicToken::sign(
        &pair.secret,
        &payload,
        Some(b"{\"kid\":\"k4.pid.x\"}"),
        None,
    )
    .expect("sign");
    let mut group = c.benchmark_group("verify");
    group.bench_function(
        "offline Validator::validate (ttl 0: verifies every call)",
        |b| {
            b.iter_custom(|iters| {
                f.rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(offline.validate(black_box(&f.token)).await.expect("valid"));
                    }
                    start.elapsed()
                })
            })
        },
    );
    group.bench_function("raw pasetors verify", |b| {
        b.iter(|| {
            let untrusted =
                UntrustedToken::<Public, V4>::try_from(black_box(raw.as_str())).expect("parse");
            PublicToken::verify(&pair.public, &untrusted, None, None).expect("valid")
        })
    });
    group.finish();

    let bare: Router = Router::new().route("/", get(|| async { "ok" }));
    let guarded: Router = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(cached.clone()));
    let bearer = format!("Bearer {}", f.token);
    let mut group = c.benchmark_group("axum request");
    for (name, router) in [
        ("without AuthLayer", &bare),
        ("with AuthLayer (cached token)", &guarded),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                f.rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let request = Request::get("/")
                            .header("authorization", &bearer)
                            .body(Body::empty())
                            .expect("request");
                        let response = router.clone().oneshot(request).await.expect("infallible");
                        assert!(response.status().is_success());
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, validator);
criterion_main!(benches);
