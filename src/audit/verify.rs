//! `audit verify`: re-derives every record's hash from its text, and checks
//! that `prev_hash` links each record to the one before and that `seq` counts
//! up by one. The files given, in order, form one chain (rotated files
//! oldest first, then the live file). Every `checkpoint` record must cover the
//! chain head just before it, and with a public key its Ed25519 signature must
//! verify. Reads line by line, so a large log is never held in memory.
//!
//! The chain is checked from seq 1 when `from_genesis` is set. Otherwise the
//! first file may start later (the live file after a rotation): it is then
//! checked as a continuation, from its first record on, and the report says
//! so. The writer's own records (`chain_start`, `file_start`, `log_reopened`,
//! `resumed`) are explained in words in the report (`notes`), and a gap the
//! writer documented itself (a live file truncated under it) is reported as
//! lost records rather than as tampering, and the rest is still checked.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, ChainHead, CheckpointFields, ParsedLine, CHECKPOINT_EVENT, GENESIS_HASH};
use super::sign::PublicKey;

mod notes;
pub use notes::render;
use notes::{Header, Notice};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub records: u64,
    pub files: usize,
    /// Checkpoint records seen (and, with a key, whose signature verified).
    pub checkpoints: u64,
    /// Records after the last checkpoint (all of them when there is none).
    pub unsigned_tail: u64,
    /// seq of the first and last record checked (0 without records).
    pub first_seq: u64,
    pub last_seq: u64,
    /// The first file began mid-chain: the seq before its first record,
    /// which was taken on trust (`from_genesis` unset).
    pub continues_from: Option<u64>,
    /// The first file, and the `previous_file` its `file_start` names.
    pub first_file: Option<PathBuf>,
    pub previous_file: Option<String>,
    /// The writer's own records, explained (chain and file starts,
    /// recoveries, outages), in order.
    pub notes: Vec<Notice>,
}

/// How `verify` reads the files.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'k> {
    /// Check every checkpoint's signature with this key.
    pub key: Option<&'k PublicKey>,
    /// The first file must start the chain (seq 1); without it, a first
    /// file that starts later is checked as a continuation.
    pub from_genesis: bool,
}

/// Records the writer found missing and documented (`log_reopened` with
/// cause `truncated`): not hidden, but not a forgery of the rest either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub file: PathBuf,
    /// Line of the `log_reopened` record after the gap.
    pub line: u64,
    /// The missing seqs, `from..=to`.
    pub from: u64,
    pub to: u64,
    pub lost_bytes: u64,
}

/// How a broken `prev_hash` link is explained (from the `seq` numbers
/// around it: the forger may re-hash, but cannot both keep the link and
/// the numbering consistent with the original records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFault {
    /// seq jumps forward and the missing seq does not appear later.
    Deleted { expected: u64, found: u64 },
    /// seq jumps forward and the missing one appears later in the file.
    Reordered { expected: u64, later_line: u64 },
    /// seq repeats or goes back: an inserted (e.g. copied) record.
    Inserted { found: u64 },
    /// seq is right but the link is not: the previous record was replaced.
    Replaced,
}

impl std::fmt::Display for LinkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFault::Deleted { expected, found } if found - expected == 1 => {
                write!(
                    f,
                    "a record was deleted before this line (seq {expected} is missing)"
                )
            }
            LinkFault::Deleted { expected, found } => write!(
                f,
                "records were deleted before this line (seq {expected}..{} are missing)",
                found - 1
            ),
            LinkFault::Reordered {
                expected,
                later_line,
            } => write!(
                f,
                "records were reordered (seq {expected} belongs here but is at line {later_line})"
            ),
            LinkFault::Inserted { found } => write!(
                f,
                "a record was inserted (seq {found} repeats or goes back)"
            ),
            LinkFault::Replaced => write!(
                f,
                "prev_hash does not link to the previous record (a record was replaced or inserted)"
            ),
        }
    }
}

/// The first problem found; each names the file and its 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}:{line}: not an audit record: {msg}", file.display())]
    BadJson {
        file: PathBuf,
        line: u64,
        msg: String,
    },
    #[error("{}:{line}: hash mismatch: the record was modified", file.display())]
    HashMismatch { file: PathBuf, line: u64 },
    #[error("{}:{line}: broken chain: {fault}", file.display())]
    BrokenLink {
        file: PathBuf,
        line: u64,
        fault: LinkFault,
    },
    #[error(
        "{}:{line}: bad signature: checkpoint for seq {covers_seq} {why} (forged or re-signed without the key)",
        file.display()
    )]
    BadSignature {
        file: PathBuf,
        line: u64,
        covers_seq: u64,
        why: String,
    },
    #[error(
        "{}:{line}: the chain diverges from a signed checkpoint: it covers seq {covers_seq} but the records before it were rewritten",
        file.display()
    )]
    CheckpointMismatch {
        file: PathBuf,
        line: u64,
        covers_seq: u64,
    },
    #[error("{}:{line}: seq {found} where {expected} was expected", file.display())]
    SeqGap {
        file: PathBuf,
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "{}:{line}: truncated final line: a torn write from a crash, not tampering ({good} records before it verify; `serve` moves it aside at start)",
        file.display()
    )]
    TornLine { file: PathBuf, line: u64, good: u64 },
    #[error("{}: {msg}", file.display())]
    Io { file: PathBuf, msg: String },
    #[error(
        "{}:1: the file starts at seq {seq}: it continues a chain whose records 1..{} are in earlier (rotated) files{}; pass them first, oldest first (e.g. `purposegate audit verify {}`), or leave out --from-genesis to check this file as a continuation",
        file.display(), seq - 1, notes::named_previous(previous_file.as_deref()), notes::verify_all_hint(file)
    )]
    StartsMidChain {
        file: PathBuf,
        seq: u64,
        previous_file: Option<String>,
    },
    #[error(
        "{}:1: this file does not continue the one before it: it starts at seq {starts_at}, but {} ended at seq {ended_at}{}; give the files oldest first (rotated files in name order, the live file last){}",
        file.display(), previous.display(), notes::order_hint(*starts_at, *ended_at), notes::named_previous_order(previous_file.as_deref())
    )]
    FileOrder {
        file: PathBuf,
        previous: PathBuf,
        starts_at: u64,
        ended_at: u64,
        previous_file: Option<String>,
    },
    #[error("{}", notes::lost_message(lost, checked))]
    RecordsLost {
        lost: Vec<Lost>,
        /// What the rest of the files verified to.
        checked: Box<VerifyReport>,
    },
}

/// Running state across the files of one chain.
struct State<'k> {
    head: ChainHead,
    key: Option<&'k PublicKey>,
    from_genesis: bool,
    checkpoints: u64,
    /// seq of the last checkpoint record (0 = none yet).
    last_checkpoint: u64,
    /// Records checked so far.
    records: u64,
    first_seq: u64,
    continues_from: Option<u64>,
    previous_file: Option<String>,
    notes: Vec<Notice>,
    lost: Vec<Lost>,
}

/// Verifies `paths` as one chain starting at the genesis record, checking
/// checkpoint links but not signatures.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    verify_files_with(paths, None)
}

/// Verifies `paths` as one chain from the genesis record; with `key`,
/// every checkpoint's signature.
pub fn verify_files_with(
    paths: &[PathBuf],
    key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError> {
    verify(
        paths,
        VerifyOptions {
            key,
            from_genesis: true,
        },
    )
}

/// Verifies `paths` as one chain (see `VerifyOptions`).
pub fn verify(paths: &[PathBuf], opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let mut st = State {
        head: ChainHead::genesis(),
        key: opts.key,
        from_genesis: opts.from_genesis,
        checkpoints: 0,
        last_checkpoint: 0,
        records: 0,
        first_seq: 0,
        continues_from: None,
        previous_file: None,
        notes: Vec::new(),
        lost: Vec::new(),
    };
    let mut previous: Option<&PathBuf> = None;
    for path in paths {
        verify_file(path, previous.map(PathBuf::as_path), &mut st)?;
        previous = Some(path);
    }
    let signed_up_to = st
        .last_checkpoint
        .max(st.continues_from.unwrap_or(0))
        .max(st.first_seq.saturating_sub(1));
    let report = VerifyReport {
        records: st.records,
        files: paths.len(),
        checkpoints: st.checkpoints,
        unsigned_tail: st.head.seq.saturating_sub(signed_up_to),
        first_seq: st.first_seq,
        last_seq: st.head.seq,
        continues_from: st.continues_from,
        first_file: paths.first().cloned(),
        previous_file: st.previous_file,
        notes: st.notes,
    };
    if st.lost.is_empty() {
        Ok(report)
    } else {
        Err(VerifyError::RecordsLost {
            lost: st.lost,
            checked: Box::new(report),
        })
    }
}

/// Verifies one file, continuing the chain from `st`; `previous` is the
/// file given before it.
fn verify_file(path: &Path, previous: Option<&Path>, st: &mut State) -> Result<(), VerifyError> {
    let io_err = |e: std::io::Error| VerifyError::Io {
        file: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let Some(line) = buf.strip_suffix(b"\n") else {
            // Only the last line can lack its newline: the writer's
            // `write_all` was cut short.
            return Err(VerifyError::TornLine {
                file: path.to_path_buf(),
                line: line_no,
                good: st.records,
            });
        };
        let at = Place {
            file: path,
            line: line_no,
            previous: previous.filter(|_| line_no == 1 && st.records > 0),
        };
        if let Err(fault) = check_line(line, &at, st) {
            return Err(match fault {
                LineFault::Unlinked { expected, found }
                    if at.previous.is_some() && found != expected =>
                {
                    file_order(line, &at, st)
                }
                fault => explain(fault, &mut reader, line_no).at(path, line_no),
            });
        }
    }
}

/// Where a line is: its file and line, and (for the first line of a file
/// after the first with records) the file before it.
struct Place<'a> {
    file: &'a Path,
    line: u64,
    previous: Option<&'a Path>,
}

/// A file that does not link to the one before it: given out of order, or
/// a file in between is missing.
fn file_order(line: &[u8], at: &Place, st: &State) -> VerifyError {
    let parsed = chain::parse_line(line).ok();
    let header = parsed
        .as_ref()
        .and_then(|p| Header::read(p.event.as_deref(), line));
    VerifyError::FileOrder {
        file: at.file.to_path_buf(),
        previous: at.previous.unwrap_or(at.file).to_path_buf(),
        starts_at: parsed.map_or(0, |p| p.seq),
        ended_at: st.head.seq,
        previous_file: header.and_then(|h| h.previous_file),
    }
}

/// Turns a raw broken link into deleted / reordered / inserted by looking at
/// the seqs of the rest of the file.
fn explain(fault: LineFault, rest: &mut impl BufRead, line_no: u64) -> LineFault {
    let LineFault::Unlinked { expected, found } = fault else {
        return fault;
    };
    let link = if found < expected {
        LinkFault::Inserted { found }
    } else if found == expected {
        LinkFault::Replaced
    } else {
        match find_seq(rest, expected) {
            Some(offset) => LinkFault::Reordered {
                expected,
                later_line: line_no + offset,
            },
            None => LinkFault::Deleted { expected, found },
        }
    };
    LineFault::Link(link)
}

/// The 1-based offset of the line after the current one that has `seq`.
fn find_seq(rest: &mut impl BufRead, seq: u64) -> Option<u64> {
    let mut buf = Vec::new();
    let mut offset = 0;
    loop {
        buf.clear();
        if rest.read_until(b'\n', &mut buf).ok()? == 0 {
            return None;
        }
        offset += 1;
        let trimmed = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if chain::parse_line(trimmed).is_ok_and(|p| p.seq == seq) {
            return Some(offset);
        }
    }
}

/// A problem with one line, before it is placed in a file.
enum LineFault {
    Bad(String),
    Modified,
    Unlinked {
        expected: u64,
        found: u64,
    },
    Link(LinkFault),
    Seq {
        expected: u64,
        found: u64,
    },
    Signature {
        covers_seq: u64,
        why: String,
    },
    Diverged {
        covers_seq: u64,
    },
    MidChain {
        seq: u64,
        previous_file: Option<String>,
    },
}

impl LineFault {
    fn at(self, path: &Path, line: u64) -> VerifyError {
        let file = path.to_path_buf();
        match self {
            LineFault::Bad(msg) => VerifyError::BadJson { file, line, msg },
            LineFault::Modified => VerifyError::HashMismatch { file, line },
            LineFault::Unlinked { .. } => VerifyError::BrokenLink {
                file,
                line,
                fault: LinkFault::Replaced,
            },
            LineFault::Link(fault) => VerifyError::BrokenLink { file, line, fault },
            LineFault::Signature { covers_seq, why } => VerifyError::BadSignature {
                file,
                line,
                covers_seq,
                why,
            },
            LineFault::Diverged { covers_seq } => VerifyError::CheckpointMismatch {
                file,
                line,
                covers_seq,
            },
            LineFault::Seq { expected, found } => VerifyError::SeqGap {
                file,
                line,
                expected,
                found,
            },
            LineFault::MidChain { seq, previous_file } => VerifyError::StartsMidChain {
                file,
                seq,
                previous_file,
            },
        }
    }
}

/// Checks one record against the chain so far and advances `st`.
/// Order matters for the message: content first, then the link (which
/// catches deletion, insertion and reordering), then the counter, then a
/// checkpoint's coverage and signature.
fn check_line(line: &[u8], at: &Place, st: &mut State) -> Result<(), LineFault> {
    let parsed = chain::parse_line(line).map_err(|e| LineFault::Bad(e.to_string()))?;
    if !parsed.hash_ok() {
        return Err(LineFault::Modified);
    }
    let header = Header::read(parsed.event.as_deref(), line);
    if st.records == 0 {
        start(&parsed, header.as_ref(), st)?;
    }
    let expected = st.head.seq.saturating_add(1);
    if parsed.prev_hash != st.head.hash {
        match header.as_ref().and_then(Header::truncated_bytes) {
            // The writer found the file cut shorter and said so: the
            // records it lost are reported, the chain goes on from here.
            Some(lost_bytes) if parsed.seq > expected => st.lost.push(Lost {
                file: at.file.to_path_buf(),
                line: at.line,
                from: expected,
                to: parsed.seq - 1,
                lost_bytes,
            }),
            _ => {
                return Err(LineFault::Unlinked {
                    expected,
                    found: parsed.seq,
                })
            }
        }
    } else if parsed.seq != expected {
        return Err(LineFault::Seq {
            expected,
            found: parsed.seq,
        });
    }
    if parsed.event.as_deref() == Some(CHECKPOINT_EVENT) {
        let cp = parsed.checkpoint.as_ref().ok_or_else(|| {
            LineFault::Bad("checkpoint without covers_seq, covers_hash and signature".into())
        })?;
        check_checkpoint(cp, st)?;
        st.checkpoints += 1;
        st.last_checkpoint = parsed.seq;
    }
    if let Some(h) = &header {
        st.notes.push(h.notice(parsed.seq, at.file, at.line));
    }
    st.records += 1;
    st.head = ChainHead {
        seq: parsed.seq,
        hash: parsed.hash,
    };
    Ok(())
}

/// The first record of all: seq 1 from genesis, or (unless `from_genesis`)
/// a later record whose link to the records before is taken on trust.
fn start(parsed: &ParsedLine, header: Option<&Header>, st: &mut State) -> Result<(), LineFault> {
    st.first_seq = parsed.seq;
    if parsed.seq <= 1 || parsed.prev_hash == GENESIS_HASH {
        return Ok(());
    }
    let previous_file = header.and_then(|h| h.previous_file.clone());
    if st.from_genesis {
        return Err(LineFault::MidChain {
            seq: parsed.seq,
            previous_file,
        });
    }
    st.continues_from = Some(parsed.seq - 1);
    st.previous_file = previous_file;
    st.head = ChainHead {
        seq: parsed.seq - 1,
        hash: parsed.prev_hash.clone(),
    };
    Ok(())
}

/// A checkpoint must cover exactly the record before it, signed by `st.key`.
fn check_checkpoint(cp: &CheckpointFields, st: &State) -> Result<(), LineFault> {
    if cp.covers_seq != st.head.seq || cp.covers_hash != st.head.hash {
        return Err(LineFault::Diverged {
            covers_seq: cp.covers_seq,
        });
    }
    let Some(key) = st.key else {
        return Ok(());
    };
    let why = if cp.key_id != key.key_id {
        format!(
            "names key {} but the given key is {}",
            cp.key_id, key.key_id
        )
    } else if !key.verify(cp.covers_seq, &cp.covers_hash, &cp.signature) {
        "has a signature that does not verify".to_string()
    } else {
        return Ok(());
    };
    Err(LineFault::Signature {
        covers_seq: cp.covers_seq,
        why,
    })
}

/// A problem with one record of a chain checked one record at a time
/// (`StreamVerifier`; used for the central table, where there are no
/// files and lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// Not an audit record at all.
    Unreadable(String),
    /// Its hash does not match its content.
    Modified,
    /// `prev_hash` does not link to the record before (`expected` is the
    /// seq that should have come, `found` the record's own).
    Unlinked { expected: u64, found: u64 },
    /// Linked, but numbered wrongly.
    Seq { expected: u64, found: u64 },
    /// A checkpoint's signature does not verify.
    Signature { covers_seq: u64, why: String },
    /// A checkpoint covers a head the records before it no longer have.
    Diverged { covers_seq: u64 },
}

/// What a `StreamVerifier` covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamReport {
    /// seq of the first record checked (1 for a chain stored from its start).
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub checkpoints: u64,
    /// Records after the last checkpoint.
    pub unsigned_tail: u64,
}

/// Verifies one chain record by record with the same rules as
/// `verify_files`; the chain may start after seq 1 (older records dropped
/// by retention), in which case its first record's `prev_hash` is taken as
/// given and everything after it must link.
pub struct StreamVerifier<'k> {
    st: State<'k>,
    first_seq: Option<u64>,
    records: u64,
}

impl<'k> StreamVerifier<'k> {
    pub fn new(key: Option<&'k PublicKey>) -> Self {
        StreamVerifier {
            st: State {
                head: ChainHead::genesis(),
                key,
                // A stored chain may start after seq 1 (retention): the
                // first record is then taken as a continuation.
                from_genesis: false,
                checkpoints: 0,
                last_checkpoint: 0,
                records: 0,
                first_seq: 0,
                continues_from: None,
                previous_file: None,
                notes: Vec::new(),
                lost: Vec::new(),
            },
            first_seq: None,
            records: 0,
        }
    }

    /// Checks the next record (a line without its `\n`).
    pub fn check(&mut self, line: &[u8]) -> Result<(), RecordFault> {
        let first = self.first_seq.is_none();
        let at = Place {
            file: Path::new("<database>"),
            line: self.records + 1,
            previous: None,
        };
        check_line(line, &at, &mut self.st).map_err(|f| match f {
            LineFault::Bad(msg) => RecordFault::Unreadable(msg),
            LineFault::Modified => RecordFault::Modified,
            LineFault::Unlinked { expected, found } => RecordFault::Unlinked { expected, found },
            LineFault::Link(_) | LineFault::MidChain { .. } => RecordFault::Unlinked {
                expected: self.st.head.seq.saturating_add(1),
                found: 0,
            },
            LineFault::Seq { expected, found } => RecordFault::Seq { expected, found },
            LineFault::Signature { covers_seq, why } => RecordFault::Signature { covers_seq, why },
            LineFault::Diverged { covers_seq } => RecordFault::Diverged { covers_seq },
        })?;
        if first {
            self.first_seq = Some(self.st.first_seq.max(1));
            if self.st.continues_from.is_some() {
                // Records before the first stored one are not ours to sign.
                self.st.last_checkpoint = self.st.last_checkpoint.max(self.st.first_seq - 1);
            }
        }
        self.records += 1;
        Ok(())
    }

    /// The seq the next record must have.
    pub fn expected(&self) -> u64 {
        self.st.head.seq.saturating_add(1)
    }

    pub fn report(&self) -> StreamReport {
        StreamReport {
            first_seq: self.first_seq.unwrap_or(0),
            last_seq: self.st.head.seq,
            records: self.records,
            checkpoints: self.st.checkpoints,
            unsigned_tail: self.st.head.seq.saturating_sub(self.st.last_checkpoint),
        }
    }
}

#[cfg(test)]
mod tests;
