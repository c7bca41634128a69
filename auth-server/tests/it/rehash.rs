//! Re-hash at login: a stored hash made with other parameters is replaced by an argon2id hash
//! with the current ones at the next successful login, and only then.

use auth_server::{passwords::HashingSettings, storage};
use tonic::Code;

use crate::{every_backend, helpers::*};

every_backend!(
    a_login_upgrades_a_hash_made_with_older_parameters,
    hashes_made_by_other_systems_log_in_and_become_argon2id,
);

/// Stronger than `CHEAP_HASHING`: the "new policy" after an operator raised the parameters.
const STRONGER: HashingSettings = HashingSettings {
    memory_kib: 512,
    iterations: 2,
    ..CHEAP_HASHING
};

async fn stored_hash(app: &TestApp, user_id: &str) -> String {
    let store = app.store().await;
    storage::users::find_password_hash(store.conn(), user_id)
        .await
        .expect("read")
        .expect("has a hash")
        .0
}

async fn a_login_upgrades_a_hash_made_with_older_parameters(db: Db) {
    let app = spawn_app(db).await;
    let user = app
        .register("old@example.com", PASSWORD)
        .await
        .expect("register");
    let before = stored_hash(&app, &user.id).await;
    assert!(
        before.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "{before}"
    );
    let app = app.restart_with(|s| s.hashing = STRONGER).await;
    let head = app.head().await;

    // A wrong password changes nothing: one verification, the old hash stays.
    let hashes = app.hashes();
    assert_code(
        app.login("old@example.com", "wrong password!").await,
        Code::Unauthenticated,
    );
    assert_eq!(app.hashes() - hashes, 1);
    assert_eq!(stored_hash(&app, &user.id).await, before);

    // The right one logs in with the old hash and leaves a hash with the current parameters:
    // one verification plus one new hash.
    let hashes = app.hashes();
    let session = app.login("old@example.com", PASSWORD).await.expect("login");
    assert_eq!(app.hashes() - hashes, 2);
    let after = stored_hash(&app, &user.id).await;
    assert!(
        after.starts_with("$argon2id$v=19$m=512,t=2,p=1$"),
        "{after}"
    );
    assert!(app.validate(&session.access_token).await.is_ok());

    // Not a password change: no event, same version, the session is still valid.
    assert_eq!(app.head().await, head);
    let record = app
        .find_user_by_email("old@example.com")
        .await
        .expect("user");
    assert_eq!(record.version, 1);

    // The next login verifies the new hash only and keeps it; unknown emails cost one hash
    // with the current parameters, as known ones now do.
    let hashes = app.hashes();
    app.login("old@example.com", PASSWORD)
        .await
        .expect("login again");
    assert_eq!(app.hashes() - hashes, 1);
    assert_eq!(stored_hash(&app, &user.id).await, after);
    let hashes = app.hashes();
    assert_code(
        app.login("nobody@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    assert_eq!(app.hashes() - hashes, 1);
}

/// Hashes of `PASSWORD` made outside this service: Python's pyca/bcrypt and hashlib (the
/// PBKDF2 Django uses, in Django's form).
const FOREIGN: [&str; 3] = [
    "$2b$04$jHXPAgYf/7JIXydIsNu.auRDjhNRFbV6rUT2gjikXZ2gBlMJk4mvm",
    "pbkdf2_sha256$1200$pepper1$4LbseBFSfZAVZ7U1sGGpDrr/1zElyODZdZBoX8eZ+ec=",
    "pbkdf2_sha512$1100$pepper2$rboHVXRrjkv8YyDTmxsm4xNNLoInaudh5BotzQFHyvO1Gpl+khI/CFfL2xxgm5j6RsNJ9JGtBFOwzfRNWAYzUg==",
];

async fn hashes_made_by_other_systems_log_in_and_become_argon2id(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store().await;
    for (i, foreign) in FOREIGN.iter().enumerate() {
        let email = format!("moved-{i}@example.com");
        let user = app
            .register(&email, "placeholder pass")
            .await
            .expect("register");
        let current = stored_hash(&app, &user.id).await;
        // As an import would leave it: the other system's hash in the credentials row.
        let replaced = storage::users::replace_hash(
            store.conn(),
            &user.id,
            &storage::PasswordHash(current),
            storage::PasswordHash((*foreign).to_owned()),
        )
        .await
        .expect("write");
        assert!(replaced);
        assert_code(
            app.login(&email, "placeholder pass").await,
            Code::Unauthenticated,
        );
        assert_eq!(
            stored_hash(&app, &user.id).await,
            *foreign,
            "a failure keeps it"
        );
        let session = app.login(&email, PASSWORD).await.expect(foreign);
        assert!(app.validate(&session.access_token).await.is_ok());
        let after = stored_hash(&app, &user.id).await;
        assert!(
            after.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
            "{foreign} -> {after}"
        );
        app.login(&email, PASSWORD)
            .await
            .expect("again, with the new hash");
    }
}
