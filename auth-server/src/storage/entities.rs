//! sea-orm entities of the tables the core migration creates. Times are unix milliseconds.

/// `users`: the public state of every account.
pub mod users {
    use sea_orm::entity::prelude::*;

    /// One account.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        /// UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Normalized email, unique.
        pub email: String,
        /// Whether the email was verified.
        pub email_verified: bool,
        /// Display name.
        pub display_name: String,
        /// JSON array of role names.
        pub roles: String,
        /// Disabled accounts cannot log in.
        pub disabled: bool,
        /// Incremented on every change of the public state.
        pub version: i64,
        /// Creation time.
        pub created_at: i64,
        /// Last change.
        pub updated_at: i64,
        /// Set when deleted: the row stays as a tombstone with its email released.
        pub deleted_at: Option<i64>,
        /// The id this user had in the system it was imported from; unique when set.
        pub external_id: Option<String>,
        /// A service account: no password login, authenticates with API keys.
        pub service_account: bool,
        /// Admin-owned JSON object (migration 6); none reads as `{}`.
        pub metadata: Option<String>,
        /// Last login (a new session), migration 7.
        pub last_login_at: Option<i64>,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credentials`: one password hash per user.
pub mod credentials {
    use sea_orm::entity::prelude::*;

    /// A password hash (PHC string). Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credentials")]
    pub struct Model {
        /// The user.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// argon2id PHC string.
        pub password_hash: String,
        /// Last change.
        pub updated_at: i64,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Credential")
                .field("user_id", &self.user_id)
                .field("password_hash", &"[redacted]")
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sessions`: one per login.
pub mod sessions {
    use sea_orm::entity::prelude::*;

    /// A session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        /// UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The user.
        pub user_id: String,
        /// Login time.
        pub created_at: i64,
        /// Last refresh.
        pub last_used_at: i64,
        /// When the current refresh token expires.
        pub expires_at: i64,
        /// Set once revoked.
        pub revoked_at: Option<i64>,
        /// Why it was revoked (`logout`, `refresh_reuse`, `password_changed`).
        pub revoked_reason: Option<String>,
        /// Client address at login.
        pub client_addr: Option<String>,
        /// Client user agent at login.
        pub user_agent: Option<String>,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `refresh_tokens`: SHA-256 of every refresh token ever issued, spent or not.
pub mod refresh_tokens {
    use sea_orm::entity::prelude::*;

    /// A refresh token's hash. Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// Hex SHA-256 of the token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// The session.
        pub session_id: String,
        /// Issue time.
        pub created_at: i64,
        /// Expiry.
        pub expires_at: i64,
        /// Set when spent.
        pub used_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RefreshToken")
                .field("token_hash", &"[redacted]")
                .field("session_id", &self.session_id)
                .field("used_at", &self.used_at)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `user_events`: the transactional outbox.
pub mod user_events {
    use sea_orm::entity::prelude::*;

    /// One event.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_events")]
    pub struct Model {
        /// Gap-free sequence from `event_sequence`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        /// Event kind name, for example `user_created`.
        pub kind: String,
        /// The user.
        pub user_id: String,
        /// The revoked session of `session_revoked`.
        pub session_id: Option<String>,
        /// JSON of the user's public state after the change.
        pub payload: String,
        /// Commit time.
        pub occurred_at: i64,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `login_throttle`: failed logins per normalized email (known or not).
pub mod login_throttle {
    use sea_orm::entity::prelude::*;

    /// Failure counter and lock of one email.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_throttle")]
    pub struct Model {
        /// Normalized email.
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Failures in the current window.
        pub failures: i32,
        /// Start of the current window.
        pub window_started_at: i64,
        /// Locked until this time.
        pub locked_until: Option<i64>,
        /// Locks so far (the next lock lasts twice as long).
        pub lock_count: i32,
        /// Last change.
        pub updated_at: i64,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `audit_events`: the append-only audit trail.
pub mod audit_events {
    use sea_orm::entity::prelude::*;

    /// One audit record.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// Increasing id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// When.
        pub occurred_at: i64,
        /// What.
        pub kind: String,
        /// `success`, `failure` or `denied`.
        pub outcome: String,
        /// Who acted.
        pub actor_id: Option<String>,
        /// Whom it concerns.
        pub subject_id: Option<String>,
        /// Session involved.
        pub session_id: Option<String>,
        /// Client address.
        pub client_addr: Option<String>,
        /// Client user agent.
        pub user_agent: Option<String>,
        /// Non-secret JSON details.
        pub detail: Option<String>,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `password_resets`: SHA-256 of every reset and invite token.
pub mod password_resets {
    use sea_orm::entity::prelude::*;

    /// A reset token's hash. Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "password_resets")]
    pub struct Model {
        /// Hex SHA-256 of the token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// The user.
        pub user_id: String,
        /// `reset` or `invite`.
        pub purpose: String,
        /// The admin who issued it, if any.
        pub issued_by: Option<String>,
        /// Issue time.
        pub created_at: i64,
        /// Expiry.
        pub expires_at: i64,
        /// Set when used.
        pub used_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PasswordReset")
                .field("token_hash", &"[redacted]")
                .field("user_id", &self.user_id)
                .field("used_at", &self.used_at)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mfa_totp`: one TOTP enrollment per user, its secret encrypted.
pub mod mfa_totp {
    use sea_orm::entity::prelude::*;

    /// An enrollment. Its `Debug` hides the secret.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mfa_totp")]
    pub struct Model {
        /// The user.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// base64(nonce || ciphertext) of the secret.
        pub secret_enc: String,
        /// Set once confirmed (TOTP is then required at login).
        pub confirmed_at: Option<i64>,
        /// Highest time step accepted (codes of this step or older are refused).
        pub last_used_step: Option<i64>,
        /// Enrollment start.
        pub created_at: i64,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MfaTotp")
                .field("user_id", &self.user_id)
                .field("secret_enc", &"[redacted]")
                .field("confirmed_at", &self.confirmed_at)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mfa_recovery_codes`: SHA-256 of each recovery code.
pub mod mfa_recovery_codes {
    use sea_orm::entity::prelude::*;

    /// A recovery code's hash. Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mfa_recovery_codes")]
    pub struct Model {
        /// Hex SHA-256 of the code.
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        /// The user.
        pub user_id: String,
        /// Creation.
        pub created_at: i64,
        /// Set when used.
        pub used_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MfaRecoveryCode")
                .field("code_hash", &"[redacted]")
                .field("user_id", &self.user_id)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mfa_challenges`: the second step of an MFA login.
pub mod mfa_challenges {
    use sea_orm::entity::prelude::*;

    /// A pending MFA login. Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mfa_challenges")]
    pub struct Model {
        /// Hex SHA-256 of the mfa token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// The user.
        pub user_id: String,
        /// The normalized email the login used (failures count toward its lockout).
        pub email: String,
        /// Issue time.
        pub created_at: i64,
        /// Expiry.
        pub expires_at: i64,
        /// Set when the login completed.
        pub used_at: Option<i64>,
        /// Client address of the first step.
        pub client_addr: Option<String>,
        /// Client user agent of the first step.
        pub user_agent: Option<String>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MfaChallenge")
                .field("token_hash", &"[redacted]")
                .field("user_id", &self.user_id)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `signing_keys`: every access-token signing key, private half sealed.
pub mod signing_keys {
    use sea_orm::entity::prelude::*;

    /// A key. Its `Debug` hides the sealed secret.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        /// PASERK id `k4.pid.…`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        /// PASERK `k4.public.…`.
        pub public_paserk: String,
        /// Sealed PASERK `k4.secret.…`.
        pub secret_sealed: String,
        /// Creation.
        pub created_at: i64,
        /// When it starts signing (later keys take over from earlier ones).
        pub signing_from: i64,
        /// Set when retired: it no longer verifies anything.
        pub retired_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SigningKey")
                .field("kid", &self.kid)
                .field("secret_sealed", &"[redacted]")
                .field("signing_from", &self.signing_from)
                .field("retired_at", &self.retired_at)
                .finish()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `api_keys`: a service account's keys, only their SHA-256 stored.
pub mod api_keys {
    use sea_orm::entity::prelude::*;

    /// One key. Its `Debug` hides the hash.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        /// UUID, also the key's visible prefix.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The service account.
        pub user_id: String,
        /// What the key is for.
        pub name: String,
        /// Hex SHA-256 of the whole key.
        pub secret_hash: String,
        /// Issued.
        pub created_at: i64,
        /// The admin who issued it.
        pub created_by: Option<String>,
        /// Stops working at.
        pub expires_at: Option<i64>,
        /// Set once revoked.
        pub revoked_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ApiKey")
                .field("id", &self.id)
                .field("user_id", &self.user_id)
                .field("secret_hash", &"[redacted]")
                .finish_non_exhaustive()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
