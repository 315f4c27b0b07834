//! The file the writer appends to, behind a small trait so tests can inject
//! write and fsync failures without needing a broken disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What the writer thread needs from its log file.
pub(crate) trait LogTarget: Send {
    /// Appends `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The current file length.
    fn len(&mut self) -> io::Result<u64>;
    /// Cuts the file back to `len` bytes (drops a partial write).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Opens the file afresh after a failure (the old handle may be unusable).
    fn reopen(&mut self) -> io::Result<()>;
}

/// Opens `path` for appending, creating it readable by owner and group only
/// (records name people and what they looked at).
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    opts.open(path)
}

/// The real log file, opened with `O_APPEND`.
pub(crate) struct FileTarget {
    path: PathBuf,
    file: File,
    /// The length as of our last write, so that a group's start offset costs
    /// no stat call; `None` (ask the file) after anything that could leave
    /// it unknown: a failed write, a truncation, a reopen.
    known_len: Option<u64>,
}

impl FileTarget {
    pub(crate) fn open(path: &Path) -> io::Result<FileTarget> {
        Ok(FileTarget {
            path: path.to_path_buf(),
            file: open_append(path)?,
            known_len: None,
        })
    }
}

impl LogTarget for FileTarget {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let written = self.file.write_all(buf);
        self.known_len = match (&written, self.known_len) {
            (Ok(()), Some(len)) => Some(len + buf.len() as u64),
            _ => None,
        };
        written
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync also persists the size change, which is all a log needs.
        self.file.sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        if let Some(len) = self.known_len {
            return Ok(len);
        }
        let len = self.file.metadata()?.len();
        self.known_len = Some(len);
        Ok(len)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.known_len = None;
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.known_len = None;
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod fault {
    //! A `LogTarget` whose writes and fsyncs fail on demand.

    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// Switches shared between a test and its `FaultyTarget`.
    #[derive(Default)]
    pub(crate) struct Faults {
        /// `append` writes half the buffer, then fails (a torn write).
        pub fail_write: AtomicBool,
        /// `sync` fails.
        pub fail_sync: AtomicBool,
        /// `sync` takes this many milliseconds (a slow disk).
        pub sync_delay_ms: AtomicU64,
    }

    pub(crate) struct FaultyTarget {
        pub inner: FileTarget,
        pub faults: Arc<Faults>,
    }

    impl LogTarget for FaultyTarget {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            if self.faults.fail_write.load(Ordering::SeqCst) {
                self.inner.append(&buf[..buf.len() / 2])?;
                return Err(io::Error::other("injected write failure"));
            }
            self.inner.append(buf)
        }

        fn sync(&mut self) -> io::Result<()> {
            if self.faults.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            let delay = self.faults.sync_delay_ms.load(Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(delay));
            self.inner.sync()
        }

        fn len(&mut self) -> io::Result<u64> {
            self.inner.len()
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }

        fn reopen(&mut self) -> io::Result<()> {
            self.inner.reopen()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_length_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"earlier\n").unwrap();
        let mut t = FileTarget::open(&path).unwrap();
        assert_eq!(t.len().unwrap(), 8, "read from the file at first");
        t.append(b"0123456789").unwrap();
        assert_eq!(t.len().unwrap(), 18);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 18);
        t.truncate(8).unwrap();
        assert_eq!(t.len().unwrap(), 8, "asked again after a truncation");
        // Something else grew the file: a reopen forgets what we knew.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"xyz")
            .unwrap();
        t.reopen().unwrap();
        assert_eq!(t.len().unwrap(), 11);
    }
}
