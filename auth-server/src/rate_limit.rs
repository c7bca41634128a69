//! Per-client-address rate limiting (a GCRA token bucket from `governor`) for the calls that
//! cost a password hash or guard a secret, and the client address itself: the TCP peer, or,
//! behind a configured trusted proxy, the last address it put in `x-forwarded-for`.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter as Governor,
    clock::{Clock as _, DefaultClock},
};

use crate::error::AuthError;

/// Per-address rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Bucket size.
    pub burst: u32,
}

/// The rate limiter shared by every rate-limited RPC.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with `settings`, or one that lets everything through.
    pub fn new(settings: Option<RateLimitSettings>) -> Self {
        let inner = settings.and_then(|s| {
            let per_minute = NonZeroU32::new(s.per_minute)?;
            let burst = NonZeroU32::new(s.burst)?;
            Some(Arc::new(Governor::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            )))
        });
        Self {
            inner,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token for `addr`; `RateLimited` with the wait if the bucket is empty.
    /// Requests without a known address (not over TCP) are not limited.
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), AuthError> {
        let (Some(limiter), Some(addr)) = (&self.inner, addr) else {
            return Ok(());
        };
        limiter.check_key(&addr).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.clock.now());
            tracing::info!(client_addr = %addr, retry_after_ms = retry_after.as_millis() as u64, "rate limited");
            AuthError::RateLimited {
                retry_after: retry_after.max(Duration::from_millis(1)),
            }
        })
    }

    /// Forgets addresses whose bucket is full again (bounded memory under a spray of
    /// addresses).
    pub fn prune(&self) {
        if let Some(limiter) = &self.inner {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Works out the client address of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrResolver {
    trusted_proxies: Arc<Vec<IpAddr>>,
}

impl ClientAddrResolver {
    /// Believes `x-forwarded-for` only from these peers.
    pub fn new(trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    /// The client address: the peer, unless the peer is a trusted proxy, in which case the
    /// right-most `x-forwarded-for` entry that is not itself a trusted proxy.
    pub fn resolve(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let hops = forwarded_for
            .iter()
            .flat_map(|header| header.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusted_proxies.contains(&ip) => continue,
                Ok(ip) => return Some(ip),
                // A garbled hop ends what we can believe: the proxy itself is the client.
                Err(_) => return Some(peer),
            }
        }
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let resolver = ClientAddrResolver::new(vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let xff = ["203.0.113.9, 198.51.100.7, 10.0.0.2"];
        assert_eq!(
            resolver.resolve(Some(ip("10.0.0.1")), &xff),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            resolver.resolve(Some(ip("192.0.2.5")), &xff),
            Some(ip("192.0.2.5"))
        );
        assert_eq!(
            resolver.resolve(Some(ip("10.0.0.1")), &[]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            resolver.resolve(Some(ip("10.0.0.1")), &["junk"]),
            Some(ip("10.0.0.1"))
        );
        let off = ClientAddrResolver::default();
        assert_eq!(
            off.resolve(Some(ip("10.0.0.1")), &xff),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_bucket_refuses_past_the_burst_with_a_wait() {
        let limiter = RateLimiter::new(Some(RateLimitSettings {
            per_minute: 60,
            burst: 3,
        }));
        let a = Some(ip("192.0.2.1"));
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        match limiter.check(a) {
            Err(AuthError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}")
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert!(
            limiter.check(Some(ip("192.0.2.2"))).is_ok(),
            "other addresses have their own bucket"
        );
        assert!(RateLimiter::new(None).check(a).is_ok());
    }
}
