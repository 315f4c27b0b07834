//! `audit verify`: re-derives every record's hash from its text, and checks
//! that `prev_hash` links each record to the one before and that `seq` counts
//! up by one from 1. The files given, in order, form one chain (rotated files
//! oldest first, then the live file). Every `checkpoint` record must cover the
//! chain head just before it, and with a public key its Ed25519 signature must
//! verify. Reads line by line, so a large log is never held in memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, ChainHead, CheckpointFields, CHECKPOINT_EVENT};
use super::sign::PublicKey;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub records: u64,
    pub files: usize,
    /// Checkpoint records seen (and, with a key, whose signature verified).
    pub checkpoints: u64,
    /// Records after the last checkpoint (all of them when there is none).
    pub unsigned_tail: u64,
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
}

/// The summary `audit verify` prints on success.
pub fn render(r: &VerifyReport, key: Option<&PublicKey>) -> String {
    let mut out = format!(
        "ok: {} records in {} file(s), chain intact",
        r.records, r.files
    );
    match key {
        Some(k) => out.push_str(&format!(
            "\n{} checkpoint(s), every signature verified (key {})",
            r.checkpoints, k.key_id
        )),
        None => out.push_str(&format!(
            "\n{} checkpoint(s) linked to the chain; signatures NOT checked (no --public-key)",
            r.checkpoints
        )),
    }
    let after = if r.checkpoints == 0 {
        "no checkpoint: the hash chain alone protects them"
    } else {
        "after the last checkpoint"
    };
    out.push_str(&format!(
        "\nunsigned tail: {} records {after}",
        r.unsigned_tail
    ));
    out
}

/// Running state across the files of one chain.
struct State<'k> {
    head: ChainHead,
    key: Option<&'k PublicKey>,
    checkpoints: u64,
    /// seq of the last checkpoint record (0 = none yet).
    last_checkpoint: u64,
}

/// Verifies `paths` as one chain starting at the genesis record, checking
/// checkpoint links but not signatures.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    verify_files_with(paths, None)
}

/// Verifies `paths` as one chain; with `key`, every checkpoint's signature.
pub fn verify_files_with(
    paths: &[PathBuf],
    key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError> {
    let mut st = State {
        head: ChainHead::genesis(),
        key,
        checkpoints: 0,
        last_checkpoint: 0,
    };
    for path in paths {
        verify_file(path, &mut st)?;
    }
    Ok(VerifyReport {
        records: st.head.seq,
        files: paths.len(),
        checkpoints: st.checkpoints,
        unsigned_tail: st.head.seq - st.last_checkpoint,
    })
}

/// Verifies one file, continuing the chain from `st`.
fn verify_file(path: &Path, st: &mut State) -> Result<(), VerifyError> {
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
                good: st.head.seq,
            });
        };
        if let Err(fault) = check_line(line, st) {
            return Err(explain(fault, &mut reader, line_no).at(path, line_no));
        }
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
    Unlinked { expected: u64, found: u64 },
    Link(LinkFault),
    Seq { expected: u64, found: u64 },
    Signature { covers_seq: u64, why: String },
    Diverged { covers_seq: u64 },
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
        }
    }
}

/// Checks one record against the chain so far and advances `st`.
/// Order matters for the message: content first, then the link (which
/// catches deletion, insertion and reordering), then the counter, then a
/// checkpoint's coverage and signature.
fn check_line(line: &[u8], st: &mut State) -> Result<(), LineFault> {
    let parsed = chain::parse_line(line).map_err(|e| LineFault::Bad(e.to_string()))?;
    if !parsed.hash_ok() {
        return Err(LineFault::Modified);
    }
    let expected = st.head.seq.saturating_add(1);
    if parsed.prev_hash != st.head.hash {
        return Err(LineFault::Unlinked {
            expected,
            found: parsed.seq,
        });
    }
    if parsed.seq != expected {
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
    st.head = ChainHead {
        seq: parsed.seq,
        hash: parsed.hash,
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
                checkpoints: 0,
                last_checkpoint: 0,
            },
            first_seq: None,
            records: 0,
        }
    }

    /// Checks the next record (a line without its `\n`).
    pub fn check(&mut self, line: &[u8]) -> Result<(), RecordFault> {
        if self.first_seq.is_none() {
            let parsed =
                chain::parse_line(line).map_err(|e| RecordFault::Unreadable(e.to_string()))?;
            if parsed.seq > 1 {
                // Stored from a later seq on: continuity from here.
                self.st.head = ChainHead {
                    seq: parsed.seq - 1,
                    hash: parsed.prev_hash.clone(),
                };
                self.st.last_checkpoint = parsed.seq - 1;
            }
            self.first_seq = Some(parsed.seq.max(1));
        }
        check_line(line, &mut self.st).map_err(|f| match f {
            LineFault::Bad(msg) => RecordFault::Unreadable(msg),
            LineFault::Modified => RecordFault::Modified,
            LineFault::Unlinked { expected, found } => RecordFault::Unlinked { expected, found },
            LineFault::Link(_) => RecordFault::Unlinked {
                expected: self.st.head.seq.saturating_add(1),
                found: 0,
            },
            LineFault::Seq { expected, found } => RecordFault::Seq { expected, found },
            LineFault::Signature { covers_seq, why } => RecordFault::Signature { covers_seq, why },
            LineFault::Diverged { covers_seq } => RecordFault::Diverged { covers_seq },
        })?;
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
mod tests {
    use super::*;
    use crate::audit::chain::encode;
    use crate::audit::record::AuditEvent;

    /// Writes a valid log of `n` records and returns its lines (with `\n`).
    fn log(n: u64) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (1..=n)
            .map(|i| {
                let ev = AuditEvent {
                    request_id: format!("req-{i}"),
                    subject: Some("alice".into()),
                    ..AuditEvent::default()
                };
                let enc = encode(&head, "2026-03-01T00:00:00.000Z", &ev).unwrap();
                head = enc.head;
                String::from_utf8(enc.line).unwrap()
            })
            .collect()
    }

    fn verify_text(text: &str) -> Result<VerifyReport, VerifyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, text).unwrap();
        verify_files(&[path])
    }

    #[test]
    fn valid_log_verifies() {
        let r = verify_text(&log(5).concat()).unwrap();
        assert_eq!(
            r,
            VerifyReport {
                records: 5,
                files: 1,
                checkpoints: 0,
                unsigned_tail: 5
            }
        );
        assert_eq!(verify_text("").unwrap().records, 0);
    }

    #[test]
    fn chain_spans_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let lines = log(5);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, lines[..2].concat()).unwrap();
        std::fs::write(&b, lines[2..].concat()).unwrap();
        let r = verify_files(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((r.records, r.files), (5, 2));
        let err = verify_files(&[b.clone(), a]).unwrap_err();
        assert!(matches!(err, VerifyError::BrokenLink { line: 1, ref file, .. } if *file == b));
    }

    #[test]
    fn modified_field_names_the_line() {
        let mut lines = log(4);
        lines[2] = lines[2].replace("alice", "bob");
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(err, VerifyError::HashMismatch { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("audit.jsonl:3:"), "{err}");
    }

    #[test]
    fn deleted_line_detected() {
        let mut lines = log(4);
        lines.remove(1);
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::BrokenLink {
                    line: 2,
                    fault: LinkFault::Deleted {
                        expected: 2,
                        found: 3
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("deleted"), "{err}");
        let mut lines = log(3);
        lines.remove(0);
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(err, VerifyError::BrokenLink { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn inserted_line_detected() {
        let mut lines = log(4);
        let copy = lines[1].clone();
        lines.insert(3, copy);
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::BrokenLink {
                    line: 4,
                    fault: LinkFault::Inserted { found: 2 },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("inserted"), "{err}");
    }

    #[test]
    fn swapped_lines_detected() {
        let mut lines = log(4);
        lines.swap(1, 2);
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::BrokenLink {
                    line: 2,
                    fault: LinkFault::Reordered {
                        expected: 2,
                        later_line: 3
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("reordered"), "{err}");
    }

    #[test]
    fn truncated_final_line_is_torn() {
        let lines = log(3);
        let mut text = lines.concat();
        text.truncate(text.len() - 20);
        let err = verify_text(&text).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::TornLine {
                    line: 3,
                    good: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not tampering"), "{err}");
    }

    #[test]
    fn bad_json_detected() {
        let mut lines = log(3);
        lines[1] = "{\"seq\": 2, oops\n".into();
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(matches!(err, VerifyError::BadJson { line: 2, .. }), "{err}");
    }

    #[test]
    fn wrong_seq_with_valid_link_detected() {
        // A forger who rebuilds hashes but skips a number is still caught.
        let mut head = ChainHead::genesis();
        head.seq = 1; // the next record claims seq 2 while linking to genesis
        let enc = encode(&head, "t", &AuditEvent::default()).unwrap();
        let text = String::from_utf8(enc.line).unwrap();
        let err = verify_text(&text).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::SeqGap {
                    line: 1,
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = verify_files(&[PathBuf::from("/nonexistent/audit.jsonl")]).unwrap_err();
        assert!(matches!(err, VerifyError::Io { .. }), "{err}");
    }

    #[test]
    fn stream_verifier_starts_after_retention_and_names_faults() {
        let lines = log(6);
        let strip = |l: &String| l.trim_end().as_bytes().to_vec();
        let mut v = StreamVerifier::new(None);
        for l in &lines[2..] {
            v.check(&strip(l)).unwrap();
        }
        let r = v.report();
        assert_eq!((r.first_seq, r.last_seq, r.records), (3, 6, 4));
        let mut v = StreamVerifier::new(None);
        v.check(&strip(&lines[0])).unwrap();
        assert_eq!(
            v.check(&strip(&lines[2])),
            Err(RecordFault::Unlinked {
                expected: 2,
                found: 3
            })
        );
        let mut v = StreamVerifier::new(None);
        let modified = lines[0].replace("alice", "bob");
        assert_eq!(v.check(&strip(&modified)), Err(RecordFault::Modified));
    }
}
