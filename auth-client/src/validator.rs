//! [`Validator`]: cached, coalesced, fail-closed token validation.
//!
//! Every request of a service calls [`Validator::validate`]. The answer comes from, in order:
//!
//! 1. the **positive cache**, if the entry is *fresh*: validated less than `ttl` ago (default
//!    5 minutes) and never past the token's own `exp`;
//! 2. the **negative cache**, for a token the server refused less than `negative_ttl` ago
//!    (default 10 s), so a flood of garbage costs one RPC per token per interval;
//! 3. one `Validate` RPC, shared by every concurrent lookup of the same token;
//! 4. if that RPC cannot decide (server down, timeout, overload): **outage grace**. A cached
//!    entry whose freshness ended less than `grace` ago (default 5 minutes; zero disables) is
//!    still served and counted; otherwise the call fails closed with
//!    [`AuthClientError::Unavailable`]. A token never seen is never let in.
//!
//! Freshness bounds how long a revoked token can still pass without revocation events; grace
//! bounds how long an outage of the auth service can go unnoticed by users. Neither ever serves
//! a token past its `exp`.
//!
//! Revocations can be pushed in: feed `UserEvents` to [`Validator::apply_event`] (for example
//! from a [`Subscriber`](crate::Subscriber)), and `SessionRevoked`, `PasswordChanged`,
//! `UserDisabled` and `UserDeleted` evict the affected entries at once.
//!
//! **Offline mode** ([`ValidatorBuilder::offline`]) verifies PASETO signatures locally with the
//! keys from `GetPublicKeys` (refetched, rate-limited, when a token names an unknown key, as
//! after a rotation), so validation needs no RPC at all. The trade-off: the server's revocation
//! state is not consulted, so a revoked session is refused only once its `SessionRevoked`
//! event reached [`Validator::apply_event`]; without an event feed, an offline validator trusts
//! a token until its `exp`. Use it when RPC latency matters more than instant revocation, and
//! always together with a [`Subscriber`](crate::Subscriber) feeding `apply_event`.
//!
//! Cache keys are SHA-256 digests of the tokens: raw tokens are not kept in memory.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use auth_proto::pb::{self, UserEventKind};
use futures::{
    FutureExt as _,
    future::{BoxFuture, Shared},
};
use moka::future::Cache;
use sha2::{Digest as _, Sha256};

use crate::{AuthClient, AuthClientError, Principal, offline::OfflineVerifier};

/// Longest token sent to the server; longer ones are refused locally.
const MAX_TOKEN_BYTES: usize = 4096;

type Key = [u8; 32];
type Outcome = Result<Principal, AuthClientError>;

/// Cached validation in front of an [`AuthClient`]. Cheap to clone; clones share the caches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), auth_client::AuthClientError> {
/// use std::time::Duration;
/// use auth_client::{AuthClient, AuthClientError, Validator};
///
/// // Nothing listens on this port: the validator fails closed.
/// let client = AuthClient::connect_lazy("http://127.0.0.1:9")?.with_timeout(Duration::from_millis(200));
/// let validator = Validator::builder(client).ttl(Duration::from_secs(60)).build();
/// let answer = validator.validate("v4.public.never-seen").await;
/// assert!(matches!(answer, Err(AuthClientError::Unavailable(_))));
/// assert_eq!(validator.stats().unavailable_denials, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    client: AuthClient,
    positive: Cache<Key, Arc<Entry>>,
    negative: Cache<Key, Arc<Rejection>>,
    inflight: Mutex<HashMap<Key, Shared<BoxFuture<'static, Outcome>>>>,
    ttl: Duration,
    grace: Duration,
    stats: Counters,
    offline: Option<OfflineVerifier>,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("ttl", &self.inner.ttl)
            .field("grace", &self.inner.grace)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    fresh_until: Instant,
    grace_until: Instant,
}

#[derive(Debug)]
struct Rejection {
    reason: String,
    message: String,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    negative_hits: AtomicU64,
    grace_serves: AtomicU64,
    unavailable_denials: AtomicU64,
    evictions: AtomicU64,
    offline_verifies: AtomicU64,
}

/// Counters a service can export (monotonic since the validator was built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidatorStats {
    /// Answered from a fresh cache entry.
    pub hits: u64,
    /// Needed a `Validate` RPC (one per coalesced group).
    pub misses: u64,
    /// Waited for another caller's RPC for the same token instead of sending one.
    pub coalesced: u64,
    /// Refused from the negative cache.
    pub negative_hits: u64,
    /// Served a stale entry because the server could not decide (outage grace).
    pub grace_serves: u64,
    /// Failed closed: the server could not decide and no entry could be served.
    pub unavailable_denials: u64,
    /// Revocation events applied to the cache.
    pub evictions: u64,
    /// Tokens verified locally (offline mode), without an RPC.
    pub offline_verifies: u64,
}

/// Builds a [`Validator`].
#[derive(Debug)]
pub struct ValidatorBuilder {
    client: AuthClient,
    ttl: Duration,
    grace: Duration,
    negative_ttl: Duration,
    max_entries: u64,
    max_negative_entries: u64,
    offline: bool,
    key_refetch_interval: Duration,
}

impl ValidatorBuilder {
    /// Verify tokens locally with the keys from `GetPublicKeys` instead of calling `Validate`
    /// (default off). Revocation then only comes from events given to
    /// [`Validator::apply_event`]; see the `offline` notes in the crate docs.
    #[must_use]
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Offline mode: shortest interval between key fetches caused by unknown key ids
    /// (default 10 s), so a flood of forged key ids cannot hammer `GetPublicKeys`.
    #[must_use]
    pub fn key_refetch_interval(mut self, interval: Duration) -> Self {
        self.key_refetch_interval = interval;
        self
    }

    /// How long a validated token is trusted without asking again (default 5 minutes; never
    /// past the token's `exp`).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long past its freshness an entry may still be served while the server cannot be
    /// reached (default 5 minutes; `Duration::ZERO` disables outage grace).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long a refused token is refused without asking again (default 10 s).
    #[must_use]
    pub fn negative_ttl(mut self, negative_ttl: Duration) -> Self {
        self.negative_ttl = negative_ttl;
        self
    }

    /// Most tokens kept in the positive cache (default 100 000).
    #[must_use]
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Most tokens kept in the negative cache (default 100 000).
    #[must_use]
    pub fn max_negative_entries(mut self, max_entries: u64) -> Self {
        self.max_negative_entries = max_entries;
        self
    }

    /// Builds the validator.
    pub fn build(self) -> Validator {
        let positive = Cache::builder()
            .max_capacity(self.max_entries)
            .time_to_live((self.ttl + self.grace).max(Duration::from_millis(1)))
            .support_invalidation_closures()
            .build();
        let negative = Cache::builder()
            .max_capacity(self.max_negative_entries)
            .time_to_live(self.negative_ttl.max(Duration::from_millis(1)))
            .build();
        Validator {
            inner: Arc::new(Inner {
                client: self.client,
                positive,
                negative,
                inflight: Mutex::new(HashMap::new()),
                ttl: self.ttl,
                grace: self.grace,
                stats: Counters::default(),
                offline: self
                    .offline
                    .then(|| OfflineVerifier::new(self.key_refetch_interval)),
            }),
        }
    }
}

fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

fn remaining(expires_at: SystemTime) -> Duration {
    expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

impl Validator {
    /// A builder with the defaults: TTL 5 min, grace 5 min, negative TTL 10 s.
    pub fn builder(client: AuthClient) -> ValidatorBuilder {
        ValidatorBuilder {
            client,
            ttl: Duration::from_secs(300),
            grace: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(10),
            max_entries: 100_000,
            max_negative_entries: 100_000,
            offline: false,
            key_refetch_interval: crate::offline::REFETCH_INTERVAL,
        }
    }

    /// Decides whether `token` is valid now. `Unauthenticated` is a decision; `Unavailable`
    /// means nobody could decide, and the caller must deny.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthClientError> {
        let inner = &self.inner;
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            let reason = if token.is_empty() {
                "TOKEN_MISSING"
            } else {
                "TOKEN_INVALID"
            };
            return Err(AuthClientError::Unauthenticated {
                reason: reason.into(),
                message: "invalid token".into(),
            });
        }
        let key = key(token);
        let cached = inner.positive.get(&key).await;
        let now = Instant::now();
        // `fresh_until` was capped at the token's `exp` when the entry was made (on the
        // monotonic clock), so the hot path needs no wall-clock read.
        if let Some(entry) = &cached
            && now < entry.fresh_until
        {
            inner.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry.principal.clone());
        }
        if let Some(rejection) = inner.negative.get(&key).await {
            inner.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Err(AuthClientError::Unauthenticated {
                reason: rejection.reason.clone(),
                message: rejection.message.clone(),
            });
        }
        let outcome = match &inner.offline {
            Some(verifier) => {
                inner.stats.offline_verifies.fetch_add(1, Ordering::Relaxed);
                verifier.verify(&inner.client, token).await
            }
            None => self.remote(key, token).await,
        };
        match outcome {
            Ok(principal) => {
                let now = Instant::now();
                let left = remaining(principal.expires_at);
                let fresh_until = now + inner.ttl.min(left);
                let entry = Entry {
                    principal: principal.clone(),
                    fresh_until,
                    grace_until: now + (inner.ttl + inner.grace).min(left),
                };
                inner.positive.insert(key, Arc::new(entry)).await;
                Ok(principal)
            }
            Err(AuthClientError::Unauthenticated { reason, message }) => {
                inner.positive.invalidate(&key).await;
                let rejection = Rejection {
                    reason: reason.clone(),
                    message: message.clone(),
                };
                inner.negative.insert(key, Arc::new(rejection)).await;
                Err(AuthClientError::Unauthenticated { reason, message })
            }
            Err(error @ AuthClientError::PermissionDenied(_)) => Err(error),
            Err(undecided) => {
                let now = Instant::now();
                match cached {
                    Some(entry)
                        if now < entry.grace_until
                            && remaining(entry.principal.expires_at) > Duration::ZERO =>
                    {
                        inner.stats.grace_serves.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(jti = %entry.principal.token_id, "auth service unavailable; serving a cached validation (outage grace)");
                        Ok(entry.principal.clone())
                    }
                    _ => {
                        inner
                            .stats
                            .unavailable_denials
                            .fetch_add(1, Ordering::Relaxed);
                        Err(match undecided {
                            AuthClientError::Unavailable(message) => {
                                AuthClientError::Unavailable(message)
                            }
                            other => AuthClientError::Unavailable(other.to_string()),
                        })
                    }
                }
            }
        }
    }

    /// One `Validate` RPC per token at a time: concurrent callers share it.
    async fn remote(&self, key: Key, token: &str) -> Outcome {
        let inner = &self.inner;
        let (call, leader) = {
            let mut inflight = inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(call) => (call.clone(), false),
                None => {
                    let client = inner.client.clone();
                    let token = token.to_owned();
                    let call = async move { client.validate(&token).await }
                        .boxed()
                        .shared();
                    inflight.insert(key, call.clone());
                    (call, true)
                }
            }
        };
        let counter = if leader {
            &inner.stats.misses
        } else {
            &inner.stats.coalesced
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let outcome = call.clone().await;
        let mut inflight = inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&key)
            .is_some_and(|current| current.ptr_eq(&call))
        {
            inflight.remove(&key);
        }
        outcome
    }

    /// Applies a user event: revocation kinds evict the affected cache entries at once (and,
    /// offline, are remembered so the tokens stay refused).
    pub fn apply_event(&self, event: &pb::UserEvent) {
        let kind = event.kind();
        let user_id = event
            .user
            .as_ref()
            .map(|u| u.id.clone())
            .unwrap_or_default();
        if let Some(verifier) = &self.inner.offline {
            match kind {
                UserEventKind::SessionRevoked => verifier.revoke_session(&event.session_id),
                UserEventKind::UserDisabled | UserEventKind::UserDeleted => {
                    verifier.block_user(&user_id)
                }
                UserEventKind::UserEnabled => verifier.unblock_user(&user_id),
                _ => {}
            }
        }
        let result = match kind {
            UserEventKind::SessionRevoked => {
                let session_id = event.session_id.clone();
                self.inner
                    .positive
                    .invalidate_entries_if(move |_, entry| entry.principal.session_id == session_id)
            }
            UserEventKind::PasswordChanged
            | UserEventKind::UserDisabled
            | UserEventKind::UserDeleted => self
                .inner
                .positive
                .invalidate_entries_if(move |_, entry| entry.principal.user_id == user_id),
            _ => return,
        };
        match result {
            Ok(_) => {
                self.inner.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(error.message = %error, "cannot evict revoked entries"),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> ValidatorStats {
        let c = &self.inner.stats;
        ValidatorStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            negative_hits: c.negative_hits.load(Ordering::Relaxed),
            grace_serves: c.grace_serves.load(Ordering::Relaxed),
            unavailable_denials: c.unavailable_denials.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            offline_verifies: c.offline_verifies.load(Ordering::Relaxed),
        }
    }

    /// The client behind the validator.
    pub fn client(&self) -> &AuthClient {
        &self.inner.client
    }
}
