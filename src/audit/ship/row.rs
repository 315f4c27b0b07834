//! One local record as a row of `audit_records`: the line is checked (its
//! own hash re-derived, `seq` and `ts` readable) and the indexed columns are
//! taken from it. The `record` column keeps the exact line, so the central
//! verifier re-derives the same hash; the other columns are only an index
//! over it, and `audit verify --postgres` checks that they still agree with
//! the record.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::chain;

/// Longest value kept in an indexed text column (a btree entry must stay
/// far below PostgreSQL's ~2.7 kB limit, or one odd record would stop the
/// whole pipeline). The full value is always in `record`.
pub const MAX_COLUMN_BYTES: usize = 512;

/// A checked record, ready for the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: u64,
    /// `ts` as microseconds since the epoch (what the `ts` column holds).
    pub ts_micros: i64,
    pub cols: Columns,
    /// The exact line, without its `\n`.
    pub record: String,
    pub hash: String,
    pub prev_hash: String,
}

/// The indexed columns, as derived from a record (normalized by `column`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub event: Option<String>,
    pub request_id: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub owner: Option<String>,
    pub subject: Option<String>,
    pub purpose: Option<String>,
    pub justification: Option<String>,
    pub route: Option<String>,
    pub status: Option<i32>,
    /// The `chain` field of header records (`chain_start`, `file_start`).
    pub chain: Option<String>,
}

/// Why a line is refused (never shipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not an audit record: {0}")]
    Unreadable(String),
    #[error("hash mismatch: the record was modified after it was written")]
    Modified,
    #[error("ts `{0}` is not an RFC 3339 time between 1970 and 9999")]
    BadTs(String),
    #[error("seq {0} is out of range")]
    BadSeq(u64),
    #[error(
        "seq {found} does not follow seq {after} (repeated or going back: an inserted record)"
    )]
    NotIncreasing { found: u64, after: u64 },
    #[error("incomplete last line of a rotated file")]
    Torn,
}

impl Refusal {
    /// A short stable code for the refusals table and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unreadable(_) => "unreadable",
            Refusal::Modified => "modified",
            Refusal::BadTs(_) => "bad_ts",
            Refusal::BadSeq(_) => "bad_seq",
            Refusal::NotIncreasing { .. } => "not_increasing",
            Refusal::Torn => "torn",
        }
    }
}

/// The fields read for the columns; everything else stays in `record` only.
/// `seq` and `prev_hash` are read in the same pass when a line is shipped
/// (one JSON parse per record; `columns_of` ignores them).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    prev_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    decision: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    owner: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    purpose: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    justification: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    route: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<i64>,
    #[serde(default, borrow)]
    chain: Option<Cow<'a, str>>,
}

/// Normalizes a value for an indexed column: NUL (which PostgreSQL text
/// cannot hold) becomes U+FFFD, and the value is cut to `MAX_COLUMN_BYTES`
/// on a character boundary.
pub fn column(s: &str) -> String {
    let mut end = s.len().min(MAX_COLUMN_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = s.get(..end).unwrap_or_default();
    if cut.contains('\0') {
        cut.replace('\0', "\u{FFFD}")
    } else {
        cut.to_string()
    }
}

fn col(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().map(column)
}

/// `ts` as microseconds since the epoch (sub-microsecond digits dropped),
/// when it is an RFC 3339 time in 1970..=9999.
pub fn ts_micros(ts: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    if !(1970..=9999).contains(&t.year()) {
        return None;
    }
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// Reads the columns of a line whose hash is already checked.
pub fn columns_of(line: &str) -> Result<(String, Columns), Refusal> {
    let f = fields(line)?;
    Ok((f.ts.to_string(), columns(&f)))
}

fn fields(text: &str) -> Result<Fields<'_>, Refusal> {
    serde_json::from_str(text).map_err(|e| Refusal::Unreadable(e.to_string()))
}

fn columns(f: &Fields<'_>) -> Columns {
    Columns {
        event: col(&f.event),
        request_id: col(&f.request_id),
        decision: col(&f.decision),
        reason: col(&f.reason),
        owner: col(&f.owner),
        subject: col(&f.subject),
        purpose: col(&f.purpose),
        justification: col(&f.justification),
        route: col(&f.route),
        status: f.status.and_then(|s| i32::try_from(s).ok()),
        chain: col(&f.chain),
    }
}

/// Checks one line (without its `\n`) and builds its row: the stored hash
/// split off, the fields read in one JSON pass over the canonical bytes,
/// the hash re-derived from them.
pub fn parse(line: &[u8]) -> Result<Row, Refusal> {
    let unreadable = |e: chain::ChainError| Refusal::Unreadable(e.to_string());
    let (canonical, hash) = chain::split_hash(line).map_err(unreadable)?;
    let text = std::str::from_utf8(&canonical).map_err(|_| unreadable(chain::ChainError::Utf8))?;
    let f = fields(text)?;
    let (Some(seq), Some(prev_hash)) = (f.seq, f.prev_hash.as_deref()) else {
        return Err(Refusal::Unreadable(
            "a chained record has `seq` and `prev_hash`".into(),
        ));
    };
    if chain::hash_hex(&canonical) != hash {
        return Err(Refusal::Modified);
    }
    if seq == 0 || i64::try_from(seq).is_err() {
        return Err(Refusal::BadSeq(seq));
    }
    let ts_micros = ts_micros(&f.ts).ok_or_else(|| Refusal::BadTs(column(&f.ts)))?;
    // The line is the canonical bytes (checked as UTF-8) plus the hex hash.
    let record = std::str::from_utf8(line)
        .map_err(|_| unreadable(chain::ChainError::Utf8))?
        .to_string();
    Ok(Row {
        seq,
        ts_micros,
        cols: columns(&f),
        record,
        hash: hash.to_string(),
        prev_hash: prev_hash.to_string(),
    })
}

/// `ts_micros` as PostgreSQL timestamptz input (UTC, microseconds).
pub fn pg_timestamp(micros: i64) -> String {
    PgTimestamp(micros).to_string()
}

/// Formats as `pg_timestamp` without a String of its own (one per shipped
/// row otherwise).
struct PgTimestamp(i64);

impl std::fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let frac = self.0.rem_euclid(1_000_000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{frac:06}+00",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Err(_) => f.write_str("epoch"),
        }
    }
}

/// Appends `s` in COPY text format (backslash, tab, newline, CR escaped).
/// Copies the runs between escapes whole: byte-wise pushing was the
/// shipper's largest cost on the proxy's runtime thread (two records of
/// ~600 bytes a request).
fn copy_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escaped);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

fn copy_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => copy_text(out, s),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\t');
}

/// The columns a COPY line carries, in this order.
pub const COPY_COLUMNS: &str = "instance, chain, seq, ts, event, request_id, decision, reason, owner, subject, purpose, justification, route, status, record";

impl Row {
    /// Appends this row as one COPY text line for `instance` / `chain`.
    pub fn copy_line(&self, instance: &str, chain: &str, out: &mut Vec<u8>) {
        copy_opt(out, Some(instance));
        copy_opt(out, Some(chain));
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}\t{}\t", self.seq, PgTimestamp(self.ts_micros));
        let c = &self.cols;
        for v in [
            &c.event,
            &c.request_id,
            &c.decision,
            &c.reason,
            &c.owner,
            &c.subject,
            &c.purpose,
            &c.justification,
            &c.route,
        ] {
            copy_opt(out, v.as_deref());
        }
        let _ = match c.status {
            Some(s) => write!(out, "{s}"),
            None => out.write_all(b"\\N"),
        };
        out.push(b'\t');
        copy_text(out, &self.record);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{encode, encode_body, ChainHead};
    use crate::audit::record::{AuditEvent, DecisionKind};

    fn line(ev: &AuditEvent) -> String {
        let enc = encode(&ChainHead::genesis(), "2026-03-01T10:00:00.123Z", ev).unwrap();
        String::from_utf8(enc.line).unwrap().trim_end().to_string()
    }

    #[test]
    fn a_record_becomes_its_row() {
        let ev = AuditEvent {
            request_id: "r1".into(),
            decision: DecisionKind::Allow,
            subject: Some("alice".into()),
            owner: Some("u1".into()),
            purpose: Some("support".into()),
            justification: Some("T-1\ttab\\".into()),
            status: 200,
            ..AuditEvent::default()
        };
        let text = line(&ev);
        let row = parse(text.as_bytes()).unwrap();
        assert_eq!(row.seq, 1);
        assert_eq!(row.record, text);
        assert_eq!(row.cols.owner.as_deref(), Some("u1"));
        assert_eq!(row.cols.decision.as_deref(), Some("allow"));
        assert_eq!(row.cols.status, Some(200));
        assert_eq!(row.cols.reason, None);
        assert_eq!(row.ts_micros, 1_772_359_200_123_000);
        assert_eq!(pg_timestamp(row.ts_micros), "2026-03-01 10:00:00.123000+00");
        let mut out = Vec::new();
        row.copy_line("i-0", "c1", &mut out);
        let copy = String::from_utf8(out).unwrap();
        assert_eq!(copy.matches('\t').count(), 14, "{copy}");
        assert!(copy.contains("T-1\\ttab\\\\"), "{copy}");
        assert!(copy.ends_with("\"}\n"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let text = line(&AuditEvent::default());
        assert_eq!(
            parse(text.replace("deny", "allow").as_bytes()),
            Err(Refusal::Modified)
        );
        assert!(matches!(parse(b"hello"), Err(Refusal::Unreadable(_))));
        let bad_ts = encode_body(
            &ChainHead::genesis(),
            "yesterday",
            &serde_json::json!({"event": "x"}),
        )
        .unwrap();
        let t = String::from_utf8(bad_ts.line).unwrap();
        assert!(matches!(
            parse(t.trim_end().as_bytes()),
            Err(Refusal::BadTs(_))
        ));
    }

    #[test]
    fn copy_text_escapes_exactly_the_four_bytes() {
        let mut out = Vec::new();
        copy_text(&mut out, "a\\b\tc\nd\re\\");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re\\\\");
        out.clear();
        copy_text(&mut out, "");
        copy_text(&mut out, "plain é");
        assert_eq!(out, "plain é".as_bytes());
        out.clear();
        copy_text(&mut out, "\t\t");
        assert_eq!(out, b"\\t\\t");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        /// Records with arbitrary text, then one byte changed: the shipper
        /// accepts the genuine line with its fields, and whatever it
        /// accepts after the change is a line the verifier reads the same.
        #[test]
        fn shipper_and_verifier_agree(
            owner in "\\PC{0,20}",
            subject in "[\\x00-\\x7f]{0,20}",
            at in 0usize..2000,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let ev = AuditEvent {
                owner: Some(owner.clone()),
                subject: Some(subject),
                ..AuditEvent::default()
            };
            let text = line(&ev);
            let row = parse(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(row.cols.owner, Some(column(&owner)));
            let mut bytes = text.into_bytes();
            let at = at % bytes.len();
            bytes[at] = byte;
            crate::fuzzing::audit_lines(&bytes);
        }
    }

    #[test]
    fn columns_are_bounded_and_nul_free() {
        let long = "é".repeat(400);
        let c = column(&long);
        assert!(c.len() <= MAX_COLUMN_BYTES && c.is_char_boundary(c.len()));
        assert_eq!(column("a\0b"), "a\u{FFFD}b");
        let ev = AuditEvent {
            owner: Some("o\u{0}x".into()),
            ..AuditEvent::default()
        };
        let row = parse(line(&ev).as_bytes()).unwrap();
        assert_eq!(row.cols.owner.as_deref(), Some("o\u{FFFD}x"));
        assert!(row.record.contains("o\\u0000x"));
    }

    #[test]
    fn header_records_carry_their_chain() {
        let enc = encode_body(
            &ChainHead::genesis(),
            "2026-03-01T10:00:00Z",
            &serde_json::json!({"event":"chain_start","chain":"c-1","instance":"i","cause":"new_log"}),
        )
        .unwrap();
        let t = String::from_utf8(enc.line).unwrap();
        let row = parse(t.trim_end().as_bytes()).unwrap();
        assert_eq!(row.cols.chain.as_deref(), Some("c-1"));
        assert_eq!(row.cols.event.as_deref(), Some("chain_start"));
        assert_eq!(row.cols.status, None);
    }
}
