//! Input rules the flows share: role names, display names and user ids.

use crate::error::AuthError;

/// Checks a role name against `[a-z][a-z0-9._-]{0,63}`.
pub fn check_role(role: &str) -> Result<(), AuthError> {
    let mut chars = role.chars();
    let valid = role.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidArgument(format!(
            "role {role:?} must match [a-z][a-z0-9._-]{{0,63}}"
        )))
    }
}

/// Validates, sorts and deduplicates role names.
pub(super) fn check_roles(mut roles: Vec<String>) -> Result<Vec<String>, AuthError> {
    for role in &roles {
        check_role(role)?;
    }
    roles.sort();
    roles.dedup();
    if roles.len() > 64 {
        return Err(AuthError::InvalidArgument("at most 64 roles".into()));
    }
    Ok(roles)
}

/// Validates a display name; returns it trimmed.
pub(super) fn check_display_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.len() > 256 {
        return Err(AuthError::InvalidArgument(
            "display name is longer than 256 bytes".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument(
            "display name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// A `user_id` field: must look like a UUID, so garbage is INVALID_ARGUMENT, not NOT_FOUND.
pub fn check_user_id(id: &str) -> Result<&str, AuthError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AuthError::InvalidArgument("user_id is required".into()));
    }
    uuid::Uuid::try_parse(id)
        .map_err(|_| AuthError::InvalidArgument("user_id must be a UUID".into()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_the_pattern() {
        for ok in ["admin", "events.subscriber", "a", "svc-1_x"] {
            assert!(check_role(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "1abc", "a b", &"a".repeat(65)] {
            assert!(check_role(bad).is_err(), "{bad}");
        }
    }
}
