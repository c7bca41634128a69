//! Moving in: `import-users` and `AdminService/ImportUsers` bring users over with the hashes
//! other systems made; they log in with their old passwords and leave argon2id behind; re-runs
//! skip; bad rows are reported by line and stop nothing.

use auth_proto::pb;
use tonic::Code;

use crate::{cli::auth_server, every_backend, helpers::*};

every_backend!(
    import_users_cli_moves_users_in_and_a_rerun_skips,
    import_users_rpc_streams_batches_and_reports_rows,
);

/// Hashes of `PASSWORD` made outside this service: pyca/bcrypt (`$2a$`/`$2y$` differ from
/// `$2b$` only for passwords over 255 bytes, so the same string serves for all three), Python's
/// hashlib for PBKDF2 (PHC and Django forms) and scrypt.
const BCRYPT_2B: &str = "$2b$04$jHXPAgYf/7JIXydIsNu.auRDjhNRFbV6rUT2gjikXZ2gBlMJk4mvm";
const PBKDF2_PHC: &str =
    "$pbkdf2-sha256$i=1000,l=32$aW1wb3J0c2FsdDEyMzQ1Ng$IRLzxyBVHVU8askYNCM/pCwp5sxh/hFrQFD6fD/WJz0";
const PBKDF2_SHA512_PHC: &str = "$pbkdf2-sha512$i=1000,l=64$aW1wb3J0c2FsdDEyMzQ1Ng$cKHjSecZ8++bqFRvnO8A8CpTBibYywYzYjgDG/wSql3TIhDlRmgmBSCUOnzsg1wIrm7FP0CAXHmy92mHKU5Efw";
const DJANGO: &str = "pbkdf2_sha256$1200$pepper1$4LbseBFSfZAVZ7U1sGGpDrr/1zElyODZdZBoX8eZ+ec=";
const SCRYPT: &str =
    "$scrypt$ln=4,r=8,p=1$aW1wb3J0c2FsdDEyMzQ1Ng$WWznZD/0uDPvvfGVLp5pnNDxLA4FWI/d3MBCbf7oJXQ";

/// An argon2id hash of `PASSWORD` with parameters other than the server's.
async fn argon2_other_params() -> String {
    let settings = auth_server::passwords::HashingSettings {
        memory_kib: 512,
        iterations: 2,
        ..CHEAP_HASHING
    };
    let pool = auth_server::passwords::HashPool::new(&settings, 1, 1).expect("pool");
    pool.hash(auth_server::passwords::Password::new(PASSWORD.into()))
        .await
        .expect("hash")
        .0
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    let user = app.find_user_by_email(email).await.expect("user");
    let store = app.store().await;
    auth_server::storage::users::find_password_hash(store.conn(), &user.id)
        .await
        .expect("read")
        .expect("has a hash")
        .0
}

fn jsonl(rows: &[serde_json::Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

async fn import_users_cli_moves_users_in_and_a_rerun_skips(db: Db) {
    use serde_json::json;
    let app = spawn_app(db).await;
    let argon2 = argon2_other_params().await;
    let moved = [
        (
            "bcrypt-2a@example.com",
            BCRYPT_2B.replacen("$2b$", "$2a$", 1),
        ),
        ("bcrypt-2b@example.com", BCRYPT_2B.to_owned()),
        (
            "bcrypt-2y@example.com",
            BCRYPT_2B.replacen("$2b$", "$2y$", 1),
        ),
        ("pbkdf2@example.com", PBKDF2_PHC.to_owned()),
        ("pbkdf2-512@example.com", PBKDF2_SHA512_PHC.to_owned()),
        ("django@example.com", DJANGO.to_owned()),
        ("scrypt@example.com", SCRYPT.to_owned()),
        ("argon2@example.com", argon2.clone()),
    ];
    let mut rows: Vec<serde_json::Value> = moved
        .iter()
        .enumerate()
        .map(|(i, (email, hash))| {
            json!({
                "email": email.to_uppercase(),
                "display_name": format!("Moved {i}"),
                "email_verified": true,
                "roles": ["staff"],
                "created_at": "2019-05-06T07:08:09Z",
                "external_id": 1000 + i,
                "password_hash": hash,
            })
        })
        .collect();
    // Lines 9..=13: bad rows; line 14: an invite.
    rows.push(json!({"email": "not an address", "password_hash": BCRYPT_2B}));
    rows.push(
        json!({"email": "md5@example.com", "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99"}),
    );
    rows.push(json!({"email": "Django@Example.com", "password_hash": DJANGO}));
    rows.push(json!({"email": "cost@example.com", "password_hash": "$2b$31$jHXPAgYf/7JIXydIsNu.auRDjhNRFbV6rUT2gjikXZ2gBlMJk4mvm"}));
    rows.push(json!({"email": "dupid@example.com", "external_id": 1003, "password_hash": DJANGO}));
    rows.push(json!({"email": "invited@example.com", "display_name": "No Hash Yet"}));
    let mut input = jsonl(&rows);
    input.push_str("{\"email\": \"broken@example.com\",\n"); // line 15: not JSON
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, &input).expect("write");
    let invites = dir.path().join("invites.jsonl");
    let head = app.head().await;
    let hashes = app.hashes();

    let args = [
        "import-users",
        "--file",
        file.to_str().expect("utf-8"),
        "--invites-file",
        invites.to_str().expect("utf-8"),
    ];
    let out = auth_server(&app, &args, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rejected rows fail the command");
    assert!(stderr.contains("6 rows rejected"), "{stderr}");
    assert!(
        stdout.contains("imported 9, skipped 0 (already there), rejected 6"),
        "{stdout}"
    );
    for (line, reason) in [
        (9, "malformed email"),
        (10, "unknown hash format"),
        (11, "duplicate email: first seen at line 6"),
        (12, "bcrypt cost over the cap"),
        (13, "duplicate external_id: first seen at line 4"),
        (15, "not a user object"),
    ] {
        assert!(
            stdout.contains(&format!("line {line}: rejected")) && stdout.contains(reason),
            "line {line} ({reason}) in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("line 14"), "{stdout}");
    // Nothing was hashed; each user has its UserCreated event.
    assert_eq!(app.hashes(), hashes);
    assert_eq!(app.head().await, head + 9);

    // The invite token went to the file (mode 0600), never to the output.
    let written = std::fs::read_to_string(&invites).expect("invites file");
    let invite: serde_json::Value = serde_json::from_str(written.trim()).expect("one JSON line");
    assert_eq!(invite["line"], 14);
    assert_eq!(invite["email"], "invited@example.com");
    let token = invite["invite_token"].as_str().expect("token").to_owned();
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&invites)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    app.client
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            reset_token: token,
            new_password: "a brand new passphrase".into(),
        })
        .await
        .expect("the invite sets a password");
    app.login("invited@example.com", "a brand new passphrase")
        .await
        .expect("invited user logs in");

    // Every moved user logs in with the old password and is argon2id with current parameters
    // afterwards; what they had in the other system is kept.
    for (i, (email, old)) in moved.iter().enumerate() {
        assert_eq!(&stored_hash(&app, email).await, old);
        assert_code(
            app.login(email, "not the password").await,
            Code::Unauthenticated,
        );
        let session = app.login(email, PASSWORD).await.expect(email);
        let after = stored_hash(&app, email).await;
        assert!(
            after.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
            "{email}: {after}"
        );
        let user = session.user.expect("user");
        assert_eq!(user.display_name, format!("Moved {i}"));
        assert!(user.email_verified);
        assert_eq!(user.roles, ["staff"]);
        assert_eq!(user.external_id, (1000 + i).to_string());
        assert_eq!(
            user.created_at.expect("created").seconds,
            1_557_126_489,
            "{email}"
        );
    }
    let audits = app
        .audit_rows()
        .await
        .into_iter()
        .filter(|r| r.kind == "user_imported")
        .count();
    assert_eq!(audits, 9);

    // A re-run (CSV this time, from stdin) imports nothing new and says so.
    let head = app.head().await;
    // (scrypt's PHC string holds commas: a CSV writer quotes it.)
    let csv = format!(
        "email,password_hash\nbcrypt-2b@example.com,{BCRYPT_2B}\nnew@example.com,\"{SCRYPT}\"\ninvited@example.com,\n"
    );
    let out = auth_server(
        &app,
        &["import-users", "--file", "-", "--format", "csv"],
        &csv,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "line 2: skipped bcrypt-2b@example.com: a user with this email is already there"
        ),
        "{stdout}"
    );
    // The invited user is there: skipped, though this run takes no invites.
    assert!(
        stdout.contains("line 4: skipped invited@example.com"),
        "{stdout}"
    );
    assert!(stdout.contains("imported 1, skipped 2"), "{stdout}");
    assert_eq!(app.head().await, head + 1);
    app.login("new@example.com", PASSWORD)
        .await
        .expect("scrypt user");
    let out = auth_server(&app, &args, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported 0, skipped 9"), "{stdout}");
}

fn row(email: &str, hash: &str) -> pb::ImportedUser {
    pb::ImportedUser {
        email: email.into(),
        password_hash: hash.into(),
        ..Default::default()
    }
}

async fn import(
    admin: &mut Admin,
    batches: Vec<Vec<pb::ImportedUser>>,
) -> Result<pb::ImportUsersResponse, tonic::Status> {
    let messages = batches
        .into_iter()
        .map(|users| pb::ImportUsersRequest { users });
    Ok(admin
        .import_users(tokio_stream::iter(messages))
        .await?
        .into_inner())
}

async fn import_users_rpc_streams_batches_and_reports_rows(db: Db) {
    use pb::import_row_result::Status as Row;
    let app = spawn_app(db).await;
    let token = app.token_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_with(&token);
    let mut subscriber = app
        .subscribe(&token, app.head().await)
        .await
        .expect("events");

    let mut first: Vec<_> = (0..600)
        .map(|i| row(&format!("bulk{i:03}@example.com"), DJANGO))
        .collect();
    first[0].external_id = "legacy-0".into();
    first[0].created_at = Some(prost_types::Timestamp {
        seconds: 1_500_000_000,
        nanos: 0,
    });
    let second = vec![
        row("bulk001@example.com", DJANGO),
        row("bad@", DJANGO),
        row("invitee@example.com", ""),
        row("sha1@example.com", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
    ];
    let report = import(&mut admin, vec![first, second])
        .await
        .expect("import");
    assert_eq!(
        (report.imported, report.skipped, report.rejected),
        (601, 0, 3)
    );
    let listed: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.row, r.status(), r.email.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (601, Row::Rejected, "bulk001@example.com"),
            (602, Row::Rejected, "bad@"),
            (603, Row::Imported, "invitee@example.com"),
            (604, Row::Rejected, "sha1@example.com"),
        ]
    );
    assert!(report.results[0].reason.contains("duplicate email"));
    assert!(report.results[3].reason.contains("unknown hash format"));
    let invite = &report.results[2];
    assert!(!invite.invite_token.is_empty() && invite.invite_expires_at.is_some());

    // The stream carries each new user, with its external id and original creation time.
    let created = next_event(&mut subscriber, std::time::Duration::from_secs(10)).await;
    let user = created.user.expect("user");
    assert_eq!(user.email, "bulk000@example.com");
    assert_eq!(user.external_id, "legacy-0");
    assert_eq!(user.created_at.expect("created").seconds, 1_500_000_000);
    app.login("bulk599@example.com", PASSWORD)
        .await
        .expect("moved user logs in");

    // A re-run skips everyone and lists the skipped rows.
    let again = import(&mut admin, vec![vec![row("bulk000@example.com", DJANGO)]])
        .await
        .expect("re-run");
    assert_eq!((again.imported, again.skipped, again.rejected), (0, 1, 0));
    assert_eq!(again.results[0].status(), Row::Skipped);

    // An external id already held by another user is refused for the new row.
    let mut taken = row("other@example.com", DJANGO);
    taken.external_id = "legacy-0".into();
    let clash = import(&mut admin, vec![vec![taken]]).await.expect("clash");
    assert_eq!(clash.rejected, 1);
    assert!(
        clash.results[0].reason.contains("bulk000@example.com"),
        "{:?}",
        clash.results[0]
    );

    // Too many rows in one message, and a caller who is not an admin.
    let huge = (0..1001)
        .map(|i| row(&format!("huge{i}@example.com"), DJANGO))
        .collect();
    assert_code(import(&mut admin, vec![huge]).await, Code::InvalidArgument);
    let user_token = app.signed_up("plain@example.com").await.access_token;
    assert_code(
        import(
            &mut app.admin_with(&user_token),
            vec![vec![row("x@example.com", DJANGO)]],
        )
        .await,
        Code::PermissionDenied,
    );
}
