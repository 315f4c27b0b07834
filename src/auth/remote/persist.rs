//! The last good key set of each issuer on disk (`jwt.cache_dir`), so that a
//! restart while the IdP is down still verifies tokens. One file per issuer,
//! named by a digest of the issuer string; written atomically (temp file in
//! the same directory, fsync, rename, fsync of the directory). The file's
//! modification time is when the set was fetched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Where `issuer`'s key set lives inside `dir`.
pub(crate) fn path_for(dir: &Path, issuer: &str) -> PathBuf {
    let digest = Sha256::digest(issuer.as_bytes());
    dir.join(format!("jwks-{}.json", hex::encode(&digest[..12])))
}

/// Reads a persisted key set and when it was saved. `None` when absent;
/// other read errors are logged and treated as absent.
pub(crate) fn load(path: &Path) -> Option<(Vec<u8>, SystemTime)> {
    let read = || -> std::io::Result<(Vec<u8>, SystemTime)> {
        let bytes = std::fs::read(path)?;
        let saved = std::fs::metadata(path)?.modified()?;
        Ok((bytes, saved))
    };
    match read() {
        Ok(found) => Some(found),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the persisted key set");
            None
        }
    }
}

/// Replaces the persisted key set atomically. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("jwks.json");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Make the rename itself durable; not all filesystems allow it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_atomically_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("keys");
        let a = path_for(&sub, "https://a");
        let b = path_for(&sub, "https://b");
        assert_ne!(a, b);
        assert!(load(&a).is_none());
        save(&a, b"{\"keys\":[1]}").unwrap();
        save(&a, b"{\"keys\":[2]}").unwrap();
        let (bytes, saved) = load(&a).unwrap();
        assert_eq!(bytes, b"{\"keys\":[2]}");
        assert!(saved <= SystemTime::now());
        let names: Vec<_> = std::fs::read_dir(&sub).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }
}
