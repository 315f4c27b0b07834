//! The `audit.ship` config section (docs/reference.md §9): where the central
//! PostgreSQL database is, where its password comes from (never the config
//! file: a URL that embeds one is refused), the `instance` name of this
//! replica, and the shipper's batching and retry settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{line_of, ConfigError};

/// The validated `audit.ship` section.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// Connection settings from `postgres_url` (no password here; it is added
    /// from `password_env` / `password_file` when connecting).
    pub pg: tokio_postgres::Config,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// This replica's name in the `instance` column (resolved: the configured
    /// value, else `$PURPOSEGATE_INSTANCE`, else the host name).
    pub instance: String,
    /// Most records in one batch (one transaction).
    pub batch_records: usize,
    /// Most bytes of records in one batch (bounds the shipper's memory).
    pub batch_bytes: usize,
    /// How often the local log is looked at when everything is shipped.
    pub interval: Duration,
    /// Bound of connecting and of one batch's round trips; a database that
    /// does not answer within it is treated as down (reconnect with backoff).
    pub timeout: Duration,
    /// Longest wait between two reconnection attempts.
    pub retry_max: Duration,
    /// Delete rotated files once all their records are stored centrally.
    pub delete_shipped: bool,
    /// How long the final shipping at shutdown may take (after the request
    /// drain of `shutdown_grace_seconds`).
    pub drain: Duration,
}

/// `audit.ship` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShip {
    postgres_url: Spanned<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    instance: Option<Spanned<String>>,
    #[serde(default)]
    batch_records: Option<Spanned<usize>>,
    #[serde(default)]
    batch_bytes: Option<Spanned<usize>>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
    #[serde(default = "default_true")]
    delete_shipped: bool,
    #[serde(default = "default_drain_seconds")]
    drain_seconds: u64,
}

fn default_interval_ms() -> u64 {
    200
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_max_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_drain_seconds() -> u64 {
    30
}

/// Default of `batch_records`: large enough that the per-transaction cost
/// disappears, small enough that one batch is a few MB.
pub const DEFAULT_BATCH_RECORDS: usize = 5000;
/// Default of `batch_bytes`.
pub const DEFAULT_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Upper bound of `batch_records`.
const MAX_BATCH_RECORDS: usize = 100_000;
/// Longest `instance` (it is part of every row's key).
const MAX_INSTANCE: usize = 128;

/// `application_name` of the shipper's connections (unless the URL names one).
pub const APPLICATION_NAME: &str = "purposegate-audit-ship";

/// The environment variable naming the instance when the config does not.
pub const INSTANCE_ENV: &str = "PURPOSEGATE_INSTANCE";

/// This replica's instance name: `configured`, else `$PURPOSEGATE_INSTANCE`
/// (when set and not empty), else the host name, else `unknown`.
pub fn resolve_instance(configured: Option<&str>) -> String {
    crate::audit::header::resolve_instance(configured)
}

/// Why an instance name is unusable, if it is.
pub fn instance_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_INSTANCE {
        return Some(format!("longer than {MAX_INSTANCE} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Some("contains control characters".into());
    }
    None
}

impl RawShip {
    /// Validates the section (`section` spans all of it).
    pub fn validate(
        section: Spanned<RawShip>,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<ShipConfig, ConfigError> {
        let at = line_of(&section);
        let raw = section.value;
        let url = &raw.postgres_url;
        let pg = crate::config::postgres_url(
            file,
            "audit.ship",
            url,
            at,
            raw.password_env.is_some() && raw.password_file.is_some(),
        )?;
        if let Some(i) = &raw.instance {
            if let Some(why) = instance_problem(i.value.trim()) {
                return Err(ConfigError::at(
                    file,
                    i,
                    format!("audit.ship.instance: {why}"),
                ));
            }
        }
        let instance = resolve_instance(raw.instance.as_ref().map(|i| i.value.as_str()));
        if let Some(why) = instance_problem(&instance) {
            return Err(ConfigError::new(
                file,
                at,
                format!("audit.ship: the instance name `{instance}` (from ${INSTANCE_ENV} or the host name) {why}; set audit.ship.instance"),
            ));
        }
        if let Some(r) = raw
            .batch_records
            .as_ref()
            .filter(|r| r.value == 0 || r.value > MAX_BATCH_RECORDS)
        {
            return Err(ConfigError::at(
                file,
                r,
                format!("audit.ship.batch_records: must be 1..={MAX_BATCH_RECORDS}"),
            ));
        }
        if let Some(b) = raw.batch_bytes.as_ref().filter(|b| b.value < 64 * 1024) {
            return Err(ConfigError::at(
                file,
                b,
                "audit.ship.batch_bytes: must be at least 65536",
            ));
        }
        Ok(ShipConfig {
            pg,
            password_env: raw.password_env,
            password_file: raw.password_file.as_deref().map(resolve),
            instance,
            batch_records: raw.batch_records.map_or(DEFAULT_BATCH_RECORDS, |r| r.value),
            batch_bytes: raw.batch_bytes.map_or(DEFAULT_BATCH_BYTES, |b| b.value),
            interval: Duration::from_millis(raw.interval_ms.clamp(10, 60_000)),
            timeout: Duration::from_millis(raw.timeout_ms.clamp(100, 600_000)),
            retry_max: Duration::from_millis(raw.retry_max_ms.clamp(100, 600_000)),
            delete_shipped: raw.delete_shipped,
            drain: Duration::from_secs(raw.drain_seconds.min(3600)),
        })
    }
}

/// Why the database password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("environment variable {0} (audit.ship.password_env) is not set")]
    Env(String),
    #[error("cannot read audit.ship.password_file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ShipConfig {
    /// A config for `pg` with the defaults of every other key (tests, tools).
    pub fn new(pg: tokio_postgres::Config, instance: &str) -> ShipConfig {
        ShipConfig {
            pg,
            password_env: None,
            password_file: None,
            instance: instance.to_string(),
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            interval: Duration::from_millis(default_interval_ms()),
            timeout: Duration::from_millis(default_timeout_ms()),
            retry_max: Duration::from_millis(default_retry_max_ms()),
            delete_shipped: true,
            drain: Duration::from_secs(default_drain_seconds()),
        }
    }

    /// The connection settings with the password added from its source.
    /// Reads a file: call off the runtime or at start.
    pub fn connect_config(&self) -> Result<tokio_postgres::Config, PasswordError> {
        let mut pg = self.pg.clone();
        if let Some(var) = &self.password_env {
            let pw = std::env::var(var).map_err(|_| PasswordError::Env(var.clone()))?;
            pg.password(pw);
        }
        if let Some(path) = &self.password_file {
            let pw = std::fs::read_to_string(path).map_err(|source| PasswordError::File {
                path: path.clone(),
                source,
            })?;
            pg.password(pw.trim_end_matches(['\r', '\n']));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name(APPLICATION_NAME);
        }
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        Ok(pg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(ship: &str) -> String {
        format!(
            "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"c.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\n{ship}"
        )
    }

    #[test]
    fn parses_the_contract_example_with_defaults() {
        let text = config("  ship:\n    postgres_url: \"postgres://purposegate@db.internal:5432/audit\"\n    password_env: \"PURPOSEGATE_AUDIT_PG_PASSWORD\"\n    instance: \"content-store-0\"\n");
        let c = Config::parse(Path::new("/etc/pg/c.yaml"), &text).unwrap();
        let s = c.audit.ship.unwrap();
        assert_eq!(s.instance, "content-store-0");
        assert_eq!(s.pg.get_user(), Some("purposegate"));
        assert_eq!(s.pg.get_dbname(), Some("audit"));
        assert_eq!(s.batch_records, DEFAULT_BATCH_RECORDS);
        assert!(s.delete_shipped);
        assert_eq!(
            s.password_env.as_deref(),
            Some("PURPOSEGATE_AUDIT_PG_PASSWORD")
        );
        assert!(Config::parse(Path::new("c.yaml"), &config(""))
            .unwrap()
            .audit
            .ship
            .is_none());
    }

    #[test]
    fn a_password_in_the_url_is_refused_at_its_line() {
        for url in [
            "postgres://pg:hunter2@db/audit",
            "host=db user=pg password=hunter2 dbname=audit",
        ] {
            let text = config(&format!("  ship:\n    postgres_url: \"{url}\"\n"));
            let e = Config::parse(Path::new("c.yaml"), &text).unwrap_err();
            assert_eq!(e.line, Some(15), "{e}");
            assert!(e.message.contains("embeds a password"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn bad_keys_point_at_their_line() {
        let unknown = config("  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    batch: 5\n");
        let e = Config::parse(Path::new("c.yaml"), &unknown).unwrap_err();
        assert_eq!(e.line, Some(16), "{e}");
        let zero =
            config("  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    batch_records: 0\n");
        let e = Config::parse(Path::new("c.yaml"), &zero).unwrap_err();
        assert_eq!(e.line, Some(16), "{e}");
        assert!(e.message.contains("batch_records"), "{e}");
        let both = config("  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    password_env: X\n    password_file: y\n");
        let e = Config::parse(Path::new("c.yaml"), &both).unwrap_err();
        assert!(e.message.contains("at most one"), "{e}");
        let ctl =
            config("  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    instance: \"a\\tb\"\n");
        let e = Config::parse(Path::new("c.yaml"), &ctl).unwrap_err();
        assert_eq!(e.line, Some(16), "{e}");
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let text =
            config("  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    password_file: pw\n");
        let c = Config::parse(&dir.path().join("c.yaml"), &text).unwrap();
        let pg = c.audit.ship.unwrap().connect_config().unwrap();
        assert_eq!(pg.get_password(), Some(&b"s3cret"[..]));
        let var = "PURPOSEGATE_TEST_SHIP_PW_UNSET_7311";
        let text = config(&format!(
            "  ship:\n    postgres_url: \"postgres://pg@db/a\"\n    password_env: {var}\n"
        ));
        let c = Config::parse(&dir.path().join("c.yaml"), &text).unwrap();
        let e = c.audit.ship.unwrap().connect_config().unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
    }

    #[test]
    fn instance_resolution_order() {
        assert_eq!(resolve_instance(Some(" pod-3 ")), "pod-3");
        // The environment is process-wide: only the configured value and the
        // host-name fallback are checked here without touching it.
        let resolved = resolve_instance(None);
        assert!(instance_problem(&resolved).is_none(), "{resolved}");
        match std::env::var(INSTANCE_ENV) {
            Ok(v) if !v.trim().is_empty() => assert_eq!(resolved, v.trim()),
            _ => assert_eq!(
                Some(resolved),
                crate::audit::header::host_name().or(Some("unknown".into()))
            ),
        }
    }
}
