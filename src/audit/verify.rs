//! `audit verify`: re-derives every record's hash from its text, and checks
//! that `prev_hash` links each record to the one before and that `seq` counts
//! up by one from 1. The files given, in order, form one chain. Reads line by
//! line, so a large log is never held in memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, ChainHead};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub files: usize,
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
    #[error(
        "{}:{line}: prev_hash does not link to the previous record (a record was deleted, inserted or reordered)",
        file.display()
    )]
    BrokenLink { file: PathBuf, line: u64 },
    #[error("{}:{line}: seq {found} where {expected} was expected", file.display())]
    SeqGap {
        file: PathBuf,
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "{}:{line}: torn final line (an interrupted write, e.g. a crash; not tampering)",
        file.display()
    )]
    TornLine { file: PathBuf, line: u64 },
    #[error("{}: {msg}", file.display())]
    Io { file: PathBuf, msg: String },
}

/// Verifies `paths` as one chain starting at the genesis record.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    let mut head = ChainHead::genesis();
    for path in paths {
        verify_file(path, &mut head)?;
    }
    Ok(VerifyReport {
        records: head.seq,
        files: paths.len(),
    })
}

/// Verifies one file, continuing the chain from `head`.
fn verify_file(path: &Path, head: &mut ChainHead) -> Result<(), VerifyError> {
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
            });
        };
        *head = check_line(line, head).map_err(|e| e.at(path, line_no))?;
    }
}

/// A problem with one line, before it is placed in a file.
enum LineFault {
    Bad(String),
    Modified,
    Unlinked,
    Seq { expected: u64, found: u64 },
}

impl LineFault {
    fn at(self, path: &Path, line: u64) -> VerifyError {
        let file = path.to_path_buf();
        match self {
            LineFault::Bad(msg) => VerifyError::BadJson { file, line, msg },
            LineFault::Modified => VerifyError::HashMismatch { file, line },
            LineFault::Unlinked => VerifyError::BrokenLink { file, line },
            LineFault::Seq { expected, found } => VerifyError::SeqGap {
                file,
                line,
                expected,
                found,
            },
        }
    }
}

/// Checks one record against the chain so far and returns the new head.
/// Order matters for the message: content first, then the link (which
/// catches deletion, insertion and reordering), then the counter.
fn check_line(line: &[u8], prev: &ChainHead) -> Result<ChainHead, LineFault> {
    let parsed = chain::parse_line(line).map_err(|e| LineFault::Bad(e.to_string()))?;
    if !parsed.hash_ok() {
        return Err(LineFault::Modified);
    }
    if parsed.prev_hash != prev.hash {
        return Err(LineFault::Unlinked);
    }
    let expected = prev.seq.saturating_add(1);
    if parsed.seq != expected {
        return Err(LineFault::Seq {
            expected,
            found: parsed.seq,
        });
    }
    Ok(ChainHead {
        seq: parsed.seq,
        hash: parsed.hash,
    })
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
                files: 1
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
        assert_eq!(
            r,
            VerifyReport {
                records: 5,
                files: 2
            }
        );
        let err = verify_files(&[b.clone(), a]).unwrap_err();
        assert!(matches!(err, VerifyError::BrokenLink { line: 1, ref file } if *file == b));
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
            matches!(err, VerifyError::BrokenLink { line: 2, .. }),
            "{err}"
        );
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
            matches!(err, VerifyError::BrokenLink { line: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn swapped_lines_detected() {
        let mut lines = log(4);
        lines.swap(1, 2);
        let err = verify_text(&lines.concat()).unwrap_err();
        assert!(
            matches!(err, VerifyError::BrokenLink { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_final_line_is_torn() {
        let lines = log(3);
        let mut text = lines.concat();
        text.truncate(text.len() - 20);
        let err = verify_text(&text).unwrap_err();
        assert!(
            matches!(err, VerifyError::TornLine { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("torn"), "{err}");
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
}
