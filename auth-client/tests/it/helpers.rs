//! The auth-server testkit, plus client-side conveniences.

use std::time::Duration;

use auth_client::{AuthClient, Session, Validator};
pub use auth_server::testkit::{PASSWORD, Server, TestDatabase};

/// Client conveniences on the testkit server.
pub trait ServerExt {
    /// A client with a short deadline.
    fn client(&self) -> AuthClient;
    /// A validator with the given TTL and grace.
    fn validator(&self, ttl: Duration, grace: Duration) -> Validator;
    /// Registers `email` with [`PASSWORD`] and logs in.
    async fn user(&self, email: &str) -> Session;
}

impl ServerExt for Server {
    fn client(&self) -> AuthClient {
        AuthClient::connect_lazy(&self.url())
            .expect("url")
            .with_timeout(Duration::from_millis(500))
    }

    fn validator(&self, ttl: Duration, grace: Duration) -> Validator {
        Validator::builder(self.client())
            .ttl(ttl)
            .grace(grace)
            .build()
    }

    async fn user(&self, email: &str) -> Session {
        let client = self.client();
        client
            .register(email, PASSWORD, "")
            .await
            .expect("register");
        client
            .login(email, PASSWORD)
            .await
            .expect("login")
            .into_session()
            .expect("no MFA on this account")
    }
}
