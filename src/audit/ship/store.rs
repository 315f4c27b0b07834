//! The shipper's side of the central database: one connection, the stored
//! position of a chain, a batch stored in one transaction (COPY, the fastest
//! path; should a row already exist, the batch is stored again with
//! `INSERT … ON CONFLICT DO NOTHING`, so a re-shipped record adds nothing),
//! refused lines recorded in the same transaction, and the read-back that
//! allows a rotated file to be deleted.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::local::{Batch, Position};
use super::row::{self, COPY_COLUMNS};
use crate::audit::chain;

/// The statement that stores a batch when COPY hit an existing row.
const INSERT_SQL: &str = "INSERT INTO audit_records
    (instance, chain, seq, ts, event, request_id, decision, reason, owner, subject,
     purpose, justification, route, status, record)
    SELECT $1, $2, u.* FROM unnest($3::int8[], $4::text[]::timestamptz[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
        $12::text[], $13::text[], $14::int4[], $15::text[]) AS u
    ON CONFLICT DO NOTHING";

const REFUSAL_SQL: &str = "INSERT INTO audit_ship_refusals
    (instance, chain, after_seq, seq, file, line, reason, detail, line_sha256, content)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT DO NOTHING";

/// A connection to the central database for one instance.
pub struct Store {
    client: Client,
    instance: String,
}

/// How a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Rows new in the table.
    pub inserted: u64,
    /// Whether COPY met an existing row and the batch went by INSERT.
    pub conflicted: bool,
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Connects (the connection is driven by a task of its own, which ends
    /// when the `Store` is dropped).
    pub async fn connect(
        pg: &tokio_postgres::Config,
        instance: &str,
    ) -> Result<Store, tokio_postgres::Error> {
        let (client, conn) = pg.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "audit shipping: database connection ended");
            }
        });
        Ok(Store {
            client,
            instance: instance.to_string(),
        })
    }

    /// The last record of `chain` stored for this instance.
    pub async fn position(&self, chain: &str) -> Result<Position, tokio_postgres::Error> {
        let row = self
            .client
            .query_opt(
                "SELECT seq, record FROM audit_records WHERE instance = $1 AND chain = $2
                 ORDER BY seq DESC LIMIT 1",
                &[&self.instance, &chain],
            )
            .await?;
        Ok(match row {
            None => Position::default(),
            Some(r) => {
                let seq: i64 = r.get(0);
                let record: String = r.get(1);
                Position {
                    seq: u64::try_from(seq).unwrap_or(0),
                    hash: chain::parse_line(record.as_bytes()).ok().map(|p| p.hash),
                }
            }
        })
    }

    /// Stores a batch and its refusals in one transaction.
    pub async fn store(&mut self, batch: &Batch) -> Result<Stored, tokio_postgres::Error> {
        if batch.rows.is_empty() && batch.refused.is_empty() {
            return Ok(Stored {
                inserted: 0,
                conflicted: false,
            });
        }
        match self.store_with(batch, false).await {
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let stored = self.store_with(batch, true).await?;
                Ok(Stored {
                    conflicted: true,
                    ..stored
                })
            }
            other => other,
        }
    }

    async fn store_with(
        &mut self,
        batch: &Batch,
        on_conflict: bool,
    ) -> Result<Stored, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        let inserted = if batch.rows.is_empty() {
            0
        } else if on_conflict {
            insert_rows(&tx, &self.instance, batch).await?
        } else {
            copy_rows(&tx, &self.instance, batch).await?
        };
        for r in &batch.refused {
            let detail = r.reason.to_string();
            tx.execute(
                REFUSAL_SQL,
                &[
                    &self.instance,
                    &batch.chain,
                    &as_i64(r.after_seq),
                    &r.seq.map(as_i64),
                    &r.file.display().to_string(),
                    &as_i64(r.line),
                    &r.reason.code(),
                    &row::column(&detail),
                    &r.sha256,
                    &r.content,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Stored {
            inserted,
            conflicted: false,
        })
    }

    /// The stored record of `chain` at `seq`, if any.
    pub async fn record_at(
        &self,
        chain: &str,
        seq: u64,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let row = self
            .client
            .query_opt(
                "SELECT record FROM audit_records WHERE instance = $1 AND chain = $2 AND seq = $3
                 ORDER BY ts LIMIT 1",
                &[&self.instance, &chain, &as_i64(seq)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Refusals of `chain` placed after a seq in `[from, to)`.
    pub async fn refusals_between(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> Result<i64, tokio_postgres::Error> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM audit_ship_refusals
                 WHERE instance = $1 AND chain = $2 AND after_seq >= $3 AND after_seq < $4",
                &[&self.instance, &chain, &as_i64(from), &as_i64(to)],
            )
            .await?;
        Ok(row.get(0))
    }
}

/// COPY: the rows as one text payload.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    instance: &str,
    batch: &Batch,
) -> Result<u64, tokio_postgres::Error> {
    let mut buf = Vec::with_capacity(batch.bytes + batch.rows.len() * 256);
    for r in &batch.rows {
        r.copy_line(instance, &batch.chain, &mut buf);
    }
    let sink = tx
        .copy_in(&format!("COPY audit_records ({COPY_COLUMNS}) FROM STDIN"))
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(buf)).await?;
    sink.finish().await
}

/// INSERT … ON CONFLICT DO NOTHING from arrays (one statement per batch).
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    instance: &str,
    batch: &Batch,
) -> Result<u64, tokio_postgres::Error> {
    let rows = &batch.rows;
    let seqs: Vec<i64> = rows.iter().map(|r| as_i64(r.seq)).collect();
    let ts: Vec<String> = rows
        .iter()
        .map(|r| row::pg_timestamp(r.ts_micros))
        .collect();
    let text = |f: fn(&row::Columns) -> &Option<String>| -> Vec<Option<&str>> {
        rows.iter().map(|r| f(&r.cols).as_deref()).collect()
    };
    let event = text(|c| &c.event);
    let request_id = text(|c| &c.request_id);
    let decision = text(|c| &c.decision);
    let reason = text(|c| &c.reason);
    let owner = text(|c| &c.owner);
    let subject = text(|c| &c.subject);
    let purpose = text(|c| &c.purpose);
    let justification = text(|c| &c.justification);
    let route = text(|c| &c.route);
    let status: Vec<Option<i32>> = rows.iter().map(|r| r.cols.status).collect();
    let record: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
    tx.execute(
        INSERT_SQL,
        &[
            &instance,
            &batch.chain,
            &seqs,
            &ts,
            &event,
            &request_id,
            &decision,
            &reason,
            &owner,
            &subject,
            &purpose,
            &justification,
            &route,
            &status,
            &record,
        ],
    )
    .await
}
