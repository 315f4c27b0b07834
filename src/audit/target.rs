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
}

impl FileTarget {
    pub(crate) fn open(path: &Path) -> io::Result<FileTarget> {
        Ok(FileTarget {
            path: path.to_path_buf(),
            file: open_append(path)?,
        })
    }
}

impl LogTarget for FileTarget {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync also persists the size change, which is all a log needs.
        self.file.sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
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
