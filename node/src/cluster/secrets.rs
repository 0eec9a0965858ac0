//! Secrets the node creates and checks: random tokens, their stored SHA-256 hashes, and
//! files that hold a secret (mode 0600, written atomically). Leaf module: no crate imports.

use anyhow::Context;

/// Lower-case hex SHA-256 of a secret (tokens are stored only as this hash).
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A fresh random secret with the given prefix (256 bits of entropy).
pub fn new_secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// Write `secret` to `path` (mode 0600, fsynced, renamed into place).
pub fn write_secret_file(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    write_file_atomically(path, secret, 0o600).with_context(|| format!("write {}", path.display()))
}

/// Write `text` and a newline to `path` with `mode`: to a temporary file beside it, fsynced,
/// then renamed into place, so a reader sees the old file or the whole new one.
pub fn write_file_atomically(path: &std::path::Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
