//! Input rules the flows share: role names, display names and user ids.

use crate::{error::AuthError, storage::organizations::Metadata};

/// Checks a role name against `[a-z][a-z0-9._-]{0,63}`.
pub fn check_role(role: &str) -> Result<(), AuthError> {
    let mut chars = role.chars();
    let valid = role.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidArgument(format!(
            "role {role:?} must match [a-z][a-z0-9._-]{{0,63}}"
        )))
    }
}

/// Validates, sorts and deduplicates role names.
pub(super) fn check_roles(mut roles: Vec<String>) -> Result<Vec<String>, AuthError> {
    for role in &roles {
        check_role(role)?;
    }
    roles.sort();
    roles.dedup();
    if roles.len() > 64 {
        return Err(AuthError::InvalidArgument("at most 64 roles".into()));
    }
    Ok(roles)
}

/// Validates a display name; returns it trimmed.
pub(crate) fn check_display_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.len() > 256 {
        return Err(AuthError::InvalidArgument(
            "display name is longer than 256 bytes".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument(
            "display name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Largest metadata object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Checks a metadata object's size (as compact JSON, at most [`MAX_METADATA_BYTES`]).
pub fn check_metadata(metadata: &Metadata) -> Result<(), AuthError> {
    let size = serde_json::to_vec(metadata)
        .map_err(|_| AuthError::InvalidArgument("metadata is not valid JSON".into()))?
        .len();
    if size > MAX_METADATA_BYTES {
        return Err(AuthError::InvalidArgument(format!(
            "metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

/// Validates an organization name (1 to 200 bytes, no control characters); returns it trimmed.
pub(super) fn check_organization_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AuthError::InvalidArgument(
            "name must be 1 to 200 bytes".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument(
            "name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Checks a slug against `[a-z0-9][a-z0-9-]{0,62}`.
pub(super) fn check_slug(slug: &str) -> Result<String, AuthError> {
    let valid = !slug.is_empty()
        && slug.len() <= 63
        && !slug.starts_with('-')
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(slug.to_owned())
    } else {
        Err(AuthError::InvalidArgument(format!(
            "slug {slug:?} must match [a-z0-9][a-z0-9-]{{0,62}}"
        )))
    }
}

/// The ASCII letters a Latin letter with a diacritic (or a ligature) is written with in a slug.
fn ascii_letters(c: char) -> Option<&'static str> {
    Some(match c.to_lowercase().next()? {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ł' | 'ľ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'ř' | 'ŕ' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ť' | 'ţ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return None,
    })
}

/// A slug made from a name: ASCII letters and digits lower-cased, Latin letters with
/// diacritics without them (`Ü` -> `u`, `ß` -> `ss`), runs of anything else one `-`, at most 63
/// bytes.
pub(super) fn slug_from_name(name: &str) -> Result<String, AuthError> {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if let Some(letters) = ascii_letters(c) {
            slug.push_str(letters);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(63);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        return Err(AuthError::InvalidArgument(
            "slug is required when the name has no ASCII letters or digits".into(),
        ));
    }
    check_slug(slug)
}

/// An id field (`what` names it): must look like a UUID, so garbage is INVALID_ARGUMENT, not
/// NOT_FOUND.
pub fn check_id<'a>(what: &str, id: &'a str) -> Result<&'a str, AuthError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AuthError::InvalidArgument(format!("{what} is required")));
    }
    uuid::Uuid::try_parse(id)
        .map_err(|_| AuthError::InvalidArgument(format!("{what} must be a UUID")))?;
    Ok(id)
}

/// A `user_id` field: must look like a UUID, so garbage is INVALID_ARGUMENT, not NOT_FOUND.
pub fn check_user_id(id: &str) -> Result<&str, AuthError> {
    check_id("user_id", id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_the_pattern() {
        for ok in ["admin", "events.subscriber", "a", "svc-1_x"] {
            assert!(check_role(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "1abc", "a b", &"a".repeat(65)] {
            assert!(check_role(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs_follow_the_pattern_and_derive_from_names() {
        for ok in ["acme", "acme-2", "0x", &"a".repeat(63)] {
            assert!(check_slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-acme", "Acme", "a b", "a_b", &"a".repeat(64)] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
        assert_eq!(
            slug_from_name("  ACME Corp, Ltd.").ok(),
            Some("acme-corp-ltd".into())
        );
        assert_eq!(
            slug_from_name("Ünïcorn Café").ok(),
            Some("unicorn-cafe".into())
        );
        assert_eq!(
            slug_from_name("Straße Œuvre").ok(),
            Some("strasse-oeuvre".into())
        );
        assert!(slug_from_name("日本").is_err());
    }

    #[test]
    fn metadata_is_capped_at_8_kib_of_json() {
        let mut ok = Metadata::new();
        ok.insert("k".into(), serde_json::Value::String("x".repeat(8000)));
        assert!(check_metadata(&ok).is_ok());
        let mut big = Metadata::new();
        big.insert("k".into(), serde_json::Value::String("x".repeat(8200)));
        assert!(check_metadata(&big).is_err());
    }
}
