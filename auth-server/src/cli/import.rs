//! `auth-server import-users`: reads JSON Lines or CSV (a file or standard input), imports
//! through the domain's [`Importer`] one batch at a time, reports every rejected row (and the
//! first skipped ones) by line, writes invite tokens only to the operator's file, and shows
//! progress on standard error: a bar with rows/s on a terminal, a plain line every 10,000 rows
//! otherwise.

use std::{
    fs::File,
    io::{BufRead, BufReader, IsTerminal as _, Write as _},
    path::Path,
    time::Instant,
};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{CliError, open};
use crate::{
    config::{ImportFormat, ImportUsersArgs},
    domain::{IMPORT_BATCH, ImportRow, ImportSource, ImportSummary, Importer, RowOutcome},
    revocation::Revocations,
    storage::{ClientInfo, users::PasswordHash},
};

/// Skipped rows listed by line; the rest are counted.
const SKIPPED_LISTED: u64 = 20;
/// Rows between two plain progress lines.
const PLAIN_PROGRESS_EVERY: u64 = 10_000;
/// The columns (JSON fields) a row may have.
const COLUMNS: [&str; 7] = [
    "email",
    "display_name",
    "email_verified",
    "roles",
    "created_at",
    "external_id",
    "password_hash",
];

/// One row as written in the file; every field but `email` may be missing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRow {
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email_verified: Value,
    #[serde(default)]
    roles: Value,
    #[serde(default)]
    created_at: Value,
    #[serde(default)]
    external_id: Value,
    #[serde(default)]
    password_hash: Option<String>,
}

fn unreadable(line: u64, email: String, why: String) -> ImportRow {
    ImportRow {
        line,
        email,
        unreadable: Some(why),
        ..Default::default()
    }
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, or empty (false).
fn flag(value: &Value) -> Result<bool, String> {
    match value {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
            Ok(n.as_u64() == Some(1))
        }
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" => Ok(false),
            "true" | "1" | "yes" => Ok(true),
            _ => Err(format!("email_verified {s:?} is not true or false")),
        },
        other => Err(format!("email_verified {other} is not true or false")),
    }
}

/// A JSON array of names, or one string of names separated by spaces, commas or semicolons.
fn roles(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(s
            .split([' ', ',', ';'])
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("role {item} is not a string"))
            })
            .collect(),
        other => Err(format!("roles {other} is neither a list nor a string")),
    }
}

/// RFC 3339 text, or whole seconds since the Unix epoch; returns unix ms.
fn created_at(value: &Value) -> Result<Option<i64>, String> {
    let seconds = |s: i64| {
        s.checked_mul(1000)
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| format!("created_at {s} is out of range"))
    };
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("created_at {n} is not whole seconds"))
            .and_then(seconds)
            .map(Some),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) if s.trim().bytes().all(|b| b.is_ascii_digit()) => s
            .trim()
            .parse()
            .map_err(|_| format!("created_at {s:?} is out of range"))
            .and_then(seconds)
            .map(Some),
        Value::String(s) => {
            let at = time::OffsetDateTime::parse(
                s.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| format!("created_at {s:?} is not an RFC 3339 time"))?;
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
                .map(Some)
                .map_err(|_| format!("created_at {s:?} is out of range"))
        }
        other => Err(format!("created_at {other} is not a time")),
    }
}

/// A string, or a number written as one (ids exported from integer keys).
fn external_id(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!(
            "external_id {other} is neither a string nor a number"
        )),
    }
}

fn to_row(line: u64, row: FileRow) -> ImportRow {
    let fields = (|| {
        Ok::<_, String>((
            flag(&row.email_verified)?,
            roles(&row.roles)?,
            created_at(&row.created_at)?,
            external_id(&row.external_id)?,
        ))
    })();
    match fields {
        Ok((email_verified, roles, created_at, external_id)) => ImportRow {
            line,
            email: row.email,
            display_name: row.display_name,
            email_verified,
            roles,
            created_at,
            external_id,
            password_hash: row
                .password_hash
                .filter(|h| !h.trim().is_empty())
                .map(|h| PasswordHash(h.trim().to_owned())),
            unreadable: None,
        },
        Err(why) => unreadable(line, row.email, why),
    }
}

/// The rows of a JSON Lines source, each with its line; blank lines are skipped.
fn jsonl_rows(input: impl BufRead) -> impl Iterator<Item = ImportRow> {
    input.split(b'\n').enumerate().filter_map(|(index, bytes)| {
        let line = index as u64 + 1;
        let Ok(bytes) = bytes else {
            return Some(unreadable(line, String::new(), "could not be read".into()));
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Some(unreadable(line, String::new(), "not UTF-8".into()));
        };
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<FileRow>(text) {
            Ok(row) => to_row(line, row),
            Err(e) => unreadable(line, String::new(), format!("not a user object: {e}")),
        })
    })
}

/// The rows of a CSV source with a header line; an unknown or missing column stops the run
/// before any row is read.
fn csv_rows(input: impl std::io::Read) -> Result<impl Iterator<Item = ImportRow>, CliError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| CliError::Import(format!("CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        return Err(CliError::Import(format!(
            "CSV column {unknown:?} is not one of {}",
            COLUMNS.join(", ")
        )));
    }
    if !headers.iter().any(|h| h == "email") {
        return Err(CliError::Import("CSV has no email column".into()));
    }
    Ok(reader.into_records().map(move |record| {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                return unreadable(line, String::new(), format!("bad CSV record: {e}"));
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        let mut object = serde_json::Map::new();
        for (name, value) in headers.iter().zip(record.iter()) {
            object.insert(name.clone(), Value::String(value.to_owned()));
        }
        match serde_json::from_value::<FileRow>(Value::Object(object)) {
            Ok(row) => to_row(line, row),
            Err(e) => unreadable(line, String::new(), format!("bad CSV record: {e}")),
        }
    }))
}

/// Progress on standard error: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    next_plain: u64,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    indicatif::ProgressBar::new(n),
                    "{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}",
                ),
                None => (
                    indicatif::ProgressBar::new_spinner(),
                    "{spinner} {pos} rows  {per_sec}",
                ),
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            next_plain: PLAIN_PROGRESS_EVERY,
        }
    }

    fn rate(&self, rows: u64) -> u64 {
        (rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3)) as u64
    }

    fn advance(&mut self, rows: u64, summary: &ImportSummary) {
        if let Some(bar) = &self.bar {
            bar.set_position(rows);
        } else if rows >= self.next_plain {
            self.next_plain = rows + PLAIN_PROGRESS_EVERY;
            eprintln!(
                "{rows} rows read: {} imported, {} skipped, {} rejected ({} rows/s)",
                summary.imported,
                summary.skipped,
                summary.rejected,
                self.rate(rows)
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Opens the invites file for appending, created with mode 0600.
fn open_invites(path: &Path) -> Result<File, CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Import(format!("invites file {}: {e}", path.display())))
}

/// The outcome of `import-users`: counts and the rate.
#[derive(Debug, Clone, Copy)]
pub struct ImportReport {
    /// Imported / skipped / rejected.
    pub summary: ImportSummary,
    /// Rows per second over the whole run.
    pub rows_per_sec: u64,
    /// Invite tokens written.
    pub invites: u64,
}

/// `auth-server import-users`: `say` gets each report line (rejected and skipped rows).
pub async fn import_users(
    args: &ImportUsersArgs,
    mut say: impl FnMut(String),
) -> Result<ImportReport, CliError> {
    let invite_ttl = args.invite_ttl()?;
    let stdin = args.file.as_os_str() == "-";
    let (input, total): (Box<dyn BufRead>, Option<u64>) = if stdin {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let open = || {
            File::open(&args.file)
                .map_err(|e| CliError::Import(format!("{}: {e}", args.file.display())))
        };
        let lines = BufReader::new(open()?).split(b'\n').count() as u64;
        (Box::new(BufReader::new(open()?)), Some(lines))
    };
    let rows: Box<dyn Iterator<Item = ImportRow>> = match args.format() {
        ImportFormat::Jsonl => Box::new(jsonl_rows(input)),
        ImportFormat::Csv => Box::new(csv_rows(input)?),
    };
    let mut invites = args.invites_file.as_deref().map(open_invites).transpose()?;
    let db = open(&args.store).await?;
    db.migrate_up().await?;
    let source = ImportSource {
        actor_id: None,
        client: ClientInfo {
            addr: None,
            user_agent: Some("auth-server import-users".into()),
        },
        invites: invites.is_some(),
        invite_ttl,
    };
    let mut importer = Importer::new(db.clone(), Revocations::new(), source);
    let mut progress = Progress::new(total);
    let mut summary = ImportSummary::default();
    let (mut read, mut invites_written, mut skipped_listed) = (0u64, 0u64, 0u64);
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let batch: Vec<ImportRow> = rows.by_ref().take(IMPORT_BATCH).collect();
        read += batch.len() as u64;
        let results = importer.import(batch).await?;
        summary.add(&results);
        for result in results {
            let line = result.line;
            match result.outcome {
                RowOutcome::Imported { user, invite } => {
                    let (Some(invite), Some(file)) = (invite, invites.as_mut()) else {
                        continue;
                    };
                    let record = json!({
                        "line": line,
                        "email": user.email,
                        "user_id": user.id,
                        "invite_token": invite.token.expose(),
                        "expires_at": invite
                            .expires_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    });
                    writeln!(file, "{record}")
                        .map_err(|e| CliError::Import(format!("invites file: {e}")))?;
                    invites_written += 1;
                }
                RowOutcome::Skipped(why) => {
                    skipped_listed += 1;
                    if skipped_listed <= SKIPPED_LISTED {
                        say(format!("line {line}: skipped {}: {why}", result.email));
                    }
                }
                RowOutcome::Rejected(why) => {
                    say(format!("line {line}: rejected {}: {why}", result.email));
                }
            }
        }
        if let Some(file) = invites.as_mut() {
            file.flush()
                .map_err(|e| CliError::Import(format!("invites file: {e}")))?;
        }
        progress.advance(read, &summary);
    }
    progress.finish();
    if summary.skipped > SKIPPED_LISTED {
        say(format!(
            "… and {} more skipped rows (users already there)",
            summary.skipped - SKIPPED_LISTED
        ));
    }
    db.close().await;
    Ok(ImportReport {
        summary,
        rows_per_sec: progress.rate(read),
        invites: invites_written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(row: &ImportRow) -> &str {
        row.unreadable.as_deref().unwrap_or_default()
    }

    #[test]
    fn jsonl_rows_keep_their_line_and_report_what_is_unreadable() {
        let input = concat!(
            "{\"email\":\"a@example.com\",\"roles\":[\"staff\"],\"created_at\":\"2020-01-02T03:04:05Z\",\"external_id\":17,\"password_hash\":\"$2b$04$x\"}\n",
            "\n",
            "not json\n",
            "{\"email\":\"b@example.com\",\"colour\":\"red\"}\n",
            "{\"email\":\"c@example.com\",\"created_at\":\"yesterday\"}\n",
        );
        let rows: Vec<ImportRow> = jsonl_rows(input.as_bytes()).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].line, 1);
        assert_eq!(rows[0].roles, vec!["staff".to_owned()]);
        assert_eq!(rows[0].created_at, Some(1_577_934_245_000));
        assert_eq!(rows[0].external_id.as_deref(), Some("17"));
        assert!(rows[0].unreadable.is_none());
        assert_eq!(rows[1].line, 3);
        assert!(why(&rows[1]).contains("not a user object"));
        assert!(why(&rows[2]).contains("colour"));
        assert!(why(&rows[3]).contains("RFC 3339"));
    }

    #[test]
    fn csv_rows_take_names_from_the_header() {
        let input = "email,roles,email_verified,created_at,password_hash\n\
                     a@example.com,staff;billing,yes,1577934245,\n\
                     b@example.com,,maybe,,\n";
        let rows: Vec<ImportRow> = csv_rows(input.as_bytes()).expect("header").collect();
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[0].roles,
            vec!["staff".to_owned(), "billing".to_owned()]
        );
        assert!(rows[0].email_verified);
        assert_eq!(rows[0].created_at, Some(1_577_934_245_000));
        assert!(rows[0].password_hash.is_none());
        assert_eq!(rows[1].line, 3);
        assert!(why(&rows[1]).contains("maybe"));
        assert!(csv_rows("email,colour\n".as_bytes()).is_err());
        assert!(csv_rows("name\n".as_bytes()).is_err());
    }
}
