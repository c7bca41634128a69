//! Users moved in from another system keep that system's id: `users.external_id`, optional
//! and unique, so an import can be matched back to its source rows.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    ExternalId,
}

const INDEX: &str = "idx_users_external_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::ExternalId).string_len(255).null())
                    .to_owned(),
            )
            .await?;
        // Several NULLs never collide in a unique index, on all three backends.
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Users::Table)
                    .col(Users::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Users::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::ExternalId)
                    .to_owned(),
            )
            .await
    }
}
