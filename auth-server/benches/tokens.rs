//! In-process costs: issuing and verifying access tokens against raw `pasetors`, and argon2id
//! hashing with the default parameters. Compare the ratios, not the absolute numbers.
//!
//! `cargo bench -p auth-server --bench tokens`

#![allow(missing_docs)]

use std::{hint::black_box, time::Duration};

use auth_server::{
    passwords::HashingSettings,
    passwords::{HashPool, Password},
    revocation::Revocations,
    tokens::{KeySet, SigningKey, TokenIssuer, TokenMemberships},
};
use criterion::{Criterion, criterion_group, criterion_main};
use pasetors::{
    Public,
    keys::{AsymmetricKeyPair, Generate},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};

fn tokens(c: &mut Criterion) {
    let issuer = TokenIssuer::new(
        KeySet::new(vec![SigningKey::generate().expect("key")]).expect("keys"),
        "auth-server".into(),
        Duration::from_secs(900),
    );
    let roles = vec!["admin".to_owned()];
    let none = TokenMemberships::default();
    let token = issuer
        .issue("0190c1d2-user", "0190c1d2-session", &roles, &none)
        .expect("issue")
        .token;
    // A member of as many organizations as a token carries (32 ids with one role each).
    let full = TokenMemberships {
        organizations: (0..32)
            .map(|i| {
                (
                    format!("0190c1d2-0000-7000-8000-{i:012}"),
                    vec!["editor".to_owned()],
                )
            })
            .collect(),
        truncated: false,
    };
    let member_token = issuer
        .issue("0190c1d2-user", "0190c1d2-session", &roles, &full)
        .expect("issue")
        .token;
    let revocations = Revocations::new();
    for i in 0..10_000 {
        revocations.revoke(format!("revoked-{i}"));
    }

    let mut group = c.benchmark_group("tokens");
    group.bench_function("issue", |b| {
        b.iter(|| {
            issuer
                .issue(
                    black_box("0190c1d2-user"),
                    "0190c1d2-session",
                    &roles,
                    &none,
                )
                .expect("issue")
        })
    });
    group.bench_function("issue (32 memberships)", |b| {
        b.iter(|| {
            issuer
                .issue(
                    black_box("0190c1d2-user"),
                    "0190c1d2-session",
                    &roles,
                    &full,
                )
                .expect("issue")
        })
    });
    group.bench_function("verify (ours, first sight, 32 memberships)", |b| {
        b.iter(|| {
            let now = time::OffsetDateTime::now_utc();
            let (claims, _) = issuer
                .verify_signed(black_box(&member_token), now)
                .expect("valid");
            black_box(revocations.is_revoked(&claims.session_id))
        })
    });
    group.bench_function(
        "verify (ours, first sight: signature, claims, revocation)",
        |b| {
            b.iter(|| {
                let now = time::OffsetDateTime::now_utc();
                let (claims, _) = issuer.verify_signed(black_box(&token), now).expect("valid");
                black_box(revocations.is_revoked(&claims.session_id))
            })
        },
    );
    group.bench_function(
        "verify (ours, seen before: cached signature check, claims, revocation)",
        |b| {
            b.iter(|| {
                let claims = issuer.verify(black_box(&token)).expect("valid");
                black_box(revocations.is_revoked(&claims.session_id))
            })
        },
    );

    // Baseline: pasetors alone on a token of the same size, no claim parsing.
    let pair = AsymmetricKeyPair::<V4>::generate().expect("key");
    let payload = token.split('.').nth(2).map_or(0, str::len) * 3 / 4 - 64;
    let raw = PublicToken::sign(
        &pair.secret,
        &vec![b'x'; payload.max(1)],
        Some(b"{\"kid\":\"k4.pid.x\"}"),
        None,
    )
    .expect("sign");
    group.bench_function("raw pasetors verify", |b| {
        b.iter(|| {
            let untrusted =
                UntrustedToken::<Public, V4>::try_from(black_box(raw.as_str())).expect("parse");
            PublicToken::verify(&pair.public, &untrusted, None, None).expect("valid")
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let settings = HashingSettings {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
        min_password_length: 8,
    };
    let pool = HashPool::new(&settings, 1, 0).expect("pool");
    let password = Password::new("correct horse battery".into());
    let mut group = c.benchmark_group("argon2id m=19456 t=2 p=1");
    group.sample_size(10);
    group.bench_function("hash (one thread)", |b| {
        b.iter(|| pool.hash_blocking(black_box(&password)).expect("hash"))
    });
    group.finish();
}

criterion_group!(benches, tokens, hashing);
criterion_main!(benches);
