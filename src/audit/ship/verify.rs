//! `audit verify --postgres`: every chain stored centrally, checked the way
//! `audit verify` checks files (hashes re-derived from `record`, `prev_hash`
//! links, seq continuity from the chain's first stored seq, checkpoint
//! signatures with a public key — `audit::verify::StreamVerifier`), plus
//! that each row's indexed columns still agree with its record (a query by
//! owner must not be steered by an edited column). Rows stream in order
//! through a cursor in one read-only snapshot: the table is never held in
//! memory. The first fault is named by instance, chain and seq, in words
//! an auditor can act on.

use tokio_postgres::Client;

use super::row::{self, Columns};
use crate::audit::sign::PublicKey;
use crate::audit::verify::{RecordFault, StreamReport, StreamVerifier};

/// Rows fetched per round trip.
const FETCH: i32 = 5000;

/// One chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub instance: String,
    pub chain: String,
    pub stream: StreamReport,
}

/// Everything that verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CentralReport {
    pub chains: Vec<ChainReport>,
    /// Refused local lines recorded by shippers (not in any chain).
    pub refusals: i64,
}

/// The first fault found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {instance}, chain {chain}, seq {seq}: {what}")]
pub struct CentralFault {
    pub instance: String,
    pub chain: String,
    pub seq: u64,
    pub what: String,
}

/// Why verification could not run or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CentralVerifyError {
    #[error("{0}")]
    Fault(CentralFault),
    #[error("audit database: {0}")]
    Db(String),
}

impl From<tokio_postgres::Error> for CentralVerifyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CentralVerifyError::Db(super::describe(&e))
    }
}

const ROWS_SQL: &str = "SELECT instance, chain, seq, (extract(epoch FROM ts) * 1000000)::int8,
        event, request_id, decision, reason, owner, subject, purpose, justification, route,
        status, record
   FROM audit_records
  WHERE $1::text IS NULL OR instance = $1
  ORDER BY instance, chain, seq, ts";

/// The chain being verified.
struct Current<'k> {
    instance: String,
    chain: String,
    verifier: StreamVerifier<'k>,
    /// seq of the previous row (to tell a repeated seq from a gap).
    last_seq: Option<u64>,
}

/// Verifies every chain (of `instance`, if given).
pub async fn verify(
    client: &mut Client,
    instance: Option<&str>,
    key: Option<&PublicKey>,
) -> Result<CentralReport, CentralVerifyError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let stmt = tx.prepare(ROWS_SQL).await?;
    let portal = tx.bind(&stmt, &[&instance]).await?;
    let mut report = CentralReport::default();
    let mut cur: Option<Current> = None;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let (inst, chain): (&str, &str) = (r.get(0), r.get(1));
            if cur
                .as_ref()
                .is_none_or(|c| c.instance != inst || c.chain != chain)
            {
                if let Some(done) = cur.take() {
                    report.chains.push(done.finish());
                }
                cur = Some(Current {
                    instance: inst.to_string(),
                    chain: chain.to_string(),
                    verifier: StreamVerifier::new(key),
                    last_seq: None,
                });
            }
            let Some(c) = cur.as_mut() else { continue };
            if let Err(what) = check_row(c, r) {
                let seq = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
                let what = explain_refusal(&tx, c, seq, what).await?;
                return Err(CentralVerifyError::Fault(CentralFault {
                    instance: c.instance.clone(),
                    chain: c.chain.clone(),
                    seq,
                    what,
                }));
            }
        }
    }
    if let Some(done) = cur.take() {
        report.chains.push(done.finish());
    }
    let refusals = tx
        .query_one(
            "SELECT count(*) FROM audit_ship_refusals WHERE $1::text IS NULL OR instance = $1",
            &[&instance],
        )
        .await?;
    report.refusals = refusals.get(0);
    tx.commit().await?;
    Ok(report)
}

impl Current<'_> {
    fn finish(self) -> ChainReport {
        ChainReport {
            instance: self.instance,
            chain: self.chain,
            stream: self.verifier.report(),
        }
    }
}

/// A fault in words, before the refusals table is consulted.
enum Fault {
    Plain(String),
    /// Records `expected..found` are not in the table.
    Missing {
        expected: u64,
        found: u64,
    },
}

/// Checks one row against its chain and its own record.
fn check_row(c: &mut Current, r: &tokio_postgres::Row) -> Result<(), Fault> {
    let seq = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
    let record: &str = r.get(14);
    let repeated = c.last_seq == Some(seq);
    c.last_seq = Some(seq);
    if let Err(f) = c.verifier.check(record.as_bytes()) {
        return Err(match f {
            RecordFault::Unreadable(msg) => Fault::Plain(format!(
                "the row's record is not an audit record ({msg}): the row was modified"
            )),
            RecordFault::Modified => Fault::Plain(
                "the record was modified: its hash no longer matches its content".into(),
            ),
            RecordFault::Unlinked { .. } if repeated => Fault::Plain(format!(
                "a record was inserted: a second row claims seq {seq}"
            )),
            RecordFault::Unlinked { expected, found } if found > expected => {
                Fault::Missing { expected, found }
            }
            RecordFault::Unlinked { .. } => Fault::Plain(format!(
                "the record does not link to seq {}: the record before it was replaced (modified and re-hashed), or this one was",
                seq.saturating_sub(1)
            )),
            RecordFault::Seq { expected, found } => Fault::Plain(format!(
                "the record claims seq {found} where {expected} was expected: an inserted or renumbered record"
            )),
            RecordFault::Signature { covers_seq, why } => Fault::Plain(format!(
                "the checkpoint for seq {covers_seq} {why} (forged or re-signed without the key)"
            )),
            RecordFault::Diverged { covers_seq } => Fault::Plain(format!(
                "the chain diverges from a signed checkpoint: it covers seq {covers_seq} but the records before it were rewritten"
            )),
        });
    }
    check_columns(c, r, seq, record).map_err(Fault::Plain)
}

/// The indexed columns must say what the record says.
fn check_columns(
    c: &Current,
    r: &tokio_postgres::Row,
    seq: u64,
    record: &str,
) -> Result<(), String> {
    let (ts, cols) = row::columns_of(record).map_err(|e| e.to_string())?;
    let modified = |col: &str, stored: &dyn std::fmt::Debug, says: &dyn std::fmt::Debug| {
        format!("the row was modified: column {col} holds {stored:?} but the record says {says:?}")
    };
    let claimed = chain_seq(record);
    if claimed != Some(seq) {
        return Err(modified("seq", &seq, &claimed));
    }
    let ts_col: i64 = r.get(3);
    if row::ts_micros(&ts) != Some(ts_col) {
        return Err(modified("ts", &ts_col, &ts));
    }
    let stored = Columns {
        event: r.get(4),
        request_id: r.get(5),
        decision: r.get(6),
        reason: r.get(7),
        owner: r.get(8),
        subject: r.get(9),
        purpose: r.get(10),
        justification: r.get(11),
        route: r.get(12),
        status: r.get(13),
        chain: cols.chain.clone(),
    };
    let pairs: [(&str, &Option<String>, &Option<String>); 9] = [
        ("event", &stored.event, &cols.event),
        ("request_id", &stored.request_id, &cols.request_id),
        ("decision", &stored.decision, &cols.decision),
        ("reason", &stored.reason, &cols.reason),
        ("owner", &stored.owner, &cols.owner),
        ("subject", &stored.subject, &cols.subject),
        ("purpose", &stored.purpose, &cols.purpose),
        ("justification", &stored.justification, &cols.justification),
        ("route", &stored.route, &cols.route),
    ];
    for (name, got, want) in pairs {
        if got != want {
            return Err(modified(name, got, want));
        }
    }
    if stored.status != cols.status {
        return Err(modified("status", &stored.status, &cols.status));
    }
    if let Some(named) = cols.chain.as_deref() {
        if named != c.chain {
            return Err(modified("chain", &c.chain, &named));
        }
    }
    Ok(())
}

/// The `seq` a record claims.
fn chain_seq(record: &str) -> Option<u64> {
    crate::audit::chain::parse_line(record.as_bytes())
        .ok()
        .map(|p| p.seq)
}

/// Words for missing records, naming a shipper's refusal when one explains
/// the gap (the local record was damaged before it was shipped).
async fn explain_refusal(
    tx: &tokio_postgres::Transaction<'_>,
    c: &Current<'_>,
    _seq: u64,
    fault: Fault,
) -> Result<String, tokio_postgres::Error> {
    let (expected, found) = match fault {
        Fault::Plain(s) => return Ok(s),
        Fault::Missing { expected, found } => (expected, found),
    };
    let missing = if found - expected == 1 {
        format!("a record was deleted before this one (seq {expected} is missing)")
    } else {
        format!(
            "records were deleted before this one (seq {expected}..{} are missing)",
            found - 1
        )
    };
    let refused = tx
        .query_opt(
            "SELECT reason, detail, file, line, refused_at::text FROM audit_ship_refusals
              WHERE instance = $1 AND chain = $2 AND after_seq >= $3 AND after_seq < $4
              ORDER BY after_seq, refused_at LIMIT 1",
            &[
                &c.instance,
                &c.chain,
                &i64::try_from(expected - 1).unwrap_or(i64::MAX),
                &i64::try_from(found).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(match refused {
        None => missing,
        Some(r) => {
            let (detail, file, line, at): (String, String, i64, String) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            format!(
                "{missing}; the shipper refused the local line at {file}:{line} on {at} ({detail}): the record was damaged or modified on the replica before it was shipped, and the file is kept there as evidence"
            )
        }
    })
}

/// The summary printed on success.
pub fn render(r: &CentralReport, key: Option<&PublicKey>) -> String {
    let mut out = String::new();
    let total: u64 = r.chains.iter().map(|c| c.stream.records).sum();
    out.push_str(&format!(
        "ok: {total} records in {} chain(s), every chain intact\n",
        r.chains.len()
    ));
    for c in &r.chains {
        let s = &c.stream;
        let start = if s.first_seq > 1 {
            format!(
                " (stored from seq {}: earlier records are not in the database — dropped by retention or never shipped)",
                s.first_seq
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "instance {} chain {}: seq {}..{}, {} records, {} checkpoint(s), unsigned tail {}{start}\n",
            c.instance, c.chain, s.first_seq, s.last_seq, s.records, s.checkpoints, s.unsigned_tail
        ));
    }
    match key {
        Some(k) => out.push_str(&format!(
            "every checkpoint signature verified (key {})\n",
            k.key_id
        )),
        None => out.push_str("checkpoint signatures NOT checked (no --public-key)\n"),
    }
    if r.refusals > 0 {
        out.push_str(&format!(
            "warning: {} local line(s) were refused by shippers (see table audit_ship_refusals)\n",
            r.refusals
        ));
    }
    out.trim_end().to_string()
}
