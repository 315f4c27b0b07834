//! Size-based rotation: naming of rotated files (`<path>.<last seq, 20
//! digits>`, so a shell glob lists them oldest first), the rename itself, and
//! finding the newest rotated file so a restart after a rotation continues
//! the chain from it.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// Digits of the seq suffix (u64::MAX has 20).
const SEQ_DIGITS: usize = 20;

/// `<path>.<last_seq zero-padded>`.
pub(crate) fn rotated_path(path: &Path, last_seq: u64) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{last_seq:0SEQ_DIGITS$}"));
    PathBuf::from(name)
}

/// Renames the live file to its rotated name and makes the rename durable.
/// The caller has fsync'd the file's content already.
pub(crate) fn rename_live(path: &Path, last_seq: u64) -> io::Result<PathBuf> {
    let to = rotated_path(path, last_seq);
    if to.exists() {
        // Never overwrite evidence (same seq twice would mean a forked chain).
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        ));
    }
    std::fs::rename(path, &to)?;
    sync_dir(path)?;
    Ok(to)
}

/// fsyncs the directory holding `path` (persists a rename or a new file).
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// The rotated files of `path`, oldest first.
pub(crate) fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        let is_rotated = fname.strip_prefix(&prefix).is_some_and(|suffix| {
            suffix.len() == SEQ_DIGITS && suffix.bytes().all(|b| b.is_ascii_digit())
        });
        if is_rotated {
            found.push(dir.join(fname));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_oldest_first_and_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        for seq in [120, 9, 1000] {
            std::fs::write(rotated_path(&live, seq), b"").unwrap();
        }
        std::fs::write(dir.path().join("audit.jsonl.torn"), b"").unwrap();
        std::fs::write(dir.path().join("audit.jsonl.1"), b"").unwrap();
        let found = rotated_files(&live).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.00000000000000000009",
                "audit.jsonl.00000000000000000120",
                "audit.jsonl.00000000000000001000"
            ]
        );
    }

    #[test]
    fn rename_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        std::fs::write(&live, b"a").unwrap();
        let to = rename_live(&live, 5).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"a");
        std::fs::write(&live, b"b").unwrap();
        assert!(rename_live(&live, 5).is_err());
        assert_eq!(std::fs::read(&live).unwrap(), b"b");
    }
}
