//! Live state shared by every request: the policy (swapped atomically on
//! reload), the token verifier and its keys, the consent registry, the live
//! justification check, the access budgets, the audit sink, upstream pools
//! and metrics. Also the reload logic: a reload builds the complete new
//! state and swaps only when all of it is valid.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;

use crate::audit::{AuditCounters, AuditSink};
use crate::auth::Verifier;
use crate::budget::{BudgetError, Budgets};
use crate::config::{Config, ConfigError};
use crate::consent::file::{ConsentData, FileConsent};
use crate::consent::ConsentStore;
use crate::files::{fingerprint, Fingerprint};
use crate::justification::Justifications;
use crate::metrics::Metrics;
use crate::policy::{load, Policy};
use crate::upstream::Upstreams;

/// Everything a request needs, shared behind an `Arc`.
pub struct App {
    pub config: Config,
    pub policy: ArcSwap<Policy>,
    pub verifier: Verifier,
    pub file_consent: Arc<FileConsent>,
    pub consent: Arc<dyn ConsentStore>,
    /// The live justification check (rules 17a–e), when `justifications:`
    /// is configured. Not part of readiness: while the case service is
    /// down, the reads that need it fail closed one by one (503
    /// `justification_unavailable`) and every other read is served.
    pub justifications: Option<Justifications>,
    /// Rule 18's access budgets (Redis), when `budgets:` is configured. Not
    /// part of readiness: without Redis the proxy is live and ready, and
    /// requests of budgeted purposes fail closed.
    pub budgets: Option<Budgets>,
    /// Shipping the audit trail to PostgreSQL (`audit.ship`), taken at
    /// shutdown to ship what is left.
    pub shipper: std::sync::Mutex<Option<crate::audit::ship::ShipperHandle>>,
    pub audit: AuditSink,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    pub registry: Registry,
    /// False once shutdown has begun (readiness goes down first).
    pub accepting: AtomicBool,
    /// Client connections against `limits.max_connections`, and accept failures.
    pub connections: Connections,
    /// The watched files as they were just before the first load, so that a
    /// change made while starting is still noticed by the reload watcher.
    pub loaded_fingerprint: Fingerprint,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("audit shipping: {0}")]
    Ship(String),
    #[error("consent backend: {0}")]
    Consent(String),
    #[error(transparent)]
    Budgets(#[from] BudgetError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Loads policy and consent the way `serve` (at start and on every reload)
/// and `policy check` do, and checks that every access budget limit names a
/// purpose of the policy.
pub fn load_policy_and_consent(config: &Config) -> Result<(Policy, ConsentData), ConfigError> {
    // The PostgreSQL backend has no file to load (`policy check` must not
    // need the database); its section was validated with the config.
    let consent = match &config.consent_db {
        Some(_) => ConsentData::default(),
        None => ConsentData::load(&config.consent_file)?,
    };
    let policy = load::load_dir(&config.policy_dir, &[config.consent_file.as_path()])?;
    let names: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
    load::check_upstreams(&policy, &names)?;
    if let Some(budgets) = &config.budgets {
        budgets.check_purposes(&|p| policy.purposes.contains_key(p))?;
    }
    Ok((policy, consent))
}

impl App {
    /// Loads everything the config names; any error stops the start.
    pub fn new(config: Config) -> Result<App, StartError> {
        let loaded_fingerprint = fingerprint(&watched_files(&config));
        let (policy, consent) = load_policy_and_consent(&config)?;
        let verifier = Verifier::new(&config.jwt, &config.claims)?;
        let (metrics, mut registry) = Metrics::new();
        let justifications = build_justifications(&config, &policy, &metrics)?;
        verifier.register_metrics(&mut registry);
        let counters = AuditCounters {
            records: metrics.audit_records.clone(),
            errors: metrics.audit_errors.clone(),
        };
        let audit = AuditSink::open(&config.audit, counters)
            .map_err(|e| StartError::Audit(e.to_string()))?;
        // Needs the runtime (`serve` starts inside it); does not wait for
        // the database: records stay local until it answers.
        let shipper = match &config.audit.ship {
            Some(ship) => Some(
                crate::audit::ship::Shipper::start(
                    ship,
                    &config.audit.path,
                    audit.watermark(),
                    &mut registry,
                )
                .map_err(|e| StartError::Ship(e.to_string()))?,
            ),
            None => None,
        };
        let file_consent = Arc::new(FileConsent::new(consent));
        let consent: Arc<dyn ConsentStore> = match &config.consent_db {
            Some(db) => Arc::new(
                crate::consent::postgres::PgConsent::start(db, metrics.clone())
                    .map_err(|e| StartError::Consent(e.to_string()))?,
            ),
            None => file_consent.clone(),
        };
        // Connects in the background: a Redis that is down does not hold up
        // the start.
        let budgets = match &config.budgets {
            Some(b) => Some(Budgets::new(b, &mut registry)?),
            None => None,
        };
        Ok(App {
            upstreams: Upstreams::new(&config.upstreams)?,
            policy: ArcSwap::from_pointee(policy),
            verifier,
            consent,
            justifications,
            file_consent,
            budgets,
            shipper: std::sync::Mutex::new(shipper),
            audit,
            metrics,
            registry,
            accepting: AtomicBool::new(true),
            connections: Connections::default(),
            loaded_fingerprint,
            config,
        })
    }

    /// Reloads policy, consent and keys. Each part is validated before it is
    /// swapped in; a part that fails keeps its old version and the error is
    /// returned (and counted) so the caller can log why.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let result = self.reload_parts();
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => {
                tracing::info!(policy = %self.policy.load().digest, "reloaded policy, consent and keys")
            }
            Err(e) => tracing::error!(error = %e, "reload failed; keeping the previous version"),
        }
        result
    }

    fn reload_parts(&self) -> Result<(), ConfigError> {
        let (policy, consent) = load_policy_and_consent(&self.config)?;
        if let Some(j) = &self.justifications {
            // A new policy must not leave a justified purpose unchecked, and
            // the case service's credential is re-read with the other files.
            j.config().check_policy(&policy)?;
            j.reload()?;
        }
        self.verifier.reload()?;
        self.policy.store(Arc::new(policy));
        self.file_consent.replace(consent);
        Ok(())
    }

    /// Readiness: the audit sink is writable, keys are loaded and the proxy
    /// is not shutting down. Returns the failing parts.
    pub fn readiness(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if !self.accepting.load(Ordering::Relaxed) {
            problems.push("shutting_down");
        }
        problems.extend(self.audit.problems());
        if self.connections.open.load(Ordering::Relaxed) >= self.config.limits.max_connections {
            problems.push("connections_exhausted");
        }
        if self.connections.accept_failed_recently() {
            problems.push("accept_failing");
        }
        if self.verifier.key_count() == 0 {
            problems.push("no_keys");
        } else if self.verifier.some_issuer_without_keys() {
            problems.push("issuer_keys_missing");
        }
        if !self.consent.healthy() {
            problems.push("consent_unavailable");
        }
        problems
    }

    /// The files whose change triggers a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        watched_files(&self.config)
    }
}

/// Open client connections and the last accept failure (e.g. out of file
/// descriptors), for `/readyz`.
#[derive(Debug, Default)]
pub struct Connections {
    pub open: std::sync::atomic::AtomicUsize,
    /// Unix ms of the last failed accept (0: none).
    pub accept_failed_at: std::sync::atomic::AtomicI64,
}

impl Connections {
    /// How long an accept failure keeps the proxy unready.
    const ACCEPT_FAILURE_WINDOW_MS: i64 = 5_000;

    pub fn accept_failed(&self) {
        self.accept_failed_at
            .store(crate::time::now_millis(), Ordering::Relaxed);
    }

    fn accept_failed_recently(&self) -> bool {
        let at = self.accept_failed_at.load(Ordering::Relaxed);
        at > 0 && crate::time::now_millis() - at < Self::ACCEPT_FAILURE_WINDOW_MS
    }
}

/// The live justification check as `serve` (and `policy check`) build it:
/// the section checked against the policy, its files read.
pub fn build_justifications(
    config: &Config,
    policy: &Policy,
    metrics: &Metrics,
) -> Result<Option<Justifications>, ConfigError> {
    let Some(cfg) = &config.justifications else {
        return Ok(None);
    };
    cfg.check_policy(policy)?;
    Justifications::new(cfg, metrics.justification.clone()).map(Some)
}

/// The files of a config whose change triggers a reload.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.consent_file.clone()];
    files.extend(config.jwt.jwks_file.clone());
    files.extend(config.jwt.hs256_secret_file.clone());
    files.extend(config.justifications.iter().flat_map(|j| j.watched_files()));
    if let Ok(entries) = std::fs::read_dir(&config.policy_dir) {
        files.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_yaml(p)),
        );
    }
    files.sort();
    files
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}
