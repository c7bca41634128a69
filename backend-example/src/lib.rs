//! backend-example: the pattern other teams copy. It owns its database with a `userbase` table
//! and `companies`/`user_companies` mirrored from auth-server's `UserEvents`, and serves an
//! HTTP API guarded by auth-client.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | `BACKEND_*` settings |
//! | [`db`] | the mirror schema, migration and writes (auth-owned vs backend-owned fields) |
//! | [`orgs`] | the `companies` and `user_companies` mirror of organizations and memberships |
//! | [`sync`] | snapshot bootstrap and the resumable event stream |
//! | [`api`] | `GET/PATCH /me`, `GET /health/sync` |
//! | [`startup`] | `Backend`: build, serve, shut down |

pub mod api;
pub mod config;
pub mod db;
pub mod orgs;
pub mod startup;
pub mod sync;

pub use config::Config;
pub use startup::Backend;
