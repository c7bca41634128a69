//! Erasure: after a deletion (and `--erasure-delay-secs`), no row of the auth database still
//! holds the user's email, display name or metadata. The deleting transaction queues the user
//! (`storage::erasure`); this flow then rewrites every earlier event payload of the user to the
//! tombstone (sequence, kind and per-event version stay, so subscribers see no gap and replay
//! the same outcome), replaces the details of audit records about the user, masks the user's
//! addresses wherever other records' details mention them, forgets their lockout rows and
//! blanks the tombstone's display name. One transaction, no new event.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;

use super::{Accounts, lockout};
use crate::{
    clock,
    error::AuthError,
    storage::{self, StorageError, UserRecord},
};

/// What an erased audit record's details become.
const ERASED_DETAIL: &str = r#"{"erased":true}"#;
/// What an erased address becomes inside another record's details.
const ERASED: &str = "[erased]";
/// Erasures handled per read of the queue.
const BATCH: u64 = 50;

/// The tombstone email of a deleted user (as `storage::users::delete_user` writes it).
fn tombstone_email(user_id: &str) -> String {
    format!("#deleted:{user_id}")
}

/// `user` with its personal fields erased; id, roles, flags and version stay.
fn scrub(user: &mut UserRecord) {
    user.email = tombstone_email(&user.id);
    user.display_name.clear();
    user.metadata.clear();
    user.external_id = None;
}

/// `value` with every string that mentions one of `needles` masked; whether anything changed.
fn mask(value: &mut Value, needles: &BTreeSet<String>) -> bool {
    match value {
        Value::String(text) => {
            let mut changed = false;
            for needle in needles {
                if text.contains(needle.as_str()) {
                    *text = text.replace(needle.as_str(), ERASED);
                    changed = true;
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| mask(item, needles) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, item| mask(item, needles) | changed),
        _ => false,
    }
}

impl Accounts {
    /// When a deletion now should have its history erased.
    pub(super) fn erasure_due_at(&self) -> i64 {
        clock::now_millis().saturating_add(clock::duration_millis(self.d.settings.erasure_delay))
    }

    /// After a deletion committed: with no delay, erases at once; a failure is only logged,
    /// the queued erasure is retried by housekeeping.
    pub(super) async fn erase_if_due(&self, user_id: &str) {
        if self.d.settings.erasure_delay > Duration::ZERO {
            return;
        }
        if let Err(error) = self.erase_user(user_id).await {
            tracing::warn!(
                error.message = %error,
                error.cause_chain = ?error,
                "erasure after deletion failed; housekeeping retries"
            );
        }
    }

    /// Erases every user whose erasure is due; returns how many.
    pub async fn erase_due(&self) -> Result<usize, AuthError> {
        let mut erased = 0;
        loop {
            let due = storage::erasure::find_due_erasures(
                self.d.store.conn(),
                clock::now_millis(),
                BATCH,
            )
            .await?;
            let full = due.len() as u64 == BATCH;
            for user_id in due {
                if self.erase_user(&user_id).await? {
                    erased += 1;
                }
            }
            if !full {
                return Ok(erased);
            }
        }
    }

    /// Erases one queued user's history; false if it was not queued (any more).
    ///
    /// The reads (the user's events, the scan of the audit details for the addresses) run
    /// before the write transaction, so on SQLite the write lock is held only for the updates.
    /// Neither can change meanwhile in a way that matters: a deleted user gets no new events,
    /// and an audit record written after the scan is about an address that is nobody's now.
    async fn erase_user(&self, user_id: &str) -> Result<bool, AuthError> {
        // The deletion's own events may still be staged: number them first, so that the
        // rewrite below reaches them (nothing new is staged for a deleted user).
        storage::sequencer::drain(&self.d.store).await?;
        let conn = self.d.store.conn();
        // Every address the user ever had, from the user's own events, and the rewrites.
        let mut emails = BTreeSet::new();
        let mut rewrites = Vec::new();
        for (sequence, payload) in storage::erasure::find_user_event_payloads(conn, user_id).await?
        {
            let mut user: UserRecord = serde_json::from_str(&payload)
                .map_err(|_| StorageError::Corrupt(format!("event {sequence} payload")))?;
            if user.email != tombstone_email(user_id) {
                emails.insert(std::mem::take(&mut user.email));
            }
            scrub(&mut user);
            let payload =
                serde_json::to_string(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            rewrites.push((sequence, payload));
        }
        let needles: Vec<String> = emails.iter().cloned().collect();
        let mut masks = Vec::new();
        for (id, detail) in storage::erasure::find_audit_details_containing(conn, &needles).await? {
            match serde_json::from_str::<Value>(&detail) {
                Ok(mut value) => {
                    if mask(&mut value, &emails) {
                        masks.push((id, value.to_string()));
                    }
                }
                Err(_) => masks.push((id, ERASED_DETAIL.to_owned())),
            }
        }

        let change = self.d.begin().await?;
        let db = change.db();
        if !storage::erasure::claim_erasure(db, user_id).await? {
            return Ok(false);
        }
        for (sequence, payload) in &rewrites {
            storage::erasure::set_event_payload(db, *sequence, payload).await?;
        }
        let about = storage::erasure::set_subject_audit_details(db, user_id, ERASED_DETAIL).await?;
        for (id, detail) in &masks {
            storage::audit::update_audit_detail(db, *id, detail).await?;
        }
        for email in &emails {
            lockout::clear(db, email).await?;
            self.d.audit_rollup.forget(email);
        }
        storage::erasure::clear_tombstone(db, user_id).await?;
        change.commit().await?;
        tracing::info!(
            user_id,
            addresses = emails.len(),
            events = rewrites.len(),
            audit_records = about + masks.len() as u64,
            "deleted user's history erased"
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_reaches_nested_strings_and_leaves_the_rest() {
        let needles = BTreeSet::from(["ann@example.com".to_owned()]);
        let mut value = serde_json::json!({
            "from": "ann@example.com",
            "list": ["x", "to ann@example.com"],
            "n": 3,
        });
        assert!(mask(&mut value, &needles));
        assert_eq!(
            value,
            serde_json::json!({ "from": ERASED, "list": ["x", "to [erased]"], "n": 3 })
        );
        assert!(!mask(&mut value, &needles));
    }
}
