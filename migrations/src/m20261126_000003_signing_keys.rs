//! Signing keys in the database, so every replica signs and verifies with one set: private
//! halves sealed under a key-encryption key that lives outside the database.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    PublicPaserk,
    SecretSealed,
    CreatedAt,
    SigningFrom,
    RetiredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::create_table(
            manager,
            Table::create()
                .table(SigningKeys::Table)
                .col(
                    ColumnDef::new(SigningKeys::Kid)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(SigningKeys::PublicPaserk).text().not_null())
                .col(ColumnDef::new(SigningKeys::SecretSealed).text().not_null())
                .col(
                    ColumnDef::new(SigningKeys::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SigningKeys::SigningFrom)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SigningKeys::RetiredAt).big_integer().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(SigningKeys::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
