//! `AdminService/ImportUsers`: a client stream of row batches in, one report out.

use auth_proto::pb;
use tonic::Streaming;

use super::{non_empty, timestamp};
use crate::{
    clock::millis_of_timestamp,
    domain::{ImportRow, ImportSummary, Importer, RowOutcome, RowResult},
    error::AuthError,
    limits::IMPORT_IDLE_TIMEOUT,
    storage::users::PasswordHash,
};

/// Most rows in one stream message.
pub(super) const MAX_ROWS_PER_MESSAGE: usize = 1000;
/// Most skipped rows listed in the report (all are counted).
const MAX_SKIPPED_LISTED: usize = 1000;

fn import_row(row: u64, user: pb::ImportedUser) -> ImportRow {
    ImportRow {
        line: row,
        email: user.email,
        display_name: user.display_name,
        email_verified: user.email_verified,
        roles: user.roles,
        created_at: user.created_at.as_ref().map(millis_of_timestamp),
        external_id: non_empty(&user.external_id),
        password_hash: non_empty(&user.password_hash).map(PasswordHash),
        unreadable: None,
    }
}

fn result_pb(result: RowResult) -> pb::ImportRowResult {
    use pb::import_row_result::Status;
    let mut out = pb::ImportRowResult {
        row: result.line,
        email: result.email,
        ..Default::default()
    };
    match result.outcome {
        RowOutcome::Imported { user, invite } => {
            out.set_status(Status::Imported);
            out.user_id = user.id;
            if let Some(invite) = invite {
                out.invite_token = invite.token.expose().to_owned();
                out.invite_expires_at = Some(timestamp(invite.expires_at));
            }
        }
        RowOutcome::Skipped(reason) => {
            out.set_status(Status::Skipped);
            out.reason = reason;
        }
        RowOutcome::Rejected(reason) => {
            out.set_status(Status::Rejected);
            out.reason = reason;
        }
    }
    out
}

/// Reads the stream to its end, importing each message's rows as it arrives (each batch
/// commits on its own), and reports every rejected row, every invite and the first skipped
/// rows.
pub(super) async fn import_stream(
    mut importer: Importer,
    mut stream: Streaming<pb::ImportUsersRequest>,
) -> Result<pb::ImportUsersResponse, tonic::Status> {
    let mut next_row = 0u64;
    let mut summary = ImportSummary::default();
    let mut listed = Vec::new();
    let mut skipped_listed = 0;
    loop {
        let Ok(next) = tokio::time::timeout(IMPORT_IDLE_TIMEOUT, stream.message()).await else {
            return Err(tonic::Status::deadline_exceeded(format!(
                "no message for {} s; {next_row} rows were read and their batches committed",
                IMPORT_IDLE_TIMEOUT.as_secs()
            )));
        };
        let Some(message) = next? else { break };
        if message.users.len() > MAX_ROWS_PER_MESSAGE {
            return Err(AuthError::InvalidArgument(format!(
                "at most {MAX_ROWS_PER_MESSAGE} users per message; {} rows before this message were imported",
                next_row
            ))
            .into());
        }
        let rows = message
            .users
            .into_iter()
            .map(|user| {
                next_row += 1;
                import_row(next_row, user)
            })
            .collect();
        let results = importer.import(rows).await?;
        summary.add(&results);
        for result in results {
            let listed_row = match &result.outcome {
                RowOutcome::Imported { invite, .. } => invite.is_some(),
                RowOutcome::Rejected(_) => true,
                RowOutcome::Skipped(_) => {
                    skipped_listed += 1;
                    skipped_listed <= MAX_SKIPPED_LISTED
                }
            };
            if listed_row {
                listed.push(result_pb(result));
            }
        }
    }
    Ok(pb::ImportUsersResponse {
        imported: summary.imported,
        skipped: summary.skipped,
        rejected: summary.rejected,
        results: listed,
    })
}
