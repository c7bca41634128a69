//! Service accounts and their API keys: `users.service_account` marks an account that has no
//! password login and authenticates with keys; `api_keys` holds each key's SHA-256 only.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    ServiceAccount,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Name,
    SecretHash,
    CreatedAt,
    CreatedBy,
    ExpiresAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::ServiceAccount)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(ApiKeys::Table)
                .col(
                    ColumnDef::new(ApiKeys::Id)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(ApiKeys::UserId).string_len(36).not_null())
                .col(ColumnDef::new(ApiKeys::Name).string_len(128).not_null())
                .col(
                    ColumnDef::new(ApiKeys::SecretHash)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(ApiKeys::CreatedBy).string_len(36).null())
                .col(ColumnDef::new(ApiKeys::ExpiresAt).big_integer().null())
                .col(ColumnDef::new(ApiKeys::RevokedAt).big_integer().null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_api_keys_user")
                        .from(ApiKeys::Table, ApiKeys::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_user_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).if_exists().to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::ServiceAccount)
                    .to_owned(),
            )
            .await
    }
}
