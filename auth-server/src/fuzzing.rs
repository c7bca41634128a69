//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, off in every build
//! but theirs): each parser and check that reads attacker-controlled bytes, called the way the
//! server calls it, without a server. A fuzzer looks for panics, hangs and runaway memory; the
//! results are discarded.

use std::{net::IpAddr, sync::OnceLock, time::Duration};

use auth_proto::pb;
use pasetors::version4::PublicToken;
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{
    domain,
    keyset::{KeySet, SigningKey},
    passwords::{check_new_password, check_password_size, normalize_email},
    rate_limit::ClientAddrResolver,
    service,
    tokens::TokenIssuer,
};

/// The issuer every token target verifies against (one generated key).
fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let key = SigningKey::generate().expect("key generation");
        #[allow(clippy::expect_used)]
        let keys = KeySet::new(vec![key]).expect("one key");
        TokenIssuer::new(keys, "auth-server".into(), Duration::from_secs(900))
    })
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An access token as `Validate` and every bearer call read it: header, base64, footer JSON
/// and `kid`, signature (cached and uncached paths).
pub fn access_token(data: &[u8]) {
    let Some(token) = text(data) else { return };
    let issuer = issuer();
    let _ = issuer.verify_signed(token, crate::clock::now());
    let _ = issuer.verify(token);
}

/// Claims JSON behind a valid signature: `data` is signed as the payload with the issuer's key
/// and `kid`, so the claims parser and the time checks see arbitrary bytes.
pub fn signed_claims(data: &[u8]) {
    let Some(payload) = text(data) else { return };
    let issuer = issuer();
    let keys = issuer.keys();
    let signer = keys.signer();
    let footer = format!(r#"{{"kid":"{}"}}"#, signer.kid());
    let Ok(token) = PublicToken::sign(
        &signer.key.secret,
        payload.as_bytes(),
        Some(footer.as_bytes()),
        None,
    ) else {
        return;
    };
    let _ = issuer.verify_signed(&token, crate::clock::now());
}

/// A secret PASERK (`k4.secret.…`) as `keys import` and key loading read it.
pub fn paserk(data: &[u8]) {
    if let Some(text) = text(data)
        && let Ok(key) = SigningKey::from_secret_paserk(text)
    {
        let _ = key.public_paserk();
    }
}

/// An email and a password as Register, Login and the password calls check them.
pub fn email_and_password(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let (email, password) = text.split_once('\n').unwrap_or((text, text));
    let normalized = normalize_email(email);
    let _ = check_password_size(password);
    let email = normalized.as_deref().unwrap_or(email);
    let _ = check_new_password(password, email, 12);
}

/// A `page_token` as the paged admin calls decode it.
pub fn page_token(data: &[u8]) {
    let Some(token) = text(data) else { return };
    for kind in ["users", "audit", "sessions", "organizations", "members"] {
        let _ = domain::decode_page_token(kind, token);
    }
}

/// `x-forwarded-for` values (one per line) from a trusted proxy, as the client address
/// resolver reads them.
pub fn forwarded_for(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let values: Vec<&str> = text.split('\n').collect();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let resolver = ClientAddrResolver::new(vec![loopback]);
    let _ = resolver.resolve(Some(loopback), &values);
    let _ = ClientAddrResolver::new(Vec::new()).resolve(Some(loopback), &values);
}

/// `authorization` metadata as every bearer call reads it.
pub fn authorization(data: &[u8]) {
    let Ok(value) = MetadataValue::try_from(data) else {
        return;
    };
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", value);
    if let Ok(token) = service::bearer_token(&metadata) {
        let _ = issuer().verify(token);
    }
}

/// A request message, decoded from protobuf as tonic does and checked as its handler checks it
/// before any database work: the first byte picks the message type.
pub fn request(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 12 {
        0 => {
            if let Ok(req) = pb::LoginRequest::decode(bytes) {
                let _ = normalize_email(&req.email);
                let _ = check_password_size(&req.password);
            }
        }
        1 => {
            if let Ok(req) = pb::RegisterRequest::decode(bytes) {
                if let Ok(email) = normalize_email(&req.email) {
                    let _ = check_new_password(&req.password, &email, 12);
                }
                let _ = domain::check_display_name(&req.display_name);
            }
        }
        2 => {
            if let Ok(req) = pb::UpdateUserRequest::decode(bytes) {
                let _ = domain::check_user_id(&req.user_id);
                let _ = service::user_update(&req);
            }
        }
        3 => {
            if let Ok(req) = pb::UpdateOrganizationRequest::decode(bytes) {
                let _ = service::organization_update(req);
            }
        }
        4 => {
            if let Ok(req) = pb::CreateUserRequest::decode(bytes) {
                let _ = normalize_email(&req.email);
                for role in &req.roles {
                    let _ = domain::check_role(role);
                }
                if let Ok(metadata) = service::metadata_of(req.metadata) {
                    let _ = domain::check_metadata(&metadata);
                }
            }
        }
        5 => {
            if let Ok(req) = pb::ListUsersRequest::decode(bytes) {
                let _ = domain::decode_page_token("users", &req.page_token);
                let _ = domain::check_role(&req.role);
            }
        }
        6 => {
            if let Ok(req) = pb::ListAuditEventsRequest::decode(bytes) {
                let _ = domain::decode_page_token("audit", &req.page_token);
                let _ = crate::storage::audit::AuditKind::parse(&req.kind);
                let _ = req.since.as_ref().map(crate::clock::millis_of_timestamp);
            }
        }
        7 => {
            if let Ok(req) = pb::RefreshRequest::decode(bytes) {
                let _ =
                    crate::secrets::well_formed(&req.refresh_token).map(crate::secrets::sha256_hex);
            }
        }
        8 => {
            if let Ok(req) = pb::ChangeEmailRequest::decode(bytes) {
                let _ = normalize_email(&req.new_email);
                let _ = check_password_size(&req.current_password);
            }
        }
        9 => {
            if let Ok(req) = pb::CreateOrganizationRequest::decode(bytes)
                && let Ok(metadata) = service::metadata_of(req.metadata)
            {
                let _ = domain::check_metadata(&metadata);
            }
        }
        10 => {
            if let Ok(req) = pb::UserEventsRequest::decode(bytes) {
                let _ = i64::try_from(req.after_sequence);
            }
        }
        _ => {
            if let Ok(req) = pb::ResetPasswordRequest::decode(bytes) {
                let _ =
                    crate::secrets::well_formed(&req.reset_token).map(crate::secrets::sha256_hex);
                let _ = check_password_size(&req.new_password);
            }
        }
    }
}
