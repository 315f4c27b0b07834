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
    /// Whether the open file is still the file at the path, whole.
    fn placement(&mut self) -> io::Result<Placement>;
    /// Puts the log back at its path after `placement` found it elsewhere:
    /// the content still held through the open descriptor is copied into a
    /// new file at the path (made durable), which becomes the live file.
    fn relocate(&mut self, placement: Placement) -> io::Result<Relocated>;
    /// Keeps at least `bytes` of disk space allocated past the end of the
    /// file (without changing its size), so that the records of requests
    /// already let through cannot fail for want of space. `Ok(false)`: the
    /// filesystem cannot preallocate; free space is then checked instead.
    fn reserve(&mut self, bytes: u64) -> io::Result<bool>;
    /// Frees the space reserved past the end (before the file is rotated).
    fn release_reserve(&mut self) -> io::Result<()>;
}

/// Where the open log file is, compared with its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The path names the open file, as long as the writer left it.
    InPlace,
    /// Nothing is at the path; `unlinked`: the open file has no name left.
    Gone { unlinked: bool },
    /// Another file is at the path.
    Replaced { empty: bool, unlinked: bool },
    /// The open file is shorter than the writer left it.
    Truncated { len: u64, expected: u64 },
}

/// What `relocate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relocated {
    /// The open file is now one of the rotated files (an operator rotated
    /// it by hand): nothing was copied, the new file just continues after it.
    pub rotated_to: Option<PathBuf>,
    pub cause: super::header::ReopenCause,
    pub copied_bytes: u64,
    pub lost_bytes: u64,
    pub displaced_to: Option<PathBuf>,
}

/// Opens `path` for appending, creating it readable by owner and group only
/// (records name people and what they looked at).
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    // Readable too: after an unlink the descriptor is the only way to the
    // records, and `relocate` copies them out through it.
    opts.read(true).create(true).append(true);
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
    /// The length the writer last left the file at (for `placement`).
    expected_len: u64,
    /// How far past the start disk space is allocated (`reserve`).
    reserved_to: u64,
}

impl FileTarget {
    pub(crate) fn open(path: &Path) -> io::Result<FileTarget> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(FileTarget {
            path: path.to_path_buf(),
            file,
            known_len: Some(len),
            expected_len: len,
            reserved_to: 0,
        })
    }

    /// Copies everything readable through the open descriptor into `to`.
    fn copy_into(&self, to: &mut File) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = self.file.read_at(&mut buf, off)?;
            if n == 0 {
                return Ok(off);
            }
            to.write_all(&buf[..n])?;
            off += n as u64;
        }
    }

    /// The rotated file (`<path>.<seq>`) the open file was renamed to, if
    /// that is where it went.
    fn renamed_to_rotated(&self) -> io::Result<Option<PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        for f in super::rotate::rotated_files(&self.path)? {
            if let Ok(m) = std::fs::metadata(&f) {
                if m.dev() == open.dev() && m.ino() == open.ino() {
                    return Ok(Some(f));
                }
            }
        }
        Ok(None)
    }

    /// Switches to `file`, now the live file at the path.
    fn adopt(&mut self, file: File) -> io::Result<()> {
        let len = file.metadata()?.len();
        self.file = file;
        self.known_len = Some(len);
        self.expected_len = len;
        self.reserved_to = 0;
        Ok(())
    }
}

impl LogTarget for FileTarget {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let written = self.file.write_all(buf);
        self.known_len = match (&written, self.known_len) {
            (Ok(()), Some(len)) => Some(len + buf.len() as u64),
            _ => None,
        };
        if let Some(len) = self.known_len {
            self.expected_len = len;
        }
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
        self.expected_len = len;
        Ok(len)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.known_len = None;
        self.file.set_len(len)?;
        self.expected_len = len;
        self.reserved_to = 0;
        self.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.known_len = None;
        self.reserved_to = 0;
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn placement(&mut self) -> io::Result<Placement> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        let unlinked = open.nlink() == 0;
        let at_path = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Placement::Gone { unlinked })
            }
            Err(e) => return Err(e),
        };
        if at_path.dev() != open.dev() || at_path.ino() != open.ino() {
            return Ok(Placement::Replaced {
                empty: at_path.len() == 0,
                unlinked,
            });
        }
        if open.len() < self.expected_len {
            return Ok(Placement::Truncated {
                len: open.len(),
                expected: self.expected_len,
            });
        }
        Ok(Placement::InPlace)
    }

    fn relocate(&mut self, placement: Placement) -> io::Result<Relocated> {
        use super::header::ReopenCause;
        match placement {
            Placement::InPlace => Ok(Relocated {
                rotated_to: None,
                cause: ReopenCause::Renamed,
                copied_bytes: 0,
                lost_bytes: 0,
                displaced_to: None,
            }),
            Placement::Truncated { len, expected } => {
                // Whatever is left may end mid-line: cut back to the last
                // complete record so the next one starts on a line of its own.
                let keep = last_line_end(&self.file, len)?;
                self.truncate(keep)?;
                Ok(Relocated {
                    rotated_to: None,
                    cause: ReopenCause::Truncated,
                    copied_bytes: 0,
                    lost_bytes: expected - keep,
                    displaced_to: None,
                })
            }
            Placement::Gone { unlinked } | Placement::Replaced { unlinked, .. } => {
                if let Some(rotated) = self.renamed_to_rotated()? {
                    if let Placement::Replaced { empty: false, .. } = placement {
                        let aside = displaced_path(&self.path);
                        std::fs::rename(&self.path, &aside)?;
                    }
                    let fresh = open_append(&self.path)?;
                    super::rotate::sync_dir(&self.path)?;
                    self.adopt(fresh)?;
                    return Ok(Relocated {
                        rotated_to: Some(rotated),
                        cause: ReopenCause::Renamed,
                        copied_bytes: 0,
                        lost_bytes: 0,
                        displaced_to: None,
                    });
                }
                let mut cause = if unlinked {
                    ReopenCause::Unlinked
                } else {
                    ReopenCause::Renamed
                };
                let mut displaced_to = None;
                if let Placement::Replaced { empty: false, .. } = placement {
                    // Never write into, or delete, a file we did not make.
                    let aside = displaced_path(&self.path);
                    std::fs::rename(&self.path, &aside)?;
                    displaced_to = Some(aside);
                    cause = ReopenCause::Replaced;
                }
                let mut fresh = open_append(&self.path)?;
                if fresh.metadata()?.len() != 0 {
                    return Err(io::Error::other("the new live file is not empty"));
                }
                let copied = self.copy_into(&mut fresh)?;
                fresh.sync_all()?;
                super::rotate::sync_dir(&self.path)?;
                self.adopt(fresh)?;
                Ok(Relocated {
                    rotated_to: None,
                    cause,
                    copied_bytes: copied,
                    lost_bytes: 0,
                    displaced_to,
                })
            }
        }
    }

    fn reserve(&mut self, bytes: u64) -> io::Result<bool> {
        let len = self.len()?;
        // Top up when less than half the reserve is left: one fallocate per
        // bytes/2 written, not one per group.
        if self.reserved_to >= len + bytes / 2 {
            return Ok(true);
        }
        match fallocate_keep_size(&self.file, len, bytes) {
            Ok(()) => {
                self.reserved_to = len + bytes;
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn release_reserve(&mut self) -> io::Result<()> {
        if self.reserved_to == 0 {
            return Ok(());
        }
        // Truncating to the current size frees the blocks past the end.
        let len = self.len()?;
        self.file.set_len(len)?;
        self.reserved_to = 0;
        Ok(())
    }
}

/// `<path>.displaced.<unix ms>`: where a foreign file found at the live
/// file's path is kept.
fn displaced_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(path.as_os_str());
    name.push(format!(".displaced.{}", crate::time::now_millis()));
    PathBuf::from(name)
}

/// The length of `file`'s first `len` bytes up to and including the last `\n`.
fn last_line_end(file: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Allocates `[offset, offset + len)` without changing the file size.
fn fallocate_keep_size(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::other("reserve out of range"));
        };
        // SAFETY: plain syscall on a descriptor `file` keeps open.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
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
        /// `reserve` fails as on a full disk.
        pub fail_reserve: AtomicBool,
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

        fn placement(&mut self) -> io::Result<Placement> {
            self.inner.placement()
        }

        fn relocate(&mut self, placement: Placement) -> io::Result<Relocated> {
            self.inner.relocate(placement)
        }

        fn reserve(&mut self, bytes: u64) -> io::Result<bool> {
            if self.faults.fail_reserve.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.reserve(bytes)
        }

        fn release_reserve(&mut self) -> io::Result<()> {
            self.inner.release_reserve()
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
