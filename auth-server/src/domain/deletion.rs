//! Deleting an account, the one way an admin's `DeleteUser` and the user's own
//! `DeleteMyAccount` both take, and the last-admin rule both (and every demotion) obey.

use super::{Change, lockout, memberships::remove_memberships, sessions::revoke_user_sessions};
use crate::{
    clock,
    error::AuthError,
    storage::{self, EventKind, UserRecord, organizations::MembershipsOf, sessions::RevokeReason},
};

/// Refuses a change that leaves no enabled admin (`LAST_ADMIN`). Locks the admin rows on
/// PostgreSQL and MySQL, so concurrent demotions or deletions are decided one after the other.
pub(super) async fn ensure_other_admin(
    change: &Change,
    user: &UserRecord,
) -> Result<(), AuthError> {
    let admins = storage::users::find_enabled_admin_ids_for_update(change.db()).await?;
    if admins.iter().all(|id| id == &user.id) {
        return Err(AuthError::LastAdmin);
    }
    Ok(())
}

/// Deletes `user` in `change`: every live session revoked, every membership removed (one
/// event each), the row a tombstone with its email and external id released, credentials, MFA,
/// reset and email verification tokens erased, the email's lockout cleared, then `UserDeleted`;
/// the erasure of the user's history is queued for `erase_at` (`erasure.rs`). Returns how
/// many sessions were revoked.
pub(super) async fn delete_account(
    change: &mut Change,
    user: &UserRecord,
    erase_at: i64,
) -> Result<usize, AuthError> {
    let count = revoke_user_sessions(change, user, None, RevokeReason::UserDeleted).await?;
    remove_memberships(change, MembershipsOf::User(&user.id)).await?;
    let deleted = storage::users::delete_user(change.db(), user)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    storage::mfa::delete_totp(change.db(), &user.id).await?;
    storage::resets::spend_user_resets(change.db(), &user.id, clock::now_millis()).await?;
    storage::verifications::delete_user_verifications(change.db(), &user.id).await?;
    lockout::clear(change.db(), &user.email).await?;
    storage::erasure::schedule_erasure(change.db(), &user.id, erase_at).await?;
    change.event(EventKind::UserDeleted, &deleted);
    Ok(count)
}
