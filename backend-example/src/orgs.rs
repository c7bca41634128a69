//! The company mirror: `companies` and `user_companies`, the tables this team keeps in its main
//! database beside `userbase`, fed from the organization and membership events.
//!
//! As in `userbase`, auth-owned columns are written only from the stream (`name`, `slug`,
//! `metadata`, `version`, `deleted`; `roles`, `version`, `removed`), backend-owned ones only by
//! this service (`companies.settings`, `user_companies.pinned`). A deleted company and a removed
//! membership stay as tombstones, so an older state can never come back; the version decides.

use std::collections::HashSet;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder,
};

use auth_client::{pb, structs};

/// `companies`: one row per organization.
pub mod companies {
    use sea_orm::entity::prelude::*;

    /// A mirrored organization.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "companies")]
    pub struct Model {
        /// auth-server organization id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Auth-owned.
        pub name: String,
        /// Auth-owned.
        pub slug: String,
        /// Auth-owned: JSON object.
        pub metadata: String,
        /// Auth-owned: version of the last applied state.
        pub version: i64,
        /// Auth-owned: tombstone of a deleted organization.
        pub deleted: bool,
        /// Backend-owned: JSON object.
        pub settings: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `user_companies`: one row per membership.
pub mod user_companies {
    use sea_orm::entity::prelude::*;

    /// A mirrored membership.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_companies")]
    pub struct Model {
        /// auth-server organization id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub company_id: String,
        /// auth-server user id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// Auth-owned: JSON array of role names within the company.
        pub roles: String,
        /// Auth-owned: version of the last applied state.
        pub version: i64,
        /// Auth-owned: tombstone of a removed membership.
        pub removed: bool,
        /// Backend-owned: pinned in the user's company switcher.
        pub pinned: bool,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn version_of(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// Upserts an organization's auth-owned fields if its version is newer than the row's; returns
/// whether it changed anything. A deleted organization becomes a tombstone.
pub async fn upsert_company(
    conn: &impl ConnectionTrait,
    org: &pb::Organization,
) -> Result<bool, DbErr> {
    let version = version_of(org.version);
    let metadata = structs::to_json(org.metadata.as_ref())
        .map(|m| serde_json::Value::Object(m).to_string())
        .unwrap_or_else(|_| "{}".into());
    let row = companies::ActiveModel {
        id: Set(org.id.clone()),
        name: Set(org.name.clone()),
        slug: Set(org.slug.clone()),
        metadata: Set(metadata),
        version: Set(version),
        deleted: Set(org.deleted),
        ..Default::default()
    };
    match companies::Entity::find_by_id(org.id.clone())
        .one(conn)
        .await?
    {
        Some(existing) if existing.version >= version => Ok(false),
        Some(_) => {
            row.update(conn).await?;
            Ok(true)
        }
        None => {
            let mut row = row;
            row.settings = Set("{}".into());
            companies::Entity::insert(row)
                .exec_without_returning(conn)
                .await?;
            Ok(true)
        }
    }
}

/// Upserts a membership's auth-owned fields if its version is newer than the row's; returns
/// whether it changed anything. A removed membership becomes a tombstone.
pub async fn upsert_membership(
    conn: &impl ConnectionTrait,
    m: &pb::Membership,
) -> Result<bool, DbErr> {
    let version = version_of(m.version);
    let row = user_companies::ActiveModel {
        company_id: Set(m.organization_id.clone()),
        user_id: Set(m.user_id.clone()),
        roles: Set(serde_json::to_string(&m.roles).unwrap_or_else(|_| "[]".into())),
        version: Set(version),
        removed: Set(m.removed),
        ..Default::default()
    };
    let key = (m.organization_id.clone(), m.user_id.clone());
    match user_companies::Entity::find_by_id(key).one(conn).await? {
        Some(existing) if existing.version >= version => Ok(false),
        Some(_) => {
            row.update(conn).await?;
            Ok(true)
        }
        None => {
            let mut row = row;
            row.pinned = Set(false);
            user_companies::Entity::insert(row)
                .exec_without_returning(conn)
                .await?;
            Ok(true)
        }
    }
}

/// Marks the companies and memberships a snapshot lacks as deleted and removed (they no longer
/// exist at the auth service).
pub async fn remove_missing(
    conn: &impl ConnectionTrait,
    snapshot: &auth_client::Snapshot,
) -> Result<(), DbErr> {
    let companies_kept: HashSet<&str> = snapshot
        .organizations
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    for company in companies::Entity::find()
        .filter(companies::Column::Deleted.eq(false))
        .all(conn)
        .await?
    {
        if !companies_kept.contains(company.id.as_str()) {
            let mut row: companies::ActiveModel = company.into();
            row.deleted = Set(true);
            row.update(conn).await?;
        }
    }
    let members_kept: HashSet<(&str, &str)> = snapshot
        .memberships
        .iter()
        .map(|m| (m.organization_id.as_str(), m.user_id.as_str()))
        .collect();
    for membership in user_companies::Entity::find()
        .filter(user_companies::Column::Removed.eq(false))
        .all(conn)
        .await?
    {
        let key = (membership.company_id.as_str(), membership.user_id.as_str());
        if !members_kept.contains(&key) {
            let mut row: user_companies::ActiveModel = membership.into();
            row.removed = Set(true);
            row.update(conn).await?;
        }
    }
    Ok(())
}

/// A live company.
pub async fn find_company(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<companies::Model>, DbErr> {
    Ok(companies::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?
        .filter(|c| !c.deleted))
}

/// The user's live membership in a company.
pub async fn find_membership(
    conn: &impl ConnectionTrait,
    company_id: &str,
    user_id: &str,
) -> Result<Option<user_companies::Model>, DbErr> {
    Ok(
        user_companies::Entity::find_by_id((company_id.to_owned(), user_id.to_owned()))
            .one(conn)
            .await?
            .filter(|m| !m.removed),
    )
}

/// The user's live memberships with their live companies, by company id.
pub async fn find_user_companies(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> Result<Vec<(user_companies::Model, companies::Model)>, DbErr> {
    let memberships = user_companies::Entity::find()
        .filter(user_companies::Column::UserId.eq(user_id))
        .filter(user_companies::Column::Removed.eq(false))
        .order_by_asc(user_companies::Column::CompanyId)
        .all(conn)
        .await?;
    let mut out = Vec::with_capacity(memberships.len());
    for m in memberships {
        if let Some(company) = find_company(conn, &m.company_id).await? {
            out.push((m, company));
        }
    }
    Ok(out)
}

/// Live companies and live memberships (for `/health/sync` and the tests).
pub async fn count(conn: &impl ConnectionTrait) -> Result<(u64, u64), DbErr> {
    use sea_orm::PaginatorTrait;
    let companies = companies::Entity::find()
        .filter(companies::Column::Deleted.eq(false))
        .count(conn)
        .await?;
    let memberships = user_companies::Entity::find()
        .filter(user_companies::Column::Removed.eq(false))
        .count(conn)
        .await?;
    Ok((companies, memberships))
}

/// The migration that creates `companies` and `user_companies`.
pub mod migration {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    enum Companies {
        Table,
        Id,
        Name,
        Slug,
        Metadata,
        Version,
        Deleted,
        Settings,
    }

    #[derive(DeriveIden)]
    enum UserCompanies {
        Table,
        CompanyId,
        UserId,
        Roles,
        Version,
        Removed,
        Pinned,
    }

    /// Creates `companies` and `user_companies`.
    #[derive(DeriveMigrationName)]
    pub struct CreateCompanies;

    #[async_trait::async_trait]
    impl MigrationTrait for CreateCompanies {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = |c: Companies| ColumnDef::new(c).text().not_null().to_owned();
            let flag = |c: DynIden| {
                ColumnDef::new(c)
                    .boolean()
                    .not_null()
                    .default(false)
                    .to_owned()
            };
            let id = |c: DynIden| ColumnDef::new(c).string_len(36).not_null().to_owned();
            crate::db::create_table(
                manager,
                Table::create()
                    .table(Companies::Table)
                    .col(id(Companies::Id.into_iden()).primary_key())
                    .col(text(Companies::Name))
                    .col(text(Companies::Slug))
                    .col(text(Companies::Metadata))
                    .col(ColumnDef::new(Companies::Version).big_integer().not_null())
                    .col(flag(Companies::Deleted.into_iden()))
                    .col(text(Companies::Settings))
                    .to_owned(),
            )
            .await?;
            crate::db::create_table(
                manager,
                Table::create()
                    .table(UserCompanies::Table)
                    .col(id(UserCompanies::CompanyId.into_iden()))
                    .col(id(UserCompanies::UserId.into_iden()))
                    .col(ColumnDef::new(UserCompanies::Roles).text().not_null())
                    .col(
                        ColumnDef::new(UserCompanies::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(flag(UserCompanies::Removed.into_iden()))
                    .col(flag(UserCompanies::Pinned.into_iden()))
                    .primary_key(
                        Index::create()
                            .col(UserCompanies::CompanyId)
                            .col(UserCompanies::UserId),
                    )
                    .to_owned(),
            )
            .await?;
            manager
                .create_index(
                    Index::create()
                        .name("idx_user_companies_user_id")
                        .table(UserCompanies::Table)
                        .col(UserCompanies::UserId)
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(UserCompanies::Table).to_owned())
                .await?;
            manager
                .drop_table(Table::drop().table(Companies::Table).to_owned())
                .await
        }
    }
}
