//! Signing key rotation with `auth-server keys`: nobody is logged out, new tokens carry the
//! new `kid`, replicas pick the rotation up without restart, retired keys' tokens fail, and
//! file-based keys of an older data dir are imported.

use std::time::Duration;

use auth_proto::pb;
use base64::Engine as _;
use tonic::Code;

use crate::{cli::auth_server, every_backend, helpers::*};

every_backend!(
    rotation_keeps_old_tokens_valid_and_new_tokens_carry_the_new_kid,
    a_pending_key_is_published_before_it_signs,
);

const RELOAD: Duration = Duration::from_millis(100);

/// The `kid` in a token's footer.
fn kid_of(token: &str) -> String {
    let footer = token.rsplit('.').next().expect("footer");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(footer)
        .expect("base64 footer");
    let value: serde_json::Value = serde_json::from_slice(&json).expect("json footer");
    value["kid"].as_str().expect("kid").to_owned()
}

fn keys_cmd(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    let out = auth_server(app, &all, "");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn public_keys(app: &TestApp) -> Vec<pb::PublicKey> {
    app.client
        .clone()
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .expect("keys")
        .into_inner()
        .keys
}

async fn rotation_keeps_old_tokens_valid_and_new_tokens_carry_the_new_kid(db: Db) {
    let app = spawn_app_with(db, |s| s.key_refresh_interval = RELOAD).await;
    let before = app.signed_up("ann@example.com").await;
    let old_kid = kid_of(&before.access_token);

    let (ok, out) = keys_cmd(&app, &["rotate", "--activate-in-secs", "0"]);
    assert!(ok, "{out}");
    assert!(out.contains("rotated:"), "{out}");
    tokio::time::sleep(RELOAD * 5).await;

    app.validate(&before.access_token)
        .await
        .expect("a token signed before the rotation still validates");
    let after = app.login("ann@example.com", PASSWORD).await.expect("login");
    let new_kid = kid_of(&after.access_token);
    assert_ne!(new_kid, old_kid, "new tokens carry the new kid");
    app.validate(&after.access_token).await.expect("valid");
    let refreshed = app.refresh(&before.refresh_token).await.expect("refresh");
    assert_eq!(kid_of(&refreshed.access_token), new_kid);

    let keys = public_keys(&app).await;
    assert_eq!(keys.len(), 2);
    let signer = keys.iter().find(|k| k.signing).expect("a signer");
    assert_eq!(signer.key_id, new_kid);
    assert!(signer.valid_until.is_none());
    let old = keys
        .iter()
        .find(|k| k.key_id == old_kid)
        .expect("old key listed");
    assert!(
        old.valid_until.is_some(),
        "the old key verifies for a limited time"
    );

    let (ok, listed) = keys_cmd(&app, &["list"]);
    assert!(ok, "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("signing") && l.contains(&new_kid)),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("verifying") && l.contains(&old_kid)),
        "{listed}"
    );
    assert!(!listed.contains("k4.secret"), "no private key printed");

    // The signer cannot be retired; the old key can, and its tokens then fail.
    let (ok, out) = keys_cmd(&app, &["retire", &new_kid]);
    assert!(!ok && out.contains("rotate first"), "{out}");
    let (ok, out) = keys_cmd(&app, &["retire", &old_kid]);
    assert!(ok, "{out}");
    let (ok, out) = keys_cmd(&app, &["retire", "k4.pid.nonsense"]);
    assert!(!ok && out.contains("no signing key"), "{out}");
    tokio::time::sleep(RELOAD * 5).await;
    let refused = assert_code(
        app.validate(&before.access_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&refused).as_deref(), Some("TOKEN_INVALID"));
    app.validate(&after.access_token)
        .await
        .expect("tokens of the current key are untouched");
    assert_eq!(public_keys(&app).await.len(), 1);
}

async fn a_pending_key_is_published_before_it_signs(db: Db) {
    let app = spawn_app_with(db, |s| s.key_refresh_interval = RELOAD).await;
    let before = app.signed_up("bea@example.com").await;
    let (ok, out) = keys_cmd(&app, &["rotate", "--activate-in-secs", "3600"]);
    assert!(ok, "{out}");
    tokio::time::sleep(RELOAD * 5).await;
    let keys = public_keys(&app).await;
    assert_eq!(keys.len(), 2, "the pending key verifies already");
    let pending = keys.iter().find(|k| !k.signing).expect("pending key");
    assert!(pending.valid_from.as_ref().expect("valid_from").seconds > before_secs() + 3000);
    let again = app.login("bea@example.com", PASSWORD).await.expect("login");
    assert_eq!(
        kid_of(&again.access_token),
        kid_of(&before.access_token),
        "the old key signs until the new one's start"
    );
    let (_, listed) = keys_cmd(&app, &["list"]);
    assert!(listed.lines().any(|l| l.starts_with("pending")), "{listed}");
}

fn before_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_the_same_postgres_picks_up_a_rotation_without_restart() {
    let app = spawn_app_with(Db::Postgres, |s| s.key_refresh_interval = RELOAD).await;
    let replica = app.spawn_replica().await;
    let before = app.signed_up("cy@example.com").await;
    replica
        .validate(&before.access_token)
        .await
        .expect("replicas share the key set");
    let (ok, out) = keys_cmd(&app, &["rotate", "--activate-in-secs", "0"]);
    assert!(ok, "{out}");
    tokio::time::sleep(RELOAD * 5).await;
    let after = app.login("cy@example.com", PASSWORD).await.expect("login");
    assert_ne!(kid_of(&after.access_token), kid_of(&before.access_token));
    replica
        .validate(&after.access_token)
        .await
        .expect("the replica verifies the new key without a restart");
    replica
        .validate(&before.access_token)
        .await
        .expect("and still the old one");
    let on_replica = replica
        .login("cy@example.com", PASSWORD)
        .await
        .expect("login");
    assert_eq!(
        kid_of(&on_replica.access_token),
        kid_of(&after.access_token)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_keys_of_an_older_data_dir_are_imported_on_first_start() {
    use pasetors::{
        keys::{AsymmetricKeyPair, AsymmetricPublicKey, Generate},
        paserk::{FormatAsPaserk, Id},
        version4::V4,
    };
    let pair = AsymmetricKeyPair::<V4>::generate().expect("key");
    let mut secret = String::new();
    pair.secret.fmt(&mut secret).expect("paserk");
    let public = AsymmetricPublicKey::<V4>::try_from(&pair.secret).expect("public");
    let mut kid = String::new();
    Id::from(&public).fmt(&mut kid).expect("kid");
    let app = spawn_app_with(Db::Sqlite, |s| {
        let dir = s.data_dir.join("keys");
        std::fs::create_dir_all(&dir).expect("keys dir");
        std::fs::write(dir.join("signing-0001.paserk"), &secret).expect("write key");
    })
    .await;
    let session = app.signed_up("dee@example.com").await;
    assert_eq!(kid_of(&session.access_token), kid, "the imported key signs");
    let sealed = std::fs::read_to_string(app.settings.key_file.clone()).expect("kek exists");
    assert!(!sealed.contains("k4.secret"));
}
