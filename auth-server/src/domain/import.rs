//! Moving users in from another system (`auth-server import-users`, `AdminService/ImportUsers`).
//!
//! Each row is checked on its own (email, display name, roles, external id, creation time, and
//! the hash: a format a login can verify, well-formed, within its cost cap; nothing is hashed),
//! so a bad row is reported with its line and the good rows go on. Good rows are written in
//! batches: per batch one query for the emails and external ids already taken, then one
//! transaction with the users, their credentials, one `UserCreated` event each (one counter
//! update for the batch), one `user_imported` audit record each, and an invite token for each
//! user without a hash. A user whose email is already there is skipped, so a re-run imports
//! nothing twice. A batch that loses a race for an email (another writer created it between
//! the check and the insert) is rolled back and checked again.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use serde_json::json;

use super::{
    Change,
    credentials::IssuedReset,
    rules::{check_display_name, check_roles},
};
use crate::{
    clock,
    error::AuthError,
    passwords::{self, legacy},
    revocation::Revocations,
    secrets::OpaqueToken,
    storage::{
        self, ClientInfo, EventKind, StorageError, Store, UserRecord,
        audit::{AuditKind, AuditRecord},
        resets::ResetPurpose,
        users::{NewUser, PasswordHash},
    },
};

/// Longest external id kept.
pub const MAX_EXTERNAL_ID_BYTES: usize = 255;
/// Rows written per transaction.
pub const IMPORT_BATCH: usize = 500;

/// One user as the other system exported it.
#[derive(Debug, Clone, Default)]
pub struct ImportRow {
    /// Where the row came from: its line in a file, its position in a stream (1-based).
    pub line: u64,
    /// Email as exported.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Whether the other system had verified the email.
    pub email_verified: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Creation time in the other system, unix ms (`None`: now).
    pub created_at: Option<i64>,
    /// The user's id in the other system.
    pub external_id: Option<String>,
    /// The existing hash in PHC or modular-crypt form; `None` imports the user as an invite.
    pub password_hash: Option<PasswordHash>,
    /// What the reader found wrong with the row before it got here (unparsable JSON, a bad
    /// date): the row is rejected with this reason.
    pub unreadable: Option<String>,
}

/// What became of a row.
#[derive(Debug)]
pub enum RowOutcome {
    /// Created, with an invite token if the row had no hash.
    Imported {
        /// The new user.
        user: UserRecord,
        /// Its invite, for a row without a hash.
        invite: Option<IssuedReset>,
    },
    /// A user with this email is already there; nothing was written.
    Skipped(String),
    /// The row is bad; nothing was written.
    Rejected(String),
}

/// A row's line, its email as given, and what became of it.
#[derive(Debug)]
pub struct RowResult {
    /// The row's line.
    pub line: u64,
    /// The email (normalized when it was valid).
    pub email: String,
    /// The outcome.
    pub outcome: RowOutcome,
}

/// Imported / skipped / rejected counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Users created.
    pub imported: u64,
    /// Rows whose user was already there.
    pub skipped: u64,
    /// Bad rows.
    pub rejected: u64,
}

impl ImportSummary {
    /// Counts `results` in.
    pub fn add(&mut self, results: &[RowResult]) {
        for result in results {
            match result.outcome {
                RowOutcome::Imported { .. } => self.imported += 1,
                RowOutcome::Skipped(_) => self.skipped += 1,
                RowOutcome::Rejected(_) => self.rejected += 1,
            }
        }
    }
}

/// Who imports, for the audit trail, and how invites are made.
#[derive(Debug, Clone)]
pub struct ImportSource {
    /// The admin calling `ImportUsers` (`None` for the CLI).
    pub actor_id: Option<String>,
    /// Client address and user agent.
    pub client: ClientInfo,
    /// Whether rows without a hash become invites (`false`: they are rejected).
    pub invites: bool,
    /// Invite token lifetime.
    pub invite_ttl: Duration,
}

/// One import run: remembers the emails and external ids it has seen, so a duplicate within
/// the run is rejected with the line of its first occurrence.
#[derive(Debug)]
pub struct Importer {
    store: Store,
    revocations: Revocations,
    source: ImportSource,
    seen_emails: HashMap<String, u64>,
    seen_external: HashMap<String, u64>,
}

/// A row that passed its checks.
struct Candidate {
    line: u64,
    user: NewUser,
    format: Option<legacy::HashFormat>,
    /// No hash and invites are off: rejected, unless the user is already there (skipped).
    uninvitable: bool,
}

/// Why a row without a hash cannot be imported when invites are off.
const NO_INVITES: &str =
    "no password_hash, and invites are off (give an invites file to import it as an invite)";

fn rejected(line: u64, email: String, reason: impl Into<String>) -> Box<RowResult> {
    Box::new(RowResult {
        line,
        email,
        outcome: RowOutcome::Rejected(reason.into()),
    })
}

fn reason(error: AuthError) -> String {
    match error {
        AuthError::InvalidArgument(message) => message,
        other => other.to_string(),
    }
}

/// The external id trimmed, or why it is refused; blank is none.
fn check_external_id(raw: Option<String>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let id = raw.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_EXTERNAL_ID_BYTES {
        return Err(format!(
            "external_id is longer than {MAX_EXTERNAL_ID_BYTES} bytes"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("external_id must not contain control characters".into());
    }
    Ok(Some(id.to_owned()))
}

impl Importer {
    /// A run writing to `store`.
    pub fn new(store: Store, revocations: Revocations, source: ImportSource) -> Self {
        Self {
            store,
            revocations,
            source,
            seen_emails: HashMap::new(),
            seen_external: HashMap::new(),
        }
    }

    /// Checks one row; `Err` is its rejection.
    fn check(&self, row: ImportRow) -> Result<Candidate, Box<RowResult>> {
        let line = row.line;
        if let Some(why) = row.unreadable {
            return Err(rejected(line, row.email, why));
        }
        let email = passwords::normalize_email(&row.email)
            .map_err(|e| rejected(line, row.email.clone(), format!("malformed email: {e}")))?;
        let fail = |why: String| rejected(line, email.clone(), why);
        let display_name = check_display_name(&row.display_name).map_err(|e| fail(reason(e)))?;
        let roles = check_roles(row.roles).map_err(|e| fail(reason(e)))?;
        let external_id = check_external_id(row.external_id).map_err(&fail)?;
        if let Some(at) = row.created_at
            && at > clock::now_millis() + 60_000
        {
            return Err(fail("created_at is in the future".into()));
        }
        let format = match &row.password_hash {
            Some(hash) => Some(legacy::check(&hash.0).map_err(&fail)?),
            None => None,
        };
        let uninvitable = format.is_none() && !self.source.invites;
        if let Some(first) = self.seen_emails.get(&email) {
            return Err(fail(format!("duplicate email: first seen at line {first}")));
        }
        if let Some(id) = &external_id
            && let Some(first) = self.seen_external.get(id)
        {
            return Err(fail(format!(
                "duplicate external_id: first seen at line {first}"
            )));
        }
        Ok(Candidate {
            line,
            user: NewUser {
                email,
                display_name,
                roles,
                password_hash: row.password_hash,
                email_verified: row.email_verified,
                created_at: row.created_at,
                external_id,
                service_account: false,
                metadata: Default::default(),
            },
            format,
            uninvitable,
        })
    }

    /// Imports `rows` (any number; written [`IMPORT_BATCH`] at a time) and says what became of
    /// each, in order. `Err` only for a failure of the database, after the batches before it
    /// have committed.
    pub async fn import(&mut self, rows: Vec<ImportRow>) -> Result<Vec<RowResult>, AuthError> {
        let mut results = Vec::with_capacity(rows.len());
        let mut candidates = Vec::new();
        for row in rows {
            match self.check(row) {
                Ok(candidate) => {
                    self.seen_emails
                        .insert(candidate.user.email.clone(), candidate.line);
                    if let Some(id) = &candidate.user.external_id {
                        self.seen_external.insert(id.clone(), candidate.line);
                    }
                    candidates.push(candidate);
                }
                Err(result) => results.push(*result),
            }
            if candidates.len() == IMPORT_BATCH {
                results.extend(self.write_batch(std::mem::take(&mut candidates)).await?);
            }
        }
        results.extend(self.write_batch(candidates).await?);
        results.sort_by_key(|r| r.line);
        Ok(results)
    }

    /// Writes one batch, checking it again if it lost a race for an email.
    async fn write_batch(&self, batch: Vec<Candidate>) -> Result<Vec<RowResult>, AuthError> {
        let mut attempt = 0;
        loop {
            match self.try_batch(&batch).await {
                Err(AuthError::Storage(StorageError::Duplicate(_))) if attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_batch(&self, batch: &[Candidate]) -> Result<Vec<RowResult>, AuthError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut change = Change::begin(&self.store, &self.revocations).await?;
        storage::imports::plan_for_values(change.db()).await?;
        let emails: Vec<String> = batch.iter().map(|c| c.user.email.clone()).collect();
        let ids: Vec<String> = batch
            .iter()
            .filter_map(|c| c.user.external_id.clone())
            .collect();
        let taken_emails: HashSet<String> =
            storage::imports::existing_emails(change.db(), &emails).await?;
        let taken_ids = storage::imports::existing_external_ids(change.db(), &ids).await?;
        let mut results = Vec::new();
        let mut fresh = Vec::new();
        for candidate in batch {
            let email = candidate.user.email.clone();
            let line = candidate.line;
            if taken_emails.contains(&email) {
                results.push(RowResult {
                    line,
                    email,
                    outcome: RowOutcome::Skipped("a user with this email is already there".into()),
                });
            } else if candidate.uninvitable {
                results.push(*rejected(line, email, NO_INVITES));
            } else if let Some(owner) = candidate
                .user
                .external_id
                .as_ref()
                .and_then(|id| taken_ids.get(id))
            {
                results.push(*rejected(
                    line,
                    email,
                    format!("external_id already belongs to {owner}"),
                ));
            } else {
                fresh.push(candidate);
            }
        }
        let users = storage::imports::insert_users(
            change.db(),
            fresh.iter().map(|c| c.user.clone()).collect(),
        )
        .await?;
        let now = clock::now();
        let expires_at = now + self.source.invite_ttl;
        let mut audits = Vec::with_capacity(users.len());
        let mut invites = Vec::new();
        for (candidate, user) in fresh.iter().zip(&users) {
            change.event(EventKind::UserCreated, user);
            let invite = if candidate.format.is_none() {
                let token = OpaqueToken::generate();
                storage::resets::create_reset(
                    change.db(),
                    token.hash(),
                    &user.id,
                    ResetPurpose::Invite,
                    self.source.actor_id.as_deref(),
                    clock::millis(now),
                    clock::millis(expires_at),
                )
                .await?;
                Some(IssuedReset { token, expires_at })
            } else {
                None
            };
            let hash = match candidate.format {
                Some(format) => format!("{format:?}").to_lowercase(),
                None => "none (invite)".to_owned(),
            };
            let mut record = AuditRecord::new(AuditKind::UserImported, &self.source.client)
                .subject(&user.id)
                .detail(json!({
                    "email": user.email,
                    "roles": user.roles,
                    "external_id": user.external_id,
                    "hash_format": hash,
                }));
            if let Some(actor) = &self.source.actor_id {
                record = record.actor(actor);
            }
            audits.push(record);
            invites.push(invite);
        }
        storage::audit::append_audits(change.db(), audits).await?;
        change.commit().await?;
        for ((candidate, user), invite) in fresh.iter().zip(users).zip(invites) {
            results.push(RowResult {
                line: candidate.line,
                email: user.email.clone(),
                outcome: RowOutcome::Imported { user, invite },
            });
        }
        Ok(results)
    }
}

impl super::Admin {
    /// An import run for `ImportUsers` by `actor`; rows without a hash become invites.
    pub fn importer(&self, actor: &super::Actor) -> Importer {
        let d = self.d();
        Importer::new(
            d.store.clone(),
            d.revocations.clone(),
            ImportSource {
                actor_id: Some(actor.user_id.clone()),
                client: actor.client.clone(),
                invites: true,
                invite_ttl: d.settings.invite_ttl,
            },
        )
    }
}
