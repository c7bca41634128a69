//! The core schema: users, credentials, sessions, refresh tokens and the event outbox.
//!
//! Times are stored as unix milliseconds (`BIGINT`) so both backends compare them the same way.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    EmailVerified,
    DisplayName,
    Roles,
    Disabled,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Credentials {
    Table,
    UserId,
    PasswordHash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
    ClientAddr,
    UserAgent,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum UserEvents {
    Table,
    Sequence,
    Kind,
    UserId,
    SessionId,
    Payload,
    OccurredAt,
}

#[derive(DeriveIden)]
enum EventSequence {
    Table,
    Id,
    LastSequence,
}

fn id_col(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn millis(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn millis_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::create_table(
            manager,
            Table::create()
                .table(Users::Table)
                .col(id_col(Users::Id).primary_key())
                .col(
                    ColumnDef::new(Users::Email)
                        .string_len(254)
                        .not_null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(Users::EmailVerified)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(
                    ColumnDef::new(Users::DisplayName)
                        .string_len(256)
                        .not_null()
                        .default(""),
                )
                .col(ColumnDef::new(Users::Roles).text().not_null())
                .col(
                    ColumnDef::new(Users::Disabled)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(ColumnDef::new(Users::Version).big_integer().not_null())
                .col(millis(Users::CreatedAt))
                .col(millis(Users::UpdatedAt))
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(Credentials::Table)
                .col(id_col(Credentials::UserId).primary_key())
                .col(ColumnDef::new(Credentials::PasswordHash).text().not_null())
                .col(millis(Credentials::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Credentials::Table, Credentials::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(Sessions::Table)
                .col(id_col(Sessions::Id).primary_key())
                .col(id_col(Sessions::UserId))
                .col(millis(Sessions::CreatedAt))
                .col(millis(Sessions::LastUsedAt))
                .col(millis(Sessions::ExpiresAt))
                .col(millis_null(Sessions::RevokedAt))
                .col(
                    ColumnDef::new(Sessions::RevokedReason)
                        .string_len(64)
                        .null(),
                )
                .col(ColumnDef::new(Sessions::ClientAddr).string_len(64).null())
                .col(ColumnDef::new(Sessions::UserAgent).string_len(512).null())
                .foreign_key(
                    ForeignKey::create()
                        .from(Sessions::Table, Sessions::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_user_id")
                    .table(Sessions::Table)
                    .col(Sessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_revoked_at")
                    .table(Sessions::Table)
                    .col(Sessions::RevokedAt)
                    .to_owned(),
            )
            .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(RefreshTokens::Table)
                .col(
                    ColumnDef::new(RefreshTokens::TokenHash)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(id_col(RefreshTokens::SessionId))
                .col(millis(RefreshTokens::CreatedAt))
                .col(millis(RefreshTokens::ExpiresAt))
                .col(millis_null(RefreshTokens::UsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(RefreshTokens::Table, RefreshTokens::SessionId)
                        .to(Sessions::Table, Sessions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_tokens_session_id")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;
        // The outbox. `sequence` is assigned from `event_sequence` inside the writing
        // transaction (see auth-server `storage::events`), never by auto-increment.
        crate::create_table(
            manager,
            Table::create()
                .table(UserEvents::Table)
                .col(
                    ColumnDef::new(UserEvents::Sequence)
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(UserEvents::Kind).string_len(32).not_null())
                .col(id_col(UserEvents::UserId))
                .col(ColumnDef::new(UserEvents::SessionId).string_len(36).null())
                .col(ColumnDef::new(UserEvents::Payload).text().not_null())
                .col(millis(UserEvents::OccurredAt))
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(EventSequence::Table)
                .col(
                    ColumnDef::new(EventSequence::Id)
                        .integer()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(EventSequence::LastSequence)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(EventSequence::Table)
                    .columns([EventSequence::Id, EventSequence::LastSequence])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EventSequence::Table.into_iden(),
            UserEvents::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            Sessions::Table.into_iden(),
            Credentials::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
