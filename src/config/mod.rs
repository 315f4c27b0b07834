//! Configuration: the YAML file of docs/reference.md §2, parsed into raw serde structs
//! and validated into `Config`. Every error names the file and, where the YAML
//! parser knows it, the line (`file:line: message`). Relative paths are
//! resolved against the config file's directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

mod error;
mod issuers;
mod yaml;
pub use error::ConfigError;
pub use issuers::{checked_url as checked_key_url, discovery_url};
pub use yaml::{line_of, parse_yaml, read_file};

/// How durably the audit writer persists a record before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync after every record.
    Always,
    /// group commit: one fsync for every record queued at that moment.
    #[default]
    Batch,
    /// write without fsync (a crash can lose acknowledged records).
    Never,
}

/// JWT verification settings (docs/reference.md §2 `jwt`).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Allowed `alg` values, e.g. "RS256".
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub jwks_file: Option<PathBuf>,
    pub hs256_secret_file: Option<PathBuf>,
    pub leeway_seconds: u64,
    pub max_lifetime_seconds: u64,
    /// Bound of the verified-token cache.
    pub cache_max_entries: usize,
    /// Keys fetched from the identity provider (`jwks_url` / `oidc_issuer`)
    /// instead of `jwks_file`.
    pub remote: Option<RemoteKeysConfig>,
    /// Further issuers (`jwt.additional_issuers`), each a complete
    /// `JwtConfig` with the settings it does not name inherited from `jwt:`;
    /// their own `additional_issuers` is always empty.
    pub additional_issuers: Vec<JwtConfig>,
}

/// Where remote keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSource {
    /// A JWKS document at this URL.
    JwksUrl(http::Uri),
    /// OIDC discovery: `<issuer>/.well-known/openid-configuration` names the
    /// `jwks_uri`; the document's `issuer` must equal this string.
    OidcIssuer(String),
}

/// Fetching keys over HTTPS (see `auth::remote`).
#[derive(Debug, Clone)]
pub struct RemoteKeysConfig {
    pub source: RemoteSource,
    /// Plain HTTP to a non-loopback host (explicit opt-in; never a default).
    pub allow_insecure_http: bool,
    /// Bounds applied to the IdP's `Cache-Control: max-age`.
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    /// Least time between two refetches triggered by unknown kids.
    pub unknown_kid_refetch: Duration,
    /// Bound of one fetch (connect, TLS, response, body).
    pub fetch_timeout: Duration,
    /// Where the last good key set of each issuer is kept across restarts.
    pub cache_dir: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for the IdP (besides webpki roots).
    pub ca_file: Option<PathBuf>,
}

/// Renames of token claims: logical (contract) name → name in the token.
#[derive(Debug, Clone, Default)]
pub struct ClaimNames {
    pub renames: BTreeMap<String, String>,
}

impl ClaimNames {
    /// The name in the token of a logical claim.
    pub fn token_name<'a>(&'a self, logical: &'a str) -> &'a str {
        self.renames
            .get(logical)
            .map(String::as_str)
            .unwrap_or(logical)
    }
}

/// One upstream store.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// TLS settings for an `https://` upstream (empty for `http://`).
    pub tls: UpstreamTlsConfig,
    /// Requests (hence connections) in flight to this upstream at most.
    pub max_connections: usize,
    /// Largest response head accepted from the store (bytes).
    pub max_response_header_bytes: usize,
}

/// TLS to an `https://` upstream: which CAs to trust (default: the public
/// web PKI roots) and an optional client certificate.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of CA certificates that may sign the upstream's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the upstream.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// Whether clients of the TLS listener must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A handshake without a certificate signed by `client_ca_file` fails.
    Required,
    /// A certificate is verified when presented; anonymous clients are served.
    Optional,
}

/// TLS on the client listener (docs/reference.md §2 `tls`). Files are PEM; they are
/// re-read when they change.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle that client certificates must chain to (enables mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// `required` (default with a CA) or `optional`.
    pub client_auth: Option<ClientAuth>,
}

/// Audit sink settings (docs/reference.md §2 `audit`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    /// With `batch`: how long the writer waits for more records before a
    /// group commit (0 = commit whatever is queued at once).
    pub batch_window: Duration,
    /// Rotate the file once it would grow past this many bytes (None = never).
    pub rotate_bytes: Option<u64>,
    /// Signed checkpoints (None = no checkpoints).
    pub checkpoint: Option<CheckpointConfig>,
    /// Mirror every record to stdout after it is written to the file.
    pub stdout: bool,
    /// This replica's name in its records (`chain_start`) and centrally.
    pub instance: String,
    /// Rotate the live file once it is this old (None = never by age).
    pub rotate_every: Option<Duration>,
    /// The local audit files (live and rotated) may not grow past this
    /// (`audit.max_local_bytes`); forwarding stops a margin before it.
    pub max_local_bytes: Option<u64>,
    /// Disk space kept allocated past the end of the live file, so that
    /// records of requests already let through never fail for want of space.
    pub reserve_bytes: u64,
    /// Shipping to the central PostgreSQL database (`audit.ship`), if on.
    pub ship: Option<crate::audit::ship::config::ShipConfig>,
}

/// Signed checkpoint settings (`audit.checkpoint`).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Ed25519 private key, PKCS#8 PEM (`purposegate audit keygen`).
    pub key_file: PathBuf,
    /// A checkpoint after this many records (None = not by count).
    pub every_records: Option<u64>,
    /// A checkpoint after this much time with new records (None = not by time).
    pub every_seconds: Option<Duration>,
}

/// Client-side limits (`limits:`), each with a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest request target (path and query) accepted: 414 `uri_too_long`.
    pub max_uri_bytes: usize,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2): 431.
    pub max_header_bytes: usize,
    /// Most request header fields (HTTP/1.1): 431.
    pub max_headers: usize,
    /// How long a client may take to send a complete request head. For
    /// HTTP/1.1 this also bounds how long a keep-alive connection may wait
    /// for its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes read for this
    /// long is closed (HTTP/2, and connections still undecided between the
    /// protocols).
    pub idle_timeout: Duration,
    /// Client connections open at once; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_concurrent_streams: 100,
        }
    }
}

/// Default connection cap: 10,000, or less when the file-descriptor limit
/// would run out first (256 descriptors kept for files and the store).
pub fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let fds = if rc == 0 { lim.rlim_cur } else { 1024 };
    let usable = usize::try_from(fds)
        .unwrap_or(usize::MAX)
        .saturating_sub(256);
    usable.clamp(16, 10_000)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_uri_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    max_header_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    max_headers: Option<Spanned<usize>>,
    #[serde(default)]
    header_read_timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    idle_timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    max_concurrent_streams: Option<Spanned<u32>>,
}

/// Takes a limit within `[min, max]` or says where it is out of range.
fn limit<T: Copy + PartialOrd + std::fmt::Display>(
    file: &Path,
    raw: &Option<Spanned<T>>,
    key: &str,
    (min, max): (T, T),
    default: T,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(v) if v.value >= min && v.value <= max => Ok(v.value),
        Some(v) => Err(ConfigError::at(
            file,
            v,
            format!("limits.{key}: must be between {min} and {max}"),
        )),
    }
}

fn validate_limits(file: &Path, raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let ms = |v: u64| Duration::from_millis(v);
    Ok(LimitsConfig {
        max_uri_bytes: limit(
            file,
            &raw.max_uri_bytes,
            "max_uri_bytes",
            (256, 1 << 20),
            d.max_uri_bytes,
        )?,
        max_header_bytes: limit(
            file,
            &raw.max_header_bytes,
            "max_header_bytes",
            (4096, 1 << 20),
            d.max_header_bytes,
        )?,
        max_headers: limit(
            file,
            &raw.max_headers,
            "max_headers",
            (8, 1000),
            d.max_headers,
        )?,
        header_read_timeout: ms(limit(
            file,
            &raw.header_read_timeout_ms,
            "header_read_timeout_ms",
            (100, 30_000),
            10_000,
        )?),
        idle_timeout: ms(limit(
            file,
            &raw.idle_timeout_ms,
            "idle_timeout_ms",
            (100, 3_600_000),
            60_000,
        )?),
        max_connections: limit(
            file,
            &raw.max_connections,
            "max_connections",
            (1, 1_000_000),
            d.max_connections,
        )?,
        max_concurrent_streams: limit(
            file,
            &raw.max_concurrent_streams,
            "max_concurrent_streams",
            (1, 10_000),
            d.max_concurrent_streams,
        )?,
    })
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself (for reload and messages).
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub jwt: JwtConfig,
    pub claims: ClaimNames,
    pub policy_dir: PathBuf,
    /// The consent file (file backend). With the PostgreSQL backend this is
    /// `policy_dir/consent.yaml`, only kept out of the policy files.
    pub consent_file: PathBuf,
    /// The PostgreSQL consent backend (`consent:`), when configured instead
    /// of `consent_file`.
    pub consent_db: Option<crate::consent::pg_config::PgConsentConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub audit: AuditConfig,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often policy, consent and key files are checked for changes.
    pub reload_interval: Duration,
    /// TLS on the client listener; `None` serves plaintext.
    pub tls: Option<TlsConfig>,
    /// Client-side limits.
    pub limits: LimitsConfig,
    /// Runtime threads serving requests: `None` = one per CPU (tokio's
    /// multi-thread runtime), `Some(0)` = a current-thread runtime (one
    /// thread does all request work), `Some(n)` = n worker threads.
    pub worker_threads: Option<usize>,
    /// The live justification check (`justifications:`), when configured.
    pub justifications: Option<crate::justification::JustificationsConfig>,
    /// Per-employee access budgets in Redis (`budgets:`, docs/reference.md §11).
    pub budgets: Option<crate::budget::BudgetsConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<String>,
    admin_listen: Spanned<String>,
    #[serde(default)]
    tls: Option<Spanned<RawTls>>,
    jwt: RawJwt,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    policy_dir: String,
    #[serde(default)]
    consent_file: Option<String>,
    #[serde(default)]
    consent: Option<Spanned<crate::consent::pg_config::RawPgConsent>>,
    upstreams: BTreeMap<String, RawUpstream>,
    audit: RawAudit,
    #[serde(default = "default_grace")]
    shutdown_grace_seconds: u64,
    #[serde(default = "default_reload_ms")]
    reload_interval_ms: u64,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    worker_threads: Option<Spanned<usize>>,
    #[serde(default)]
    justifications: Option<Spanned<crate::justification::config::RawJustifications>>,
    #[serde(default)]
    budgets: Option<Spanned<crate::budget::RawBudgets>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    client_auth: Option<ClientAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Spanned<Vec<String>>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<Spanned<String>>,
    #[serde(default)]
    hs256_secret_file: Option<String>,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default = "default_max_lifetime")]
    max_lifetime_seconds: u64,
    #[serde(default = "default_cache_entries")]
    cache_max_entries: usize,
    #[serde(default)]
    oidc_issuer: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default = "default_refresh_min")]
    refresh_min_seconds: u64,
    #[serde(default = "default_refresh_max")]
    refresh_max_seconds: u64,
    #[serde(default = "default_unknown_kid")]
    unknown_kid_refetch_seconds: u64,
    #[serde(default = "default_fetch_timeout")]
    fetch_timeout_ms: u64,
    #[serde(default)]
    cache_dir: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    additional_issuers: Vec<issuers::RawIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_response_ms")]
    response_timeout_ms: u64,
    #[serde(default = "default_upstream_connections")]
    max_connections: usize,
    #[serde(default = "default_upstream_header_bytes")]
    max_response_header_bytes: usize,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    client_cert_file: Option<String>,
    #[serde(default)]
    client_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: String,
    #[serde(default)]
    fsync: FsyncPolicy,
    #[serde(default)]
    batch_window_us: u64,
    #[serde(default)]
    rotate_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    checkpoint: Option<Spanned<RawCheckpoint>>,
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    rotate_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    max_local_bytes: Option<Spanned<u64>>,
    #[serde(default = "default_reserve")]
    reserve_bytes: Spanned<u64>,
    #[serde(default)]
    ship: Option<Spanned<crate::audit::ship::config::RawShip>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    key_file: String,
    #[serde(default)]
    every_records: Option<u64>,
    #[serde(default)]
    every_seconds: Option<u64>,
}

fn default_reserve() -> Spanned<u64> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(DEFAULT_RESERVE_BYTES, unknown, unknown)
}
/// `audit.reserve_bytes` default: room for ~10,000 records.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 * 1024 * 1024;
fn default_grace() -> u64 {
    10
}
fn default_reload_ms() -> u64 {
    1000
}
fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_refresh_min() -> u64 {
    60
}
fn default_refresh_max() -> u64 {
    3600
}
fn default_unknown_kid() -> u64 {
    30
}
fn default_fetch_timeout() -> u64 {
    5000
}
fn default_connect_ms() -> u64 {
    1000
}
fn default_response_ms() -> u64 {
    10_000
}
fn default_upstream_connections() -> usize {
    512
}
fn default_upstream_header_bytes() -> usize {
    crate::upstream::pool::DEFAULT_MAX_HEADER_BYTES
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = read_file(file)?;
        Self::parse(file, &text)
    }

    /// Validates config text as if read from `file` (paths resolve beside it).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = parse_yaml(file, text)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let tls = match &raw.tls {
            Some(t) => Some(validate_tls(file, t, &resolve)?),
            None => None,
        };
        let jwt = validate_jwt(file, raw.jwt, &resolve)?;
        let (consent_file, consent_db) = match (raw.consent_file, raw.consent) {
            (Some(f), None) => (resolve(&f), None),
            (None, Some(db)) => (
                resolve(&raw.policy_dir).join("consent.yaml"),
                Some(crate::consent::pg_config::RawPgConsent::validate(
                    db, file, &resolve,
                )?),
            ),
            (Some(_), Some(db)) => {
                return Err(ConfigError::at(
                    file,
                    &db,
                    "consent: set either consent_file or consent (PostgreSQL), not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    file,
                    None,
                    "missing consent_file (or a consent: section for the PostgreSQL backend)",
                ))
            }
        };
        let mut upstreams = BTreeMap::new();
        for (name, up) in raw.upstreams {
            upstreams.insert(name.clone(), validate_upstream(file, &name, up, &resolve)?);
        }
        if upstreams.is_empty() {
            return Err(ConfigError::new(
                file,
                None,
                "upstreams: at least one upstream is required",
            ));
        }
        Ok(Config {
            file: file.to_path_buf(),
            listen: parse_addr(file, &raw.listen, "listen")?,
            admin_listen: parse_addr(file, &raw.admin_listen, "admin_listen")?,
            jwt,
            claims: ClaimNames {
                renames: raw.claims,
            },
            policy_dir: resolve(&raw.policy_dir),
            consent_file,
            consent_db,
            upstreams,
            audit: validate_audit(file, raw.audit, &resolve)?,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_seconds),
            reload_interval: Duration::from_millis(raw.reload_interval_ms.max(50)),
            tls,
            limits: validate_limits(file, &raw.limits)?,
            worker_threads: match raw.worker_threads {
                Some(w) if w.value > 256 => {
                    return Err(ConfigError::at(file, &w, "worker_threads: at most 256"))
                }
                w => w.map(|w| w.value),
            },
            justifications: raw
                .justifications
                .map(|j| {
                    crate::justification::config::RawJustifications::validate(j, file, &resolve)
                })
                .transpose()?,
            budgets: raw
                .budgets
                .map(|b| crate::budget::RawBudgets::validate(b, file, &resolve))
                .transpose()?,
        })
    }
}

fn validate_audit(
    file: &Path,
    raw: RawAudit,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<AuditConfig, ConfigError> {
    // Smaller than a batch of records would rotate on every write.
    const MIN_ROTATE: u64 = 4096;
    if let Some(r) = raw.rotate_bytes.as_ref().filter(|r| r.value < MIN_ROTATE) {
        return Err(ConfigError::at(
            file,
            r,
            format!("audit.rotate_bytes: must be at least {MIN_ROTATE}"),
        ));
    }
    let checkpoint = match raw.checkpoint {
        None => None,
        Some(cp) => {
            let every_records = cp.value.every_records.filter(|n| *n > 0);
            let every_seconds = cp.value.every_seconds.filter(|n| *n > 0);
            if every_records.is_none() && every_seconds.is_none() {
                return Err(ConfigError::at(
                    file,
                    &cp,
                    "audit.checkpoint: set every_records and/or every_seconds (> 0)",
                ));
            }
            Some(CheckpointConfig {
                key_file: resolve(&cp.value.key_file),
                every_records,
                every_seconds: every_seconds.map(Duration::from_secs),
            })
        }
    };
    if let Some(r) = raw.rotate_seconds.as_ref().filter(|r| r.value == 0) {
        return Err(ConfigError::at(
            file,
            r,
            "audit.rotate_seconds: must be at least 1",
        ));
    }
    // The bound must leave room for a rotated file, the live one and the
    // margin at which forwarding stops.
    const MIN_LOCAL: u64 = 1024 * 1024;
    if let Some(m) = raw.max_local_bytes.as_ref().filter(|m| m.value < MIN_LOCAL) {
        return Err(ConfigError::at(
            file,
            m,
            format!("audit.max_local_bytes: must be at least {MIN_LOCAL}"),
        ));
    }
    let reserve = raw.reserve_bytes.value;
    if reserve > 0 && reserve < 64 * 1024 {
        return Err(ConfigError::at(
            file,
            &raw.reserve_bytes,
            "audit.reserve_bytes: 0 (off) or at least 65536",
        ));
    }
    let ship = match raw.ship {
        Some(s) => Some(crate::audit::ship::config::RawShip::validate(
            s, file, resolve,
        )?),
        None => None,
    };
    Ok(AuditConfig {
        path: resolve(&raw.path),
        fsync: raw.fsync,
        batch_window: Duration::from_micros(raw.batch_window_us.min(100_000)),
        rotate_bytes: raw.rotate_bytes.map(|r| r.value),
        checkpoint,
        stdout: raw.stdout,
        // The name rows are shipped under; without shipping the same
        // default ($PURPOSEGATE_INSTANCE, else the host name).
        instance: match &ship {
            Some(s) => s.instance.clone(),
            None => crate::audit::header::resolve_instance(None),
        },
        rotate_every: raw.rotate_seconds.map(|r| Duration::from_secs(r.value)),
        max_local_bytes: raw.max_local_bytes.map(|m| m.value),
        reserve_bytes: reserve,
        ship,
    })
}

fn parse_addr(file: &Path, v: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
    v.value.parse().map_err(|_| {
        ConfigError::at(
            file,
            v,
            format!("{key}: `{}` is not an address like 127.0.0.1:8080", v.value),
        )
    })
}

fn validate_jwt(
    file: &Path,
    raw: RawJwt,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<JwtConfig, ConfigError> {
    let mut algorithms = Vec::new();
    for name in &raw.algorithms.value {
        let alg: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
            ConfigError::at(
                file,
                &raw.algorithms,
                format!("jwt.algorithms: unknown algorithm `{name}` (none is never allowed)"),
            )
        })?;
        algorithms.push(alg);
    }
    if algorithms.is_empty() {
        return Err(ConfigError::at(
            file,
            &raw.algorithms,
            "jwt.algorithms: list at least one algorithm",
        ));
    }
    let timing = issuers::timing(file, &raw, resolve)?;
    let remote = issuers::remote_source(
        file,
        "jwt",
        raw.jwks_file.is_some(),
        raw.jwks_url.as_ref(),
        raw.oidc_issuer.as_ref(),
        raw.allow_insecure_http,
        &timing,
    )?;
    let hs = algorithms
        .iter()
        .any(|a| matches!(a, jsonwebtoken::Algorithm::HS256));
    if hs && raw.hs256_secret_file.is_none() {
        return Err(ConfigError::at(
            file,
            &raw.algorithms,
            "jwt.algorithms lists HS256 but jwt.hs256_secret_file is not set",
        ));
    }
    let asymmetric = algorithms.iter().any(|a| {
        !matches!(
            a,
            jsonwebtoken::Algorithm::HS256
                | jsonwebtoken::Algorithm::HS384
                | jsonwebtoken::Algorithm::HS512
        )
    });
    if asymmetric && raw.jwks_file.is_none() && remote.is_none() {
        return Err(ConfigError::at(
            file,
            &raw.algorithms,
            "jwt.algorithms lists public-key algorithms but jwt.jwks_file (or jwks_url, oidc_issuer) is not set",
        ));
    }
    if algorithms.iter().any(|a| {
        matches!(
            a,
            jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512
        )
    }) {
        return Err(ConfigError::at(
            file,
            &raw.algorithms,
            "jwt.algorithms: of the HMAC algorithms only HS256 is supported",
        ));
    }
    if raw.audiences.is_empty() {
        return Err(ConfigError::new(
            file,
            None,
            "jwt.audiences: list at least one audience",
        ));
    }
    let mut jwt = JwtConfig {
        issuer: raw.issuer,
        audiences: raw.audiences,
        algorithms,
        jwks_file: raw.jwks_file.as_deref().map(resolve),
        hs256_secret_file: raw.hs256_secret_file.as_deref().map(resolve),
        leeway_seconds: raw.leeway_seconds,
        max_lifetime_seconds: raw.max_lifetime_seconds,
        cache_max_entries: raw.cache_max_entries.max(1),
        remote,
        additional_issuers: Vec::new(),
    };
    jwt.additional_issuers =
        issuers::additional(file, &jwt, raw.additional_issuers, &timing, resolve)?;
    Ok(jwt)
}

fn validate_upstream(
    file: &Path,
    name: &str,
    raw: RawUpstream,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<UpstreamConfig, ConfigError> {
    let url: http::Uri =
        raw.url.value.parse().map_err(|_| {
            ConfigError::at(file, &raw.url, format!("upstreams.{name}.url: not a URL"))
        })?;
    let https = url.scheme_str() == Some("https");
    if !(https || url.scheme_str() == Some("http")) || url.host().is_none() {
        return Err(ConfigError::at(
            file,
            &raw.url,
            format!("upstreams.{name}.url: must be http://host:port or https://host:port"),
        ));
    }
    let tls = validate_upstream_tls(file, name, &raw, https, resolve)?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err(ConfigError::at(
            file,
            &raw.url,
            format!("upstreams.{name}.url: must not have a path"),
        ));
    }
    Ok(UpstreamConfig {
        url,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms.max(1)),
        response_timeout: Duration::from_millis(raw.response_timeout_ms.max(1)),
        tls,
        max_connections: raw.max_connections.max(1),
        max_response_header_bytes: raw.max_response_header_bytes.clamp(8192, 1 << 20),
    })
}

/// `tls:` of the client listener: both files, and `client_auth` only with a CA.
fn validate_tls(
    file: &Path,
    raw: &Spanned<RawTls>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<TlsConfig, ConfigError> {
    let t = &raw.value;
    if t.client_auth.is_some() && t.client_ca_file.is_none() {
        return Err(ConfigError::at(
            file,
            raw,
            "tls.client_auth needs tls.client_ca_file (the CA that signs client certificates)",
        ));
    }
    Ok(TlsConfig {
        cert_file: resolve(&t.cert_file),
        key_file: resolve(&t.key_file),
        client_ca_file: t.client_ca_file.as_deref().map(resolve),
        client_auth: t.client_auth,
    })
}

/// The TLS keys of an upstream: only for `https://`, and the client
/// certificate and key only together.
fn validate_upstream_tls(
    file: &Path,
    name: &str,
    raw: &RawUpstream,
    https: bool,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<UpstreamTlsConfig, ConfigError> {
    let any =
        raw.ca_file.is_some() || raw.client_cert_file.is_some() || raw.client_key_file.is_some();
    if any && !https {
        return Err(ConfigError::at(
            file,
            &raw.url,
            format!("upstreams.{name}: ca_file, client_cert_file and client_key_file need an https:// url"),
        ));
    }
    if raw.client_cert_file.is_some() != raw.client_key_file.is_some() {
        return Err(ConfigError::at(
            file,
            &raw.url,
            format!("upstreams.{name}: client_cert_file and client_key_file go together"),
        ));
    }
    Ok(UpstreamTlsConfig {
        ca_file: raw.ca_file.as_deref().map(resolve),
        client_cert_file: raw.client_cert_file.as_deref().map(resolve),
        client_key_file: raw.client_key_file.as_deref().map(resolve),
    })
}

/// Parses a `postgres_url` of the section `name` (`consent`, `audit.ship`)
/// and refuses what the password rules forbid: a password in the URL, and
/// both `password_env` and `password_file` set (`at` is the section's line).
pub fn postgres_url(
    file: &Path,
    name: &str,
    url: &Spanned<String>,
    at: Option<u32>,
    password_env_and_file: bool,
) -> Result<tokio_postgres::Config, ConfigError> {
    let pg = <tokio_postgres::Config as std::str::FromStr>::from_str(&url.value).map_err(|e| {
        ConfigError::at(
            file,
            url,
            format!("{name}.postgres_url: not a PostgreSQL URL: {e}"),
        )
    })?;
    if pg.get_password().is_some() {
        return Err(ConfigError::at(
            file,
            url,
            format!("{name}.postgres_url embeds a password; put it in an environment variable ({name}.password_env) or a file ({name}.password_file) instead"),
        ));
    }
    if password_env_and_file {
        return Err(ConfigError::new(
            file,
            at,
            format!("{name}: set at most one of password_env and password_file"),
        ));
    }
    Ok(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: "127.0.0.1:8080"
admin_listen: "127.0.0.1:9100"
jwt:
  issuer: "https://idp.example.test"
  audiences: ["purposegate"]
  algorithms: ["RS256", "ES256", "EdDSA"]
  jwks_file: "certs/jwks.json"
  leeway_seconds: 30
  max_lifetime_seconds: 3600
policy_dir: "policies"
consent_file: "policies/consent.yaml"
upstreams:
  content: {url: "http://127.0.0.1:9090"}
audit:
  path: "audit/audit.jsonl"
  fsync: "batch"
"#;

    #[test]
    fn parses_the_contract_example() {
        let c = Config::parse(Path::new("/etc/pg/config.yaml"), GOOD).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.jwt.algorithms.len(), 3);
        assert_eq!(c.policy_dir, PathBuf::from("/etc/pg/policies"));
        assert_eq!(
            c.jwt.jwks_file,
            Some(PathBuf::from("/etc/pg/certs/jwks.json"))
        );
        assert_eq!(c.audit.fsync, FsyncPolicy::Batch);
        assert!(c.upstreams.contains_key("content"));
    }

    #[test]
    fn errors_point_at_lines() {
        let bad = GOOD.replace("\"RS256\", ", "\"none\", ");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.to_string().starts_with("c.yaml:7: jwt.algorithms"), "{e}");

        let bad = GOOD.replace("listen: \"127.0.0.1:8080\"", "listen: \"nowhere\"");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let bad = GOOD.replace("policy_dir", "policy_dri");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("policy_dri"), "{e}");
    }

    #[test]
    fn tls_keys_resolve_and_validate() {
        let with_tls = format!(
            "{GOOD}tls: {{cert_file: \"certs/server.pem\", key_file: \"certs/server.key\", client_ca_file: \"certs/ca.pem\"}}\n"
        );
        let c = Config::parse(Path::new("/etc/pg/config.yaml"), &with_tls).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/etc/pg/certs/server.pem"));
        assert_eq!(
            tls.client_ca_file,
            Some(PathBuf::from("/etc/pg/certs/ca.pem"))
        );
        assert_eq!(tls.client_auth, None);

        let bad =
            format!("{GOOD}tls: {{cert_file: a.pem, key_file: a.key, client_auth: optional}}\n");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("client_ca_file"), "{e}");
        assert_eq!(e.line, Some(18), "{e}");

        let bad = format!("{GOOD}tls: {{cert_file: a.pem, key_file: a.key, client_auth: maybe}}\n");
        assert!(Config::parse(Path::new("c.yaml"), &bad).is_err());
    }

    #[test]
    fn https_upstreams_take_tls_keys() {
        let https = GOOD.replace(
            "{url: \"http://127.0.0.1:9090\"}",
            "{url: \"https://store.local:9443\", ca_file: ca.pem, client_cert_file: c.pem, client_key_file: c.key}",
        );
        let c = Config::parse(Path::new("/etc/pg/config.yaml"), &https).unwrap();
        let up = &c.upstreams["content"];
        assert_eq!(up.url.scheme_str(), Some("https"));
        assert_eq!(up.tls.ca_file, Some(PathBuf::from("/etc/pg/ca.pem")));
        assert_eq!(up.tls.client_key_file, Some(PathBuf::from("/etc/pg/c.key")));

        let plain_with_ca = GOOD.replace(
            "{url: \"http://127.0.0.1:9090\"}",
            "{url: \"http://127.0.0.1:9090\", ca_file: ca.pem}",
        );
        let e = Config::parse(Path::new("c.yaml"), &plain_with_ca).unwrap_err();
        assert!(e.message.contains("https://"), "{e}");

        let half = https.replace(", client_key_file: c.key", "");
        let e = Config::parse(Path::new("c.yaml"), &half).unwrap_err();
        assert!(e.message.contains("go together"), "{e}");
    }

    #[test]
    fn hs256_needs_a_secret_file() {
        let bad = GOOD.replace("\"RS256\", ", "\"HS256\", ");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(e.message.contains("hs256_secret_file"), "{e}");
    }

    #[test]
    fn audit_rotation_checkpoint_and_stdout_keys() {
        let c = Config::parse(Path::new("/etc/pg/c.yaml"), GOOD).unwrap();
        assert!(c.audit.rotate_bytes.is_none() && c.audit.checkpoint.is_none());
        assert!(!c.audit.stdout);
        let extra = "  rotate_bytes: 1048576\n  stdout: true\n  checkpoint: {key_file: \"k.pem\", every_records: 100, every_seconds: 60}\n";
        let c = Config::parse(Path::new("/etc/pg/c.yaml"), &format!("{GOOD}{extra}")).unwrap();
        assert_eq!(c.audit.rotate_bytes, Some(1_048_576));
        assert!(c.audit.stdout);
        let cp = c.audit.checkpoint.unwrap();
        assert_eq!(cp.key_file, PathBuf::from("/etc/pg/k.pem"));
        assert_eq!(cp.every_records, Some(100));
        assert_eq!(cp.every_seconds, Some(Duration::from_secs(60)));

        let e =
            Config::parse(Path::new("c.yaml"), &format!("{GOOD}  rotate_bytes: 10\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("c.yaml:18: audit.rotate_bytes"),
            "{e}"
        );
        let e = Config::parse(
            Path::new("c.yaml"),
            &format!("{GOOD}  checkpoint: {{key_file: k.pem}}\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("every_records"), "{e}");
    }
}
