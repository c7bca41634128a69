//! Organizations.
//!
//! A deleted organization is a tombstone: `deleted_at` set, slug released (`#deleted:<id>`),
//! every membership removed (see `memberships`). Reads for callers see live rows only.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};

pub use super::memberships::*;
pub use super::values::Metadata;
use super::{
    StorageError, StorageResult,
    memberships::convert,
    org_entities::organizations,
    values::{like_escape, metadata_json, parse_metadata},
};
use crate::clock::now_millis;

/// An organization's state, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationRecord {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique lower-case slug.
    pub slug: String,
    /// Admin-owned metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Incremented by every change.
    pub version: i64,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Last change, unix ms.
    pub updated_at: i64,
    /// Whether it was deleted.
    #[serde(default)]
    pub deleted: bool,
}

impl TryFrom<organizations::Model> for OrganizationRecord {
    type Error = StorageError;

    fn try_from(m: organizations::Model) -> Result<Self, Self::Error> {
        let metadata = parse_metadata(Some(&m.metadata), &m.id)?;
        Ok(Self {
            id: m.id,
            name: m.name,
            slug: m.slug,
            metadata,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
            deleted: m.deleted_at.is_some(),
        })
    }
}

/// Inserts a new organization (version 1). A taken slug is `StorageError::Duplicate`.
pub async fn insert_organization(
    conn: &impl ConnectionTrait,
    org: &OrganizationRecord,
) -> StorageResult<()> {
    organizations::Entity::insert(organizations::ActiveModel {
        id: Set(org.id.clone()),
        name: Set(org.name.clone()),
        slug: Set(org.slug.clone()),
        metadata: Set(metadata_json(&org.metadata)?),
        version: Set(org.version),
        created_at: Set(org.created_at),
        updated_at: Set(org.updated_at),
        deleted_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The live organization with this id. With `lock`, on PostgreSQL and MySQL its row stays
/// share-locked to the end of the transaction, so it cannot be deleted meanwhile.
pub async fn find_organization(
    conn: &impl ConnectionTrait,
    id: &str,
    lock: bool,
) -> StorageResult<Option<OrganizationRecord>> {
    let mut query = organizations::Entity::find_by_id(id.to_owned())
        .filter(organizations::Column::DeletedAt.is_null());
    if lock && super::Store::locks_rows(conn) {
        query = query.lock_shared();
    }
    query.one(conn).await?.map(TryInto::try_into).transpose()
}

/// The new values of an organization update; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct OrganizationChanges {
    /// New name.
    pub name: Option<String>,
    /// New slug.
    pub slug: Option<String>,
    /// New metadata (replaces the old).
    pub metadata: Option<Metadata>,
}

/// Applies `changes` if the organization is live and (with `expected_version`) still at that
/// version; bumps its version. `None` if it is gone or moved on. A taken slug is
/// `StorageError::Duplicate`.
pub async fn update_organization(
    conn: &impl ConnectionTrait,
    id: &str,
    expected_version: Option<i64>,
    changes: &OrganizationChanges,
) -> StorageResult<Option<OrganizationRecord>> {
    let mut update = organizations::Entity::update_many()
        .col_expr(
            organizations::Column::Version,
            Expr::col(organizations::Column::Version).add(1),
        )
        .col_expr(organizations::Column::UpdatedAt, Expr::value(now_millis()));
    if let Some(name) = &changes.name {
        update = update.col_expr(organizations::Column::Name, Expr::value(name.as_str()));
    }
    if let Some(slug) = &changes.slug {
        update = update.col_expr(organizations::Column::Slug, Expr::value(slug.as_str()));
    }
    if let Some(metadata) = &changes.metadata {
        update = update.col_expr(
            organizations::Column::Metadata,
            Expr::value(metadata_json(metadata)?),
        );
    }
    let mut update = update
        .filter(organizations::Column::Id.eq(id))
        .filter(organizations::Column::DeletedAt.is_null());
    if let Some(version) = expected_version {
        update = update.filter(organizations::Column::Version.eq(version));
    }
    if update.exec(conn).await?.rows_affected != 1 {
        return Ok(None);
    }
    find_organization(conn, id, false).await
}

/// Turns a live organization into a tombstone (slug released, version bumped). Returns the
/// state the `OrganizationDeleted` event carries (the last name and slug, `deleted`).
pub async fn delete_organization(
    conn: &impl ConnectionTrait,
    org: &OrganizationRecord,
) -> StorageResult<Option<OrganizationRecord>> {
    let now = now_millis();
    let result = organizations::Entity::update_many()
        .col_expr(
            organizations::Column::Slug,
            Expr::value(format!("#deleted:{}", org.id)),
        )
        .col_expr(organizations::Column::DeletedAt, Expr::value(now))
        .col_expr(organizations::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            organizations::Column::Version,
            Expr::col(organizations::Column::Version).add(1),
        )
        .filter(organizations::Column::Id.eq(org.id.as_str()))
        .filter(organizations::Column::DeletedAt.is_null())
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    Ok(Some(OrganizationRecord {
        version: org.version + 1,
        updated_at: now,
        deleted: true,
        ..org.clone()
    }))
}

/// Up to `limit` live organizations with an id greater than `after_id`, by id; with `prefix`,
/// only those whose slug or name starts with it (name case-insensitively for ASCII).
pub async fn find_organizations_page(
    conn: &impl ConnectionTrait,
    after_id: &str,
    limit: u64,
    prefix: Option<&str>,
) -> StorageResult<Vec<OrganizationRecord>> {
    use sea_orm::sea_query::{Cond, Func, LikeExpr};
    let mut query = organizations::Entity::find()
        .filter(organizations::Column::Id.gt(after_id))
        .filter(organizations::Column::DeletedAt.is_null());
    if let Some(prefix) = prefix {
        let pattern = || LikeExpr::new(format!("{}%", like_escape(prefix))).escape('\\');
        let lower =
            LikeExpr::new(format!("{}%", like_escape(&prefix.to_ascii_lowercase()))).escape('\\');
        query = query.filter(
            Cond::any()
                .add(Expr::col(organizations::Column::Slug).like(pattern()))
                .add(Expr::expr(Func::lower(Expr::col(organizations::Column::Name))).like(lower)),
        );
    }
    convert(
        query
            .order_by_asc(organizations::Column::Id)
            .limit(limit)
            .all(conn)
            .await?,
    )
}

/// Number of live organizations.
pub async fn count_organizations(conn: &impl ConnectionTrait) -> StorageResult<u64> {
    Ok(organizations::Entity::find()
        .filter(organizations::Column::DeletedAt.is_null())
        .count(conn)
        .await?)
}

/// The live organizations with these ids, by id.
pub async fn find_organizations_by_ids(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> StorageResult<BTreeMap<String, OrganizationRecord>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<OrganizationRecord> = convert(
        organizations::Entity::find()
            .filter(organizations::Column::Id.is_in(ids.iter().map(String::as_str)))
            .filter(organizations::Column::DeletedAt.is_null())
            .all(conn)
            .await?,
    )?;
    Ok(rows.into_iter().map(|o| (o.id.clone(), o)).collect())
}
