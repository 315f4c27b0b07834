//! Canonical encoding and the SHA-256 hash chain, shared by the writer and the
//! verifier so both derive hashes the same way (one implementation).
//!
//! A line is `{"ts":…,"seq":N,<event fields>,"prev_hash":"…","hash":"…"}`.
//! `hash` is the SHA-256 of the canonical bytes: the line up to (not
//! including) `,"hash":` followed by `}`, i.e. the record serialized without
//! its hash. Verification therefore works on the exact text and never depends
//! on re-serializing parsed JSON.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::AuditEvent;

/// `prev_hash` of the first record of a log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the hex SHA-256 digest.
const HASH_HEX_LEN: usize = 64;
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX: &[u8] = b"\"}";

/// The end of the chain: the last record's `seq` and `hash` (seq 0 = empty log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Why a record could not be encoded or a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("sequence number overflow")]
    SeqOverflow,
    #[error("cannot serialize record: {0}")]
    Serialize(String),
    #[error("line does not end with a \"hash\" field of 64 lowercase hex digits")]
    NoHash,
    #[error("line is not valid UTF-8")]
    Utf8,
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// What is hashed: the record without its `hash`, fields in on-disk order.
/// `B` is the body: an `AuditEvent`, or a writer record (checkpoint, resumed).
#[derive(Serialize)]
struct Canonical<'a, B: Serialize> {
    ts: &'a str,
    seq: u64,
    #[serde(flatten)]
    event: &'a B,
    prev_hash: &'a str,
}

/// One encoded record: its line (ending in `\n`) and the new chain head.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub line: Vec<u8>,
    pub head: ChainHead,
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn hash_hex(bytes: &[u8]) -> String {
    let mut out = [0u8; HASH_HEX_LEN];
    // Into a fixed buffer: `hex::encode` builds its String a char at a time,
    // which showed up in the writer's profile at two hashes per request.
    // Neither step can fail: 32 bytes are 64 hex digits, all ASCII.
    if hex::encode_to_slice(Sha256::digest(bytes), &mut out).is_err() {
        return String::new();
    }
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Encodes `event` as the record following `prev`, stamped with `ts`.
pub fn encode(prev: &ChainHead, ts: &str, event: &AuditEvent) -> Result<Encoded, ChainError> {
    encode_body(prev, ts, event)
}

/// Encodes any record body (a JSON object) as the record following `prev`.
pub fn encode_body<B: Serialize>(
    prev: &ChainHead,
    ts: &str,
    event: &B,
) -> Result<Encoded, ChainError> {
    let seq = prev.seq.checked_add(1).ok_or(ChainError::SeqOverflow)?;
    let canonical = serde_json::to_vec(&Canonical {
        ts,
        seq,
        event,
        prev_hash: &prev.hash,
    })
    .map_err(|e| ChainError::Serialize(e.to_string()))?;
    // serde_json emits a compact object, so the last byte is its closing brace.
    let Some((b'}', body)) = canonical.split_last() else {
        return Err(ChainError::Serialize("not a JSON object".into()));
    };
    let hash = hash_hex(&canonical);
    let mut line = Vec::with_capacity(canonical.len() + HASH_PREFIX.len() + HASH_HEX_LEN + 3);
    line.extend_from_slice(body);
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(HASH_SUFFIX);
    line.push(b'\n');
    Ok(Encoded {
        line,
        head: ChainHead { seq, hash },
    })
}

/// A record body serialized ahead of time (on the caller's thread, so the
/// writer's critical section only concatenates and hashes): the JSON object's
/// members without the enclosing braces.
#[derive(Debug, Clone)]
pub struct Body {
    /// The whole object, braces included (kept rather than copied out).
    json: Vec<u8>,
}

/// Room for a typical request record, so serializing it never reallocates.
const BODY_CAPACITY: usize = 512;

impl Body {
    /// Serializes `event` (any JSON object) the way `encode_body` would.
    pub fn new<B: Serialize>(event: &B) -> Result<Body, ChainError> {
        let mut json = Vec::with_capacity(BODY_CAPACITY);
        serde_json::to_writer(&mut json, event)
            .map_err(|e| ChainError::Serialize(e.to_string()))?;
        match json.as_slice() {
            [b'{', inner @ .., b'}'] if !inner.is_empty() => Ok(Body { json }),
            _ => Err(ChainError::Serialize("not a non-empty JSON object".into())),
        }
    }

    /// The serialized size in bytes.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Never true: a body is a non-empty object.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// The object's members, without the enclosing braces.
    fn members(&self) -> &[u8] {
        let end = self.json.len().saturating_sub(1);
        self.json.get(1..end).unwrap_or_default()
    }
}

/// Encodes a pre-serialized body as the record following `prev`; the bytes
/// are identical to `encode_body` on the same event.
pub fn encode_raw(prev: &ChainHead, ts: &str, body: &Body) -> Result<Encoded, ChainError> {
    let seq = prev.seq.checked_add(1).ok_or(ChainError::SeqOverflow)?;
    let ts_json = serde_json::to_string(ts).map_err(|e| ChainError::Serialize(e.to_string()))?;
    let members = body.members();
    let mut line = Vec::with_capacity(members.len() + 256);
    line.extend_from_slice(b"{\"ts\":");
    line.extend_from_slice(ts_json.as_bytes());
    line.extend_from_slice(b",\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.push(b',');
    line.extend_from_slice(members);
    line.extend_from_slice(b",\"prev_hash\":\"");
    line.extend_from_slice(prev.hash.as_bytes());
    // The canonical bytes end here with `"}`; the stored line goes on with the hash.
    line.extend_from_slice(b"\"}");
    let hash = hash_hex(&line);
    line.pop();
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(HASH_SUFFIX);
    line.push(b'\n');
    Ok(Encoded {
        line,
        head: ChainHead { seq, hash },
    })
}

/// `encode_raw` straight into `out` (the open group's buffer): no line of
/// its own, the hash taken over the bytes in place. On error nothing is
/// left in `out`.
pub fn encode_raw_into(
    prev: &ChainHead,
    ts: &str,
    body: &Body,
    out: &mut Vec<u8>,
) -> Result<ChainHead, ChainError> {
    use std::io::Write as _;
    let seq = prev.seq.checked_add(1).ok_or(ChainError::SeqOverflow)?;
    let start = out.len();
    out.extend_from_slice(b"{\"ts\":");
    if let Err(e) = serde_json::to_writer(&mut *out, ts) {
        out.truncate(start);
        return Err(ChainError::Serialize(e.to_string()));
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, ",\"seq\":{seq},");
    out.extend_from_slice(body.members());
    out.extend_from_slice(b",\"prev_hash\":\"");
    out.extend_from_slice(prev.hash.as_bytes());
    // The canonical bytes end here with `"}`; the stored line goes on with the hash.
    out.extend_from_slice(b"\"}");
    let mut hex = [0u8; HASH_HEX_LEN];
    if hex::encode_to_slice(Sha256::digest(&out[start..]), &mut hex).is_err() {
        out.truncate(start);
        return Err(ChainError::Serialize("hash".into()));
    }
    out.pop();
    out.extend_from_slice(HASH_PREFIX);
    out.extend_from_slice(&hex);
    out.extend_from_slice(HASH_SUFFIX);
    out.push(b'\n');
    let hash = std::str::from_utf8(&hex)
        .map(str::to_owned)
        .unwrap_or_default();
    Ok(ChainHead { seq, hash })
}

/// The chain fields of one line, as read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine {
    pub seq: u64,
    pub prev_hash: String,
    /// The `hash` stored in the line.
    pub hash: String,
    /// The hash re-derived from the line's canonical bytes.
    pub computed: String,
    /// The `event` field (`decision`, `complete`, `checkpoint`, `resumed`).
    pub event: Option<String>,
    /// The signed head, when this is a `checkpoint` record.
    pub checkpoint: Option<CheckpointFields>,
}

/// The fields of a `checkpoint` record a verifier checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointFields {
    /// The chain head the signature covers (the record just before).
    pub covers_seq: u64,
    pub covers_hash: String,
    pub key_id: String,
    /// Base64 Ed25519 signature over `sign::checkpoint_message`.
    pub signature: String,
}

impl ParsedLine {
    /// Whether the stored hash matches the content (false = modified).
    pub fn hash_ok(&self) -> bool {
        self.hash == self.computed
    }
}

/// The chain fields a verifier needs; other fields are covered by the hash.
#[derive(Deserialize)]
struct Link {
    seq: u64,
    prev_hash: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    covers_seq: Option<u64>,
    #[serde(default)]
    covers_hash: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

impl Link {
    /// The checkpoint fields, when the record is a complete checkpoint.
    fn checkpoint(&mut self) -> Option<CheckpointFields> {
        if self.event.as_deref() != Some(CHECKPOINT_EVENT) {
            return None;
        }
        Some(CheckpointFields {
            covers_seq: self.covers_seq?,
            covers_hash: self.covers_hash.take()?,
            key_id: self.key_id.take().unwrap_or_default(),
            signature: self.signature.take()?,
        })
    }
}

/// `event` of a checkpoint record.
pub const CHECKPOINT_EVENT: &str = "checkpoint";

/// Parses one line (without its `\n`): splits off the stored hash, re-derives
/// the hash from the canonical bytes and reads `seq` and `prev_hash`.
pub fn parse_line(line: &[u8]) -> Result<ParsedLine, ChainError> {
    let (canonical, hash) = split_hash(line)?;
    let text = std::str::from_utf8(&canonical).map_err(|_| ChainError::Utf8)?;
    let mut link: Link = serde_json::from_str(text).map_err(|e| ChainError::Json(e.to_string()))?;
    let checkpoint = link.checkpoint();
    Ok(ParsedLine {
        seq: link.seq,
        prev_hash: link.prev_hash,
        hash: hash.to_string(),
        computed: hash_hex(&canonical),
        event: link.event,
        checkpoint,
    })
}

/// Returns the canonical bytes (line minus the hash field, plus `}`) and the
/// stored hash.
pub(crate) fn split_hash(line: &[u8]) -> Result<(Vec<u8>, &str), ChainError> {
    let tail_len = HASH_PREFIX.len() + HASH_HEX_LEN + HASH_SUFFIX.len();
    let cut = line.len().checked_sub(tail_len).ok_or(ChainError::NoHash)?;
    let (body, tail) = line.split_at(cut);
    let hex_part = tail
        .strip_prefix(HASH_PREFIX)
        .and_then(|t| t.strip_suffix(HASH_SUFFIX))
        .ok_or(ChainError::NoHash)?;
    if !hex_part
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(ChainError::NoHash);
    }
    let hash = std::str::from_utf8(hex_part).map_err(|_| ChainError::NoHash)?;
    let mut canonical = Vec::with_capacity(body.len() + 1);
    canonical.extend_from_slice(body);
    canonical.push(b'}');
    Ok((canonical, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{DecisionKind, EventKind};

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            request_id: id.into(),
            event: EventKind::Decision,
            decision: DecisionKind::Allow,
            subject: Some("alice".into()),
            roles: vec!["support".into()],
            purpose: Some("support".into()),
            method: "GET".into(),
            path: "/users/u1/files/f1".into(),
            status: 200,
            client_addr: "127.0.0.1:5000".into(),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn encode_parse_round_trip_links() {
        let ts = "2026-03-01T00:00:00.000Z";
        let a = encode(&ChainHead::genesis(), ts, &event("r1")).unwrap();
        let b = encode(&a.head, ts, &event("r2")).unwrap();
        assert_eq!((a.head.seq, b.head.seq), (1, 2));
        let pa = parse_line(a.line.strip_suffix(b"\n").unwrap()).unwrap();
        let pb = parse_line(b.line.strip_suffix(b"\n").unwrap()).unwrap();
        assert!(pa.hash_ok() && pb.hash_ok());
        assert_eq!(pa.prev_hash, GENESIS_HASH);
        assert_eq!(pb.prev_hash, a.head.hash);
        assert_eq!(pb.hash, b.head.hash);
    }

    #[test]
    fn line_is_json_with_all_fields_in_order() {
        let enc = encode(
            &ChainHead::genesis(),
            "2026-03-01T00:00:00.000Z",
            &event("r1"),
        )
        .unwrap();
        let text = std::str::from_utf8(&enc.line).unwrap();
        assert!(text.ends_with("\"}\n") && text.starts_with("{\"ts\":"));
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let want = [
            "ts",
            "seq",
            "request_id",
            "event",
            "decision",
            "reason",
            "subject",
            "roles",
            "purpose",
            "justification",
            "method",
            "path",
            "owner",
            "route",
            "status",
            "bytes",
            "duration_ms",
            "client_addr",
            "token_id",
            "prev_hash",
            "hash",
        ];
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), want.len());
        let mut last = 0;
        for key in want {
            assert!(obj.contains_key(key), "missing {key}");
            let at = text.find(&format!("\"{key}\":")).unwrap();
            assert!(at >= last, "{key} out of order");
            last = at;
        }
        assert_eq!(v["seq"], 1);
        assert_eq!(v["hash"], enc.head.hash);
    }

    #[test]
    fn hash_covers_the_exact_bytes() {
        let enc = encode(
            &ChainHead::genesis(),
            "2026-03-01T00:00:00.000Z",
            &event("r1"),
        )
        .unwrap();
        let line = String::from_utf8(enc.line).unwrap();
        let tampered = line.trim_end().replace("alice", "mallory");
        let parsed = parse_line(tampered.as_bytes()).unwrap();
        assert!(!parsed.hash_ok());
        let (cut, _) = line.split_once(",\"hash\":").unwrap();
        assert_eq!(hash_hex(format!("{cut}}}").as_bytes()), enc.head.hash);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert_eq!(parse_line(b"{\"seq\":1}"), Err(ChainError::NoHash));
        let upper = format!("{{\"seq\":1,\"hash\":\"{}\"}}", "A".repeat(64));
        assert_eq!(parse_line(upper.as_bytes()), Err(ChainError::NoHash));
        let no_prev = format!("{{\"seq\":1,\"hash\":\"{}\"}}", "a".repeat(64));
        assert!(matches!(
            parse_line(no_prev.as_bytes()),
            Err(ChainError::Json(_))
        ));
    }

    #[test]
    fn pre_serialized_body_encodes_to_the_same_bytes() {
        let ts = "2026-03-01T00:00:00.000Z";
        let mut ev = event("r\"1\u{e9}");
        ev.justification = Some("line\nbreak".into());
        ev.duration_ms = Some(1.25);
        let a = encode(&ChainHead::genesis(), ts, &ev).unwrap();
        let b = encode_raw(&ChainHead::genesis(), ts, &Body::new(&ev).unwrap()).unwrap();
        assert_eq!(a.line, b.line);
        assert_eq!(a.head, b.head);
        let a2 = encode(&a.head, ts, &event("r2")).unwrap();
        let b2 = encode_raw(&b.head, ts, &Body::new(&event("r2")).unwrap()).unwrap();
        assert_eq!(a2.line, b2.line);
        // Into a buffer that already holds a line: the same bytes after it.
        let mut buf = a.line.clone();
        let head =
            encode_raw_into(&a.head, ts, &Body::new(&event("r2")).unwrap(), &mut buf).unwrap();
        assert_eq!(head, a2.head);
        assert_eq!(&buf[a.line.len()..], &a2.line[..]);
        assert!(Body::new(&1u8).is_err());
    }

    #[test]
    fn seq_overflow_is_an_error() {
        let head = ChainHead {
            seq: u64::MAX,
            hash: GENESIS_HASH.into(),
        };
        assert!(matches!(
            encode(&head, "t", &event("r")),
            Err(ChainError::SeqOverflow)
        ));
    }
}
