//! The central schema: the SQL migrations under `migrations/audit/`
//! (embedded, applied in order, each in its own transaction under an
//! advisory lock and recorded in `audit_schema_migrations`, so running them
//! again or from several replicas at once changes nothing), and the monthly
//! partitions `audit migrate` creates ahead of time.

use tokio_postgres::Client;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "0001_audit_records",
    include_str!("../../../migrations/audit/0001_audit_records.sql"),
)];

/// Serializes concurrent `audit migrate` runs (distinct from the consent
/// migrations' key: the two may share a database).
const LOCK_KEY: i64 = 0x7075_7270_6f73_6561; // "purposea"

/// Recorded versions (its own table: consent's `schema_migrations` numbers
/// its versions independently).
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS audit_schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Default number of months `audit migrate` creates beyond the current one.
pub const DEFAULT_MONTHS_AHEAD: u32 = 3;

/// What `audit migrate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Migrations applied by this run.
    pub applied: Vec<&'static str>,
    /// Monthly partitions created by this run.
    pub partitions: Vec<String>,
}

/// Applies the migrations not yet recorded, then makes sure the partitions
/// of last month, this month and `months_ahead` months exist.
pub async fn migrate(
    client: &mut Client,
    months_ahead: u32,
) -> Result<MigrateReport, tokio_postgres::Error> {
    let mut report = MigrateReport::default();
    for (version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.batch_execute(CREATE_MIGRATIONS_TABLE).await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM audit_schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO audit_schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
            report.applied.push(*name);
        }
        tx.commit().await?;
    }
    report.partitions = ensure_partitions(client, months_ahead).await?;
    Ok(report)
}

/// Creates the missing monthly partitions from last month to `months_ahead`
/// months after this one (UTC), under the migration lock.
pub async fn ensure_partitions(
    client: &mut Client,
    months_ahead: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let months = i32::try_from(months_ahead.min(120)).unwrap_or(120) + 2;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    let rows = tx
        .query(
            "SELECT audit_ensure_partitions(
                 (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date, $1)",
            &[&months],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
