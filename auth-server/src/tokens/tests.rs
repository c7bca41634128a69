//! Issue and verify round trips, key rotation and the verified-token cache.

use pasetors::keys::AsymmetricSecretKey;

use super::*;

fn issuer(keys: Vec<SigningKey>) -> TokenIssuer {
    TokenIssuer::new(
        KeySet::new(keys).expect("non-empty"),
        "test".into(),
        Duration::from_secs(60),
    )
}

#[test]
fn issued_token_verifies_and_carries_claims() {
    let tokens = issuer(vec![SigningKey::generate().expect("key")]);
    let issued = tokens
        .issue("u1", "s1", &["admin".into()], &TokenMemberships::default())
        .expect("issue");
    let claims = tokens.verify(&issued.token).expect("valid");
    assert_eq!(claims.user_id, "u1");
    assert_eq!(claims.session_id, "s1");
    assert_eq!(claims.roles, vec!["admin".to_owned()]);
    assert_eq!(claims.token_id, issued.token_id);
    assert!(!format!("{issued:?}").contains(&issued.token));
}

#[test]
fn a_token_never_outlives_its_session() {
    let tokens = issuer(vec![SigningKey::generate().expect("key")]);
    let now = OffsetDateTime::now_utc();
    let ends = now + Duration::from_millis(10_500);
    let issued = tokens
        .issue_until("u1", "s1", &[], &TokenMemberships::default(), Some(ends))
        .expect("issue");
    assert!(issued.expires_at <= ends, "{} > {ends}", issued.expires_at);
    assert!(issued.expires_at >= ends - Duration::from_secs(1));
    assert!(tokens.verify_at(&issued.token, now).is_ok());
    assert_eq!(
        tokens.verify_at(&issued.token, ends + Duration::from_secs(1)),
        Err(TokenError::Expired)
    );
    // A session ending after the access TTL does not lengthen the token.
    let long = tokens
        .issue_until(
            "u1",
            "s1",
            &[],
            &TokenMemberships::default(),
            Some(now + Duration::from_secs(3600)),
        )
        .expect("issue");
    assert!(long.expires_at <= now + Duration::from_secs(61));
}

#[test]
fn expired_tampered_and_foreign_tokens_are_refused() {
    let tokens = issuer(vec![SigningKey::generate().expect("key")]);
    let issued = tokens
        .issue("u1", "s1", &[], &TokenMemberships::default())
        .expect("issue");
    let later = OffsetDateTime::now_utc() + Duration::from_secs(61);
    assert_eq!(
        tokens.verify_at(&issued.token, later),
        Err(TokenError::Expired)
    );

    let mut tampered = issued.token.clone().into_bytes();
    let i = PublicToken::HEADER.len() + 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert!(matches!(
        tokens.verify(&tampered),
        Err(TokenError::BadSignature | TokenError::Malformed)
    ));

    let other = issuer(vec![SigningKey::generate().expect("key")]);
    assert_eq!(other.verify(&issued.token), Err(TokenError::UnknownKey));
    assert_eq!(tokens.verify("garbage"), Err(TokenError::Malformed));
    assert_eq!(tokens.verify(""), Err(TokenError::Missing));
}

#[test]
fn tokens_of_an_older_key_still_verify_after_rotation() {
    let old = SigningKey::generate().expect("key");
    let old_secret = AsymmetricSecretKey::<V4>::from(old.secret.as_bytes()).expect("copy");
    let before = issuer(vec![old]);
    let token = before
        .issue("u1", "s1", &[], &TokenMemberships::default())
        .expect("issue")
        .token;
    let rotated = issuer(vec![
        SigningKey::from_secret(old_secret).expect("key"),
        SigningKey::generate().expect("key"),
    ]);
    assert!(rotated.verify(&token).is_ok());
    let fresh = rotated
        .issue("u1", "s1", &[], &TokenMemberships::default())
        .expect("issue")
        .token;
    assert!(rotated.verify(&fresh).is_ok());
    assert_ne!(rotated.keys().signer().kid(), before.keys().signer().kid());
}

fn copy(key: &SigningKey) -> SigningKey {
    SigningKey::from_secret_paserk(&key.secret_paserk().expect("paserk")).expect("copy")
}

#[test]
fn stored_keys_verify_until_one_token_lifetime_after_being_replaced() {
    let now = crate::clock::now();
    let ttl = Duration::from_secs(900);
    let (a, b, c) = (
        SigningKey::generate().expect("key"),
        SigningKey::generate().expect("key"),
        SigningKey::generate().expect("key"),
    );
    let stored = |key: &SigningKey, offset: i64| StoredKey {
        key: copy(key),
        signing_from: now + time::Duration::seconds(offset),
    };
    // B took over 10 minutes ago: A still verifies; C is pending and already verifies.
    let set = KeySet::from_stored(
        vec![stored(&a, -3600), stored(&b, -600), stored(&c, 60)],
        now,
        ttl,
    )
    .expect("set");
    assert_eq!(set.signer_at(now).kid(), b.kid());
    assert_eq!(set.signer_at(now + Duration::from_secs(61)).kid(), c.kid());
    assert_eq!(set.keys().count(), 3);
    let a_entry = set.find(a.kid()).expect("a verifies");
    assert_eq!(
        a_entry.verify_until(),
        Some(now + time::Duration::seconds(-600) + ttl + LEEWAY)
    );
    assert_eq!(set.find(b.kid()).and_then(|e| e.verify_until()), None);
    // B took over 20 minutes ago: nothing A signed can be valid, so A is gone.
    let set =
        KeySet::from_stored(vec![stored(&a, -3600), stored(&b, -1200)], now, ttl).expect("set");
    assert!(set.find(a.kid()).is_none());
    assert_eq!(set.signer().kid(), b.kid());
}

#[test]
fn a_key_leaving_the_set_stops_its_cached_tokens() {
    let (a, b) = (
        SigningKey::generate().expect("key"),
        SigningKey::generate().expect("key"),
    );
    let tokens = issuer(vec![copy(&a)]);
    let token = tokens
        .issue("u1", "s1", &[], &TokenMemberships::default())
        .expect("issue")
        .token;
    assert!(tokens.verify(&token).is_ok(), "now cached");
    assert!(!tokens.replace_keys(KeySet::new(vec![copy(&a)]).expect("same")));
    assert!(tokens.replace_keys(KeySet::new(vec![b]).expect("without a")));
    assert_eq!(tokens.verify(&token), Err(TokenError::UnknownKey));
}
