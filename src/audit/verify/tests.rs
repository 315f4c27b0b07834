//! The verifier on hand-made logs: every kind of damage is named, with its line.

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
        (r.records, r.files, r.checkpoints, r.unsigned_tail),
        (5, 1, 0, 5)
    );
    assert_eq!((r.first_seq, r.last_seq, r.continues_from), (1, 5, None));
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
    // From genesis, b (seq 3..) cannot come first.
    let err = verify_files(&[b.clone(), a.clone()]).unwrap_err();
    assert!(
        matches!(err, VerifyError::StartsMidChain { seq: 3, ref file, .. } if *file == b),
        "{err}"
    );
    // As a continuation b is fine, but a does not follow it.
    let err = verify(&[b.clone(), a.clone()], VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, VerifyError::FileOrder { starts_at: 1, ended_at: 5, ref file, .. } if *file == a),
        "{err}"
    );
    assert!(err.to_string().contains("oldest first"), "{err}");
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
    // From genesis, a log whose seq 1 is gone says where it starts.
    let mut lines = log(3);
    lines.remove(0);
    let err = verify_text(&lines.concat()).unwrap_err();
    assert!(
        matches!(err, VerifyError::StartsMidChain { seq: 2, .. }),
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

/// A chain written record by record: plain request records and the
/// writer's own records, as JSON bodies.
struct Chain {
    head: ChainHead,
    lines: Vec<String>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            head: ChainHead::genesis(),
            lines: Vec::new(),
        }
    }

    fn push(&mut self, body: serde_json::Value) -> &mut Chain {
        let enc = chain::encode_body(&self.head, "2026-03-01T00:00:00.000Z", &body).unwrap();
        self.head = enc.head;
        self.lines.push(String::from_utf8(enc.line).unwrap());
        self
    }

    fn requests(&mut self, n: u64) -> &mut Chain {
        for i in 0..n {
            self.push(serde_json::json!({"event": "decision", "request_id": format!("r{}-{i}", self.head.seq)}));
        }
        self
    }

    fn text(&self, range: std::ops::Range<usize>) -> String {
        self.lines[range].concat()
    }
}

fn chain_start() -> serde_json::Value {
    serde_json::json!({"event": "chain_start", "chain": "c-1", "instance": "pod-0", "cause": "new_log"})
}

const ROTATED: &str = "audit.jsonl.00000000000000000010";

/// seq 1..10 in the rotated file, 11 (file_start) ..14 in the live one.
fn rotated_log(dir: &Path) -> (PathBuf, PathBuf) {
    let mut c = Chain::new();
    c.push(chain_start()).requests(9);
    c.push(serde_json::json!({"event": "file_start", "chain": "c-1", "instance": "pod-0", "cause": "rotated", "previous_file": ROTATED}));
    c.requests(3);
    let (rotated, live) = (dir.join(ROTATED), dir.join("audit.jsonl"));
    std::fs::write(&rotated, c.text(0..10)).unwrap();
    std::fs::write(&live, c.text(10..14)).unwrap();
    (rotated, live)
}

#[test]
fn the_live_file_after_a_rotation_verifies_as_a_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let (rotated, live) = rotated_log(dir.path());
    let r = verify(std::slice::from_ref(&live), VerifyOptions::default()).unwrap();
    assert_eq!((r.records, r.first_seq, r.last_seq), (4, 11, 14));
    assert_eq!(r.continues_from, Some(10));
    assert_eq!(r.previous_file.as_deref(), Some(ROTATED));
    assert_eq!(r.unsigned_tail, 4);
    let text = render(&r, None);
    assert!(
        text.starts_with("ok: 4 records (seq 11..14) in 1 file, hash chain intact (continues from seq 10, earlier records not checked)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("its file_start names {ROTATED}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("audit verify {0}.[0-9]* {0}", live.display())),
        "{text}"
    );
    assert!(
        text.contains("a new live file began here after a rotation"),
        "{text}"
    );
    assert!(!text.contains("deleted"), "{text}");

    // From genesis: an error that says where the file starts and what to pass.
    let strict = VerifyOptions {
        key: None,
        from_genesis: true,
    };
    let err = verify(std::slice::from_ref(&live), strict).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("starts at seq 11") && msg.contains("records 1..10"),
        "{msg}"
    );
    assert!(msg.contains(ROTATED) && msg.contains(".[0-9]*"), "{msg}");
    assert!(!msg.contains("deleted"), "{msg}");

    // Both files: the whole chain from seq 1, with the chain start explained.
    let r = verify(&[rotated, live], strict).unwrap();
    assert_eq!((r.records, r.first_seq, r.continues_from), (14, 1, None));
    let text = render(&r, None);
    assert!(
        text.contains("chain c-1 starts here (instance pod-0)"),
        "{text}"
    );
    assert!(!text.contains("continues from"), "{text}");
}

#[test]
fn a_missing_file_in_between_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new();
    c.push(chain_start()).requests(14);
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, c.text(i * 5..i * 5 + 5)).unwrap();
    }
    let err = verify(
        &[files[0].clone(), files[2].clone()],
        VerifyOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:1:", files[2].display())),
        "{msg}"
    );
    assert!(
        msg.contains("seq 6..10 are in a file that was not given"),
        "{msg}"
    );
}

#[test]
fn the_writers_recoveries_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new();
    c.push(chain_start()).requests(3);
    c.push(serde_json::json!({"event": "log_reopened", "chain": "c-1", "instance": "pod-0", "cause": "unlinked", "copied_bytes": 1234, "lost_bytes": 0}));
    c.requests(1);
    c.push(serde_json::json!({"event": "resumed", "failing_since": "2026-03-01T00:00:00.000Z", "unwritten_records": 3}));
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, c.text(0..7)).unwrap();
    let r = verify_files(std::slice::from_ref(&path)).unwrap();
    let seqs: Vec<u64> = r.notes.iter().map(|n| n.seq).collect();
    assert_eq!(seqs, [1, 5, 7]);
    let text = render(&r, None);
    assert!(
        text.contains("seq 5 (")
            && text.contains("deleted while purposegate had it open")
            && text.contains("1234 bytes copied"),
        "{text}"
    );
    assert!(text.contains("3 record(s) could not be written"), "{text}");
}

#[test]
fn a_truncation_the_writer_documented_is_lost_records_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new();
    c.push(chain_start()).requests(4);
    c.push(serde_json::json!({"event": "log_reopened", "chain": "c-1", "instance": "pod-0", "cause": "truncated", "copied_bytes": 0, "lost_bytes": 400}));
    c.requests(2);
    // Records 4 and 5 were cut off under the writer.
    let mut lines = c.lines.clone();
    lines.drain(3..5);
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    let err = verify_files(std::slice::from_ref(&path)).unwrap_err();
    let VerifyError::RecordsLost { lost, checked } = &err else {
        panic!("{err}");
    };
    assert_eq!((lost[0].from, lost[0].to, lost[0].line), (4, 5, 4));
    assert_eq!(checked.records, 6);
    let msg = err.to_string();
    assert!(
        msg.contains("seq 4..5 are missing") && msg.contains("cut shorter"),
        "{msg}"
    );
    assert!(
        msg.contains("the other 6 records is intact") || msg.contains("the other 6 records"),
        "{msg}"
    );

    // Without the writer's record, the same gap is a deletion.
    lines.remove(3);
    std::fs::write(&path, lines.concat()).unwrap();
    let err = verify_files(std::slice::from_ref(&path)).unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[test]
fn the_summary_reads_cleanly_with_and_without_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, log(5).concat()).unwrap();
    let r = verify_files(std::slice::from_ref(&path)).unwrap();
    let text = render(&r, None);
    assert_eq!(
        text,
        "ok: 5 records (seq 1..5) in 1 file, hash chain intact\nno checkpoints: only the hash chain protects these records, and whoever can write the files can rebuild it (set audit.checkpoint to have purposegate sign the chain)"
    );

    let mut c = Chain::new();
    c.requests(3);
    let covers = c.head.clone();
    c.push(serde_json::json!({"event": "checkpoint", "covers_seq": covers.seq, "covers_hash": covers.hash, "key_id": "k", "signature": "AA=="}));
    c.requests(2);
    std::fs::write(&path, c.text(0..6)).unwrap();
    let r = verify_files(std::slice::from_ref(&path)).unwrap();
    let text = render(&r, None);
    assert!(
        text.contains("\n1 checkpoint(s) linked to the chain; signatures NOT checked"),
        "{text}"
    );
    assert!(
        text.ends_with("\nunsigned tail: 2 records after the last checkpoint"),
        "{text}"
    );

    std::fs::write(&path, "").unwrap();
    let r = verify_files(std::slice::from_ref(&path)).unwrap();
    assert_eq!(render(&r, None), "ok: no records in 1 file");
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
