//! The backend's own database: the `userbase` mirror and the sync cursor, with their migration.
//!
//! `userbase` has two kinds of columns. Auth-owned ones (`email`, `email_verified`,
//! `display_name`, `roles`, `disabled`, `version`, `deleted`) are written only from
//! `UserEvents`; backend-owned ones (`plan_tier`, `preferences`) only by this service's API.
//! A deleted user is kept as a tombstone (`deleted = true`, its version and roles as of the
//! delete, email and display name erased): its version blocks any older event from
//! resurrecting it, and its backend-owned data stays for the service's own retention policy.

use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait,
};
use sea_orm_migration::MigratorTrait as _;

pub use migration::Migrator;
pub(crate) use migration::create_table;

use crate::orgs;

/// `userbase`: one row per user mirrored from auth-server.
pub mod userbase {
    use sea_orm::entity::prelude::*;

    /// A mirrored user.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "userbase")]
    pub struct Model {
        /// auth-server user id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Auth-owned.
        pub email: String,
        /// Auth-owned.
        pub email_verified: bool,
        /// Auth-owned.
        pub display_name: String,
        /// Auth-owned: JSON array of role names.
        pub roles: String,
        /// Auth-owned.
        pub disabled: bool,
        /// Auth-owned: per-user version of the last applied event.
        pub version: i64,
        /// Auth-owned: tombstone of a deleted user.
        pub deleted: bool,
        /// Backend-owned.
        pub plan_tier: String,
        /// Backend-owned: JSON object.
        pub preferences: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sync_state`: the single row holding the stream cursor.
pub mod sync_state {
    use sea_orm::entity::prelude::*;

    /// The cursor and bootstrap facts.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sync_state")]
    pub struct Model {
        /// Always 1.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Sequence of the last applied event.
        pub last_sequence: i64,
        /// Users in the bootstrap snapshot, once taken.
        pub snapshot_users: Option<i64>,
        /// `occurred_at` (unix ms) of the last applied event.
        pub last_event_at: Option<i64>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The backend's own schema migrations.
mod migration {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    enum Userbase {
        Table,
        Id,
        Email,
        EmailVerified,
        DisplayName,
        Roles,
        Disabled,
        Version,
        Deleted,
        PlanTier,
        Preferences,
    }

    #[derive(DeriveIden)]
    enum SyncState {
        Table,
        Id,
        LastSequence,
        SnapshotUsers,
        LastEventAt,
    }

    /// Creates `userbase` and `sync_state`.
    #[derive(DeriveMigrationName)]
    pub struct CreateMirror;

    #[async_trait::async_trait]
    impl MigrationTrait for CreateMirror {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let text = |c: Userbase| ColumnDef::new(c).text().not_null().to_owned();
            // A TEXT column's default must be an expression in parentheses on MySQL (8.0.13+,
            // MariaDB 10.2+); the other backends take the plain literal.
            let mysql = manager.get_database_backend() == sea_orm::DbBackend::MySql;
            let text_default = |c: Userbase, value: &str| {
                let mut column = ColumnDef::new(c).text().not_null().to_owned();
                if mysql {
                    column.default(Expr::cust(format!("('{value}')")));
                } else {
                    column.default(value);
                }
                column
            };
            let flag = |c: Userbase| {
                ColumnDef::new(c)
                    .boolean()
                    .not_null()
                    .default(false)
                    .to_owned()
            };
            create_table(
                manager,
                Table::create()
                    .table(Userbase::Table)
                    .col(
                        ColumnDef::new(Userbase::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(Userbase::Email))
                    .col(flag(Userbase::EmailVerified))
                    .col(text(Userbase::DisplayName))
                    .col(text(Userbase::Roles))
                    .col(flag(Userbase::Disabled))
                    .col(ColumnDef::new(Userbase::Version).big_integer().not_null())
                    .col(flag(Userbase::Deleted))
                    .col(text_default(Userbase::PlanTier, "free"))
                    .col(text_default(Userbase::Preferences, "{}"))
                    .to_owned(),
            )
            .await?;
            create_table(
                manager,
                Table::create()
                    .table(SyncState::Table)
                    .col(
                        ColumnDef::new(SyncState::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(SyncState::LastSequence)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SyncState::SnapshotUsers)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(SyncState::LastEventAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
            manager
                .exec_stmt(
                    Query::insert()
                        .into_table(SyncState::Table)
                        .columns([SyncState::Id, SyncState::LastSequence])
                        .values_panic([1.into(), 0i64.into()])
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(SyncState::Table).to_owned())
                .await?;
            manager
                .drop_table(Table::drop().table(Userbase::Table).to_owned())
                .await
        }
    }

    /// Creates a table; on MySQL as InnoDB with utf8mb4 and a binary collation, whatever the
    /// server's defaults (ids and emails compare byte for byte, as on the other backends).
    pub(crate) async fn create_table(
        manager: &SchemaManager<'_>,
        mut table: TableCreateStatement,
    ) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::MySql {
            table
                .engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        manager.create_table(table).await
    }

    /// The backend's migrations.
    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(CreateMirror),
                Box::new(crate::orgs::migration::CreateCompanies),
            ]
        }
    }
}

/// Opens (creating a SQLite file if needed) and migrates the database.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // One writer at a time: the sync task is the only writer of auth-owned data.
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .create_if_missing(true)
        });
    }
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// The user's public state from an event or snapshot. A deleted user's tombstone keeps no
/// email or display name (auth-server erases them from its own history too).
fn auth_owned(user: &auth_client::pb::User, deleted: bool) -> userbase::ActiveModel {
    let personal = |value: &String| {
        if deleted {
            String::new()
        } else {
            value.clone()
        }
    };
    userbase::ActiveModel {
        id: Set(user.id.clone()),
        email: Set(personal(&user.email)),
        email_verified: Set(user.email_verified),
        display_name: Set(personal(&user.display_name)),
        roles: Set(serde_json::to_string(&user.roles).unwrap_or_else(|_| "[]".into())),
        disabled: Set(user.disabled),
        version: Set(i64::try_from(user.version).unwrap_or(i64::MAX)),
        deleted: Set(deleted),
        ..Default::default()
    }
}

/// Upserts the auth-owned fields if `user.version` is newer than the row's; backend-owned
/// fields are never touched (new rows get their defaults). Returns whether it changed anything.
pub async fn upsert_user(
    conn: &impl ConnectionTrait,
    user: &auth_client::pb::User,
    deleted: bool,
) -> Result<bool, DbErr> {
    let version = i64::try_from(user.version).unwrap_or(i64::MAX);
    match userbase::Entity::find_by_id(user.id.clone())
        .one(conn)
        .await?
    {
        Some(row) if row.version >= version => Ok(false),
        Some(_) => {
            auth_owned(user, deleted).update(conn).await?;
            Ok(true)
        }
        None => {
            let mut row = auth_owned(user, deleted);
            row.plan_tier = Set("free".into());
            row.preferences = Set("{}".into());
            userbase::Entity::insert(row)
                .exec_without_returning(conn)
                .await?;
            Ok(true)
        }
    }
}

/// Applies one event and advances the cursor, in one transaction: a crash between the two
/// cannot happen, so nothing is lost or applied twice.
pub async fn apply_event(
    db: &DatabaseConnection,
    event: &auth_client::pb::UserEvent,
) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    let state = find_sync_state(&tx).await?;
    let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
    if sequence <= state.last_sequence {
        return Ok(());
    }
    if let Some(user) = &event.user {
        let deleted = event.kind() == auth_client::pb::UserEventKind::UserDeleted;
        upsert_user(&tx, user, deleted).await?;
    }
    if let Some(org) = &event.organization {
        orgs::upsert_company(&tx, org).await?;
    }
    if let Some(membership) = &event.membership {
        orgs::upsert_membership(&tx, membership).await?;
    }
    let occurred_at = event
        .occurred_at
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    sync_state::ActiveModel {
        id: Set(1),
        last_sequence: Set(sequence),
        snapshot_users: Set(state.snapshot_users),
        last_event_at: Set(occurred_at.or(state.last_event_at)),
    }
    .update(&tx)
    .await?;
    tx.commit().await
}

/// Makes the mirror equal to a snapshot and stores its `as_of_sequence` as the cursor, in one
/// transaction: the bootstrap of an empty mirror, and the recovery of one that fell behind the
/// auth service's event retention. Users, companies and memberships the snapshot lacks no
/// longer exist there: they become tombstones (backend-owned data stays). Returns the ids of
/// the users that did.
pub async fn apply_snapshot(
    db: &DatabaseConnection,
    snapshot: &auth_client::Snapshot,
) -> Result<Vec<String>, DbErr> {
    let tx = db.begin().await?;
    for user in &snapshot.users {
        upsert_user(&tx, user, false).await?;
    }
    let kept: std::collections::HashSet<&str> =
        snapshot.users.iter().map(|u| u.id.as_str()).collect();
    let gone: Vec<String> = userbase::Entity::find()
        .filter(userbase::Column::Deleted.eq(false))
        .all(&tx)
        .await?
        .into_iter()
        .map(|row| row.id)
        .filter(|id| !kept.contains(id.as_str()))
        .collect();
    for ids in gone.chunks(500) {
        userbase::Entity::update_many()
            .col_expr(
                userbase::Column::Deleted,
                sea_orm::sea_query::Expr::value(true),
            )
            .col_expr(userbase::Column::Email, sea_orm::sea_query::Expr::value(""))
            .col_expr(
                userbase::Column::DisplayName,
                sea_orm::sea_query::Expr::value(""),
            )
            .filter(userbase::Column::Id.is_in(ids.iter().cloned()))
            .exec(&tx)
            .await?;
    }
    orgs::remove_missing(&tx, snapshot).await?;
    for org in &snapshot.organizations {
        orgs::upsert_company(&tx, org).await?;
    }
    for membership in &snapshot.memberships {
        orgs::upsert_membership(&tx, membership).await?;
    }
    sync_state::ActiveModel {
        id: Set(1),
        last_sequence: Set(i64::try_from(snapshot.as_of_sequence).unwrap_or(i64::MAX)),
        snapshot_users: Set(Some(
            i64::try_from(snapshot.users.len()).unwrap_or(i64::MAX),
        )),
        last_event_at: Set(None),
    }
    .update(&tx)
    .await?;
    tx.commit().await?;
    Ok(gone)
}

/// The cursor row.
pub async fn find_sync_state(conn: &impl ConnectionTrait) -> Result<sync_state::Model, DbErr> {
    sync_state::Entity::find_by_id(1)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("sync_state row".into()))
}

/// A mirrored user.
pub async fn find_user(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<userbase::Model>, DbErr> {
    userbase::Entity::find_by_id(id.to_owned()).one(conn).await
}

/// Mirrored users that are not deleted.
pub async fn count_users(conn: &impl ConnectionTrait) -> Result<u64, DbErr> {
    userbase::Entity::find()
        .filter(userbase::Column::Deleted.eq(false))
        .count(conn)
        .await
}

/// Sets backend-owned fields; `None` leaves a field as it is.
pub async fn update_backend_fields(
    conn: &impl ConnectionTrait,
    id: &str,
    plan_tier: Option<String>,
    preferences: Option<String>,
) -> Result<(), DbErr> {
    let mut row = userbase::ActiveModel {
        id: Set(id.to_owned()),
        ..Default::default()
    };
    if let Some(plan_tier) = plan_tier {
        row.plan_tier = Set(plan_tier);
    }
    if let Some(preferences) = preferences {
        row.preferences = Set(preferences);
    }
    if row.is_changed() {
        row.update(conn).await?;
    }
    Ok(())
}
