//! sea-orm entities of the organization tables (migration 6). Times are unix milliseconds.

/// `organizations`: companies, with tombstones for deleted ones.
pub mod organizations {
    use sea_orm::entity::prelude::*;

    /// One organization.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organizations")]
    pub struct Model {
        /// UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Display name.
        pub name: String,
        /// Unique lower-case slug; `#deleted:<id>` once deleted.
        pub slug: String,
        /// JSON object.
        pub metadata: String,
        /// Incremented on every change.
        pub version: i64,
        /// Creation time.
        pub created_at: i64,
        /// Last change.
        pub updated_at: i64,
        /// Set when deleted.
        pub deleted_at: Option<i64>,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `memberships`: a user's roles in an organization; removed ones stay as tombstones.
pub mod memberships {
    use sea_orm::entity::prelude::*;

    /// One membership.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        /// The organization.
        #[sea_orm(primary_key, auto_increment = false)]
        pub organization_id: String,
        /// The user.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// JSON array of role names.
        pub roles: String,
        /// Incremented on every change, across removals and re-adds.
        pub version: i64,
        /// First added.
        pub created_at: i64,
        /// Last change.
        pub updated_at: i64,
        /// Set while removed.
        pub removed_at: Option<i64>,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
