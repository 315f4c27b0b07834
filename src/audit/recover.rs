//! Opening an existing log: take the single-writer lock, find the chain head
//! in the last complete line (reading backwards in blocks, never the whole
//! file), and move a torn last line (a crash mid-write) aside to
//! `<path>.torn` so the chain continues from the last good record.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::chain::{self, ChainHead};
use super::target::open_append;
use super::writer::AuditError;

/// Block size for reading the file backwards.
const BLOCK: u64 = 64 * 1024;
/// A torn tail is at most one batch; anything larger is not our log and must
/// not be moved aside (that would empty a misconfigured file).
const MAX_TORN: u64 = 16 * 1024 * 1024;
/// How long `open` waits for another writer (e.g. a previous sink of this
/// process whose thread is still exiting) to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The recovered chain head, and the open file that holds the writer lock.
pub(crate) struct Recovered {
    pub head: ChainHead,
    pub lock: File,
    pub chain: FoundChain,
}

/// What the files at the path say about the chain to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FoundChain {
    /// The live file has records and its first line names the chain.
    Live(String),
    /// The live file has records but names no chain (written before chain ids).
    LiveUnnamed,
    /// The live file is empty; the chain goes on from this rotated file,
    /// whose first line named `chain` (None: a rotated file without an id).
    AfterRotation {
        chain: Option<String>,
        newest: PathBuf,
    },
    /// No records anywhere at the path.
    Nothing,
}

/// Creates the file (and its directory) if needed, locks it and recovers the
/// chain head, repairing a torn last line.
pub(crate) fn recover(path: &Path) -> Result<Recovered, AuditError> {
    let io_err =
        |what: &str, e: io::Error| AuditError::Io(format!("{what} {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory for", e))?;
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    let mut file = opts.open(path).map_err(|e| io_err("cannot open", e))?;
    lock_exclusive(&file, path)?;
    let mut head = find_head(&mut file, path)?;
    let mut chain = FoundChain::Nothing;
    if head.seq > 0 {
        let first = file
            .try_clone()
            .and_then(|mut f| f.seek(SeekFrom::Start(0)).map(|_| f))
            .and_then(super::header::first_line_chain)
            .map_err(|e| io_err("reading the first line of", e))?;
        chain = match first {
            super::header::FileChain::Named(id) => FoundChain::Live(id),
            _ => FoundChain::LiveUnnamed,
        };
    } else if let Some((h, newest)) = rotated_head(path)? {
        // An empty live file after a rotation: the chain goes on from the
        // newest rotated file.
        head = h;
        let named = match super::header::file_chain(&newest) {
            Ok(super::header::FileChain::Named(id)) => Some(id),
            Ok(_) => None,
            Err(e) => return Err(io_err("reading the first line of", e)),
        };
        chain = FoundChain::AfterRotation {
            chain: named,
            newest,
        };
    }
    Ok(Recovered {
        head,
        lock: file,
        chain,
    })
}

/// Opens (creating) and locks the live file anew after a rotation.
pub(crate) fn lock_path(path: &Path) -> Result<File, AuditError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    let file = opts
        .open(path)
        .map_err(|e| AuditError::Io(format!("cannot open {}: {e}", path.display())))?;
    lock_exclusive(&file, path)?;
    Ok(file)
}

/// The head of the newest rotated file of `path`, and that file, if there is one.
fn rotated_head(path: &Path) -> Result<Option<(ChainHead, PathBuf)>, AuditError> {
    let files = super::rotate::rotated_files(path)
        .map_err(|e| AuditError::Io(format!("listing rotated files of {}: {e}", path.display())))?;
    let Some(newest) = files.last() else {
        return Ok(None);
    };
    let io_err = |e: io::Error| AuditError::Io(format!("reading {}: {e}", newest.display()));
    let mut file = File::open(newest).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let end = rfind_newline(&mut file, len)
        .map_err(io_err)?
        .map_or(0, |p| p + 1);
    match last_record(&mut file, end).map_err(io_err)? {
        Some(Ok(h)) => {
            tracing::info!(file = %newest.display(), seq = h.seq, "audit log: continuing the chain from the newest rotated file");
            Ok(Some((h, newest.clone())))
        }
        None => Ok(None),
        Some(Err(e)) => Err(AuditError::Corrupt(format!(
            "{}: last line is not an audit record ({e}); run `purposegate audit verify`",
            newest.display()
        ))),
    }
}

/// Finds the chain head; a torn tail is moved aside first.
fn find_head(file: &mut File, path: &Path) -> Result<ChainHead, AuditError> {
    let io_err = |e: io::Error| AuditError::Io(format!("reading {}: {e}", path.display()));
    let len = file.metadata().map_err(io_err)?.len();
    // Everything after the last newline is an incomplete write.
    let mut good_end = rfind_newline(file, len)
        .map_err(io_err)?
        .map_or(0, |p| p + 1);
    let mut head = last_record(file, good_end).map_err(io_err)?;
    if let Some(Err(e)) = &head {
        // A newline-terminated but unparseable last line is torn as well.
        tracing::warn!(path = %path.display(), error = %e, "audit log: last line is unreadable");
        good_end = rfind_newline(file, good_end.saturating_sub(1))
            .map_err(io_err)?
            .map_or(0, |p| p + 1);
        head = last_record(file, good_end).map_err(io_err)?;
    }
    let head = match head {
        None => ChainHead::genesis(),
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            return Err(AuditError::Corrupt(format!(
            "{}: the last two lines are not audit records ({e}); run `purposegate audit verify`",
            path.display()
        )))
        }
    };
    if good_end < len {
        move_torn(file, path, good_end, len)?;
    }
    Ok(head)
}

/// Parses the complete line that ends (with its `\n`) at `end`; `None` when
/// `end` is 0 (empty log).
fn last_record(
    file: &mut File,
    end: u64,
) -> io::Result<Option<Result<ChainHead, chain::ChainError>>> {
    let Some(nl) = end.checked_sub(1) else {
        return Ok(None);
    };
    let start = rfind_newline(file, nl)?.map_or(0, |p| p + 1);
    if nl - start > MAX_TORN {
        return Ok(Some(Err(chain::ChainError::Json("line too long".into()))));
    }
    let line = read_range(file, start, nl)?;
    Ok(Some(chain::parse_line(&line).map(|p| {
        if !p.hash_ok() {
            // Tampering, not a crash: keep it in place so `verify` reports it.
            tracing::warn!(
                seq = p.seq,
                "audit log: last record's hash does not match its content"
            );
        }
        ChainHead {
            seq: p.seq,
            hash: p.hash,
        }
    })))
}

/// Appends bytes `[from, len)` to `<path>.torn`, makes that durable, then cuts
/// the log back to `from`.
fn move_torn(file: &mut File, path: &Path, from: u64, len: u64) -> Result<(), AuditError> {
    let torn_path = torn_path(path);
    let io_err = |e: io::Error| {
        AuditError::Io(format!(
            "moving torn tail of {} to {}: {e}",
            path.display(),
            torn_path.display()
        ))
    };
    if len - from > MAX_TORN {
        return Err(AuditError::Corrupt(format!(
            "{}: {} bytes after the last complete record; refusing to move them aside",
            path.display(),
            len - from
        )));
    }
    let mut fragment = read_range(file, from, len).map_err(io_err)?;
    if fragment.last() != Some(&b'\n') {
        fragment.push(b'\n');
    }
    let mut torn = open_append(&torn_path).map_err(io_err)?;
    torn.write_all(&fragment).map_err(io_err)?;
    torn.sync_all().map_err(io_err)?;
    file.set_len(from).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    tracing::warn!(
        path = %path.display(),
        torn = %torn_path.display(),
        bytes = len - from,
        "audit log had a torn last line (interrupted write); moved it aside"
    );
    Ok(())
}

/// `<path>.torn`.
pub(crate) fn torn_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".torn");
    PathBuf::from(name)
}

/// Position of the last `\n` before `before`, scanning backwards in blocks.
fn rfind_newline(file: &mut File, before: u64) -> io::Result<Option<u64>> {
    let mut pos = before;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let block = read_range(file, start, pos)?;
        if let Some(i) = block.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        pos = start;
    }
    Ok(None)
}

/// Reads bytes `[start, end)`.
fn read_range(file: &mut File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(end.saturating_sub(start)).map_err(io::Error::other)?;
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Takes an exclusive advisory lock so two processes never fork one chain.
#[cfg(unix)]
fn lock_exclusive(file: &File, path: &Path) -> Result<(), AuditError> {
    use std::os::unix::io::AsRawFd;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps
        // open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock || Instant::now() >= deadline {
            return Err(AuditError::Io(format!(
                "cannot lock {} (is another purposegate writing it?): {err}",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File, _path: &Path) -> Result<(), AuditError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::encode;
    use crate::audit::record::AuditEvent;

    fn write_log(path: &Path, n: u64) -> (Vec<u8>, ChainHead) {
        let mut head = ChainHead::genesis();
        let mut bytes = Vec::new();
        for i in 0..n {
            let ev = AuditEvent {
                request_id: format!("r{i}"),
                ..AuditEvent::default()
            };
            let enc = encode(&head, "2026-03-01T00:00:00.000Z", &ev).unwrap();
            bytes.extend_from_slice(&enc.line);
            head = enc.head;
        }
        std::fs::write(path, &bytes).unwrap();
        (bytes, head)
    }

    #[test]
    fn empty_and_missing_files_start_at_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/audit.jsonl");
        let r = recover(&path).unwrap();
        assert_eq!(r.head, ChainHead::genesis());
        assert!(path.exists());
    }

    #[test]
    fn head_is_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let (_, want) = write_log(&path, 5);
        assert_eq!(recover(&path).unwrap().head, want);
    }

    #[test]
    fn head_found_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let (_, want) = write_log(&path, 400); // > 64 KiB
        assert!(std::fs::metadata(&path).unwrap().len() > BLOCK);
        assert_eq!(recover(&path).unwrap().head, want);
    }

    #[test]
    fn torn_tail_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let (good, want) = write_log(&path, 3);
        let mut bytes = good.clone();
        bytes.extend_from_slice(b"{\"ts\":\"2026-03-01T00:00");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(recover(&path).unwrap().head, want);
        assert_eq!(std::fs::read(&path).unwrap(), good);
        let torn = std::fs::read_to_string(torn_path(&path)).unwrap();
        assert_eq!(torn, "{\"ts\":\"2026-03-01T00:00\n");
    }

    #[test]
    fn unparseable_terminated_last_line_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let (good, want) = write_log(&path, 2);
        let mut bytes = good.clone();
        bytes.extend_from_slice(b"garbage\n");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(recover(&path).unwrap().head, want);
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!(std::fs::read(torn_path(&path)).unwrap(), b"garbage\n");
    }

    #[test]
    fn foreign_file_is_refused_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"not\nan\naudit log\n").unwrap();
        assert!(matches!(recover(&path), Err(AuditError::Corrupt(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"not\nan\naudit log\n");
    }

    #[test]
    fn second_writer_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let _first = recover(&path).unwrap();
        let err = recover(&path).err().unwrap();
        assert!(err.to_string().contains("cannot lock"), "{err}");
    }
}
