//! Chains and file headers. A *chain* is one unbroken hash chain of one
//! instance; its id is kept in the log itself, so a restart on the same
//! volume continues it and a restart on an empty volume starts a new one.
//!
//! Every local file the writer starts begins with a record that names the
//! chain (`chain_start` for the chain's first file, `file_start` after a
//! rotation), and a live file recovered after it was unlinked or renamed is
//! rebuilt from the content the writer still holds, so it begins with its
//! header again. A reader (the shipper, an auditor) therefore learns a
//! file's chain from its first line. See `docs/audit.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// `event` of the first record of a chain.
pub const CHAIN_START: &str = "chain_start";
/// `event` of the first record of a file after a rotation.
pub const FILE_START: &str = "file_start";
/// `event` of the record written after the live file had to be recovered.
pub const LOG_REOPENED: &str = "log_reopened";

/// Longest first line read when looking for a chain id (headers are small;
/// a legacy first record is bounded too).
const MAX_FIRST_LINE: u64 = 64 * 1024;

/// Why a chain started (`cause` of `chain_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainCause {
    /// No log and no rotated files at the path: a first start or an empty volume.
    NewLog,
    /// A log written before chains were named: the new id names it from seq 1.
    UnnamedChain,
}

impl ChainCause {
    fn as_str(self) -> &'static str {
        match self {
            ChainCause::NewLog => "new_log",
            ChainCause::UnnamedChain => "unnamed_chain",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            ChainCause::NewLog => {
                "no audit log or rotated file was found at the configured path (first start or an empty volume); a new chain starts here"
            }
            ChainCause::UnnamedChain => {
                "the log was written before chains had ids; this id names the whole chain, its earlier records included"
            }
        }
    }
}

/// Why the live file had to be rebuilt (`cause` of `log_reopened`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReopenCause {
    /// The live file was deleted while open.
    Unlinked,
    /// The live file was renamed away while open.
    Renamed,
    /// Another non-empty file took the path; it was moved aside.
    Replaced,
    /// The live file was cut shorter under the writer.
    Truncated,
}

impl ReopenCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ReopenCause::Unlinked => "unlinked",
            ReopenCause::Renamed => "renamed",
            ReopenCause::Replaced => "replaced",
            ReopenCause::Truncated => "truncated",
        }
    }
}

/// A writer record that starts a chain or a file, or documents a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    ChainStart(ChainCause),
    FileStart {
        previous_file: Option<String>,
    },
    Reopened {
        cause: ReopenCause,
        /// Bytes of the previous file copied into the new one.
        copied_bytes: u64,
        /// Bytes that were gone before the writer noticed (truncation).
        lost_bytes: u64,
        /// Where a foreign file found at the path was moved.
        displaced_to: Option<String>,
    },
}

/// The body of a header record, in on-disk field order.
#[derive(Serialize)]
pub(crate) struct HeaderBody<'a> {
    event: &'static str,
    chain: &'a str,
    instance: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    copied_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    displaced_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

impl Header {
    /// The record body for this header.
    pub(crate) fn body<'a>(&'a self, chain: &'a str, instance: &'a str) -> HeaderBody<'a> {
        let mut b = HeaderBody {
            event: FILE_START,
            chain,
            instance,
            cause: None,
            previous_file: None,
            copied_bytes: None,
            lost_bytes: None,
            displaced_to: None,
            detail: None,
        };
        match self {
            Header::ChainStart(cause) => {
                b.event = CHAIN_START;
                b.cause = Some(cause.as_str());
                b.detail = Some(cause.detail());
            }
            Header::FileStart { previous_file } => {
                b.cause = Some("rotated");
                b.previous_file = previous_file.as_deref();
            }
            Header::Reopened {
                cause,
                copied_bytes,
                lost_bytes,
                displaced_to,
            } => {
                b.event = LOG_REOPENED;
                b.cause = Some(cause.as_str());
                b.copied_bytes = Some(*copied_bytes);
                b.lost_bytes = Some(*lost_bytes);
                b.displaced_to = displaced_to.as_deref();
                b.detail = Some(match cause {
                    ReopenCause::Unlinked | ReopenCause::Renamed => {
                        "the live file was removed from its path while open; every record it held was copied into this file, which continues the chain"
                    }
                    ReopenCause::Replaced => {
                        "another file had taken the live file's path; it was moved aside and the records were copied into this file, which continues the chain"
                    }
                    ReopenCause::Truncated => {
                        "the live file was cut shorter by something other than purposegate; lost_bytes of records before this one are gone from this file (the central copy may hold them)"
                    }
                });
            }
        }
        b
    }
}

/// A new chain id: the UTC start time and 64 random bits, e.g.
/// `20261201T095500Z-3f9c2a1b7d4e6f80` (sorts by start, never collides).
pub fn new_chain_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    format!("{stamp}-{:016x}", rand::random::<u64>())
}

/// Whether `id` is a well-formed chain id (what a header may carry).
pub fn valid_chain_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The instance name: configured, else `$PURPOSEGATE_INSTANCE`, else the
/// host name (the pod name in Kubernetes), else `unknown`.
pub fn resolve_instance(configured: Option<&str>) -> String {
    let pick = |s: Option<String>| s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    pick(configured.map(str::to_string))
        .or_else(|| pick(std::env::var("PURPOSEGATE_INSTANCE").ok()))
        .or_else(|| pick(host_name()))
        .unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
}

#[derive(Deserialize)]
struct FirstLine {
    #[serde(default)]
    chain: Option<String>,
}

/// What the first line of a log file says about its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChain {
    /// The file is empty.
    Empty,
    /// The first record names this chain.
    Named(String),
    /// The first record names no chain (written before chains had ids).
    Unnamed,
}

/// Reads the chain id from the first line of `path`.
pub fn file_chain(path: &Path) -> io::Result<FileChain> {
    let file = File::open(path)?;
    first_line_chain(file)
}

/// Reads the chain id from the first line of an open file (from its start).
pub fn first_line_chain(file: File) -> io::Result<FileChain> {
    let mut reader = BufReader::new(file.take(MAX_FIRST_LINE));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(FileChain::Empty);
    }
    let Ok(first) = serde_json::from_slice::<FirstLine>(line.trim_ascii_end()) else {
        return Ok(FileChain::Unnamed);
    };
    Ok(match first.chain {
        Some(id) if valid_chain_id(&id) => FileChain::Named(id),
        _ => FileChain::Unnamed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_unique_and_well_formed() {
        let (a, b) = (new_chain_id(), new_chain_id());
        assert_ne!(a, b);
        assert!(valid_chain_id(&a), "{a}");
        assert_eq!(a.len(), 33);
        assert!(!valid_chain_id("a/b") && !valid_chain_id("") && !valid_chain_id(&"x".repeat(65)));
    }

    #[test]
    fn instance_prefers_the_configured_name() {
        assert_eq!(resolve_instance(Some(" pod-0 ")), "pod-0");
        assert!(!resolve_instance(None).is_empty());
    }

    #[test]
    fn first_line_tells_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(file_chain(&p).unwrap(), FileChain::Empty);
        std::fs::write(&p, b"{\"seq\":1,\"chain\":\"c-1\"}\n{\"seq\":2}\n").unwrap();
        assert_eq!(file_chain(&p).unwrap(), FileChain::Named("c-1".into()));
        std::fs::write(&p, b"{\"seq\":1}\n").unwrap();
        assert_eq!(file_chain(&p).unwrap(), FileChain::Unnamed);
        std::fs::write(&p, b"{\"seq\":1,\"chain\":\"../x\"}\n").unwrap();
        assert_eq!(file_chain(&p).unwrap(), FileChain::Unnamed);
    }

    #[test]
    fn header_bodies_carry_chain_and_cause() {
        let h = Header::ChainStart(ChainCause::NewLog);
        let v = serde_json::to_value(h.body("c-1", "pod-0")).unwrap();
        assert_eq!(v["event"], "chain_start");
        assert_eq!(v["chain"], "c-1");
        assert_eq!(v["instance"], "pod-0");
        assert_eq!(v["cause"], "new_log");
        let h = Header::Reopened {
            cause: ReopenCause::Unlinked,
            copied_bytes: 10,
            lost_bytes: 0,
            displaced_to: None,
        };
        let v = serde_json::to_value(h.body("c-1", "pod-0")).unwrap();
        assert_eq!(v["event"], "log_reopened");
        assert_eq!(v["copied_bytes"], 10);
        assert!(v.get("displaced_to").is_none());
    }
}
