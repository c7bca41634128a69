//! Session lifetimes: a session refreshed again and again still ends at its absolute lifetime
//! (and its tokens never outlive it), and one left idle ends at the idle timeout, each with
//! its own ErrorInfo reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    a_refreshed_session_ends_at_its_absolute_lifetime,
    an_idle_session_ends_at_the_idle_timeout,
);

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("secs")
}

async fn a_refreshed_session_ends_at_its_absolute_lifetime(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.session_max_lifetime = Duration::from_secs(3);
    })
    .await;
    let started = unix_now();
    let login = app.signed_up("max@example.com").await;
    // Never beyond the end of the session, from the first pair on.
    let ends = started + 3;
    let access_exp = login.access_token_expires_at.expect("exp").seconds;
    assert!(access_exp <= ends + 1, "access {access_exp} vs {ends}");
    let mut refresh = login.refresh_token;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let pair = app
            .refresh(&refresh)
            .await
            .expect("refresh within the lifetime");
        assert!(pair.refresh_token_expires_at.expect("exp").seconds <= ends + 1);
        assert!(pair.access_token_expires_at.expect("exp").seconds <= ends + 1);
        refresh = pair.refresh_token;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = assert_code(app.refresh(&refresh).await, Code::Unauthenticated);
    assert_eq!(
        reason(&status).as_deref(),
        Some("SESSION_EXPIRED"),
        "{status:?}"
    );
    // Not counted as reuse: the same token gives the same answer, the session is not revoked
    // for theft.
    let again = assert_code(app.refresh(&refresh).await, Code::Unauthenticated);
    assert_eq!(reason(&again).as_deref(), Some("SESSION_EXPIRED"));
    // A new login starts a new lifetime.
    let fresh = app
        .login("max@example.com", PASSWORD)
        .await
        .expect("log in again");
    app.refresh(&fresh.refresh_token)
        .await
        .expect("a new session refreshes");
}

async fn an_idle_session_ends_at_the_idle_timeout(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.session_idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let login = app.signed_up("idle@example.com").await;
    // The refresh token itself expires with the idle timeout.
    let exp = login.refresh_token_expires_at.expect("exp").seconds;
    assert!(exp <= unix_now() + 2, "{exp}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pair = app.refresh(&login.refresh_token).await.expect("active");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pair = app
        .refresh(&pair.refresh_token)
        .await
        .expect("still active");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let status = assert_code(
        app.refresh(&pair.refresh_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        reason(&status).as_deref(),
        Some("SESSION_IDLE_TIMEOUT"),
        "{status:?}"
    );
}
