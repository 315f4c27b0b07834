//! `purposegate consent migrate|import`: schema and data management for the
//! PostgreSQL consent backend named in a config's `consent:` section.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::fail;
use crate::config::Config;
use crate::consent::file::ConsentData;
use crate::consent::migrate;

#[derive(Subcommand)]
pub enum ConsentCommand {
    /// Apply the SQL migrations (migrations/) not yet applied to the consent database.
    Migrate {
        /// Config file with a `consent:` (PostgreSQL) section.
        #[arg(long, env = "PURPOSEGATE_CONFIG")]
        config: PathBuf,
    },
    /// Load a consent file (docs/reference.md §5 YAML) into the consent database in one transaction;
    /// users and orgs it names get exactly its records, others are left alone.
    Import {
        /// Config file with a `consent:` (PostgreSQL) section.
        #[arg(long, env = "PURPOSEGATE_CONFIG")]
        config: PathBuf,
        /// The consent YAML file to load.
        file: PathBuf,
    },
}

/// Runs a `consent` subcommand.
pub fn run(cmd: ConsentCommand) -> ExitCode {
    let result = match cmd {
        ConsentCommand::Migrate { config } => migrate_cmd(&config),
        ConsentCommand::Import { config, file } => import_cmd(&config, &file),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Connects with the config's `consent:` settings (password from its source)
/// and runs `work` on a single connection.
fn with_client<T>(
    config: &Path,
    work: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let Some(db) = &config.consent_db else {
        return Err(format!(
            "{}: no consent: section (the PostgreSQL backend is not configured)",
            config.file.display()
        ));
    };
    let pg = db.connect_config().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let (mut client, conn) = pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to the consent database: {e}"))?;
        let driver = tokio::spawn(conn);
        let result = work(&mut client).await.map_err(describe);
        drop(client);
        let _ = driver.await;
        result
    })
}

/// A database error with the server's message when there is one.
fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("consent database: {}: {}", db.severity(), db.message()),
        None => format!("consent database: {e}"),
    }
}

fn migrate_cmd(config: &Path) -> Result<String, String> {
    let applied = with_client(config, async |c| migrate::migrate(c).await)?;
    Ok(if applied.is_empty() {
        format!(
            "ok: schema up to date ({} migrations)",
            migrate::MIGRATIONS.len()
        )
    } else {
        format!("ok: applied {}", applied.join(", "))
    })
}

fn import_cmd(config: &Path, file: &Path) -> Result<String, String> {
    let data = ConsentData::load(file).map_err(|e| e.to_string())?;
    let report = with_client(config, async |c| migrate::import(c, &data).await)?;
    Ok(format!(
        "ok: imported {} users and {} orgs ({} periods) from {}",
        report.users,
        report.orgs,
        report.periods,
        file.display()
    ))
}
