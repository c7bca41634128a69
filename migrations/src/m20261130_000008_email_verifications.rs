//! `email_verifications`: one row per mailed email verification token, its SHA-256 only, with
//! the address it verifies (so a token mailed before a ChangeEmail cannot verify the new
//! address). A table of its own, apart from `password_resets`, so that a verification token can
//! never be spent as a reset token.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum EmailVerifications {
    Table,
    TokenHash,
    UserId,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::create_table(
            manager,
            Table::create()
                .table(EmailVerifications::Table)
                .col(
                    ColumnDef::new(EmailVerifications::TokenHash)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(EmailVerifications::UserId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(EmailVerifications::Email)
                        .string_len(254)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(EmailVerifications::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(EmailVerifications::ExpiresAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(EmailVerifications::UsedAt)
                        .big_integer()
                        .null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_email_verifications_user")
                        .from(EmailVerifications::Table, EmailVerifications::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_verifications_user_id")
                    .table(EmailVerifications::Table)
                    .col(EmailVerifications::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(EmailVerifications::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
