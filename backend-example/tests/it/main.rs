//! backend-example end to end: a real auth-server and a real backend on loopback ports, the
//! backend's database on SQLite and on PostgreSQL.

mod companies;
mod helpers;
mod mirror;
