//! What `audit verify` says in words: the writer's own records (`chain_start`,
//! `file_start`, `log_reopened`, `resumed`) explained for an auditor, the
//! summary printed on success, and the hints in the errors about which files
//! to pass.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Lost, VerifyReport};
use crate::audit::header::{CHAIN_START, FILE_START, LOG_REOPENED};
use crate::audit::sign::PublicKey;

/// `event` of the record that ends an audit outage.
const RESUMED: &str = "resumed";
/// Notes printed at most; the rest are counted.
const MAX_NOTES: usize = 20;

/// One of the writer's own records, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub file: PathBuf,
    pub line: u64,
    pub seq: u64,
    pub text: String,
}

/// The fields of a writer record that explain it (the hash covers them all).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default)]
    event: String,
    #[serde(default)]
    chain: Option<String>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    cause: Option<String>,
    #[serde(default)]
    pub previous_file: Option<String>,
    #[serde(default)]
    copied_bytes: Option<u64>,
    #[serde(default)]
    lost_bytes: Option<u64>,
    #[serde(default)]
    displaced_to: Option<String>,
    #[serde(default)]
    failing_since: Option<String>,
    #[serde(default)]
    unwritten_records: Option<u64>,
}

impl Header {
    /// The header fields of a line whose `event` is a writer record.
    pub(super) fn read(event: Option<&str>, line: &[u8]) -> Option<Header> {
        let event = event?;
        if ![CHAIN_START, FILE_START, LOG_REOPENED, RESUMED].contains(&event) {
            return None;
        }
        // A field of the wrong type still leaves the event explained.
        serde_json::from_slice(line).ok().or_else(|| {
            Some(Header {
                event: event.to_string(),
                ..Header::default()
            })
        })
    }

    /// For a `log_reopened` after a truncation: the bytes the writer found gone.
    pub(super) fn truncated_bytes(&self) -> Option<u64> {
        (self.event == LOG_REOPENED && self.cause.as_deref() == Some("truncated"))
            .then(|| self.lost_bytes.unwrap_or(0))
    }

    pub(super) fn notice(&self, seq: u64, file: &Path, line: u64) -> Notice {
        Notice {
            file: file.to_path_buf(),
            line,
            seq,
            text: self.explain(),
        }
    }

    fn explain(&self) -> String {
        let chain = self.chain.as_deref().unwrap_or("?");
        let instance = self.instance.as_deref().unwrap_or("?");
        let cause = self.cause.as_deref().unwrap_or("");
        let copied = self.copied_bytes.unwrap_or(0);
        match (self.event.as_str(), cause) {
            (CHAIN_START, "new_log") => format!(
                "chain {chain} starts here (instance {instance}): no audit log or rotated file was found at the configured path, so this is a first start or an empty volume"
            ),
            (CHAIN_START, "unnamed_chain") => format!(
                "chain {chain} (instance {instance}) is named from here on: the records before it were written by a version that did not name chains, and belong to the same chain"
            ),
            (CHAIN_START, _) => format!("chain {chain} starts here (instance {instance}, cause {cause:?})"),
            (FILE_START, _) => format!(
                "a new live file began here after a rotation; the records before it are in {}",
                self.previous_file.as_deref().unwrap_or("the previous rotated file")
            ),
            (LOG_REOPENED, "unlinked") => format!(
                "the live file was deleted while purposegate had it open; purposegate put a new file at its path holding every record the deleted one held ({copied} bytes copied), so no record was lost"
            ),
            (LOG_REOPENED, "renamed") => format!(
                "the live file was renamed away while purposegate had it open; purposegate put a new file at its path holding every record it held ({copied} bytes copied), so no record was lost"
            ),
            (LOG_REOPENED, "replaced") => format!(
                "another file had taken the live file's path; purposegate moved it aside{} and put every record back into a new file at the path ({copied} bytes copied)",
                self.displaced_to.as_deref().map(|d| format!(" to {d}")).unwrap_or_default()
            ),
            (LOG_REOPENED, "truncated") => format!(
                "the live file was cut shorter by something other than purposegate: {} bytes of records before this one are gone from this file (a central copy may hold them)",
                self.lost_bytes.unwrap_or(0)
            ),
            (LOG_REOPENED, _) => format!("the live file had to be put back at its path (cause {cause:?}, {copied} bytes copied)"),
            _ => format!(
                "writing resumed after an outage that began at {}; {} record(s) could not be written while it lasted (a request whose decision record was among them was refused before the store was contacted)",
                self.failing_since.as_deref().unwrap_or("an unknown time"),
                self.unwritten_records.unwrap_or(0)
            ),
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `" (its file_start names X as the file before it)"`, or nothing.
pub(super) fn named_previous(previous_file: Option<&str>) -> String {
    previous_file
        .map(|p| format!(" (its file_start names {p} as the file before it)"))
        .unwrap_or_default()
}

/// For a file out of order: the file its `file_start` says comes before it.
pub(super) fn named_previous_order(previous_file: Option<&str>) -> String {
    previous_file
        .map(|p| format!("; its file_start names {p} as the file before it"))
        .unwrap_or_default()
}

/// What the seqs at a file boundary suggest.
pub(super) fn order_hint(starts_at: u64, ended_at: u64) -> String {
    let next = ended_at.saturating_add(1);
    if starts_at > next {
        format!(
            " (seq {next}..{} are in a file that was not given)",
            starts_at - 1
        )
    } else {
        " (it belongs before that file)".to_string()
    }
}

/// The rotated files and the live file of the log that `file` belongs to,
/// as shell arguments (rotated names end in `.<20-digit seq>`, so the glob
/// lists them oldest first and leaves out `.torn` and `.displaced.*`).
pub(super) fn verify_all_hint(file: &Path) -> String {
    let text = file.display().to_string();
    let live = match text.rsplit_once('.') {
        Some((base, seq)) if seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()) => {
            base.to_string()
        }
        _ => text,
    };
    format!("{live}.[0-9]* {live}")
}

/// The summary `audit verify` prints on success.
pub fn render(r: &VerifyReport, key: Option<&PublicKey>) -> String {
    let files = plural(r.files as u64, "file", "files");
    let mut out = if r.records == 0 {
        format!("ok: no records in {files}")
    } else {
        format!(
            "ok: {} (seq {}..{}) in {files}, hash chain intact",
            plural(r.records, "record", "records"),
            r.first_seq,
            r.last_seq
        )
    };
    if let Some(before) = r.continues_from {
        out.push_str(&format!(
            " (continues from seq {before}, earlier records not checked)"
        ));
    }
    if r.records > 0 {
        out.push('\n');
        out.push_str(&signatures(r, key));
    }
    if let (Some(before), Some(file)) = (r.continues_from, &r.first_file) {
        out.push_str(&format!(
            "\nnote: {} starts at seq {}: it continues a chain whose records 1..{before} are in earlier (rotated) files{}. To check the chain from seq 1, pass them all, oldest first: purposegate audit verify {}",
            file.display(),
            before + 1,
            named_previous(r.previous_file.as_deref()),
            verify_all_hint(file)
        ));
    }
    if !r.notes.is_empty() {
        out.push_str("\nwhat purposegate recorded about its own log:");
        for n in r.notes.iter().take(MAX_NOTES) {
            out.push_str(&format!(
                "\n  seq {} ({}:{}): {}",
                n.seq,
                n.file.display(),
                n.line,
                n.text
            ));
        }
        if r.notes.len() > MAX_NOTES {
            out.push_str(&format!("\n  … and {} more", r.notes.len() - MAX_NOTES));
        }
    }
    out
}

/// What protects the records besides the hash chain. The lines with
/// checkpoints keep the wording scripts already look for.
fn signatures(r: &VerifyReport, key: Option<&PublicKey>) -> String {
    if r.checkpoints == 0 {
        return format!(
            "no checkpoints: only the hash chain protects {}, and whoever can write the files can rebuild it (set audit.checkpoint to have purposegate sign the chain)",
            if r.records == 1 { "this record" } else { "these records" }
        );
    }
    let mut out = match key {
        Some(k) => format!(
            "{} checkpoint(s), every signature verified (key {})",
            r.checkpoints, k.key_id
        ),
        None => format!(
            "{} checkpoint(s) linked to the chain; signatures NOT checked (no --public-key)",
            r.checkpoints
        ),
    };
    out.push_str(&format!(
        "\nunsigned tail: {} records after the last checkpoint",
        r.unsigned_tail
    ));
    out
}

/// The error text for records the writer documented as lost.
pub(super) fn lost_message(lost: &[Lost], checked: &VerifyReport) -> String {
    let Some(first) = lost.first() else {
        return "records are missing".to_string();
    };
    let mut out = format!(
        "{}:{}: seq {}..{} are missing ({} bytes): the live file was cut shorter while purposegate had it open, and purposegate recorded the loss in the log_reopened record on this line (a central copy may hold them)",
        first.file.display(),
        first.line,
        first.from,
        first.to,
        first.lost_bytes
    );
    for l in lost.iter().skip(1) {
        out.push_str(&format!(
            "; {}:{}: seq {}..{} are missing in the same way",
            l.file.display(),
            l.line,
            l.from,
            l.to
        ));
    }
    out.push_str(&format!(
        ". Apart from that the hash chain of the other {} is intact",
        plural(checked.records, "record", "records")
    ));
    out
}
