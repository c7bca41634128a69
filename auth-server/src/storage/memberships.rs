//! Memberships: a user's roles in an organization. A removed membership is a tombstone
//! (`removed_at` set), so adding the user again continues its version. Reads for callers see
//! live rows only.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};

use super::{StorageError, StorageResult, org_entities::memberships, values::roles_json};
use crate::clock::now_millis;

pub(super) fn convert<M, R: TryFrom<M, Error = StorageError>>(
    rows: Vec<M>,
) -> StorageResult<Vec<R>> {
    rows.into_iter().map(R::try_from).collect()
}

/// A membership's state, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// The organization.
    pub organization_id: String,
    /// The user.
    pub user_id: String,
    /// Roles within the organization (sorted).
    pub roles: Vec<String>,
    /// Incremented by every change, across removals and re-adds.
    pub version: i64,
    /// First added, unix ms.
    pub created_at: i64,
    /// Last change, unix ms.
    pub updated_at: i64,
    /// Whether it was removed.
    #[serde(default)]
    pub removed: bool,
}

impl TryFrom<memberships::Model> for MembershipRecord {
    type Error = StorageError;

    fn try_from(m: memberships::Model) -> Result<Self, Self::Error> {
        let roles = serde_json::from_str(&m.roles).map_err(|_| {
            StorageError::Corrupt(format!("roles of {} in {}", m.user_id, m.organization_id))
        })?;
        Ok(Self {
            organization_id: m.organization_id,
            user_id: m.user_id,
            roles,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
            removed: m.removed_at.is_some(),
        })
    }
}

/// The membership of `user_id` in `organization_id`, removed or not.
pub async fn find_membership(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
) -> StorageResult<Option<MembershipRecord>> {
    memberships::Entity::find_by_id((organization_id.to_owned(), user_id.to_owned()))
        .one(conn)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// Adds a membership, or revives a removed one with its version bumped. `None` when the
/// membership is live already (concurrent adds: exactly one wins).
pub async fn add_membership(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    roles: &[String],
) -> StorageResult<Option<MembershipRecord>> {
    let now = now_millis();
    match find_membership(conn, organization_id, user_id).await? {
        None => {
            let inserted = memberships::Entity::insert(memberships::ActiveModel {
                organization_id: Set(organization_id.to_owned()),
                user_id: Set(user_id.to_owned()),
                roles: Set(roles_json(roles)?),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
                removed_at: Set(None),
            })
            .exec_without_returning(conn)
            .await;
            match inserted {
                Ok(_) => {}
                Err(error) => match StorageError::from(error) {
                    StorageError::Duplicate(_) => return Ok(None),
                    other => return Err(other),
                },
            }
        }
        Some(existing) if existing.removed => {
            let result = memberships::Entity::update_many()
                .col_expr(memberships::Column::Roles, Expr::value(roles_json(roles)?))
                .col_expr(
                    memberships::Column::Version,
                    Expr::col(memberships::Column::Version).add(1),
                )
                .col_expr(memberships::Column::UpdatedAt, Expr::value(now))
                .col_expr(
                    memberships::Column::RemovedAt,
                    Expr::value(Option::<i64>::None),
                )
                .filter(memberships::Column::OrganizationId.eq(organization_id))
                .filter(memberships::Column::UserId.eq(user_id))
                .filter(memberships::Column::Version.eq(existing.version))
                .filter(memberships::Column::RemovedAt.is_not_null())
                .exec(conn)
                .await?;
            if result.rows_affected != 1 {
                return Ok(None);
            }
        }
        Some(_) => return Ok(None),
    }
    find_membership(conn, organization_id, user_id).await
}

/// Sets the roles of a live membership (if still at `expected_version`, when given) and bumps
/// its version. `None` if it is not live or moved on.
pub async fn update_membership(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    expected_version: Option<i64>,
    roles: &[String],
) -> StorageResult<Option<MembershipRecord>> {
    let mut update = memberships::Entity::update_many()
        .col_expr(memberships::Column::Roles, Expr::value(roles_json(roles)?))
        .col_expr(
            memberships::Column::Version,
            Expr::col(memberships::Column::Version).add(1),
        )
        .col_expr(memberships::Column::UpdatedAt, Expr::value(now_millis()))
        .filter(memberships::Column::OrganizationId.eq(organization_id))
        .filter(memberships::Column::UserId.eq(user_id))
        .filter(memberships::Column::RemovedAt.is_null());
    if let Some(version) = expected_version {
        update = update.filter(memberships::Column::Version.eq(version));
    }
    if update.exec(conn).await?.rows_affected != 1 {
        return Ok(None);
    }
    find_membership(conn, organization_id, user_id).await
}

/// Removes a live membership (if still at `expected_version`, when given). `None` if it is not
/// live or moved on.
pub async fn remove_membership(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    expected_version: Option<i64>,
) -> StorageResult<Option<MembershipRecord>> {
    let now = now_millis();
    let mut update = memberships::Entity::update_many()
        .col_expr(memberships::Column::RemovedAt, Expr::value(now))
        .col_expr(memberships::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            memberships::Column::Version,
            Expr::col(memberships::Column::Version).add(1),
        )
        .filter(memberships::Column::OrganizationId.eq(organization_id))
        .filter(memberships::Column::UserId.eq(user_id))
        .filter(memberships::Column::RemovedAt.is_null());
    if let Some(version) = expected_version {
        update = update.filter(memberships::Column::Version.eq(version));
    }
    if update.exec(conn).await?.rows_affected != 1 {
        return Ok(None);
    }
    find_membership(conn, organization_id, user_id).await
}

/// Which memberships [`remove_all_memberships`] ends.
#[derive(Debug, Clone, Copy)]
pub enum MembershipsOf<'a> {
    /// Every member of an organization.
    Organization(&'a str),
    /// Every organization of a user.
    User(&'a str),
}

/// Removes every live membership of an organization or of a user; returns their new states
/// (for one `MembershipRemoved` each).
pub async fn remove_all_memberships(
    conn: &impl ConnectionTrait,
    of: MembershipsOf<'_>,
) -> StorageResult<Vec<MembershipRecord>> {
    let column = match of {
        MembershipsOf::Organization(_) => memberships::Column::OrganizationId,
        MembershipsOf::User(_) => memberships::Column::UserId,
    };
    let (MembershipsOf::Organization(id) | MembershipsOf::User(id)) = of;
    let now = now_millis();
    let mut live: Vec<MembershipRecord> = convert(
        memberships::Entity::find()
            .filter(column.eq(id))
            .filter(memberships::Column::RemovedAt.is_null())
            .order_by_asc(memberships::Column::OrganizationId)
            .order_by_asc(memberships::Column::UserId)
            .all(conn)
            .await?,
    )?;
    if live.is_empty() {
        return Ok(live);
    }
    memberships::Entity::update_many()
        .col_expr(memberships::Column::RemovedAt, Expr::value(now))
        .col_expr(memberships::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            memberships::Column::Version,
            Expr::col(memberships::Column::Version).add(1),
        )
        .filter(column.eq(id))
        .filter(memberships::Column::RemovedAt.is_null())
        .exec(conn)
        .await?;
    for m in &mut live {
        m.version += 1;
        m.updated_at = now;
        m.removed = true;
    }
    Ok(live)
}

/// Up to `limit` live members of an organization with a user id greater than `after_user`.
pub async fn find_members_page(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    after_user: &str,
    limit: u64,
) -> StorageResult<Vec<MembershipRecord>> {
    convert(
        memberships::Entity::find()
            .filter(memberships::Column::OrganizationId.eq(organization_id))
            .filter(memberships::Column::UserId.gt(after_user))
            .filter(memberships::Column::RemovedAt.is_null())
            .order_by_asc(memberships::Column::UserId)
            .limit(limit)
            .all(conn)
            .await?,
    )
}

/// Every live membership of a user, by organization id.
pub async fn find_user_memberships(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Vec<MembershipRecord>> {
    convert(
        memberships::Entity::find()
            .filter(memberships::Column::UserId.eq(user_id))
            .filter(memberships::Column::RemovedAt.is_null())
            .order_by_asc(memberships::Column::OrganizationId)
            .all(conn)
            .await?,
    )
}

/// Up to `limit` live memberships after `(organization_id, user_id)` in that order: the
/// snapshot's keyset.
pub async fn find_memberships_after(
    conn: &impl ConnectionTrait,
    after: (&str, &str),
    limit: u64,
) -> StorageResult<Vec<MembershipRecord>> {
    use sea_orm::sea_query::Cond;
    let (org, user) = after;
    convert(
        memberships::Entity::find()
            .filter(
                Cond::any()
                    .add(memberships::Column::OrganizationId.gt(org))
                    .add(
                        Cond::all()
                            .add(memberships::Column::OrganizationId.eq(org))
                            .add(memberships::Column::UserId.gt(user)),
                    ),
            )
            .filter(memberships::Column::RemovedAt.is_null())
            .order_by_asc(memberships::Column::OrganizationId)
            .order_by_asc(memberships::Column::UserId)
            .limit(limit)
            .all(conn)
            .await?,
    )
}

/// Number of live memberships.
pub async fn count_memberships(conn: &impl ConnectionTrait) -> StorageResult<u64> {
    Ok(memberships::Entity::find()
        .filter(memberships::Column::RemovedAt.is_null())
        .count(conn)
        .await?)
}

/// Live members of an organization.
pub async fn count_members(
    conn: &impl ConnectionTrait,
    organization_id: &str,
) -> StorageResult<u64> {
    Ok(memberships::Entity::find()
        .filter(memberships::Column::OrganizationId.eq(organization_id))
        .filter(memberships::Column::RemovedAt.is_null())
        .count(conn)
        .await?)
}

/// Whether the user exists and is not deleted. On PostgreSQL and MySQL its row stays
/// share-locked to the end of the transaction, so it cannot be deleted meanwhile.
pub async fn lock_live_user(conn: &impl ConnectionTrait, user_id: &str) -> StorageResult<bool> {
    use super::entities::users;
    let mut query = users::Entity::find_by_id(user_id.to_owned())
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::DeletedAt.is_null());
    if super::Store::locks_rows(conn) {
        query = query.lock_shared();
    }
    Ok(query.into_tuple::<String>().one(conn).await?.is_some())
}
