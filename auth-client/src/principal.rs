//! [`Principal`]: who a valid token speaks for.

use std::time::SystemTime;

/// The caller behind a valid access token; the [`AuthLayer`](crate::AuthLayer) puts it in the
/// request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (`sub`).
    pub user_id: String,
    /// The session id (`sid`).
    pub session_id: String,
    /// Roles granted by the token.
    pub roles: Vec<String>,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// The token id (`jti`), safe to log.
    pub token_id: String,
}

impl Principal {
    /// Whether the principal holds `role`.
    ///
    /// ```
    /// use auth_client::Principal;
    /// let p = Principal {
    ///     user_id: "u1".into(),
    ///     session_id: "s1".into(),
    ///     roles: vec!["admin".into()],
    ///     expires_at: std::time::SystemTime::now(),
    ///     token_id: "t1".into(),
    /// };
    /// assert!(p.has_role("admin"));
    /// assert!(!p.has_role("events.subscriber"));
    /// ```
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
