//! Client of the identity service (`auth-server`): other services link this crate and never
//! touch passwords or an auth database of their own.
//!
//! - [`AuthClient`]: typed calls for every `auth.v1.AuthService` RPC.
//! - [`Validator`]: cached, coalesced, fail-closed token validation for every request
//!   (see its module docs for freshness, outage grace and the negative cache).
//! - [`AuthLayer`]: a tower layer guarding tonic and HTTP services; the caller's
//!   [`Principal`] lands in the request extensions.
//! - [`Subscriber`]: resumable `UserEvents` consumer, and revocations pushed into the cache.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use auth_client::{AuthClient, AuthLayer, Principal, Validator};
//! use axum::{Extension, Router, routing::get};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // Connects lazily: building never fails because the auth service is down.
//! let client = AuthClient::connect_lazy("http://127.0.0.1:50051")?;
//! let validator = Validator::builder(client)
//!     .ttl(Duration::from_secs(300))   // trust a validated token this long (never past exp)
//!     .grace(Duration::from_secs(300)) // serve it this much longer while the server is down
//!     .build();
//!
//! // Validate one token by hand...
//! match validator.validate("v4.public.…").await {
//!     Ok(principal) => println!("user {}", principal.user_id),
//!     Err(e) if e.is_denied() => println!("denied: {e}"),
//!     Err(e) => println!("could not decide, deny: {e}"),
//! }
//!
//! // ...or guard a whole service: 401 / 403 / 503, and the Principal for the handler.
//! async fn me(Extension(principal): Extension<Principal>) -> String {
//!     principal.user_id
//! }
//! let app: Router = Router::new().route("/me", get(me)).layer(AuthLayer::new(validator));
//! # let _ = app;
//! # Ok(()) }
//! ```

mod account;
mod client;
mod error;
mod layer;
mod offline;
mod principal;
mod subscriber;
mod trace;
mod validator;

pub use account::{RecoveryCodes, TotpEnrollment};
pub use auth_proto::{pb, structs};
pub use client::{
    AuthClient, ClientTls, DEFAULT_TIMEOUT, LoginOutcome, MfaChallenge, MfaCode, Session,
};
pub use error::AuthClientError;
pub use layer::{AuthLayer, OrgFrom, RequireAuth};
pub use principal::Principal;
pub use subscriber::{Credentials, Delivery, Snapshot, Subscriber, SubscriberError};
pub use validator::{Validator, ValidatorBuilder, ValidatorStats};
