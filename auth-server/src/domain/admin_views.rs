//! The admin reads behind `AdminService`: one user with its protection state, keyset pages of
//! users and of the audit trail (opaque page tokens), and a user's sessions.

use base64::Engine as _;

use super::{
    Admin,
    rules::{check_role, check_user_id},
};
use crate::{
    clock,
    error::AuthError,
    storage::{
        self, UserRecord,
        audit::{AuditEntry, AuditFilter, AuditKind},
        sessions::SessionDetails,
        users::UserFilter,
    },
};

/// Largest page of ListUsers and ListAuditEvents.
pub const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_PAGE_SIZE: u32 = 50;

/// An account with what only admins see.
#[derive(Debug, Clone)]
pub struct UserDetails {
    /// Public state.
    pub user: UserRecord,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether TOTP is enabled.
    pub mfa_enabled: bool,
    /// Lock end, while locked.
    pub locked_until: Option<i64>,
    /// Failures in the current window.
    pub failed_logins: u32,
    /// Live sessions.
    pub live_sessions: u64,
}

pub(super) fn page_size(requested: u32) -> u64 {
    u64::from(match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    })
}

/// Pages are read with one row more than asked: if it came, the page is cut to `size` and its
/// last row is where the next page starts.
pub(super) fn cut_page<T>(rows: &mut Vec<T>, size: u64) -> Option<&T> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        rows.last()
    } else {
        None
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(super) fn encode_page_token(kind: &str, cursor: &str) -> String {
    B64.encode(format!("{kind}:{cursor}"))
}

pub(crate) fn decode_page_token(kind: &str, token: &str) -> Result<Option<String>, AuthError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || AuthError::InvalidArgument("page_token is not one this call returned".into());
    let bytes = B64.decode(token.trim()).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let cursor = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    // Cursors this call returns are ids and numbers: never control characters (a NUL would
    // otherwise reach the database, which PostgreSQL refuses).
    if cursor.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(Some(cursor.to_owned()))
}

impl Admin {
    /// One account with its protection state.
    pub async fn get_user(&self, user_id: &str) -> Result<UserDetails, AuthError> {
        let user = self.find_user(user_id).await?;
        let conn = self.d().store.conn();
        let now = clock::now_millis();
        let lockout = self.accounts.lockout_state(&user.email).await?;
        Ok(UserDetails {
            has_password: storage::users::has_password(conn, &user.id).await?,
            mfa_enabled: storage::mfa::find_totp(conn, &user.id)
                .await?
                .is_some_and(|t| t.confirmed),
            locked_until: lockout.locked_until,
            failed_logins: lockout.failures,
            live_sessions: storage::sessions::count_live_sessions(conn, &user.id, now).await?,
            user,
        })
    }

    /// One page of users by id; the next page's token if there may be more.
    pub async fn list_users(
        &self,
        requested_size: u32,
        page_token: &str,
        mut filter: UserFilter,
    ) -> Result<(Vec<UserRecord>, Option<String>), AuthError> {
        let after = decode_page_token("u", page_token)?.unwrap_or_default();
        if let Some(role) = &filter.role {
            check_role(role)?;
        }
        filter.email_prefix = filter
            .email_prefix
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty());
        if filter.email_prefix.as_ref().is_some_and(|p| p.len() > 254) {
            return Err(AuthError::InvalidArgument(
                "email_prefix is too long".into(),
            ));
        }
        if filter
            .email_prefix
            .as_ref()
            .is_some_and(|p| p.chars().any(char::is_control))
        {
            return Err(AuthError::InvalidArgument(
                "email_prefix must not contain control characters".into(),
            ));
        }
        let size = page_size(requested_size);
        let mut users =
            storage::users::find_users_page(self.d().store.conn(), &after, size + 1, &filter)
                .await?;
        let next = cut_page(&mut users, size).map(|u| encode_page_token("u", &u.id));
        Ok((users, next))
    }

    /// The user's sessions, newest first.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        include_inactive: bool,
    ) -> Result<Vec<SessionDetails>, AuthError> {
        let user = self.find_user(user_id).await?;
        Ok(storage::sessions::find_user_sessions(
            self.d().store.conn(),
            &user.id,
            include_inactive,
            clock::now_millis(),
        )
        .await?)
    }

    /// One page of the audit trail, newest first.
    pub async fn list_audit_events(
        &self,
        requested_size: u32,
        page_token: &str,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEntry>, Option<String>), AuthError> {
        let before = match decode_page_token("a", page_token)? {
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
                AuthError::InvalidArgument("page_token is not one this call returned".into())
            })?),
            None => None,
        };
        if let Some(kind) = &filter.kind
            && AuditKind::parse(kind).is_none()
        {
            return Err(AuthError::InvalidArgument(format!(
                "unknown audit kind {kind:?}"
            )));
        }
        if let Some(subject) = &filter.subject_id {
            check_user_id(subject)?;
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(AuthError::InvalidArgument(
                "since must be before until".into(),
            ));
        }
        let size = page_size(requested_size);
        let mut entries =
            storage::audit::find_audit_page(self.d().store.conn(), before, size + 1, &filter)
                .await?;
        let next = cut_page(&mut entries, size).map(|e| encode_page_token("a", &e.id.to_string()));
        Ok((entries, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_foreign_ones() {
        let token = encode_page_token("u", "0190-abc");
        assert_eq!(
            decode_page_token("u", &token).ok().flatten().as_deref(),
            Some("0190-abc")
        );
        assert!(decode_page_token("a", &token).is_err());
        assert!(decode_page_token("u", "%%%").is_err());
        assert_eq!(decode_page_token("u", "").ok().flatten(), None);
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(10_000), 500);
    }
}
