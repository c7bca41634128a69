//! Batched writes and reads for moving users in: users and credentials inserted two statements
//! per batch (`users::create_user` is a batch of one), and which of a batch's emails and
//! external ids are taken (one query each, whatever the batch size).

use std::collections::{HashMap, HashSet};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::{
    PasswordHash, StorageResult, UserRecord,
    entities::{credentials, users},
    values::roles_json,
};
use crate::clock::now_millis;

/// What `create_user` needs.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Normalized email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Password hash, if the account has a password (none for an invite).
    pub password_hash: Option<PasswordHash>,
    /// Whether the email is known to be verified.
    pub email_verified: bool,
    /// Creation time to keep (an imported user's); `None`: now.
    pub created_at: Option<i64>,
    /// The user's id in the system it came from.
    pub external_id: Option<String>,
    /// A service account (no password, API keys).
    pub service_account: bool,
    /// Admin-owned metadata.
    pub metadata: super::values::Metadata,
}

/// On PostgreSQL, plans this transaction's statements for their actual values. The lookups below
/// are prepared statements with one parameter per email; after five runs PostgreSQL may switch to
/// a generic plan made when the table was still small (a sequential scan comparing every row
/// with every parameter), which turns quadratic as an import grows the table.
pub async fn plan_for_values(conn: &impl ConnectionTrait) -> StorageResult<()> {
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        conn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
            .await?;
    }
    Ok(())
}

/// Of `emails`, those that belong to a live user.
pub async fn existing_emails(
    conn: &impl ConnectionTrait,
    emails: &[String],
) -> StorageResult<HashSet<String>> {
    if emails.is_empty() {
        return Ok(Default::default());
    }
    Ok(users::Entity::find()
        .select_only()
        .column(users::Column::Email)
        .filter(users::Column::Email.is_in(emails.iter().map(String::as_str)))
        .into_tuple::<String>()
        .all(conn)
        .await?
        .into_iter()
        .collect())
}

/// Of `external_ids`, those taken, each with the email of the user holding it.
pub async fn existing_external_ids(
    conn: &impl ConnectionTrait,
    external_ids: &[String],
) -> StorageResult<HashMap<String, String>> {
    if external_ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(users::Entity::find()
        .select_only()
        .column(users::Column::ExternalId)
        .column(users::Column::Email)
        .filter(users::Column::ExternalId.is_in(external_ids.iter().map(String::as_str)))
        .into_tuple::<(String, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect())
}

/// Inserts users (version 1) and their credentials, two statements for the lot. A taken email
/// or external id is `StorageError::Duplicate` and inserts none of them (in a transaction).
pub async fn insert_users(
    conn: &impl ConnectionTrait,
    new: Vec<NewUser>,
) -> StorageResult<Vec<UserRecord>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_millis();
    let mut user_rows = Vec::with_capacity(new.len());
    let mut credential_rows = Vec::new();
    let mut records = Vec::with_capacity(new.len());
    for user in new {
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = user.created_at.unwrap_or(now);
        user_rows.push(users::ActiveModel {
            id: Set(id.clone()),
            email: Set(user.email.clone()),
            email_verified: Set(user.email_verified),
            display_name: Set(user.display_name.clone()),
            roles: Set(roles_json(&user.roles)?),
            disabled: Set(false),
            version: Set(1),
            created_at: Set(created_at),
            updated_at: Set(now),
            deleted_at: Set(None),
            external_id: Set(user.external_id.clone()),
            service_account: Set(user.service_account),
            metadata: Set(match user.metadata.is_empty() {
                true => None,
                false => Some(super::values::metadata_json(&user.metadata)?),
            }),
            last_login_at: Set(None),
        });
        if let Some(hash) = user.password_hash {
            credential_rows.push(credentials::ActiveModel {
                user_id: Set(id.clone()),
                password_hash: Set(hash.0),
                updated_at: Set(now),
            });
        }
        records.push(UserRecord {
            id,
            email: user.email,
            email_verified: user.email_verified,
            display_name: user.display_name,
            roles: user.roles,
            disabled: false,
            version: 1,
            created_at,
            external_id: user.external_id,
            service_account: user.service_account,
            metadata: user.metadata,
        });
    }
    users::Entity::insert_many(user_rows).exec(conn).await?;
    if !credential_rows.is_empty() {
        credentials::Entity::insert_many(credential_rows)
            .exec(conn)
            .await?;
    }
    Ok(records)
}
