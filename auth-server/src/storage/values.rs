//! Column encodings the repositories share: JSON role arrays and metadata objects, and
//! `LIKE` patterns.

use super::{StorageError, StorageResult};

/// A JSON object of admin-owned metadata.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Role names as the JSON array the `roles` columns hold.
pub(super) fn roles_json(roles: &[String]) -> StorageResult<String> {
    serde_json::to_string(roles).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Metadata as the JSON text the `metadata` columns hold.
pub(super) fn metadata_json(metadata: &Metadata) -> StorageResult<String> {
    serde_json::to_string(metadata).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// A `metadata` column's text (none or empty is `{}`); `what` names the row for the error.
pub(super) fn parse_metadata(text: Option<&str>, what: &str) -> StorageResult<Metadata> {
    match text {
        None | Some("") => Ok(Metadata::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|_| StorageError::Corrupt(format!("metadata of {what}"))),
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub(super) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
