//! The in-memory set of revoked sessions, so `Validate` decides without a database round trip.
//!
//! It is loaded at start with every session revoked recently enough that one of its access
//! tokens could still be unexpired, and updated after every revoking commit on this server.
//! Other replicas feed it through [`Revocations::revoke`] from the event stream. Entries older
//! than the access token lifetime (plus clock leeway) can no longer matter and are pruned.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

/// Revoked session ids with the instant they were learned.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    inner: Arc<RwLock<HashMap<String, Instant>>>,
}

impl Revocations {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the session is revoked.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(session_id)
    }

    /// Records a revoked session.
    pub fn revoke(&self, session_id: impl Into<String>) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.entry(session_id.into()).or_insert_with(Instant::now);
    }

    /// Records several revoked sessions.
    pub fn revoke_all<I: IntoIterator<Item = String>>(&self, session_ids: I) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for id in session_ids {
            map.entry(id).or_insert(now);
        }
    }

    /// Number of sessions in the set.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries learned more than `max_age` ago.
    pub fn prune(&self, max_age: Duration) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, learned| learned.elapsed() < max_age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_sessions_are_remembered_until_pruned() {
        let set = Revocations::new();
        set.revoke("a");
        set.revoke_all(["b".to_owned(), "c".to_owned()]);
        assert!(set.is_revoked("a") && set.is_revoked("c") && !set.is_revoked("d"));
        set.prune(Duration::from_secs(3600));
        assert_eq!(set.len(), 3);
        set.prune(Duration::ZERO);
        assert!(set.is_empty());
    }
}
