//! `purposegate audit migrate | verify --postgres | report | ship`: the
//! central audit database (docs/reference.md §9). Each command runs on a
//! single-threaded runtime of its own and one connection.
//!
//! The password never travels on the command line: `--postgres` URLs that
//! embed one are refused; it comes from `--password-file` or, as with
//! `psql`, from `PGPASSWORD`. `migrate` and `ship` take everything from the
//! config's `audit.ship` section instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Args;

use super::fail;
use crate::audit::ship::report::{self, Format, ReportQuery, Selection};
use crate::audit::ship::{schema, verify, Shipper};
use crate::config::Config;

/// How a command reaches the database.
#[derive(Args, Debug, Clone)]
pub struct PgArgs {
    /// The central audit database, e.g. postgres://auditor@db:5432/audit (no password in it).
    #[arg(long)]
    pub postgres: Option<String>,
    /// File holding the database password (default: $PGPASSWORD, if set).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("selection").required(true).multiple(false)))]
pub struct ReportArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    /// Accesses to this user's content.
    #[arg(long, group = "selection")]
    pub owner: Option<String>,
    /// Accesses by this employee (the token's `sub`).
    #[arg(long, group = "selection")]
    pub subject: Option<String>,
    /// Accesses under this case, ticket or matter id.
    #[arg(long, group = "selection")]
    pub justification: Option<String>,
    /// Only accesses at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only accesses before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// With --owner: show the employee's identity (subject, roles, token id, client address).
    #[arg(long)]
    pub reveal_subjects: bool,
}

/// Connection settings from `--postgres` and the password source.
fn pg_config(args: &PgArgs) -> Result<tokio_postgres::Config, String> {
    let Some(url) = &args.postgres else {
        return Err("--postgres URL is required".into());
    };
    let mut pg = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("--postgres: not a PostgreSQL URL: {e}"))?;
    if pg.get_password().is_some() {
        return Err("--postgres embeds a password (visible to every user of this machine); use --password-file or PGPASSWORD".into());
    }
    if let Some(path) = &args.password_file {
        let pw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
        pg.password(pw.trim_end_matches(['\r', '\n']));
    } else if let Ok(pw) = std::env::var("PGPASSWORD") {
        pg.password(pw);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("purposegate-audit");
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(10));
    }
    Ok(pg)
}

/// Runs `work` on one connection made with `pg`.
fn with_client<T>(
    pg: tokio_postgres::Config,
    work: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, String>,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let (mut client, conn) = pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to the audit database: {e}"))?;
        let driver = tokio::spawn(conn);
        let result = work(&mut client).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

/// The config's `audit.ship` section.
fn ship_config(config: &Path) -> Result<(Config, crate::audit::ship::ShipConfig), String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let Some(ship) = config.audit.ship.clone() else {
        return Err(format!(
            "{}: no audit.ship section (shipping to PostgreSQL is not configured)",
            config.file.display()
        ));
    };
    Ok((config, ship))
}

/// `audit migrate --config FILE`.
pub fn migrate(config: &Path, months_ahead: u32) -> ExitCode {
    let result = ship_config(config).and_then(|(_, ship)| {
        let pg = ship.connect_config().map_err(|e| e.to_string())?;
        with_client(pg, async |c| {
            schema::migrate(c, months_ahead)
                .await
                .map_err(|e| format!("audit database: {}", crate::audit::ship::describe(&e)))
        })
    });
    match result {
        Ok(r) => {
            let applied = if r.applied.is_empty() {
                format!(
                    "schema up to date ({} migration(s))",
                    schema::MIGRATIONS.len()
                )
            } else {
                format!("applied {}", r.applied.join(", "))
            };
            let parts = if r.partitions.is_empty() {
                "no partition needed".to_string()
            } else {
                format!("created partitions {}", r.partitions.join(", "))
            };
            println!("ok: {applied}; {parts}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("audit migrate: {e}")),
    }
}

/// `audit verify --postgres URL`.
pub fn verify_postgres(pg: &PgArgs, instance: Option<&str>, public_key: Option<&Path>) -> ExitCode {
    let key = match public_key.map(crate::audit::sign::PublicKey::load) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return fail(format!("audit verify: {e}")),
    };
    let pg = match pg_config(pg) {
        Ok(pg) => pg,
        Err(e) => return fail(format!("audit verify: {e}")),
    };
    let result = with_client(pg, async |c| {
        Ok(verify::verify(c, instance, key.as_ref()).await)
    });
    match result {
        Ok(Ok(report)) => {
            println!("{}", verify::render(&report, key.as_ref()));
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(format!("audit verify failed: {e}")),
        Err(e) => fail(format!("audit verify: {e}")),
    }
}

/// An RFC 3339 time as microseconds since the epoch.
fn micros(flag: &str, text: Option<&str>) -> Result<Option<i64>, String> {
    text.map(|t| {
        crate::time::parse_rfc3339(t)
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| format!("{flag}: `{t}` is not an RFC 3339 time"))
    })
    .transpose()
}

/// `audit report --postgres URL ...`.
pub fn report(a: &ReportArgs) -> ExitCode {
    let selection = match (&a.owner, &a.subject, &a.justification) {
        (Some(o), None, None) => Selection::Owner(o.clone()),
        (None, Some(s), None) => Selection::Subject(s.clone()),
        (None, None, Some(j)) => Selection::Justification(j.clone()),
        _ => return fail("audit report: give exactly one of --owner, --subject, --justification"),
    };
    let bounds = micros("--since", a.since.as_deref())
        .and_then(|s| Ok((s, micros("--until", a.until.as_deref())?)));
    let (since, until) = match bounds {
        Ok(b) => b,
        Err(e) => return fail(format!("audit report: {e}")),
    };
    let q = ReportQuery {
        selection,
        since,
        until,
        reveal_subjects: a.reveal_subjects,
    };
    let pg = match pg_config(&a.pg) {
        Ok(pg) => pg,
        Err(e) => return fail(format!("audit report: {e}")),
    };
    let format = a.format;
    let result = with_client(pg, async |c| {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
        let n = report::run(c, &q, format, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        Ok(n)
    });
    match result {
        Ok(n) => {
            let note = if q.withholds_identity() {
                " (employee identities withheld; --reveal-subjects shows them)"
            } else {
                ""
            };
            eprintln!("{n} access(es){note}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("audit report: {e}")),
    }
}

/// `audit ship --config FILE`: ships the log of a proxy that is not
/// running (e.g. a volume left by a crashed pod) and deletes the rotated
/// files then stored. Every complete line of a log no writer holds is
/// durable, so the watermark is unbounded; the writer's lock is checked.
pub fn ship(config: &Path, timeout: Duration) -> ExitCode {
    let (config, ship) = match ship_config(config) {
        Ok(c) => c,
        Err(e) => return fail(format!("audit ship: {e}")),
    };
    let path = config.audit.path.clone();
    let _lock = match lock_shared(&path) {
        Ok(l) => l,
        Err(e) => return fail(format!("audit ship: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("audit ship: cannot start the runtime: {e}")),
    };
    let started = Instant::now();
    let summary = rt.block_on(async move {
        let mut registry = prometheus_client::registry::Registry::with_prefix("purposegate");
        let handle =
            Shipper::start(&ship, &path, || u64::MAX, &mut registry).map_err(|e| e.to_string())?;
        Ok::<_, String>(handle.drain(Instant::now() + timeout).await)
    });
    let s = match summary {
        Ok(s) => s,
        Err(e) => return fail(format!("audit ship: {e}")),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} records stored in {secs:.2}s ({:.0} records/s), {} rotated file(s) deleted, {} line(s) refused{}",
        if s.all_shipped { "ok" } else { "incomplete" },
        s.shipped,
        s.shipped as f64 / secs.max(1e-9),
        s.files_deleted,
        s.refused,
        s.reason.map(|r| format!(" — {r}")).unwrap_or_default()
    );
    if s.all_shipped {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A shared lock on the live file: fails while a writer holds it.
fn lock_shared(path: &Path) -> Result<Option<std::fs::File>, String> {
    use std::os::unix::io::AsRawFd;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    // SAFETY: flock only reads the descriptor number, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "{} is locked by a running purposegate; its own shipper ships it (stop it first to ship the volume offline)",
            path.display()
        ));
    }
    Ok(Some(file))
}
