//! `audit report --postgres`: every access of one owner, employee or
//! justification, allowed and denied, oldest first, from every replica.
//! One line per request: its `decision` record, with the `complete`
//! record's status, bytes and duration when the request was allowed and
//! finished. Rows stream through a cursor and are written as they come
//! (the JSON array too), so a 10^7-row answer is never held in memory.
//!
//! For `--owner` (a user asking who read their content, GDPR Art. 15) the
//! employee's identity — subject, roles, token id, client address, client
//! certificate — is withheld unless `--reveal-subjects`; dates, purpose,
//! justification, decision and reason are always shown.

use std::io::Write;

use serde_json::{Map, Value};
use tokio_postgres::Client;

/// Rows fetched per round trip.
const FETCH: i32 = 2000;

/// Whose accesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Owner(String),
    Subject(String),
    Justification(String),
}

impl Selection {
    fn column(&self) -> &'static str {
        match self {
            Selection::Owner(_) => "owner",
            Selection::Subject(_) => "subject",
            Selection::Justification(_) => "justification",
        }
    }

    fn value(&self) -> String {
        match self {
            Selection::Owner(v) | Selection::Subject(v) | Selection::Justification(v) => {
                super::row::column(v)
            }
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A report to run.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub selection: Selection,
    /// Inclusive lower bound, microseconds since the epoch.
    pub since: Option<i64>,
    /// Exclusive upper bound.
    pub until: Option<i64>,
    pub reveal_subjects: bool,
}

impl ReportQuery {
    /// Whether the employee's identity is left out.
    pub fn withholds_identity(&self) -> bool {
        matches!(self.selection, Selection::Owner(_)) && !self.reveal_subjects
    }

    fn sql(&self) -> String {
        let col = self.selection.column();
        let mut sql = format!(
            "SELECT d.instance, d.record, c.record
               FROM audit_records d
               LEFT JOIN LATERAL (
                    SELECT c.record FROM audit_records c
                     WHERE c.request_id = d.request_id AND c.instance = d.instance
                       AND c.chain = d.chain AND c.event = 'complete' AND c.ts >= d.ts
                     ORDER BY c.seq LIMIT 1) c ON true
              WHERE d.{col} = $1 AND d.event = 'decision'"
        );
        let mut n = 1;
        for (bound, op) in [(self.since, ">="), (self.until, "<")] {
            if bound.is_some() {
                n += 1;
                sql.push_str(&format!(
                    " AND d.ts {op} timestamptz 'epoch' + ${n}::int8 * interval '1 microsecond'"
                ));
            }
        }
        sql.push_str(" ORDER BY d.ts, d.instance, d.chain, d.seq");
        sql
    }
}

/// The fields shown, in order; the identity ones only when not withheld.
const FIELDS: &[&str] = &[
    "ts",
    "request_id",
    "instance",
    "decision",
    "reason",
    "purpose",
    "justification",
    "owner",
    "method",
    "path",
    "route",
    "status",
    "bytes",
    "duration_ms",
];
const IDENTITY: &[&str] = &[
    "subject",
    "roles",
    "token_id",
    "client_addr",
    "client_cert_subject",
];

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("audit database: {0}")]
    Db(String),
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for ReportError {
    fn from(e: tokio_postgres::Error) -> Self {
        ReportError::Db(super::describe(&e))
    }
}

/// Runs the report and writes it to `out`; returns the number of accesses.
/// (`out` is written from the command's own single-threaded runtime, where
/// nothing else waits on it.)
pub async fn run(
    client: &mut Client,
    q: &ReportQuery,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, ReportError> {
    let fields: Vec<&str> = if q.withholds_identity() {
        FIELDS.to_vec()
    } else {
        FIELDS.iter().chain(IDENTITY).copied().collect()
    };
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let stmt = tx.prepare(&q.sql()).await?;
    let value = q.selection.value();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&value];
    if let Some(s) = &q.since {
        params.push(s);
    }
    if let Some(u) = &q.until {
        params.push(u);
    }
    let portal = tx.bind(&stmt, &params).await?;
    let mut w = Writer::new(format, &fields, out);
    w.begin()?;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let access = access(r.get(0), r.get(1), r.get(2), &fields);
            w.row(&access)?;
        }
    }
    let n = w.count;
    w.end()?;
    tx.commit().await?;
    Ok(n)
}

/// One access as the fields shown: the decision record, with the complete
/// record's outcome.
fn access(
    instance: &str,
    decision: &str,
    complete: Option<&str>,
    fields: &[&str],
) -> Map<String, Value> {
    let d: Map<String, Value> = serde_json::from_str(decision).unwrap_or_default();
    let c: Map<String, Value> = complete
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    let mut out = Map::new();
    for &f in fields {
        let v = match f {
            "instance" => Value::String(instance.to_string()),
            "status" | "bytes" | "duration_ms" => c
                .get(f)
                .filter(|v| !v.is_null())
                .or_else(|| d.get(f))
                .cloned()
                .unwrap_or(Value::Null),
            _ => d.get(f).cloned().unwrap_or(Value::Null),
        };
        out.insert(f.to_string(), v);
    }
    out
}

/// Writes rows in one of the formats as they come.
struct Writer<'a> {
    format: Format,
    fields: Vec<&'a str>,
    out: &'a mut dyn Write,
    count: u64,
}

/// Column widths of the table format (wider values just push on).
fn width(field: &str) -> usize {
    match field {
        "ts" => 24,
        "request_id" => 33,
        "decision" => 8,
        "reason" | "path" => 24,
        "status" => 6,
        "bytes" | "duration_ms" => 10,
        _ => 14,
    }
}

/// A value as text for table and CSV (strings bare, null empty).
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// RFC 4180 quoting.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl<'a> Writer<'a> {
    fn new(format: Format, fields: &[&'a str], out: &'a mut dyn Write) -> Self {
        Writer {
            format,
            fields: fields.to_vec(),
            out,
            count: 0,
        }
    }

    fn begin(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.out.write_all(b"["),
            Format::Csv => {
                let header = self.fields.join(",");
                writeln!(self.out, "{header}")
            }
            Format::Table => {
                let cells: Vec<String> = self
                    .fields
                    .iter()
                    .map(|f| format!("{f:<w$}", w = width(f)))
                    .collect();
                writeln!(self.out, "{}", cells.join(" ").trim_end())
            }
        }
    }

    fn row(&mut self, access: &Map<String, Value>) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                let sep: &[u8] = if self.count == 0 { b"\n" } else { b",\n" };
                self.out.write_all(sep)?;
                serde_json::to_writer(&mut *self.out, access).map_err(std::io::Error::other)?;
            }
            Format::Csv => {
                let cells: Vec<String> = self
                    .fields
                    .iter()
                    .map(|f| csv_field(&access.get(*f).map(text).unwrap_or_default()))
                    .collect();
                writeln!(self.out, "{}", cells.join(","))?;
            }
            Format::Table => {
                let cells: Vec<String> = self
                    .fields
                    .iter()
                    .map(|f| {
                        let t = access.get(*f).map(text).unwrap_or_default();
                        let t = if t.is_empty() { "-".to_string() } else { t };
                        format!("{t:<w$}", w = width(f))
                    })
                    .collect();
                writeln!(self.out, "{}", cells.join(" ").trim_end())?;
            }
        }
        self.count += 1;
        Ok(())
    }

    fn end(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Json if self.count == 0 => self.out.write_all(b"]\n")?,
            Format::Json => self.out.write_all(b"\n]\n")?,
            Format::Csv | Format::Table => {}
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_joins_the_outcome_and_withholds_identity() {
        let d = r#"{"ts":"t1","seq":1,"request_id":"r1","event":"decision","decision":"allow","reason":null,"subject":"alice","roles":["support"],"purpose":"support","owner":"u1","status":200,"bytes":null,"client_addr":"10.0.0.1:1"}"#;
        let c = r#"{"ts":"t2","seq":2,"request_id":"r1","event":"complete","status":206,"bytes":42,"duration_ms":1.5}"#;
        let a = access("i-0", d, Some(c), FIELDS);
        assert_eq!(a["status"], 206);
        assert_eq!(a["bytes"], 42);
        assert_eq!(a["instance"], "i-0");
        assert!(!a.contains_key("subject") && !a.contains_key("client_addr"));
        let all: Vec<&str> = FIELDS.iter().chain(IDENTITY).copied().collect();
        let a = access("i-0", d, None, &all);
        assert_eq!(a["subject"], "alice");
        assert_eq!(a["status"], 200);
        assert_eq!(a["bytes"], Value::Null);
    }

    #[test]
    fn formats_stream_rows() {
        let fields = ["ts", "justification", "roles"];
        let mut row = Map::new();
        row.insert("ts".into(), "t1".into());
        row.insert("justification".into(), "T-1, \"x\"".into());
        row.insert("roles".into(), serde_json::json!(["a", "b"]));
        let run = |format| {
            let mut out = Vec::new();
            let mut w = Writer::new(format, &fields, &mut out);
            w.begin().unwrap();
            w.row(&row).unwrap();
            w.row(&row).unwrap();
            w.end().unwrap();
            String::from_utf8(out).unwrap()
        };
        let json: Value = serde_json::from_str(&run(Format::Json)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        assert_eq!(json[1]["justification"], "T-1, \"x\"");
        let csv = run(Format::Csv);
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                "ts,justification,roles",
                "t1,\"T-1, \"\"x\"\"\",a b",
                "t1,\"T-1, \"\"x\"\"\",a b"
            ]
        );
        let table = run(Format::Table);
        assert_eq!(table.lines().count(), 3);
        assert!(table.starts_with("ts "), "{table}");
        let mut out = Vec::new();
        let mut w = Writer::new(Format::Json, &fields, &mut out);
        w.begin().unwrap();
        w.end().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[]\n");
    }

    #[test]
    fn the_query_binds_only_the_bounds_given() {
        let q = ReportQuery {
            selection: Selection::Subject("e1".into()),
            since: None,
            until: Some(5),
            reveal_subjects: false,
        };
        let sql = q.sql();
        assert!(sql.contains("d.subject = $1") && sql.contains("d.ts < timestamptz 'epoch' + $2"));
        assert!(!sql.contains("$3") && !q.withholds_identity());
    }
}
