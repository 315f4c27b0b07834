//! The `consent:` config section (the PostgreSQL consent backend): raw YAML
//! shape and its validation into `PgConsentConfig`. Kept out of `config.rs`
//! so that the shared config file only gains a field. The database password
//! never comes from the config file itself: a URL that embeds one is refused.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{line_of, ConfigError};

/// The validated `consent:` section.
#[derive(Debug, Clone)]
pub struct PgConsentConfig {
    /// Connection settings from `postgres_url` (never holds a password here;
    /// it is added from `password_env` / `password_file` at start).
    pub pg: tokio_postgres::Config,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How long a cached answer is used without asking the database.
    pub cache_ttl: Duration,
    /// How old a cached answer may get while the database cannot answer.
    pub max_staleness: Duration,
    pub cache_max_entries: usize,
    pub pool_size: usize,
    /// Bound of one lookup (pool wait + connect + query).
    pub lookup_timeout: Duration,
}

/// The `consent:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPgConsent {
    postgres_url: Spanned<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default = "default_ttl")]
    cache_ttl_seconds: u64,
    #[serde(default)]
    max_staleness_seconds: Option<Spanned<u64>>,
    #[serde(default = "default_entries")]
    cache_max_entries: usize,
    #[serde(default = "default_pool")]
    pool_size: usize,
    #[serde(default = "default_lookup_ms")]
    lookup_timeout_ms: u64,
}

fn default_ttl() -> u64 {
    30
}
fn default_entries() -> usize {
    100_000
}
fn default_pool() -> usize {
    16
}
fn default_lookup_ms() -> u64 {
    500
}

/// Default of `max_staleness_seconds`.
const DEFAULT_STALENESS_SECONDS: u64 = 300;

impl RawPgConsent {
    /// Validates the section (`section` is its whole span, for errors that
    /// have no finer location).
    pub fn validate(
        section: Spanned<RawPgConsent>,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<PgConsentConfig, ConfigError> {
        let at = line_of(&section);
        let raw = section.value;
        let url = &raw.postgres_url;
        let mut pg = tokio_postgres::Config::from_str(&url.value).map_err(|e| {
            ConfigError::at(file, url, format!("consent.postgres_url: not a PostgreSQL URL: {e}"))
        })?;
        if pg.get_password().is_some() {
            return Err(ConfigError::at(
                file,
                url,
                "consent.postgres_url embeds a password; put it in an environment variable (consent.password_env) or a file (consent.password_file) instead",
            ));
        }
        if raw.password_env.is_some() && raw.password_file.is_some() {
            return Err(ConfigError::new(
                file,
                at,
                "consent: set at most one of password_env and password_file",
            ));
        }
        let ttl = Duration::from_secs(raw.cache_ttl_seconds);
        let staleness_secs = raw.max_staleness_seconds.as_ref().map(|s| s.value);
        let staleness = Duration::from_secs(staleness_secs.unwrap_or(DEFAULT_STALENESS_SECONDS));
        if staleness < ttl {
            let line = raw.max_staleness_seconds.as_ref().and_then(line_of).or(at);
            return Err(ConfigError::new(
                file,
                line,
                "consent.max_staleness_seconds must be at least cache_ttl_seconds",
            ));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("purposegate");
        }
        Ok(PgConsentConfig {
            pg,
            password_env: raw.password_env,
            password_file: raw.password_file.as_deref().map(resolve),
            cache_ttl: ttl,
            max_staleness: staleness,
            cache_max_entries: raw.cache_max_entries.max(1),
            pool_size: raw.pool_size.clamp(1, 1024),
            lookup_timeout: Duration::from_millis(raw.lookup_timeout_ms.max(1)),
        })
    }
}

/// Why the database password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("environment variable {0} (consent.password_env) is not set")]
    Env(String),
    #[error("cannot read consent.password_file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PgConsentConfig {
    /// The connection settings with the password added from its source.
    /// Reads a file: call at start, not on the request path.
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
            pg.connect_timeout(self.lookup_timeout.max(Duration::from_secs(2)));
        }
        Ok(pg)
    }
}
