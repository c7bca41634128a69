//! `auth-server`: the identity service.
//!
//! Imports point down this table's layers, never up: `service/` calls `domain/`, the domain
//! uses the mechanisms, the mechanisms use `storage/`, which imports only itself and `clock`
//! (a leaf). `config` parses flags into the settings types the modules own and imports no
//! domain module; `startup` and `cli` wire it all. `error` is the one cross-cutting module.
//! `scripts/check-layout.py` (run by CI) checks this, the absence of import cycles, and that
//! no file grows past 500 lines.
//!
//! | layer | module | owns |
//! | --- | --- | --- |
//! | wiring | [`config`] | command line and `AUTH_*` settings, parsed once, defaults only in the clap flags |
//! | | [`startup`] | `Application`: build from settings, bind, serve; background tasks in one `JoinSet` |
//! | | `fuzzing` | (feature `fuzzing`) entry points for the cargo-fuzz targets in `fuzz/` |
//! | | [`cli`] | `migrate`, `create-user`, `create-admin`, `keys`, `import-users` |
//! | gRPC | [`service`] | the gRPC services: decode, call the domain, encode |
//! | | [`error`] | `AuthError` and its one mapping to `tonic::Status` |
//! | | [`limits`] | which RPC is which class (the one table), per-class concurrency and deadlines, message size |
//! | | [`observe`] | the per-request span and RPC metrics layer |
//! | | [`accept`] | the accept loop: silent connections closed, connection cap, fd exhaustion back-off |
//! | | [`tls`] | TLS and mutual TLS on the gRPC listener, certificate reload |
//! | | [`telemetry`] | the tracing subscriber, OTLP export, trace context from callers |
//! | domain | [`domain`] | one file per flow: signup, login, lockout, sessions (refresh reuse), credentials, mfa, admin, organizations |
//! | mechanisms | [`passwords`] | argon2id on a bounded pool; email and password rules |
//! | | [`tokens`] | PASETO v4.public access tokens: claims, issue, verify |
//! | | [`keyset`] | the signing key set: keys, validity windows, which key signs |
//! | | [`keys`] | signing keys in the database: load, rotate, retire, reload |
//! | | [`revocation`] | the in-memory revoked-session set behind `Validate` |
//! | | [`apikeys`] | service accounts' API keys: format, the in-memory set checked per call, per-key rate limit |
//! | | [`events`] | the user event feed: tailer, fan-out to streams, LISTEN/NOTIFY |
//! | | [`snapshot`] | `UserSnapshot`: users, organizations and memberships at one sequence |
//! | | [`rate_limit`] | per-address rate limiting and client address resolution |
//! | | [`mfa`] | TOTP secrets (encrypted at rest), code checks, recovery codes |
//! | | [`mail`] | reset mails over SMTP |
//! | | [`metrics`] | Prometheus metrics and the `/metrics` `/livez` `/readyz` listener |
//! | | [`audit_rollup`] | aggregated audit records for floods: one per email or address per minute, with a count |
//! | | [`log_limit`] | rate-limited warnings and errors: one line per 10 s per kind, the rest counted |
//! | | [`secrets`] | opaque bearer secrets (refresh, reset, MFA tokens), their hashes, URL redaction |
//! | | [`keyfile`] | secret files in the data dir |
//! | | [`sealing`] | encryption at rest (TOTP secrets, signing keys) under a key file |
//! | | [`clock`] | time: now, unix milliseconds, protobuf timestamps |
//! | storage | [`storage`] | sea-orm entities and repository functions (SQLite, PostgreSQL, MySQL/MariaDB): queries only |

pub mod accept;
pub mod apikeys;
pub mod audit_rollup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cors;
pub mod domain;
pub mod error;
pub mod events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod keyfile;
pub mod keys;
pub mod keyset;
pub mod limits;
pub mod log_limit;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod observe;
pub mod passwords;
pub mod rate_limit;
pub mod revocation;
pub mod sealing;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod startup;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod tokens;

pub use config::Settings;
pub use startup::Application;
