//! Integration tests of auth-server: one binary, real server on loopback, real SQLite file
//! and real PostgreSQL database.

mod account;
mod admin;
mod audit_flood;
mod bad_input;
mod cli;
mod compression;
mod concurrency;
mod crash;
mod db_tls;
mod email;
mod events;
mod grpc_web;
mod health;
mod helpers;
mod import;
mod keys;
mod lifecycle;
mod lifetime;
mod me;
mod mfa;
mod ops;
mod organizations;
mod otel;
mod outbox;
mod overload;
mod protection;
mod reflection;
mod rehash;
mod reset;
mod service_accounts;
mod tls;
