//! Keys from the identity provider (`jwt.jwks_url` / `jwt.oidc_issuer`):
//! a background fetcher per issuer (`run`: first fetch at start, then on the
//! `Cache-Control: max-age` interval clamped into `[refresh_min, refresh_max]`,
//! exponential backoff with jitter while the IdP fails, the last good set
//! kept and persisted), and the one fetch allowed on the request path: the
//! unknown-kid refetch, rate-limited per issuer and single-flight.
//!
//! A fetched document replaces the key set only when it parses completely
//! (the strict rules of `jwks`); an empty or broken JWKS is a failed fetch.

mod fetch;
mod metrics;
mod persist;
mod schedule;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::issuer::IssuerKeys;
use crate::config::{ConfigError, RemoteKeysConfig, RemoteSource};
use crate::tls::https_client::{https_client, HttpsClient};
use fetch::FetchError;
pub(crate) use metrics::JwksMetrics;

/// What `/readyz` says about one issuer's keys.
#[derive(Debug, Clone, Serialize)]
pub struct IssuerStatus {
    pub issuer: String,
    /// `file` or `remote`.
    pub source: &'static str,
    pub keys: usize,
    /// Seconds since the current remote key set was fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// True when a remote issuer is serving an old key set: the last fetch
    /// failed, nothing was ever loaded, or the set is older than
    /// `refresh_max_seconds` plus the retry cap.
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Status {
    /// When the current key set was fetched (for one loaded from disk: when
    /// it was saved there).
    obtained_at: Option<SystemTime>,
    last_error: Option<String>,
}

/// Fetcher state of one remote issuer (owned by its `IssuerKeys`).
pub(crate) struct Remote {
    issuer: String,
    cfg: RemoteKeysConfig,
    client: HttpsClient,
    /// The configured URL, or the issuer for OIDC; names the source in logs.
    label: String,
    /// The JWKS URL: configured, or found by discovery (forgotten when a
    /// fetch fails, so that discovery runs again).
    jwks_uri: Mutex<Option<http::Uri>>,
    /// The JWKS document the live keys were built from.
    current: Mutex<Option<Arc<[u8]>>>,
    status: Mutex<Status>,
    /// One fetch at a time per issuer (background and unknown-kid alike).
    fetch_lock: tokio::sync::Mutex<()>,
    /// When the last unknown-kid refetch started; waiting on this lock is
    /// what makes concurrent unknown-kid requests share one fetch.
    unknown_gate: tokio::sync::Mutex<Option<Instant>>,
    metrics: JwksMetrics,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Remote {
    /// `client` is shared by all issuers: built by the first one.
    pub(crate) fn new(
        issuer: &str,
        cfg: &RemoteKeysConfig,
        client: &mut Option<HttpsClient>,
        metrics: JwksMetrics,
    ) -> Result<Remote, ConfigError> {
        let shared = match client {
            Some(c) => c.clone(),
            None => {
                let c = https_client(cfg.ca_file.as_deref(), cfg.fetch_timeout)?;
                *client = Some(c.clone());
                c
            }
        };
        let (label, uri) = match &cfg.source {
            RemoteSource::JwksUrl(u) => (u.to_string(), Some(u.clone())),
            RemoteSource::OidcIssuer(i) => (crate::config::discovery_url(i), None),
        };
        Ok(Remote {
            issuer: issuer.to_string(),
            cfg: cfg.clone(),
            client: shared,
            label,
            jwks_uri: Mutex::new(uri),
            current: Mutex::new(None),
            status: Mutex::new(Status::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            unknown_gate: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn current(&self) -> Option<Arc<[u8]>> {
        locked(&self.current).clone()
    }

    pub(crate) fn set_current(&self, bytes: Vec<u8>) {
        *locked(&self.current) = Some(Arc::from(bytes));
    }

    fn persist_path(&self) -> Option<PathBuf> {
        let dir = self.cfg.cache_dir.as_deref()?;
        Some(persist::path_for(dir, &self.issuer))
    }

    /// The persisted last good document, if `cache_dir` has one (blocking
    /// read: called once at start, before serving).
    pub(crate) fn load_persisted(&self) -> Option<(Vec<u8>, SystemTime)> {
        persist::load(&self.persist_path()?)
    }

    pub(crate) fn mark_loaded_from_disk(&self, saved_at: SystemTime) {
        locked(&self.status).obtained_at = Some(saved_at);
    }

    pub(crate) fn age_seconds(&self) -> Option<f64> {
        let at = locked(&self.status).obtained_at?;
        Some(
            SystemTime::now()
                .duration_since(at)
                .unwrap_or_default()
                .as_secs_f64(),
        )
    }

    async fn jwks_uri(&self) -> Result<http::Uri, FetchError> {
        if let Some(uri) = locked(&self.jwks_uri).clone() {
            return Ok(uri);
        }
        let RemoteSource::OidcIssuer(issuer) = &self.cfg.source else {
            return Err(FetchError::Internal("no JWKS URL"));
        };
        let uri = fetch::discover(
            &self.client,
            issuer,
            self.cfg.allow_insecure_http,
            self.cfg.fetch_timeout,
        )
        .await?;
        *locked(&self.jwks_uri) = Some(uri.clone());
        Ok(uri)
    }

    fn forget_discovery(&self) {
        if matches!(self.cfg.source, RemoteSource::OidcIssuer(_)) {
            *locked(&self.jwks_uri) = None;
        }
    }

    fn record(&self, outcome: &Result<Option<u64>, FetchError>, changed_keys: usize) {
        self.metrics.count(&self.issuer, outcome.is_ok());
        let mut status = locked(&self.status);
        match outcome {
            Ok(_) => {
                status.obtained_at = Some(SystemTime::now());
                status.last_error = None;
                tracing::debug!(issuer = %self.issuer, keys = changed_keys, "key set fetched");
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                tracing::warn!(issuer = %self.issuer, source = %self.label, error = %e, "key set fetch failed; keeping the last good key set");
            }
        }
    }

    /// Backoff cap: no longer than the refresh bound nor `BACKOFF_CAP`.
    fn backoff_cap(&self) -> Duration {
        self.cfg
            .refresh_max
            .min(schedule::BACKOFF_CAP)
            .max(schedule::BACKOFF_BASE)
    }
}

/// Fetches the issuer's JWKS once and installs it when it parses; counts
/// and records the outcome. Returns the server's `max-age`.
pub(crate) async fn refresh(issuer: &Arc<IssuerKeys>) -> Result<Option<u64>, FetchError> {
    let Some(remote) = &issuer.remote else {
        return Err(FetchError::Internal("not a remote issuer"));
    };
    let _one_at_a_time = remote.fetch_lock.lock().await;
    let outcome = fetch_and_apply(issuer, remote).await;
    remote.record(&outcome, issuer.key_count());
    outcome
}

async fn fetch_and_apply(
    issuer: &Arc<IssuerKeys>,
    remote: &Remote,
) -> Result<Option<u64>, FetchError> {
    let uri = remote.jwks_uri().await?;
    let fetched = match fetch::get(&remote.client, &uri, remote.cfg.fetch_timeout).await {
        Ok(f) => f,
        Err(e) => {
            remote.forget_discovery();
            return Err(e);
        }
    };
    let bytes = fetched.body.to_vec();
    let to_save = bytes.clone();
    let target = Arc::clone(issuer);
    // Parsing keys and reading the secret file are blocking work.
    let changed = tokio::task::spawn_blocking(move || target.apply_remote(bytes))
        .await
        .map_err(|_| FetchError::Internal("key parsing task failed"))?
        .map_err(|e| FetchError::BadJwks(e.message))?;
    if changed {
        tracing::info!(issuer = %issuer.cfg.issuer, keys = issuer.key_count(), "key set changed");
    }
    if let Some(path) = remote.persist_path() {
        let saved = tokio::task::spawn_blocking(move || persist::save(&path, &to_save)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(issuer = %issuer.cfg.issuer, "could not persist the key set to cache_dir");
        }
    }
    Ok(fetched.max_age)
}

/// The background fetcher of one issuer, until `stop` turns true.
pub(crate) async fn run(issuer: Arc<IssuerKeys>, mut stop: watch::Receiver<bool>) {
    let Some(remote) = &issuer.remote else { return };
    let mut failures: u32 = 0;
    loop {
        // Shutdown does not wait for a fetch in progress.
        let outcome = tokio::select! {
            outcome = refresh(&issuer) => outcome,
            _ = stop.changed() => return,
        };
        let delay = match outcome {
            Ok(max_age) => {
                failures = 0;
                schedule::refresh_delay(max_age, remote.cfg.refresh_min, remote.cfg.refresh_max)
            }
            Err(_) => {
                let d = schedule::backoff(
                    failures,
                    schedule::BACKOFF_BASE,
                    remote.backoff_cap(),
                    rand::random(),
                );
                failures = failures.saturating_add(1);
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

/// Called when a token names a kid this issuer does not have: starts at most
/// one refetch per `unknown_kid_refetch_seconds`, and makes concurrent
/// callers wait for that same fetch (bounded by the fetch timeout) instead
/// of starting their own.
pub(crate) async fn refetch_for_unknown_kid(issuer: &Arc<IssuerKeys>) {
    let Some(remote) = &issuer.remote else { return };
    let bound = remote.cfg.fetch_timeout + Duration::from_millis(100);
    let gated = async {
        let mut last = remote.unknown_gate.lock().await;
        if last.is_some_and(|t| t.elapsed() < remote.cfg.unknown_kid_refetch) {
            return; // a fetch just ran (we may have waited for it): re-check
        }
        *last = Some(Instant::now());
        let target = Arc::clone(issuer);
        // Spawned so that a client going away cannot cancel the fetch the
        // other waiters depend on.
        let _ = tokio::spawn(async move { refresh(&target).await }).await;
    };
    let _ = tokio::time::timeout(bound, gated).await;
}

/// The `/readyz` view of one issuer.
pub(crate) fn status(issuer: &IssuerKeys) -> IssuerStatus {
    let keys = issuer.key_count();
    let Some(remote) = &issuer.remote else {
        return IssuerStatus {
            issuer: issuer.cfg.issuer.clone(),
            source: "file",
            keys,
            age_seconds: None,
            stale: false,
            last_error: None,
        };
    };
    let age = remote.age_seconds().map(|a| a as u64);
    let last_error = locked(&remote.status).last_error.clone();
    let too_old = remote.cfg.refresh_max + remote.backoff_cap() + remote.cfg.fetch_timeout;
    let stale =
        keys == 0 || last_error.is_some() || age.is_none_or(|a| Duration::from_secs(a) > too_old);
    IssuerStatus {
        issuer: issuer.cfg.issuer.clone(),
        source: "remote",
        keys,
        age_seconds: age,
        stale,
        last_error,
    }
}

/// See `metrics::register`.
pub(crate) fn register_metrics(
    m: &JwksMetrics,
    issuers: &[Arc<IssuerKeys>],
    registry: &mut prometheus_client::registry::Registry,
) {
    metrics::register(m, issuers, registry);
}

#[cfg(test)]
mod tests;
