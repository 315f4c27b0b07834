//! Schema and data management for the PostgreSQL consent backend: the SQL
//! migrations shipped in `migrations/` (embedded, applied in order, each in
//! its own transaction under an advisory lock, recorded in
//! `schema_migrations`, so running them again changes nothing), and the import
//! of a docs/reference.md §5 consent file in one transaction.

use tokio_postgres::Client;

use super::file::ConsentData;
use super::Period;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_consent_tables",
        include_str!("../../migrations/0001_consent_tables.sql"),
    ),
    (
        2,
        "0002_consent_notify",
        include_str!("../../migrations/0002_consent_notify.sql"),
    ),
];

/// Serializes concurrent `migrate` runs (e.g. several replicas at once).
const LOCK_KEY: i64 = 0x7075_7270_6f73_6567; // "purposeg"

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the migrations not yet recorded; returns the names applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.batch_execute(CREATE_MIGRATIONS_TABLE).await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
            applied.push(*name);
        }
        tx.commit().await?;
    }
    Ok(applied)
}

/// What an import wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub users: usize,
    pub orgs: usize,
    pub periods: usize,
}

/// Milliseconds since the epoch as a timestamptz, exactly.
const TS: &str = "(timestamptz 'epoch' + $1::int8 * interval '1 millisecond')";

/// Loads a consent registry into the database in one transaction: every user
/// and org named in it gets exactly the records of the file (its earlier rows
/// are replaced); users and orgs not named are left alone.
pub async fn import(
    client: &mut Client,
    data: &ConsentData,
) -> Result<ImportReport, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let del_outs = tx
        .prepare("DELETE FROM consent_user_opt_outs WHERE user_id = $1")
        .await?;
    let del_deletion = tx
        .prepare("DELETE FROM consent_deletion_requests WHERE user_id = $1")
        .await?;
    let del_ins = tx
        .prepare("DELETE FROM consent_org_opt_ins WHERE org_id = $1")
        .await?;
    let ins_out = tx
        .prepare(&period_insert("consent_user_opt_outs", "user_id"))
        .await?;
    let ins_in = tx
        .prepare(&period_insert("consent_org_opt_ins", "org_id"))
        .await?;
    let ins_deletion = tx
        .prepare(&format!(
            "INSERT INTO consent_deletion_requests (user_id, requested_at) VALUES ($2, {TS})"
        ))
        .await?;
    let mut report = ImportReport::default();
    for (id, user) in &data.users {
        tx.execute(&del_outs, &[id]).await?;
        tx.execute(&del_deletion, &[id]).await?;
        for p in &user.training_opt_outs {
            insert_period(&tx, &ins_out, id, p).await?;
            report.periods += 1;
        }
        if let Some(at) = user.deletion_requested_at {
            tx.execute(&ins_deletion, &[&at, id]).await?;
        }
        report.users += 1;
    }
    for (id, org) in &data.orgs {
        tx.execute(&del_ins, &[id]).await?;
        for p in &org.api_training_opt_ins {
            insert_period(&tx, &ins_in, id, p).await?;
            report.periods += 1;
        }
        report.orgs += 1;
    }
    tx.commit().await?;
    Ok(report)
}

fn period_insert(table: &str, column: &str) -> String {
    let until = "(timestamptz 'epoch' + $3::int8 * interval '1 millisecond')";
    format!("INSERT INTO {table} ({column}, valid_from, valid_until) VALUES ($2, {TS}, {until})")
}

async fn insert_period(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    id: &str,
    p: &Period,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(stmt, &[&p.from, &id, &p.until]).await
}
