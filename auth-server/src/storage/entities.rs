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
