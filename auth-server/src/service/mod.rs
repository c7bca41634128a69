//! gRPC services: decode the request, call the domain, encode the response. Errors become
//! `Status` only through `From<AuthError>` in `error.rs`.

mod admin;
mod auth;
mod import;
mod me;
mod organizations;

pub use admin::AdminApi;
pub use auth::AuthApi;
#[cfg(feature = "fuzzing")]
pub(crate) use {admin::user_update, organizations::organization_update};

use auth_proto::{pb, structs};
use prost_types::Struct;
use tonic::{Request, metadata::MetadataMap};

pub(crate) use crate::clock::{
    millis_of_timestamp as millis_of, timestamp, timestamp_of_millis as timestamp_millis,
};
use crate::{
    audit_rollup::{AuditRollup, Occurrence},
    error::AuthError,
    limits::RpcClass,
    rate_limit::{ClientAddrResolver, RateLimiter},
    storage::{
        ClientInfo, EventKind, EventSubject, StoredEvent, UserRecord,
        audit::{AuditKind, Outcome},
        organizations::Metadata,
    },
    tokens::TokenError,
};

/// The token of the single `authorization: Bearer <token>` entry.
pub(crate) fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Err(TokenError::Missing.into());
    };
    if values.next().is_some() {
        return Err(TokenError::BadHeader.into());
    }
    let value = value.to_str().map_err(|_| TokenError::BadHeader)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::BadHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::BadHeader.into());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing.into());
    }
    Ok(token)
}

/// Where a request comes from, and whether it may come now.
#[derive(Debug, Clone)]
pub struct RequestGuard {
    resolver: ClientAddrResolver,
    limiter: RateLimiter,
    audit: AuditRollup,
}

impl RequestGuard {
    /// Resolves client addresses with `resolver`, limits with `limiter` and audits the
    /// refusals through `audit` (one record per address per minute).
    pub fn new(resolver: ClientAddrResolver, limiter: RateLimiter, audit: AuditRollup) -> Self {
        Self {
            resolver,
            limiter,
            audit,
        }
    }

    /// The limiter (for pruning).
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    fn addr<T>(&self, request: &Request<T>) -> Option<std::net::IpAddr> {
        let forwarded: Vec<&str> = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        self.resolver
            .resolve(request.remote_addr().map(|a| a.ip()), &forwarded)
    }

    /// Client address and user agent of a request; for a call of the password class (the
    /// one table in `limits.rs` says which), only after taking a token from the client's rate
    /// limit bucket, before any hashing or database work.
    pub(crate) fn admit<T>(&self, request: &Request<T>) -> Result<ClientInfo, AuthError> {
        // Without a class (a call that did not pass `ClassLimit`), limit rather than not.
        let class = request.extensions().get::<RpcClass>().copied();
        if class.is_none_or(|c| c == RpcClass::Password) {
            let addr = self.addr(request);
            if let Err(refused) = self.limiter.check(addr) {
                if let Some(addr) = addr {
                    let client = self.client(request);
                    self.audit.record_later(Occurrence {
                        kind: AuditKind::RateLimited,
                        key: &addr.to_string(),
                        outcome: Outcome::Denied,
                        subject: None,
                        client: &client,
                        detail: serde_json::Map::new(),
                    });
                }
                return Err(refused);
            }
        }
        Ok(self.client(request))
    }

    /// Client address and user agent of a request.
    fn client<T>(&self, request: &Request<T>) -> ClientInfo {
        ClientInfo {
            addr: self.addr(request).map(|a| a.to_string()),
            user_agent: request
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// A trimmed optional text field: empty or blank is none.
pub(crate) fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A count for a `uint32` field, saturating (no count here comes near 2^32).
pub(crate) fn count(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// A database sequence, version or row id for a `uint64` field. They start at 1 and only
/// grow, so only a corrupt row is negative; it reads as 0.
pub(crate) fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A JSON object as a `Struct`; `None` for an empty one.
pub(crate) fn struct_pb(metadata: &Metadata) -> Option<Struct> {
    structs::to_struct(metadata)
}

/// A `Struct` as a JSON object; unset is empty. A number that is not finite is
/// INVALID_ARGUMENT.
pub(crate) fn metadata_of(value: Option<Struct>) -> Result<Metadata, AuthError> {
    structs::to_json(value.as_ref()).map_err(|e| AuthError::InvalidArgument(e.to_string()))
}

/// `expected_version`: 0 means "any".
pub(crate) fn expected(version: u64) -> Result<Option<i64>, AuthError> {
    match version {
        0 => Ok(None),
        v => i64::try_from(v)
            .map(Some)
            .map_err(|_| AuthError::InvalidArgument("expected_version is out of range".into())),
    }
}

pub(crate) fn event_pb(event: &StoredEvent) -> pb::UserEvent {
    let kind = match event.kind {
        EventKind::UserCreated => pb::UserEventKind::UserCreated,
        EventKind::UserUpdated => pb::UserEventKind::UserUpdated,
        EventKind::UserDisabled => pb::UserEventKind::UserDisabled,
        EventKind::UserEnabled => pb::UserEventKind::UserEnabled,
        EventKind::UserDeleted => pb::UserEventKind::UserDeleted,
        EventKind::PasswordChanged => pb::UserEventKind::PasswordChanged,
        EventKind::RolesChanged => pb::UserEventKind::RolesChanged,
        EventKind::SessionRevoked => pb::UserEventKind::SessionRevoked,
        EventKind::ApiKeyIssued => pb::UserEventKind::ApiKeyIssued,
        EventKind::ApiKeyRevoked => pb::UserEventKind::ApiKeyRevoked,
        EventKind::OrganizationCreated => pb::UserEventKind::OrganizationCreated,
        EventKind::OrganizationUpdated => pb::UserEventKind::OrganizationUpdated,
        EventKind::OrganizationDeleted => pb::UserEventKind::OrganizationDeleted,
        EventKind::MembershipAdded => pb::UserEventKind::MembershipAdded,
        EventKind::MembershipChanged => pb::UserEventKind::MembershipChanged,
        EventKind::MembershipRemoved => pb::UserEventKind::MembershipRemoved,
    };
    // The outbox keeps a key id in the column that holds a session id for SessionRevoked.
    let subject = event.session_id.clone().unwrap_or_default();
    let (session_id, api_key_id) = match event.kind {
        EventKind::ApiKeyIssued | EventKind::ApiKeyRevoked => (String::new(), subject),
        _ => (subject, String::new()),
    };
    pb::UserEvent {
        sequence: unsigned(event.sequence),
        occurred_at: Some(timestamp_millis(event.occurred_at)),
        kind: kind.into(),
        user: event.user().map(user_pb),
        session_id,
        api_key_id,
        organization: match &event.subject {
            EventSubject::Organization(org) => Some(organizations::organization_pb(org)),
            _ => None,
        },
        membership: match &event.subject {
            EventSubject::Membership(m) => Some(organizations::membership_pb(m)),
            _ => None,
        },
    }
}

pub(crate) fn user_pb(user: &UserRecord) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        email_verified: user.email_verified,
        display_name: user.display_name.clone(),
        roles: user.roles.clone(),
        disabled: user.disabled,
        created_at: Some(timestamp_millis(user.created_at)),
        version: unsigned(user.version),
        external_id: user.external_id.clone().unwrap_or_default(),
        service_account: user.service_account,
        metadata: struct_pb(&user.metadata),
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn metadata(values: &[&'static str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for v in values {
            map.append("authorization", MetadataValue::from_static(v));
        }
        map
    }

    #[test]
    fn bearer_header_must_be_exactly_one_bearer_token() {
        assert_eq!(bearer_token(&metadata(&["Bearer abc"])).ok(), Some("abc"));
        assert_eq!(bearer_token(&metadata(&["bearer  abc "])).ok(), Some("abc"));
        for bad in [
            &[][..],
            &["Basic dXNlcjpwYXNz"],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a", "Bearer b"],
            &["abc"],
        ] {
            assert!(bearer_token(&metadata(bad)).is_err(), "{bad:?}");
        }
    }
}
