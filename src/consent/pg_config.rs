//! The `consent:` config section (the PostgreSQL consent backend): raw YAML
//! shape and its validation into `PgConsentConfig`. Kept out of `config.rs`
//! so that the shared config file only gains a field. The database password
//! never comes from the config file itself: a URL that embeds one is refused.

use std::path::{Path, PathBuf};
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
        let mut pg = crate::config::postgres_url(
            file,
            "consent",
            url,
            at,
            raw.password_env.is_some() && raw.password_file.is_some(),
        )?;
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

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn config(consent: &str) -> String {
        format!(
            "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\n{consent}upstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\n"
        )
    }

    #[test]
    fn parses_the_section_with_defaults() {
        let text = config("consent:\n  postgres_url: \"postgres://pg@db.internal:5433/consent\"\n  password_file: \"secrets/pg\"\n");
        let c = Config::parse(Path::new("/etc/pg/config.yaml"), &text).unwrap();
        let db = c.consent_db.unwrap();
        assert_eq!(db.pg.get_user(), Some("pg"));
        assert_eq!(db.pg.get_ports(), &[5433]);
        assert_eq!(db.cache_ttl.as_secs(), 30);
        assert_eq!(db.max_staleness.as_secs(), 300);
        assert_eq!(db.pool_size, 16);
        assert_eq!(
            db.password_file.as_deref(),
            Some(Path::new("/etc/pg/secrets/pg"))
        );
        // Kept out of the policy files even though there is no consent file.
        assert_eq!(c.consent_file, Path::new("/etc/pg/policies/consent.yaml"));
    }

    #[test]
    fn a_password_in_the_url_is_refused_in_both_syntaxes() {
        for url in [
            "postgres://pg:secret@db/consent",
            "host=db user=pg password=secret dbname=consent",
        ] {
            let text = config(&format!("consent:\n  postgres_url: \"{url}\"\n"));
            let e = Config::parse(Path::new("c.yaml"), &text).unwrap_err();
            assert_eq!(e.line, Some(10), "{e}");
            assert!(e.message.contains("embeds a password"), "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn the_password_comes_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let text =
            config("consent:\n  postgres_url: \"postgres://pg@db/c\"\n  password_file: \"pw\"\n");
        let c = Config::parse(&dir.path().join("c.yaml"), &text).unwrap();
        let pg = c.consent_db.unwrap().connect_config().unwrap();
        assert_eq!(pg.get_password(), Some(&b"from-file"[..]));

        let var = "PURPOSEGATE_TEST_PG_PASSWORD_UNSET_4242";
        let text = config(&format!(
            "consent:\n  postgres_url: \"postgres://pg@db/c\"\n  password_env: \"{var}\"\n"
        ));
        let c = Config::parse(&dir.path().join("c.yaml"), &text).unwrap();
        let e = c.consent_db.unwrap().connect_config().unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
    }

    #[test]
    fn exactly_one_consent_source() {
        let both = config(
            "consent_file: \"consent.yaml\"\nconsent:\n  postgres_url: \"postgres://pg@db/c\"\n",
        );
        let e = Config::parse(Path::new("c.yaml"), &both).unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
        assert!(e.line.is_some(), "{e}");
        let neither = config("");
        let e = Config::parse(Path::new("c.yaml"), &neither).unwrap_err();
        assert!(e.message.contains("missing consent_file"), "{e}");
        let unknown = config("consent:\n  postgres_url: \"postgres://pg@db/c\"\n  cache_ttl: 5\n");
        let e = Config::parse(Path::new("c.yaml"), &unknown).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
    }
}
