//! Secret files in the data dir (signing keys, the MFA encryption key): directories 0700,
//! files 0600, and first-time creation that is safe when replicas sharing a data dir start
//! together.

use std::{fs, io::Write as _, path::Path};

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a new file with mode 0600; fails if it exists.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Publishes `bytes` at `path` unless a file is already there: written to a staging file, then
/// hard-linked into place (atomic), so of several processes exactly one wins and every one then
/// reads the winner. `true` if this call published.
pub fn publish_once(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let staging = dir.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    write_private_file(&staging, bytes)?;
    let published = fs::hard_link(&staging, path);
    let _ = fs::remove_file(&staging);
    match published {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
