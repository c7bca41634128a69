//! Account protection and administration: soft-deleted users, the login lockout table, the
//! audit trail, password reset tokens, and TOTP MFA (secrets, recovery codes, login challenges).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    DeletedAt,
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    Email,
    Failures,
    WindowStartedAt,
    LockedUntil,
    LockCount,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OccurredAt,
    Kind,
    Outcome,
    ActorId,
    SubjectId,
    SessionId,
    ClientAddr,
    UserAgent,
    Detail,
}

#[derive(DeriveIden)]
enum PasswordResets {
    Table,
    TokenHash,
    UserId,
    Purpose,
    IssuedBy,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum MfaTotp {
    Table,
    UserId,
    SecretEnc,
    ConfirmedAt,
    LastUsedStep,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MfaRecoveryCodes {
    Table,
    CodeHash,
    UserId,
    CreatedAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum MfaChallenges {
    Table,
    TokenHash,
    UserId,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    ClientAddr,
    UserAgent,
}

fn id_col(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn id_col_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).null().to_owned()
}

fn millis(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn millis_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

fn hash_key(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string_len(64)
        .not_null()
        .primary_key()
        .to_owned()
}

fn user_fk(table: impl IntoIden, col: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, col)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A deleted user stays as a tombstone (email released, credentials erased) so its
        // revoked sessions and audit records keep their subject.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(millis_null(Users::DeletedAt))
                    .to_owned(),
            )
            .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(LoginThrottle::Table)
                .col(
                    ColumnDef::new(LoginThrottle::Email)
                        .string_len(254)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(LoginThrottle::Failures).integer().not_null())
                .col(millis(LoginThrottle::WindowStartedAt))
                .col(millis_null(LoginThrottle::LockedUntil))
                .col(
                    ColumnDef::new(LoginThrottle::LockCount)
                        .integer()
                        .not_null(),
                )
                .col(millis(LoginThrottle::UpdatedAt))
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(AuditEvents::Table)
                .col(
                    ColumnDef::new(AuditEvents::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(millis(AuditEvents::OccurredAt))
                .col(ColumnDef::new(AuditEvents::Kind).string_len(48).not_null())
                .col(
                    ColumnDef::new(AuditEvents::Outcome)
                        .string_len(16)
                        .not_null(),
                )
                .col(id_col_null(AuditEvents::ActorId))
                .col(id_col_null(AuditEvents::SubjectId))
                .col(id_col_null(AuditEvents::SessionId))
                .col(
                    ColumnDef::new(AuditEvents::ClientAddr)
                        .string_len(64)
                        .null(),
                )
                .col(
                    ColumnDef::new(AuditEvents::UserAgent)
                        .string_len(512)
                        .null(),
                )
                .col(ColumnDef::new(AuditEvents::Detail).text().null())
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_audit_events_subject_id", AuditEvents::SubjectId),
            ("idx_audit_events_occurred_at", AuditEvents::OccurredAt),
            ("idx_audit_events_kind", AuditEvents::Kind),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        crate::create_table(
            manager,
            Table::create()
                .table(PasswordResets::Table)
                .col(hash_key(PasswordResets::TokenHash))
                .col(id_col(PasswordResets::UserId))
                .col(
                    ColumnDef::new(PasswordResets::Purpose)
                        .string_len(16)
                        .not_null(),
                )
                .col(id_col_null(PasswordResets::IssuedBy))
                .col(millis(PasswordResets::CreatedAt))
                .col(millis(PasswordResets::ExpiresAt))
                .col(millis_null(PasswordResets::UsedAt))
                .foreign_key(&mut user_fk(PasswordResets::Table, PasswordResets::UserId))
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(MfaTotp::Table)
                .col(id_col(MfaTotp::UserId).primary_key())
                .col(ColumnDef::new(MfaTotp::SecretEnc).text().not_null())
                .col(millis_null(MfaTotp::ConfirmedAt))
                .col(millis_null(MfaTotp::LastUsedStep))
                .col(millis(MfaTotp::CreatedAt))
                .foreign_key(&mut user_fk(MfaTotp::Table, MfaTotp::UserId))
                .to_owned(),
        )
        .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(MfaRecoveryCodes::Table)
                .col(hash_key(MfaRecoveryCodes::CodeHash))
                .col(id_col(MfaRecoveryCodes::UserId))
                .col(millis(MfaRecoveryCodes::CreatedAt))
                .col(millis_null(MfaRecoveryCodes::UsedAt))
                .foreign_key(&mut user_fk(
                    MfaRecoveryCodes::Table,
                    MfaRecoveryCodes::UserId,
                ))
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_recovery_codes_user_id")
                    .table(MfaRecoveryCodes::Table)
                    .col(MfaRecoveryCodes::UserId)
                    .to_owned(),
            )
            .await?;
        crate::create_table(
            manager,
            Table::create()
                .table(MfaChallenges::Table)
                .col(hash_key(MfaChallenges::TokenHash))
                .col(id_col(MfaChallenges::UserId))
                .col(
                    ColumnDef::new(MfaChallenges::Email)
                        .string_len(254)
                        .not_null(),
                )
                .col(millis(MfaChallenges::CreatedAt))
                .col(millis(MfaChallenges::ExpiresAt))
                .col(millis_null(MfaChallenges::UsedAt))
                .col(
                    ColumnDef::new(MfaChallenges::ClientAddr)
                        .string_len(64)
                        .null(),
                )
                .col(
                    ColumnDef::new(MfaChallenges::UserAgent)
                        .string_len(512)
                        .null(),
                )
                .foreign_key(&mut user_fk(MfaChallenges::Table, MfaChallenges::UserId))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MfaChallenges::Table.into_iden(),
            MfaRecoveryCodes::Table.into_iden(),
            MfaTotp::Table.into_iden(),
            PasswordResets::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            LoginThrottle::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::DeletedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
