//! The email and password rules: what an address must look like, how long a password may
//! be (NIST 800-63B: length only, no composition rules).

/// Longest accepted password, in bytes; longer input is refused before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest accepted email, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Why an email or password is refused; the message is shown to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Email missing, too long, or not shaped like an address.
    #[error("{0}")]
    Email(&'static str),
    /// Password too short, too long or equal to the email.
    #[error("{0}")]
    Password(String),
}

/// Trims and lower-cases an email and checks that it looks like an address.
pub fn normalize_email(raw: &str) -> Result<String, PolicyError> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(PolicyError::Email("email is required"));
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(PolicyError::Email("email is longer than 254 bytes"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(PolicyError::Email("email must look like name@example.com"));
    };
    let valid_local = !local.is_empty() && local.len() <= 64 && !local.contains('@');
    let valid_domain = domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    let printable = email.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if !(valid_local && valid_domain && printable) {
        return Err(PolicyError::Email("email must look like name@example.com"));
    }
    Ok(email.to_lowercase())
}

/// Checks a password's size only (for presented passwords, before any hashing).
pub fn check_password_size(password: &str) -> Result<(), PolicyError> {
    if password.is_empty() {
        return Err(PolicyError::Password("password is required".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PolicyError::Password(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a new password against the rules (NIST 800-63B: length only, no composition rules,
/// not the email itself).
pub fn check_new_password(
    password: &str,
    email: &str,
    min_chars: usize,
) -> Result<(), PolicyError> {
    check_password_size(password)?;
    if password.chars().count() < min_chars {
        return Err(PolicyError::Password(format!(
            "password must be at least {min_chars} characters"
        )));
    }
    if password.trim().eq_ignore_ascii_case(email) {
        return Err(PolicyError::Password(
            "password must not be the email address".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").as_deref(),
            Ok("ann@example.com")
        );
        for bad in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@ex..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn password_rules_follow_nist() {
        assert!(check_new_password("short", "a@b.co", 8).is_err());
        assert!(check_new_password("a@b.co12", "a@b.co12", 8).is_err());
        assert!(check_new_password(&"x".repeat(1025), "a@b.co", 8).is_err());
        assert!(check_new_password("correct horse", "a@b.co", 8).is_ok());
        // Eight characters that take more than eight bytes still count as eight.
        assert!(check_new_password("ééééééé", "a@b.co", 8).is_err());
        assert!(check_new_password("éééééééé", "a@b.co", 8).is_ok());
    }
}
