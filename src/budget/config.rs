//! The `budgets:` config section (docs/reference.md §11): raw YAML shape and its
//! validation into `BudgetsConfig`. Kept out of `config.rs` so that the
//! shared config file only gains a field. As for the audit database, the
//! Redis password never comes from the config file: a URL embedding one is
//! refused, and `password_env` / `password_file` name where it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{line_of, ConfigError};

/// Default of `key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "purposegate:budget:";
/// Default of `timeout_ms`: the bound of one check on the request path.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
/// Default of `connect_timeout_ms`: the bound of one background connection attempt.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
/// The longest window a limit may have (a year): keys live as long as their window.
pub const MAX_WINDOW_SECONDS: u64 = 366 * 24 * 3600;
/// The largest `distinct_owners` / `requests` a limit may have; keeps every
/// count exact in Lua's double-precision numbers.
pub const MAX_LIMIT: u64 = 1 << 40;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    /// Distinct content owners read in the window; re-reading one costs nothing.
    DistinctOwners,
    /// Requests in the window.
    Requests,
}

impl LimitKind {
    /// The name used in config, audit records and trace details.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::DistinctOwners => "distinct_owners",
            LimitKind::Requests => "requests",
        }
    }

    /// The short tag in Redis keys and script arguments.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            LimitKind::DistinctOwners => "o",
            LimitKind::Requests => "r",
        }
    }
}

/// One limit of a purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub purpose: String,
    pub kind: LimitKind,
    /// How many owners or requests the window allows (at least 1).
    pub max: u64,
    pub window_seconds: u64,
    /// Where the limit is written (for errors found later, e.g. an unknown purpose).
    pub line: Option<u32>,
}

/// The validated `budgets:` section.
#[derive(Debug, Clone)]
pub struct BudgetsConfig {
    /// Connection settings from `redis_url` (never holds a password here; it is
    /// added from `password_env` / `password_file` at start).
    pub redis: redis::ConnectionInfo,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Key of the HMAC that turns employee and owner ids into Redis names;
    /// every replica sharing the Redis needs the same one.
    pub hash_key_file: Option<PathBuf>,
    pub key_prefix: String,
    /// Bound of one `charge` / `peek` round trip.
    pub timeout: Duration,
    /// Bound of one connection attempt (made in the background).
    pub connect_timeout: Duration,
    /// The limits in config order.
    pub limits: Vec<Limit>,
    /// The config file (for errors found later).
    pub file: PathBuf,
}

/// The `budgets:` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    redis_url: Spanned<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    hash_key_file: Option<String>,
    #[serde(default)]
    key_prefix: Option<Spanned<String>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    connect_timeout_ms: Option<Spanned<u64>>,
    limits: Spanned<Vec<Spanned<RawLimit>>>,
}

/// One entry of `budgets.limits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    purpose: String,
    #[serde(default)]
    distinct_owners: Option<u64>,
    #[serde(default)]
    requests: Option<u64>,
    window_seconds: u64,
}

impl RawBudgets {
    /// Validates the section (`section` is its whole span, for errors that
    /// have no finer location).
    pub fn validate(
        section: Spanned<RawBudgets>,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<BudgetsConfig, ConfigError> {
        let at = line_of(&section);
        let raw = section.value;
        let redis = redis_url(file, &raw.redis_url)?;
        if raw.password_env.is_some() && raw.password_file.is_some() {
            return Err(ConfigError::new(
                file,
                at,
                "budgets: set at most one of password_env and password_file",
            ));
        }
        let key_prefix = match &raw.key_prefix {
            Some(p) => key_prefix(file, p)?,
            None => DEFAULT_KEY_PREFIX.to_string(),
        };
        let timeout = millis(
            file,
            raw.timeout_ms.as_ref(),
            "timeout_ms",
            DEFAULT_TIMEOUT_MS,
        )?;
        let connect_timeout = millis(
            file,
            raw.connect_timeout_ms.as_ref(),
            "connect_timeout_ms",
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?;
        Ok(BudgetsConfig {
            redis,
            password_env: raw.password_env,
            password_file: raw.password_file.as_deref().map(resolve),
            hash_key_file: raw.hash_key_file.as_deref().map(resolve),
            key_prefix,
            timeout,
            connect_timeout,
            limits: limits(file, &raw.limits)?,
            file: file.to_path_buf(),
        })
    }
}

/// Parses `redis_url`; refuses TLS (not built in), a wildcard host and an
/// embedded password. Messages never repeat the URL (it may hold a secret).
fn redis_url(file: &Path, url: &Spanned<String>) -> Result<redis::ConnectionInfo, ConfigError> {
    let scheme = url.value.split_once("://").map(|(s, _)| s);
    if matches!(scheme, Some("rediss" | "valkeys")) {
        return Err(ConfigError::at(
            file,
            url,
            "budgets.redis_url: TLS (rediss://) is not supported by this build; use redis:// to a Redis on a trusted network",
        ));
    }
    let info = url.value.as_str().into_connection_info().map_err(|e| {
        ConfigError::at(
            file,
            url,
            format!(
                "budgets.redis_url: not a Redis URL like redis://host:6379/0 ({})",
                e
            ),
        )
    })?;
    if info.redis_settings().password().is_some() {
        return Err(ConfigError::at(
            file,
            url,
            "budgets.redis_url embeds a password; put it in an environment variable (budgets.password_env) or a file (budgets.password_file) instead",
        ));
    }
    Ok(info)
}

/// `key_prefix`: printable, no whitespace, and no `{` `}`: the employee's
/// hash tag must be the first braces of every key (Redis Cluster slots).
fn key_prefix(file: &Path, p: &Spanned<String>) -> Result<String, ConfigError> {
    let bad = p
        .value
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control());
    if bad || p.value.len() > 64 {
        return Err(ConfigError::at(
            file,
            p,
            "budgets.key_prefix: at most 64 printable characters without spaces, `{` or `}`",
        ));
    }
    Ok(p.value.clone())
}

fn millis(
    file: &Path,
    v: Option<&Spanned<u64>>,
    key: &str,
    default: u64,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else {
        return Ok(Duration::from_millis(default));
    };
    if v.value == 0 || v.value > 60_000 {
        return Err(ConfigError::at(
            file,
            v,
            format!("budgets.{key}: must be between 1 and 60000"),
        ));
    }
    Ok(Duration::from_millis(v.value))
}

fn limits(file: &Path, raw: &Spanned<Vec<Spanned<RawLimit>>>) -> Result<Vec<Limit>, ConfigError> {
    if raw.value.is_empty() {
        return Err(ConfigError::at(
            file,
            raw,
            "budgets.limits: list at least one limit",
        ));
    }
    let mut out: Vec<Limit> = Vec::with_capacity(raw.value.len());
    for item in &raw.value {
        let limit = limit(file, item)?;
        if out.iter().any(|l| {
            l.purpose == limit.purpose
                && l.kind == limit.kind
                && l.window_seconds == limit.window_seconds
        }) {
            return Err(ConfigError::at(
                file,
                item,
                format!(
                    "budgets.limits: {} already has a {} limit with a {} s window",
                    limit.purpose,
                    limit.kind.as_str(),
                    limit.window_seconds
                ),
            ));
        }
        out.push(limit);
    }
    Ok(out)
}

fn limit(file: &Path, item: &Spanned<RawLimit>) -> Result<Limit, ConfigError> {
    let r = &item.value;
    let err = |msg: String| ConfigError::at(file, item, format!("budgets.limits: {msg}"));
    if !valid_purpose(&r.purpose) {
        return Err(err(format!(
            "purpose `{}` is not a policy purpose name (letters, digits, `_`, `-`)",
            r.purpose
        )));
    }
    let (kind, max) = match (r.distinct_owners, r.requests) {
        (Some(n), None) => (LimitKind::DistinctOwners, n),
        (None, Some(n)) => (LimitKind::Requests, n),
        _ => {
            return Err(err(format!(
                "{}: set exactly one of distinct_owners and requests",
                r.purpose
            )))
        }
    };
    if max == 0 || max > MAX_LIMIT {
        return Err(err(format!(
            "{}: {} must be between 1 and {MAX_LIMIT}",
            r.purpose,
            kind.as_str()
        )));
    }
    if r.window_seconds == 0 || r.window_seconds > MAX_WINDOW_SECONDS {
        return Err(err(format!(
            "{}: window_seconds must be between 1 and {MAX_WINDOW_SECONDS}",
            r.purpose
        )));
    }
    Ok(Limit {
        purpose: r.purpose.clone(),
        kind,
        max,
        window_seconds: r.window_seconds,
        line: line_of(item),
    })
}

fn valid_purpose(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Why the Redis password or the hash key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} (budgets.password_env) is not set")]
    Env(String),
    #[error("cannot read budgets.{key} {}: {source}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("budgets.hash_key_file {} is empty", .0.display())]
    EmptyHashKey(PathBuf),
}

impl BudgetsConfig {
    /// The connection settings with the password added from its source.
    /// Reads a file: call at start, not on the request path.
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, SecretError> {
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?),
            (None, Some(path)) => Some(
                read_secret("password_file", path)?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let info = self.redis.clone();
        Ok(match password {
            Some(pw) => {
                let settings = info.redis_settings().clone().set_password(pw);
                info.set_redis_settings(settings)
            }
            None => info,
        })
    }

    /// The HMAC key for hashed ids (None: plain SHA-256). Reads a file: call
    /// at start. Trailing newlines are not part of the key.
    pub fn hash_key(&self) -> Result<Option<Vec<u8>>, SecretError> {
        let Some(path) = &self.hash_key_file else {
            return Ok(None);
        };
        let text = read_secret("hash_key_file", path)?;
        let key = text.trim_end_matches(['\r', '\n']);
        if key.is_empty() {
            return Err(SecretError::EmptyHashKey(path.clone()));
        }
        Ok(Some(key.as_bytes().to_vec()))
    }

    /// Reads the password and the hash key as `Budgets::new` does, without
    /// contacting Redis (`policy check`).
    pub fn check_secrets(&self) -> Result<(), SecretError> {
        self.connection_info()?;
        self.hash_key()?;
        Ok(())
    }

    /// The limits of one purpose, in config order.
    pub fn limits_of<'a>(&'a self, purpose: &'a str) -> impl Iterator<Item = &'a Limit> + 'a {
        self.limits.iter().filter(move |l| l.purpose == purpose)
    }

    /// Checks every limit's purpose against the policy's purposes, with the
    /// limit's `file:line` on the first that is unknown (for `policy check`
    /// and `serve`, which know the policy).
    pub fn check_purposes(&self, known: &dyn Fn(&str) -> bool) -> Result<(), ConfigError> {
        match self.limits.iter().find(|l| !known(&l.purpose)) {
            Some(l) => Err(ConfigError::new(
                &self.file,
                l.line,
                format!(
                    "budgets.limits: purpose `{}` is not a purpose of the policy",
                    l.purpose
                ),
            )),
            None => Ok(()),
        }
    }
}

fn read_secret(key: &'static str, path: &Path) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|source| SecretError::File {
        key,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn config(budgets: &str) -> String {
        format!(
            "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\n{budgets}"
        )
    }

    const CONTRACT: &str = "budgets:\n  redis_url: \"redis://127.0.0.1:6379/0\"\n  limits:\n    - {purpose: support, distinct_owners: 20, window_seconds: 86400}\n    - {purpose: training, requests: 100000, window_seconds: 3600}\n";

    #[test]
    fn parses_the_contract_example_with_defaults() {
        let c = Config::parse(Path::new("/etc/pg/c.yaml"), &config(CONTRACT)).unwrap();
        let b = c.budgets.unwrap();
        assert_eq!(b.key_prefix, "purposegate:budget:");
        assert_eq!(b.timeout.as_millis(), 50);
        assert_eq!(b.connect_timeout.as_millis(), 1000);
        assert_eq!(b.limits.len(), 2);
        assert_eq!(b.limits[0].kind, super::LimitKind::DistinctOwners);
        assert_eq!((b.limits[0].max, b.limits[0].window_seconds), (20, 86400));
        assert_eq!(b.limits[1].kind, super::LimitKind::Requests);
        assert_eq!(b.limits[1].line, Some(18));
        assert_eq!(b.redis.redis_settings().db(), 0);
        assert_eq!(b.limits_of("support").count(), 1);
        assert_eq!(b.limits_of("legal").count(), 0);
        assert!(Config::parse(Path::new("c.yaml"), &config(""))
            .unwrap()
            .budgets
            .is_none());
    }

    #[test]
    fn optional_keys_resolve() {
        let text = config("budgets:\n  redis_url: \"redis://cache.internal:6380/3\"\n  password_file: \"secrets/redis\"\n  hash_key_file: \"secrets/hash\"\n  key_prefix: \"pg:b:\"\n  timeout_ms: 20\n  connect_timeout_ms: 300\n  limits:\n    - {purpose: abuse, requests: 5, window_seconds: 60}\n");
        let b = Config::parse(Path::new("/etc/pg/c.yaml"), &text)
            .unwrap()
            .budgets
            .unwrap();
        assert_eq!(b.key_prefix, "pg:b:");
        assert_eq!(b.timeout.as_millis(), 20);
        assert_eq!(b.connect_timeout.as_millis(), 300);
        assert_eq!(b.redis.redis_settings().db(), 3);
        assert_eq!(
            b.password_file.as_deref(),
            Some(Path::new("/etc/pg/secrets/redis"))
        );
        assert_eq!(
            b.hash_key_file.as_deref(),
            Some(Path::new("/etc/pg/secrets/hash"))
        );
    }

    /// Each bad section and the `file:line: message` it must produce (the
    /// message may continue).
    #[test]
    fn errors_point_at_the_line() {
        let url = "budgets:\n  redis_url: \"redis://127.0.0.1:6379/0\"\n";
        let cases: &[(String, &str)] = &[
            (
                format!("{url}  limits:\n    - {{purpose: support, distinct_owners: 20, requests: 5, window_seconds: 60}}\n"),
                "c.yaml:17: budgets.limits: support: set exactly one of distinct_owners and requests",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: support, window_seconds: 60}}\n"),
                "c.yaml:17: budgets.limits: support: set exactly one",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: support, requests: 0, window_seconds: 60}}\n"),
                "c.yaml:17: budgets.limits: support: requests must be between 1",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: support, requests: 3, window_seconds: 0}}\n"),
                "c.yaml:17: budgets.limits: support: window_seconds must be between 1",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: \"sup port\", requests: 3, window_seconds: 5}}\n"),
                "c.yaml:17: budgets.limits: purpose `sup port`",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n    - {{purpose: a, requests: 9, window_seconds: 5}}\n"),
                "c.yaml:18: budgets.limits: a already has a requests limit with a 5 s window",
            ),
            (
                format!("{url}  limits: []\n"),
                "c.yaml:16: budgets.limits: list at least one limit",
            ),
            (
                format!("{url}  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5, burst: 2}}\n"),
                "c.yaml:17: unknown field `burst`",
            ),
            (
                format!("{url}  timeout_ms: 0\n  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n"),
                "c.yaml:16: budgets.timeout_ms: must be between 1 and 60000",
            ),
            (
                format!("{url}  key_prefix: \"pg:{{x}}:\"\n  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n"),
                "c.yaml:16: budgets.key_prefix",
            ),
            (
                "budgets:\n  redis_url: \"redis://:s3cret@127.0.0.1:6379/0\"\n  limits:\n    - {purpose: a, requests: 3, window_seconds: 5}\n".to_string(),
                "c.yaml:15: budgets.redis_url embeds a password",
            ),
            (
                "budgets:\n  redis_url: \"rediss://cache:6379\"\n  limits:\n    - {purpose: a, requests: 3, window_seconds: 5}\n".to_string(),
                "c.yaml:15: budgets.redis_url: TLS",
            ),
            (
                "budgets:\n  redis_url: \"http://cache:6379\"\n  limits:\n    - {purpose: a, requests: 3, window_seconds: 5}\n".to_string(),
                "c.yaml:15: budgets.redis_url: not a Redis URL",
            ),
            (
                format!("{url}  password_env: X\n  password_file: y\n  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n"),
                "c.yaml:15: budgets: set at most one of password_env and password_file",
            ),
            (
                format!("{url}  limit:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n"),
                "c.yaml:16: unknown field `limit`",
            ),
        ];
        for (section, want) in cases {
            let e = Config::parse(Path::new("c.yaml"), &config(section)).unwrap_err();
            // `c.yaml:N: message`; the YAML parser's own messages may put
            // their position before the message.
            let (at, message) = want.split_at(want.find(": ").unwrap() + 2);
            let got = e.to_string();
            assert!(
                got.starts_with(at) && got.contains(message),
                "got `{e}`, want `{want}`"
            );
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_or_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("hk"), "k3y\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let text = config("budgets:\n  redis_url: \"redis://u@127.0.0.1:6379/0\"\n  password_file: pw\n  hash_key_file: hk\n  limits:\n    - {purpose: a, requests: 3, window_seconds: 5}\n");
        let b = Config::parse(&dir.path().join("c.yaml"), &text)
            .unwrap()
            .budgets
            .unwrap();
        let info = b.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("from-file"));
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(b.hash_key().unwrap().as_deref(), Some(&b"k3y"[..]));

        let var = "PURPOSEGATE_TEST_REDIS_PASSWORD_UNSET_4243";
        let text = config(&format!("budgets:\n  redis_url: \"redis://127.0.0.1\"\n  password_env: {var}\n  hash_key_file: empty\n  limits:\n    - {{purpose: a, requests: 3, window_seconds: 5}}\n"));
        let b = Config::parse(&dir.path().join("c.yaml"), &text)
            .unwrap()
            .budgets
            .unwrap();
        assert!(b.connection_info().unwrap_err().to_string().contains(var));
        assert!(b.hash_key().unwrap_err().to_string().contains("is empty"));
    }

    #[test]
    fn unknown_purposes_are_reported_at_their_line() {
        let b = Config::parse(Path::new("c.yaml"), &config(CONTRACT))
            .unwrap()
            .budgets
            .unwrap();
        assert!(b.check_purposes(&|_| true).is_ok());
        let e = b.check_purposes(&|p| p != "training").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml:18: budgets.limits: purpose `training` is not a purpose of the policy"
        );
    }
}
