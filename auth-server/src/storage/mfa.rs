//! TOTP enrollments (secret encrypted by the caller), recovery code hashes, and the pending
//! second step of MFA logins.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _,
    QueryFilter, sea_query::Expr,
};

use super::{
    ClientInfo, StorageResult,
    entities::{mfa_challenges, mfa_recovery_codes, mfa_totp},
    truncate,
};

/// A user's TOTP enrollment.
#[derive(Clone)]
pub struct TotpRecord {
    /// Encrypted secret.
    pub secret_enc: String,
    /// Whether it was confirmed (TOTP is then required at login).
    pub confirmed: bool,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("secret_enc", &"[redacted]")
            .field("confirmed", &self.confirmed)
            .finish()
    }
}

/// The enrollment of `user_id`, if any.
pub async fn find_totp(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Option<TotpRecord>> {
    Ok(mfa_totp::Entity::find_by_id(user_id.to_owned())
        .one(conn)
        .await?
        .map(|m| TotpRecord {
            secret_enc: m.secret_enc,
            confirmed: m.confirmed_at.is_some(),
        }))
}

/// Stores a pending (unconfirmed) enrollment, replacing a pending one. A confirmed
/// enrollment is left alone: returns `false`.
pub async fn create_pending_totp(
    conn: &impl ConnectionTrait,
    user_id: &str,
    secret_enc: String,
    now: i64,
) -> StorageResult<bool> {
    mfa_totp::Entity::delete_many()
        .filter(mfa_totp::Column::UserId.eq(user_id))
        .filter(mfa_totp::Column::ConfirmedAt.is_null())
        .exec(conn)
        .await?;
    super::insert_if_absent(
        conn,
        mfa_totp::ActiveModel {
            user_id: Set(user_id.to_owned()),
            secret_enc: Set(secret_enc),
            confirmed_at: Set(None),
            last_used_step: Set(None),
            created_at: Set(now),
        },
        mfa_totp::Column::UserId,
    )
    .await
}

/// Confirms a pending enrollment with the step of the code that proved it. `false` if there
/// was no pending enrollment (confirmed meanwhile, or none).
pub async fn confirm_totp(
    conn: &impl ConnectionTrait,
    user_id: &str,
    step: i64,
    now: i64,
) -> StorageResult<bool> {
    let result = mfa_totp::Entity::update_many()
        .col_expr(mfa_totp::Column::ConfirmedAt, Expr::value(now))
        .col_expr(mfa_totp::Column::LastUsedStep, Expr::value(step))
        .filter(mfa_totp::Column::UserId.eq(user_id))
        .filter(mfa_totp::Column::ConfirmedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Accepts a code's time step once: succeeds only if no code of this or a later step was
/// accepted before (RFC 6238 §5.2), atomically under concurrent use.
pub async fn spend_totp_step(
    conn: &impl ConnectionTrait,
    user_id: &str,
    step: i64,
) -> StorageResult<bool> {
    let result = mfa_totp::Entity::update_many()
        .col_expr(mfa_totp::Column::LastUsedStep, Expr::value(step))
        .filter(mfa_totp::Column::UserId.eq(user_id))
        .filter(mfa_totp::Column::ConfirmedAt.is_not_null())
        .filter(
            mfa_totp::Column::LastUsedStep
                .is_null()
                .or(mfa_totp::Column::LastUsedStep.lt(step)),
        )
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Removes the enrollment and the recovery codes; whether there was an enrollment.
pub async fn delete_totp(conn: &impl ConnectionTrait, user_id: &str) -> StorageResult<bool> {
    mfa_recovery_codes::Entity::delete_many()
        .filter(mfa_recovery_codes::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let result = mfa_totp::Entity::delete_many()
        .filter(mfa_totp::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Replaces the user's recovery codes with these hashes.
pub async fn replace_recovery_codes(
    conn: &impl ConnectionTrait,
    user_id: &str,
    hashes: Vec<String>,
    now: i64,
) -> StorageResult<()> {
    mfa_recovery_codes::Entity::delete_many()
        .filter(mfa_recovery_codes::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let rows = hashes
        .into_iter()
        .map(|hash| mfa_recovery_codes::ActiveModel {
            code_hash: Set(hash),
            user_id: Set(user_id.to_owned()),
            created_at: Set(now),
            used_at: Set(None),
        });
    mfa_recovery_codes::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Spends an unused recovery code of the user; `false` if unknown or used.
pub async fn spend_recovery_code(
    conn: &impl ConnectionTrait,
    user_id: &str,
    code_hash: &str,
    now: i64,
) -> StorageResult<bool> {
    let result = mfa_recovery_codes::Entity::update_many()
        .col_expr(mfa_recovery_codes::Column::UsedAt, Expr::value(now))
        .filter(mfa_recovery_codes::Column::CodeHash.eq(code_hash))
        .filter(mfa_recovery_codes::Column::UserId.eq(user_id))
        .filter(mfa_recovery_codes::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// A pending MFA login.
#[derive(Debug, Clone)]
pub struct ChallengeRecord {
    /// The user.
    pub user_id: String,
    /// The email the login used.
    pub email: String,
    /// Expiry.
    pub expires_at: i64,
    /// Set once completed.
    pub used_at: Option<i64>,
    /// Client of the first step.
    pub client: ClientInfo,
}

/// Stores a pending MFA login.
pub async fn create_challenge(
    conn: &impl ConnectionTrait,
    token_hash: String,
    user_id: &str,
    email: &str,
    now: i64,
    expires_at: i64,
    client: &ClientInfo,
) -> StorageResult<()> {
    mfa_challenges::ActiveModel {
        token_hash: Set(token_hash),
        user_id: Set(user_id.to_owned()),
        email: Set(email.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
        client_addr: Set(client.addr.as_deref().map(|a| truncate(a, 64))),
        user_agent: Set(client.user_agent.as_deref().map(|a| truncate(a, 512))),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// The pending login with this token hash.
pub async fn find_challenge(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> StorageResult<Option<ChallengeRecord>> {
    Ok(mfa_challenges::Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
        .map(|m| ChallengeRecord {
            user_id: m.user_id,
            email: m.email,
            expires_at: m.expires_at,
            used_at: m.used_at,
            client: ClientInfo {
                addr: m.client_addr,
                user_agent: m.user_agent,
            },
        }))
}

/// Marks a pending login completed; `false` if it was completed already (or expired).
pub async fn spend_challenge(
    conn: &impl ConnectionTrait,
    token_hash: &str,
    now: i64,
) -> StorageResult<bool> {
    let result = mfa_challenges::Entity::update_many()
        .col_expr(mfa_challenges::Column::UsedAt, Expr::value(now))
        .filter(mfa_challenges::Column::TokenHash.eq(token_hash))
        .filter(mfa_challenges::Column::UsedAt.is_null())
        .filter(mfa_challenges::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Deletes challenges that expired before `cutoff` (housekeeping).
pub async fn delete_expired_challenges(
    conn: &impl ConnectionTrait,
    cutoff: i64,
) -> StorageResult<u64> {
    let result = mfa_challenges::Entity::delete_many()
        .filter(mfa_challenges::Column::ExpiresAt.lt(cutoff))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
