//! [`Principal`]: who a valid token speaks for.

use std::{collections::BTreeMap, time::SystemTime};

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
    /// The user's organizations (id -> roles in it) as of the token's issue: a membership
    /// added or removed since shows at the next refresh.
    pub organizations: BTreeMap<String, Vec<String>>,
    /// Whether the user has more memberships than the token carries (at most 32): for an
    /// organization not listed, ask `AdminService/ListUserOrganizations`.
    pub organizations_truncated: bool,
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
    ///     organizations: [("org-1".to_owned(), vec!["editor".to_owned()])].into(),
    ///     organizations_truncated: false,
    /// };
    /// assert!(p.has_role("admin"));
    /// assert!(!p.has_role("events.subscriber"));
    /// assert!(p.has_org_role("org-1", "editor"));
    /// assert!(!p.has_org_role("org-1", "owner"));
    /// assert!(!p.has_org_role("org-2", "editor"));
    /// ```
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The principal's roles in `organization_id`, if the token lists it as a member.
    pub fn org_roles(&self, organization_id: &str) -> Option<&[String]> {
        self.organizations.get(organization_id).map(Vec::as_slice)
    }

    /// Whether the token lists the principal as a member of `organization_id`.
    pub fn is_member(&self, organization_id: &str) -> bool {
        self.organizations.contains_key(organization_id)
    }

    /// Whether the principal holds `role` in `organization_id`.
    pub fn has_org_role(&self, organization_id: &str, role: &str) -> bool {
        self.org_roles(organization_id)
            .is_some_and(|roles| roles.iter().any(|r| r == role))
    }
}
