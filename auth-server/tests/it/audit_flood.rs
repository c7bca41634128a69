//! Audit under attack: attempts against a locked email and calls refused by the rate limit are
//! aggregated, one record per email (or client address) per minute with the count and the
//! distinct client addresses, so a flood writes O(1) rows instead of one per attempt.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use auth_proto::pb;
use futures::StreamExt;
use serde_json::Value;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    a_flood_against_a_locked_email_writes_one_record_per_minute,
    rate_limited_calls_are_counted_in_one_record_per_address_per_minute,
);

/// A login as if from `addr`, through a trusted proxy on loopback.
async fn login_from(app: &TestApp, addr: &str, email: &str, password: &str) -> Code {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", addr.parse().expect("ascii"));
    match app.client.clone().login(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The details of the records of `kind`, once their counts add up to `total` (the counts are
/// written within a second or two).
async fn records_adding_up_to(app: &TestApp, kind: &str, total: u64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let details: Vec<Value> = app
            .audit_rows()
            .await
            .into_iter()
            .filter(|row| row.kind == kind)
            .map(|row| serde_json::from_str(row.detail.as_deref().unwrap_or("{}")).expect("json"))
            .collect();
        let sum: u64 = details
            .iter()
            .map(|d| d["count"].as_u64().unwrap_or(0))
            .sum();
        if sum == total {
            return details;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: counts add up to {sum}, want {total}: {details:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn addrs_of(details: &[Value]) -> BTreeSet<String> {
    details
        .iter()
        .flat_map(|d| d["client_addrs"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

async fn a_flood_against_a_locked_email_writes_one_record_per_minute(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.protection.rate_limit = None;
        s.protection.trusted_proxies = vec![IpAddr::from([127, 0, 0, 1])];
    })
    .await;
    app.signed_up("victim@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            login_from(&app, "198.51.100.1", "victim@example.com", "wrong").await,
            Code::Unauthenticated
        );
    }
    let hashes = app.hashes();
    // 200 attempts from 20 addresses, the right password among them: all refused, no hash.
    let attempts = (0..200).map(|i| {
        let app = &app;
        async move {
            let addr = format!("203.0.113.{}", i % 20);
            let password = if i % 2 == 0 { PASSWORD } else { "guess" };
            login_from(app, &addr, "victim@example.com", password).await
        }
    });
    // Eight at a time: the Login class's concurrency cap is not what this tests.
    let codes: Vec<Code> = futures::stream::iter(attempts)
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        codes.iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(app.hashes(), hashes, "a locked email costs no hash");

    let records = records_adding_up_to(&app, "login_locked", 200).await;
    // One record per minute: two only if the flood straddled a minute boundary.
    assert!(records.len() <= 2, "{records:?}");
    let expected: BTreeSet<String> = (0..20).map(|i| format!("203.0.113.{i}")).collect();
    assert_eq!(addrs_of(&records), expected);
    for record in &records {
        assert_eq!(record["email"], "victim@example.com");
        assert!(record["locked_until"].as_i64().is_some() && record["window_start"].is_i64());
    }
    let failed = app.audit_rows().await;
    assert_eq!(
        failed.iter().filter(|r| r.kind == "login_failed").count(),
        5
    );
}

async fn rate_limited_calls_are_counted_in_one_record_per_address_per_minute(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.protection.rate_limit = Some(auth_server::rate_limit::RateLimitSettings {
            per_minute: 1,
            burst: 2,
        });
        s.protection.trusted_proxies = vec![IpAddr::from([127, 0, 0, 1])];
    })
    .await;
    let mut refused = 0u64;
    for addr in ["192.0.2.7", "192.0.2.8"] {
        for _ in 0..30 {
            if login_from(&app, addr, "nobody@example.com", "whatever").await
                == Code::ResourceExhausted
            {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 56, "two per address get through");
    let records = records_adding_up_to(&app, "rate_limited", refused).await;
    // One per address (per minute).
    assert!((2..=4).contains(&records.len()), "{records:?}");
    assert_eq!(
        addrs_of(&records),
        BTreeSet::from(["192.0.2.7".to_owned(), "192.0.2.8".to_owned()])
    );
    let rows = app.audit_rows().await;
    assert!(
        rows.iter()
            .filter(|r| r.kind == "rate_limited")
            .all(|r| r.outcome == "denied" && r.client_addr.is_some())
    );
}
