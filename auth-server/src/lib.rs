//! `auth-server`: the identity service.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | command line and `AUTH_*` settings |
//! | [`startup`] | `Application`: build from settings, bind, serve until shutdown |
//! | [`telemetry`] | the tracing subscriber |
//! | [`error`] | `AuthError` and its one mapping to `tonic::Status` |
//! | [`accounts`] | the domain: register, login (lockout, MFA step), refresh, logout, validate, passwords and resets, TOTP enrollment |
//! | [`admin`] | the admin domain: account management, sessions, unlocks, audit trail |
//! | [`protection`] | per-address rate limiting and client address resolution |
//! | [`mfa`] | TOTP secrets (encrypted at rest), code checks, recovery codes |
//! | [`mail`] | reset mails over SMTP |
//! | [`secrets`] | opaque bearer secrets (refresh, reset, MFA tokens) and their hashes |
//! | [`keyfile`] | secret files in the data dir |
//! | [`sealing`] | encryption at rest (TOTP secrets, signing keys) under a key file |
//! | [`passwords`] | argon2id on a bounded pool; email and password rules |
//! | [`tokens`] | PASETO v4.public access tokens and the signing key set |
//! | [`keys`] | signing keys in the database: load, rotate, retire, reload |
//! | [`revocation`] | the in-memory revoked-session set behind `Validate` |
//! | [`events`] | the user event feed: tailer, fan-out to streams, LISTEN/NOTIFY, snapshots |
//! | [`storage`] | sea-orm entities and repository functions (SQLite and PostgreSQL) |
//! | [`service`] | the gRPC services: decode, call the domain, encode |
//! | [`limits`] | request size limit reporting |
//! | [`observe`] | the per-request span and RPC metrics layer |
//! | [`metrics`] | Prometheus metrics and the `/metrics` `/livez` `/readyz` listener |
//! | [`tls`] | TLS and mutual TLS on the gRPC listener, certificate reload |
//! | [`cli`] | `migrate`, `create-user`, `create-admin` |

pub mod accounts;
pub mod admin;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod keyfile;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod observe;
pub mod passwords;
pub mod protection;
pub mod revocation;
pub mod sealing;
pub mod secrets;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod tokens;

pub use config::Settings;
pub use startup::Application;
