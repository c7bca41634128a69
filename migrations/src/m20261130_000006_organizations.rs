//! Organizations (companies) and their memberships, owned by the auth service and streamed to
//! mirrors; `users.metadata`, an admin-owned JSON object streamed with the user.
//!
//! A deleted organization stays as a tombstone (`deleted_at` set, slug released); a removed
//! membership stays too (`removed_at` set), so a membership added again keeps counting its
//! version up and a mirror can always tell the newer state from the older.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Metadata,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    Slug,
    Metadata,
    Version,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    OrganizationId,
    UserId,
    Roles,
    Version,
    CreatedAt,
    UpdatedAt,
    RemovedAt,
}

const SLUG_INDEX: &str = "idx_organizations_slug";
const MEMBER_USER_INDEX: &str = "idx_memberships_user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::Metadata).text().null())
                    .to_owned(),
            )
            .await?;
        let millis = |c: Organizations| ColumnDef::new(c).big_integer().not_null().to_owned();
        crate::create_table(
            manager,
            Table::create()
                .table(Organizations::Table)
                .col(
                    ColumnDef::new(Organizations::Id)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(Organizations::Name)
                        .string_len(200)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Organizations::Slug)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(Organizations::Metadata).text().not_null())
                .col(millis(Organizations::Version))
                .col(millis(Organizations::CreatedAt))
                .col(millis(Organizations::UpdatedAt))
                .col(
                    ColumnDef::new(Organizations::DeletedAt)
                        .big_integer()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name(SLUG_INDEX)
                    .table(Organizations::Table)
                    .col(Organizations::Slug)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let member_millis = |c: Memberships| ColumnDef::new(c).big_integer().not_null().to_owned();
        crate::create_table(
            manager,
            Table::create()
                .table(Memberships::Table)
                .col(
                    ColumnDef::new(Memberships::OrganizationId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Memberships::UserId)
                        .string_len(36)
                        .not_null(),
                )
                .col(ColumnDef::new(Memberships::Roles).text().not_null())
                .col(member_millis(Memberships::Version))
                .col(member_millis(Memberships::CreatedAt))
                .col(member_millis(Memberships::UpdatedAt))
                .col(ColumnDef::new(Memberships::RemovedAt).big_integer().null())
                .primary_key(
                    Index::create()
                        .col(Memberships::OrganizationId)
                        .col(Memberships::UserId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_organization")
                        .from(Memberships::Table, Memberships::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_user")
                        .from(Memberships::Table, Memberships::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name(MEMBER_USER_INDEX)
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .col(Memberships::OrganizationId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Memberships::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(Organizations::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::Metadata)
                    .to_owned(),
            )
            .await
    }
}
