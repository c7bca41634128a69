//! Writes a throw-away PKI for trying TLS locally: `ca.pem`, `server.pem`/`server.key` (for
//! `localhost` and `127.0.0.1`) and `client.pem`/`client.key` (for mutual TLS).
//!
//! `cargo run -p auth-server --example devcerts -- ./certs`
//!
//! Development only: real deployments use certificates from their own CA.

#![allow(missing_docs)]

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./certs".to_owned());
    let certs = auth_server::testkit::TestCerts::generate(std::path::Path::new(&dir));
    for path in [
        &certs.ca,
        &certs.server_cert,
        &certs.server_key,
        &certs.client_cert,
        &certs.client_key,
    ] {
        println!("{}", path.display());
    }
}
