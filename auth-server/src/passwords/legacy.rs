//! Password hashes made by other systems, verified so their users can log in after an import
//! and be re-hashed to argon2id at that login: bcrypt (`$2a$`, `$2b$`, `$2y$`), PBKDF2 in PHC
//! form (`$pbkdf2-sha256$`, `$pbkdf2-sha512$`) and in Django's form
//! (`pbkdf2_sha256$iterations$salt$hash`, likewise `pbkdf2_sha512`), and scrypt in PHC form
//! (`$scrypt$`). Verification uses the RustCrypto `pbkdf2`/`scrypt` crates and the `bcrypt`
//! crate; only Django's string is parsed here. Each format's cost is capped, so a corrupt or
//! hostile row cannot make a hashing thread work for minutes or allocate without bound.

use argon2::password_hash::{self, PasswordHash as PhcHash, PasswordVerifier as _};
use subtle::ConstantTimeEq as _;

use super::HashError;

/// Highest bcrypt cost accepted (2^16 rounds, about 5 s on one core).
const MAX_BCRYPT_COST: u32 = 16;
/// Most PBKDF2 iterations accepted (10x the OWASP 2023 figure for SHA-256).
const MAX_PBKDF2_ROUNDS: u32 = 6_000_000;
/// Largest scrypt memory accepted: 128 * r * 2^ln bytes, at most 256 MiB.
const MAX_SCRYPT_BYTES: u64 = 256 * 1024 * 1024;

/// The formats a stored hash may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    /// argon2id, argon2i or argon2d in PHC form.
    Argon2,
    /// bcrypt in modular crypt form.
    Bcrypt,
    /// PBKDF2 in PHC form.
    Pbkdf2Phc,
    /// PBKDF2 in Django's `algorithm$iterations$salt$hash` form.
    Pbkdf2Django,
    /// scrypt in PHC form.
    Scrypt,
}

impl HashFormat {
    /// The format of `hash`, or `None` if it is none this service verifies.
    pub fn of(hash: &str) -> Option<Self> {
        let format = if hash.starts_with("$argon2id$")
            || hash.starts_with("$argon2i$")
            || hash.starts_with("$argon2d$")
        {
            Self::Argon2
        } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
            Self::Bcrypt
        } else if hash.starts_with("$pbkdf2-sha256$") || hash.starts_with("$pbkdf2-sha512$") {
            Self::Pbkdf2Phc
        } else if hash.starts_with("pbkdf2_sha256$") || hash.starts_with("pbkdf2_sha512$") {
            Self::Pbkdf2Django
        } else if hash.starts_with("$scrypt$") {
            Self::Scrypt
        } else {
            return None;
        };
        Some(format)
    }
}

fn malformed(what: &str) -> HashError {
    HashError::Argon2(format!("stored hash: {what}"))
}

/// Whether `hash` is one a login can verify, checked without hashing anything: a known format,
/// well-formed, and within its cost cap. `Err` says what is wrong, for an import's report.
pub fn check(hash: &str) -> Result<HashFormat, String> {
    let format = HashFormat::of(hash).ok_or_else(|| "unknown hash format".to_owned())?;
    let checked = match format {
        HashFormat::Argon2 => super::argon2_params(hash).map(drop),
        HashFormat::Bcrypt => bcrypt_parts(hash).map(drop),
        HashFormat::Pbkdf2Phc => pbkdf2_phc(hash).map(drop),
        HashFormat::Pbkdf2Django => django_parts(hash).map(drop),
        HashFormat::Scrypt => scrypt_phc(hash).map(drop),
    };
    checked
        .map(|()| format)
        .map_err(|e| e.to_string().replace("stored hash: ", "malformed hash: "))
}

/// Verifies `password` against a non-argon2 `hash` (see the module docs); `Err` for a hash
/// that is malformed, of an unknown format, or over its cost cap.
pub fn verify(password: &str, hash: &str) -> Result<bool, HashError> {
    match HashFormat::of(hash) {
        Some(HashFormat::Bcrypt) => {
            bcrypt_parts(hash)?;
            // bcrypt reads at most 72 bytes of the password, as the system that made the hash did.
            bcrypt::verify(password, hash).map_err(|_| malformed("bcrypt"))
        }
        Some(HashFormat::Pbkdf2Phc) => {
            checked(pbkdf2::Pbkdf2.verify_password(password.as_bytes(), &pbkdf2_phc(hash)?))
        }
        Some(HashFormat::Pbkdf2Django) => verify_django(password, &django_parts(hash)?),
        Some(HashFormat::Scrypt) => {
            checked(scrypt::Scrypt.verify_password(password.as_bytes(), &scrypt_phc(hash)?))
        }
        Some(HashFormat::Argon2) | None => Err(malformed("unknown format")),
    }
}

fn bcrypt_parts(hash: &str) -> Result<bcrypt::HashParts, HashError> {
    let parts: bcrypt::HashParts = hash.parse().map_err(|_| malformed("bcrypt"))?;
    if parts.get_cost() > MAX_BCRYPT_COST {
        return Err(malformed("bcrypt cost over the cap"));
    }
    let body = hash.get(7..).unwrap_or_default();
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err(malformed("bcrypt characters"));
    }
    Ok(parts)
}

fn pbkdf2_phc(hash: &str) -> Result<PhcHash<'_>, HashError> {
    let phc = PhcHash::new(hash).map_err(|_| malformed("pbkdf2"))?;
    pbkdf2::Algorithm::try_from(phc.algorithm).map_err(|_| malformed("pbkdf2 algorithm"))?;
    let rounds = phc
        .params
        .get_decimal("i")
        .ok_or_else(|| malformed("pbkdf2 rounds"))?;
    if rounds == 0 || rounds > MAX_PBKDF2_ROUNDS {
        return Err(malformed("pbkdf2 rounds out of range"));
    }
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err(malformed("pbkdf2 salt or output missing"));
    }
    Ok(phc)
}

fn scrypt_phc(hash: &str) -> Result<PhcHash<'_>, HashError> {
    let phc = PhcHash::new(hash).map_err(|_| malformed("scrypt"))?;
    let params = scrypt::Params::try_from(&phc).map_err(|_| malformed("scrypt params"))?;
    let bytes = 128u64.saturating_mul(u64::from(params.r())).saturating_mul(
        1u64.checked_shl(u32::from(params.log_n()))
            .unwrap_or(u64::MAX),
    );
    if bytes > MAX_SCRYPT_BYTES {
        return Err(malformed("scrypt memory over the cap"));
    }
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err(malformed("scrypt salt or output missing"));
    }
    Ok(phc)
}

/// A wrong password is `Ok(false)`; anything else the verifier reports is a malformed hash.
fn checked(result: Result<(), password_hash::Error>) -> Result<bool, HashError> {
    match result {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(_) => Err(malformed("cannot verify")),
    }
}

/// Django's `pbkdf2_sha256$<iterations>$<salt as text>$<base64 of the derived key>`, parsed.
struct Django<'a> {
    sha512: bool,
    rounds: u32,
    salt: &'a str,
    expected: Vec<u8>,
}

fn django_parts(hash: &str) -> Result<Django<'_>, HashError> {
    use base64::Engine as _;
    let mut parts = hash.split('$');
    let (Some(algorithm), Some(rounds), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed("django pbkdf2 fields"));
    };
    let sha512 = match algorithm {
        "pbkdf2_sha256" => false,
        "pbkdf2_sha512" => true,
        _ => return Err(malformed("django pbkdf2 algorithm")),
    };
    let rounds: u32 = rounds
        .parse()
        .map_err(|_| malformed("django pbkdf2 rounds"))?;
    if rounds == 0 || rounds > MAX_PBKDF2_ROUNDS {
        return Err(malformed("django pbkdf2 rounds out of range"));
    }
    let expected = base64::engine::general_purpose::STANDARD
        .decode(expected)
        .map_err(|_| malformed("django pbkdf2 hash"))?;
    if expected.is_empty() || expected.len() > 64 {
        return Err(malformed("django pbkdf2 hash length"));
    }
    Ok(Django {
        sha512,
        rounds,
        salt,
        expected,
    })
}

fn verify_django(password: &str, hash: &Django<'_>) -> Result<bool, HashError> {
    let mut computed = vec![0u8; hash.expected.len()];
    let (password, salt) = (password.as_bytes(), hash.salt.as_bytes());
    if hash.sha512 {
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, hash.rounds, &mut computed);
    } else {
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, hash.rounds, &mut computed);
    }
    Ok(computed.ct_eq(&hash.expected).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "correct horse";

    fn salt() -> password_hash::SaltString {
        password_hash::SaltString::encode_b64(b"sixteen byte salt").expect("salt")
    }

    #[test]
    fn other_systems_hashes_verify_and_wrong_passwords_do_not() {
        // $2a$ made by Python's pyca/bcrypt (gensalt(5, prefix=b"2a")); $2b$ and $2y$ by the
        // bcrypt crate.
        let bcrypt = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        let variants = [
            "$2a$05$CWJ0oQymAkj.EslqpWPQd.Nc0MAUZ8e8AiHoiRO09Klc3C3al1LD6".to_owned(),
            bcrypt.clone(),
            bcrypt.replacen("$2b$", "$2y$", 1),
        ];
        for hash in &variants {
            assert!(verify(PASSWORD, hash).expect(hash), "{hash}");
            assert!(!verify("correct horsf", hash).expect(hash), "{hash}");
        }
        // Django's form, password "correct horse", salt "seasalt", 1000 rounds, made with
        // Python's hashlib.pbkdf2_hmac as Django does.
        let django = "pbkdf2_sha256$1000$seasalt$mQnueSakb748zqBAC1tmWVZsZbi2zPGZarEzTGdfmso=";
        assert!(verify(PASSWORD, django).expect("django"));
        assert!(!verify("wrong horse", django).expect("django"));
        use password_hash::PasswordHasher as _;
        let params = pbkdf2::Params {
            rounds: 1000,
            output_length: 32,
        };
        let pbkdf2 = pbkdf2::Pbkdf2
            .hash_password_customized(PASSWORD.as_bytes(), None, None, params, &salt())
            .expect("pbkdf2")
            .to_string();
        assert!(pbkdf2.starts_with("$pbkdf2-sha256$"), "{pbkdf2}");
        assert!(verify(PASSWORD, &pbkdf2).expect("pbkdf2"));
        assert!(!verify("wrong horse", &pbkdf2).expect("pbkdf2"));
        let params = scrypt::Params::new(4, 8, 1, 32).expect("params");
        let scrypt = scrypt::Scrypt
            .hash_password_customized(PASSWORD.as_bytes(), None, None, params, &salt())
            .expect("scrypt")
            .to_string();
        assert!(verify(PASSWORD, &scrypt).expect("scrypt"));
        assert!(!verify("wrong horse", &scrypt).expect("scrypt"));
    }

    #[test]
    fn unknown_malformed_and_over_the_cap_hashes_are_errors() {
        for hash in [
            "",
            "md5$abc",
            "$1$salt$hash",
            "$2b$31$0123456789012345678901u0123456789012345678901234567",
            "pbkdf2_sha256$99999999$salt$AAAA",
            "pbkdf2_sha256$1000$salt$not base64!",
            "pbkdf2_sha1$1000$salt$AAAA",
            "$scrypt$ln=30,r=8,p=1$c2FsdA$AAAA",
            "$pbkdf2-sha256$i=99999999,l=32$c2FsdA$AAAA",
        ] {
            assert!(verify(PASSWORD, hash).is_err(), "{hash}");
        }
        assert_eq!(
            HashFormat::of("$argon2id$v=19$m=1"),
            Some(HashFormat::Argon2)
        );
        assert_eq!(HashFormat::of("$2y$10$x"), Some(HashFormat::Bcrypt));
        assert_eq!(HashFormat::of("sha1$x"), None);
    }
}
