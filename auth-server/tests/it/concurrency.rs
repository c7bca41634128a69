//! Races: concurrent refreshes of one token, and a hash-queue overflow.

use futures::future::join_all;
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    exactly_one_of_64_concurrent_refreshes_succeeds,
    hash_queue_overflow_is_resource_exhausted_and_validate_still_answers,
);

async fn exactly_one_of_64_concurrent_refreshes_succeeds(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signed_up("race@example.com").await;
    let attempts = (0..64).map(|_| app.refresh(&a.refresh_token));
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok,
        1,
        "results: {:?}",
        results
            .iter()
            .map(|r| r.as_ref().map(|_| ()).map_err(|s| s.code()))
            .collect::<Vec<_>>()
    );
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    // Everyone but one presented a spent token: reuse detection revoked the session.
    assert_code(app.validate(&a.access_token).await, Code::Unauthenticated);
}

async fn hash_queue_overflow_is_resource_exhausted_and_validate_still_answers(db: Db) {
    // Real OWASP parameters, one hashing thread and room for one waiter.
    let app = spawn_app_with(db, |s| {
        s.hash_threads = 1;
        s.hash_queue = 1;
        s.hashing.memory_kib = 19_456;
        s.hashing.iterations = 2;
    })
    .await;
    let a = app.signed_up("storm@example.com").await;
    let storm = join_all((0..16).map(|_| app.login("storm@example.com", "wrong password")));
    let validate = async {
        // While the storm runs, Validate answers without waiting for the hash pool.
        for _ in 0..20 {
            app.validate(&a.access_token)
                .await
                .expect("validate during storm");
        }
    };
    let (results, ()) = tokio::join!(storm, validate);
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    assert!(exhausted >= 1, "no RESOURCE_EXHAUSTED among {results:?}");
    assert!(refused >= 1, "no login was even tried: {results:?}");
    assert_eq!(exhausted + refused, 16);
    // Once the storm is over, logins work again.
    app.login("storm@example.com", PASSWORD)
        .await
        .expect("login after storm");
}
