//! auth-client against a real auth-server on loopback.

mod account;
mod helpers;
mod layer;
mod subscriber;
mod validator;
