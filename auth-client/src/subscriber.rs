//! [`Subscriber`]: a `UserEvents` consumer that resumes from the caller's cursor, reconnects
//! with backoff and jitter, and only advances after the caller's handler succeeded.
//!
//! The cursor belongs to the caller: store the `sequence` of the last applied event in the same
//! transaction as the data it produced, and pass it back to [`Subscriber::run`] after a
//! restart. Events are delivered in order, exactly once per successful handler call; an event
//! whose handler failed is delivered again after a reconnect.

use std::{
    fmt,
    future::Future,
    time::{Duration, SystemTime},
};

use auth_proto::pb;
use tokio::sync::Mutex;

use crate::{AuthClient, AuthClientError};

/// How the subscriber authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// A service account: logs in, and logs in again before the access token expires.
    Password {
        /// Account email.
        email: String,
        /// Account password.
        password: String,
    },
    /// A fixed access token (it stops working when it expires).
    Token(String),
    /// A service account's API key (`ak_…`, from `AdminService/IssueApiKey`): no login, no
    /// expiry unless the admin set one, never subject to the email lockout.
    ApiKey(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password { email, .. } => f
                .debug_struct("Password")
                .field("email", email)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token([redacted])"),
            Self::ApiKey(_) => f.write_str("ApiKey([redacted])"),
        }
    }
}

/// Why [`Subscriber::run`] gave up (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// The credentials were refused or lack role `events.subscriber`/`admin`: retrying cannot help.
    #[error("subscription refused: {0}")]
    Refused(AuthClientError),
    /// The cursor is beyond the server's newest event: the caller's data does not belong to
    /// this auth database (restored backup, wrong server).
    #[error("cursor {cursor} is ahead of the auth service's events")]
    CursorAhead {
        /// The cursor passed in.
        cursor: u64,
    },
    /// The events after the cursor were pruned by the server's event retention (only from
    /// [`Subscriber::run`]; [`Subscriber::follow`] loads a snapshot instead).
    #[error("events after cursor {cursor} were pruned; the oldest kept is {oldest}")]
    CursorPruned {
        /// The cursor passed in (or reached).
        cursor: u64,
        /// The oldest sequence the server still has.
        oldest: u64,
    },
}

/// What [`Subscriber::follow`] hands its handler.
// Events are the common case and each is moved once into the handler: boxing them would cost
// an allocation per event to shrink a value that never sits in a collection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next event, in order.
    Event(pb::UserEvent),
    /// The mirror fell behind the server's event retention: the whole state as of
    /// `as_of_sequence`, which replaces the mirror's (what it lacks no longer exists). Events
    /// after it follow.
    Snapshot(Snapshot),
}

/// Resumable consumer of `UserEvents`.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use auth_client::{AuthClient, Credentials, Subscriber};
///
/// let client = AuthClient::connect_lazy("http://127.0.0.1:50051")?;
/// let subscriber = Subscriber::new(client, Credentials::Password {
///     email: "mirror@example.com".into(),
///     password: std::env::var("MIRROR_PASSWORD")?,
/// });
/// let cursor = 0; // read from your own database
/// subscriber
///     .run(cursor, |event| async move {
///         // apply `event` and store `event.sequence` in one transaction of your own
///         println!("{} {:?}", event.sequence, event.kind());
///         Ok::<(), std::io::Error>(())
///     }, std::future::pending())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscriber {
    client: AuthClient,
    credentials: Credentials,
    min_backoff: Duration,
    max_backoff: Duration,
    token: Mutex<Option<(String, SystemTime)>>,
}

/// What a snapshot bootstrap produced.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Subscribe after this sequence.
    pub as_of_sequence: u64,
    /// Every user as of that sequence.
    pub users: Vec<pb::User>,
    /// Every live organization as of that sequence.
    pub organizations: Vec<pb::Organization>,
    /// Every live membership as of that sequence.
    pub memberships: Vec<pb::Membership>,
}

impl Subscriber {
    /// A subscriber with backoff from 100 ms to 30 s.
    pub fn new(client: AuthClient, credentials: Credentials) -> Self {
        Self {
            client,
            credentials,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            token: Mutex::new(None),
        }
    }

    /// Sets the reconnect backoff range (doubling from `min` to `max`, with jitter).
    #[must_use]
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// A valid access token, logging in if there is none or it expires within a minute.
    pub async fn access_token(&self) -> Result<String, AuthClientError> {
        let mut current = self.token.lock().await;
        if let Some((token, expires_at)) = current.as_ref()
            && expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                > Duration::from_secs(60)
        {
            return Ok(token.clone());
        }
        let fresh = match &self.credentials {
            Credentials::Token(token) | Credentials::ApiKey(token) => {
                (token.clone(), SystemTime::now() + Duration::from_secs(3600))
            }
            Credentials::Password { email, password } => {
                // An account with TOTP cannot subscribe with a password: MfaRequired, a refusal.
                let session = self.client.login(email, password).await?.into_session()?;
                (session.access_token, session.access_token_expires_at)
            }
        };
        *current = Some(fresh.clone());
        Ok(fresh.0)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .min_backoff
            .saturating_mul(1 << failures.min(16))
            .min(self.max_backoff);
        // Jitter in [0.5, 1.5) so many subscribers do not reconnect in lockstep.
        base.mul_f64(0.5 + rand::random::<f64>())
    }

    /// Streams events after `cursor` into `handler`, in order, until `shutdown` resolves;
    /// reconnects and resumes by itself. Returns the last sequence the handler accepted.
    ///
    /// If the server pruned the events after `cursor` (its event retention), this returns
    /// [`SubscriberError::CursorPruned`]; [`follow`](Self::follow) recovers from that by itself.
    pub async fn run<H, Fut, E>(
        &self,
        cursor: u64,
        mut handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, SubscriberError>
    where
        H: FnMut(pb::UserEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let deliver = |delivery: Delivery| {
            let call = match delivery {
                Delivery::Event(event) => Some(handler(event)),
                // Not reached: `run` stops at a pruned cursor instead of loading a snapshot.
                Delivery::Snapshot(_) => None,
            };
            async move {
                match call {
                    Some(call) => call.await,
                    None => Ok(()),
                }
            }
        };
        self.stream(cursor, deliver, false, shutdown).await
    }

    /// Like [`run`](Self::run), and when the server has pruned the events after the cursor
    /// (OUT_OF_RANGE `CURSOR_PRUNED`: the mirror was offline longer than the event
    /// retention), loads a `UserSnapshot`, hands it to `handler` as [`Delivery::Snapshot`]
    /// and follows from its sequence. The handler must make its data equal to the snapshot:
    /// users, organizations and memberships missing from it no longer exist.
    pub async fn follow<H, Fut, E>(
        &self,
        cursor: u64,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, SubscriberError>
    where
        H: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        self.stream(cursor, handler, true, shutdown).await
    }

    async fn stream<H, Fut, E>(
        &self,
        mut cursor: u64,
        mut handler: H,
        recover: bool,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, SubscriberError>
    where
        H: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let token = self.access_token().await?;
                self.client.user_events(&token, cursor).await
            };
            let stream = tokio::select! {
                () = &mut shutdown => return Ok(cursor),
                stream = attempt => stream,
            };
            let mut pruned = None;
            let mut stream = match stream {
                Ok(stream) => Some(stream),
                Err(AuthClientError::CursorPruned { oldest_sequence }) => {
                    pruned = Some(oldest_sequence);
                    None
                }
                Err(error) => {
                    match &error {
                        AuthClientError::PermissionDenied(_) | AuthClientError::MfaRequired => {
                            return Err(SubscriberError::Refused(error));
                        }
                        AuthClientError::Unauthenticated { .. }
                            if matches!(
                                self.credentials,
                                Credentials::Token(_) | Credentials::ApiKey(_)
                            ) =>
                        {
                            return Err(SubscriberError::Refused(error));
                        }
                        AuthClientError::Unauthenticated { .. } => self.forget_token().await,
                        AuthClientError::Other {
                            code: tonic::Code::OutOfRange,
                            ..
                        } => {
                            return Err(SubscriberError::CursorAhead { cursor });
                        }
                        _ => {}
                    }
                    failures += 1;
                    tracing::warn!(error.message = %error, failures, cursor, "cannot open the event stream; retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(cursor),
                        () = tokio::time::sleep(self.backoff(failures)) => continue,
                    }
                }
            };
            while let Some(open) = stream.as_mut() {
                let message = tokio::select! {
                    () = &mut shutdown => return Ok(cursor),
                    message = open.message() => message,
                };
                let event = match message {
                    Ok(Some(pb::UserEventsResponse { event: Some(event) })) => event,
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(code = ?status.code(), cursor, "event stream ended; resuming");
                        match AuthClientError::from(status) {
                            AuthClientError::CursorPruned { oldest_sequence } => {
                                pruned = Some(oldest_sequence);
                            }
                            AuthClientError::Unauthenticated { .. } => self.forget_token().await,
                            _ => {}
                        }
                        break;
                    }
                };
                if event.sequence <= cursor {
                    continue;
                }
                let sequence = event.sequence;
                match handler(Delivery::Event(event)).await {
                    Ok(()) => {
                        cursor = sequence;
                        failures = 0;
                    }
                    Err(error) => {
                        tracing::warn!(error.message = %error, sequence, "event handler failed; will redeliver");
                        break;
                    }
                }
            }
            if let Some(oldest) = pruned {
                if !recover {
                    return Err(SubscriberError::CursorPruned { cursor, oldest });
                }
                tracing::warn!(
                    cursor,
                    oldest,
                    "events after the cursor were pruned by the auth service; loading a snapshot"
                );
                let loaded = tokio::select! {
                    () = &mut shutdown => return Ok(cursor),
                    loaded = self.snapshot() => loaded,
                };
                match loaded {
                    Ok(snapshot) => {
                        let as_of = snapshot.as_of_sequence;
                        match handler(Delivery::Snapshot(snapshot)).await {
                            Ok(()) => {
                                tracing::info!(as_of, "mirror reset from a snapshot; following");
                                cursor = as_of;
                                failures = 0;
                                continue;
                            }
                            Err(error) => {
                                tracing::warn!(error.message = %error, "snapshot handler failed; will retry");
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error.message = %error, "cannot load a snapshot; retrying");
                    }
                }
            }
            failures += 1;
            tokio::select! {
                () = &mut shutdown => return Ok(cursor),
                () = tokio::time::sleep(self.backoff(failures)) => {}
            }
        }
    }

    /// One user by id, with the subscriber's credentials (`AdminService/GetUser`): for a
    /// caller whose user the mirror has not applied yet.
    pub async fn get_user(&self, user_id: &str) -> Result<pb::User, AuthClientError> {
        let token = self.access_token().await?;
        match self.client.get_user(&token, user_id).await {
            Err(AuthClientError::Unauthenticated { .. })
                if matches!(self.credentials, Credentials::Password { .. }) =>
            {
                // The cached token may have been revoked: log in again, once.
                self.forget_token().await;
                let token = self.access_token().await?;
                self.client.get_user(&token, user_id).await
            }
            other => other,
        }
    }

    /// Loads a consistent snapshot of every user, for an empty mirror: apply `users`, store
    /// `as_of_sequence` as the cursor, then [`run`](Self::run) from it.
    pub async fn snapshot(&self) -> Result<Snapshot, AuthClientError> {
        let token = self.access_token().await?;
        let mut stream = self.client.user_snapshot(&token).await?;
        let mut snapshot = Snapshot::default();
        let mut header = false;
        while let Some(message) = stream.message().await? {
            match message.item {
                Some(pb::user_snapshot_response::Item::Header(h)) => {
                    header = true;
                    snapshot.as_of_sequence = h.as_of_sequence;
                    snapshot
                        .users
                        .reserve(usize::try_from(h.user_count).unwrap_or(0).min(1 << 20));
                }
                Some(pb::user_snapshot_response::Item::User(user)) => snapshot.users.push(user),
                Some(pb::user_snapshot_response::Item::Organization(org)) => {
                    snapshot.organizations.push(org);
                }
                Some(pb::user_snapshot_response::Item::Membership(m)) => {
                    snapshot.memberships.push(m);
                }
                // An item kind newer than this client: skipped.
                None => {}
            }
        }
        if !header {
            return Err(AuthClientError::Unavailable(
                "snapshot ended without a header".into(),
            ));
        }
        Ok(snapshot)
    }
}
