//! `Verifier`: the shared, reloadable entry point of token verification.
//! Order of checks (each failure ends it): envelope shape → issuer chosen by
//! the (still unverified) `iss`, only when several issuers are configured →
//! header `alg` allowed → `crit` absent → key chosen by `kid` and fitting
//! `alg` → signature (`signature`, with keys parsed at load) → registered
//! claims at `now` (which re-checks `iss`, now verified) → claim types. The payload is only read
//! before its signature checks out to pick the issuer's key set.
//!
//! Each issuer owns its keys and verified-token cache (`issuer`); remote key
//! sets are fetched in the background (`remote`), and a token naming an
//! unknown `kid` may trigger one rate-limited, single-flight refetch
//! (`verify_async`).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cache::token_key;
use super::issuer::IssuerKeys;
use super::remote::{self, IssuerStatus, JwksMetrics, Remote};
use super::{jose, AuthError, Claims};
use crate::config::{ClaimNames, ConfigError, JwtConfig};

/// Verifies bearer tokens; `Send + Sync`, shared behind an `Arc`.
pub struct Verifier {
    names: ClaimNames,
    /// The primary issuer (`jwt:`) first, then `jwt.additional_issuers`.
    issuers: Vec<Arc<IssuerKeys>>,
    metrics: JwksMetrics,
}

impl Verifier {
    /// Loads keys per config (`jwks_file` and/or `hs256_secret_file`; for a
    /// remote issuer the key set persisted in `cache_dir`, if any). Errors
    /// name the file (and for a JWKS JSON syntax error, the line). Nothing is
    /// fetched here: see `spawn_refreshers`.
    pub fn new(cfg: &JwtConfig, claims: &ClaimNames) -> Result<Verifier, ConfigError> {
        let metrics = JwksMetrics::default();
        let mut client = None;
        let mut issuers = Vec::new();
        for one in std::iter::once(cfg).chain(cfg.additional_issuers.iter()) {
            let remote = match &one.remote {
                Some(r) => Some(Remote::new(&one.issuer, r, &mut client, metrics.clone())?),
                None => None,
            };
            issuers.push(Arc::new(IssuerKeys::new(one, remote)?));
        }
        Ok(Verifier {
            names: claims.clone(),
            issuers,
            metrics,
        })
    }

    /// Re-reads the key files of every issuer (a remote issuer keeps its last
    /// fetched JWKS). Returns `Ok(true)` when some key set changed; those get
    /// an empty cache. A file that cannot be read or parsed leaves that
    /// issuer's keys in place and returns `Err` (again on every call, until
    /// the file is fixed).
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let mut changed = false;
        for issuer in &self.issuers {
            changed |= issuer.reload()?;
        }
        Ok(changed)
    }

    /// Verifies a compact JWS, or answers from the cache. `now` is Unix
    /// seconds; the clock is read by the caller, never here. Never fetches.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Claims>, AuthError> {
        if token.len() > jose::MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed); // before hashing it
        }
        let key = token_key(token);
        // A cached token skips routing (no payload decoding on the hot path).
        for issuer in &self.issuers {
            if let Some(claims) = issuer.state.load().cache.get(&key, now) {
                return Ok(claims);
            }
        }
        self.route(token)?.verify(&self.names, token, key, now)
    }

    /// Like `verify`, but a token whose `kid` is unknown to a remote issuer
    /// first waits (bounded by the fetch timeout) for that issuer's
    /// unknown-kid refetch: at most one per `unknown_kid_refetch_seconds`,
    /// shared by all concurrent requests. Then it is verified again.
    pub async fn verify_async(&self, token: &str, now: i64) -> Result<Arc<Claims>, AuthError> {
        match self.verify(token, now) {
            Err(AuthError::UnknownKey) => {}
            other => return other,
        }
        let issuer = self.route(token)?;
        if issuer.remote.is_none() {
            return Err(AuthError::UnknownKey);
        }
        remote::refetch_for_unknown_kid(issuer).await;
        self.verify(token, now)
    }

    /// Like `verify`, without reading or filling the cache (for `explain`).
    pub fn verify_uncached(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let issuer = self.route(token)?;
        issuer.check(&issuer.state.load().keys, &self.names, token, now)
    }

    /// Number of keys loaded (JWKS keys plus the HS256 secret, if any), over
    /// all issuers.
    pub fn key_count(&self) -> usize {
        self.issuers.iter().map(|i| i.key_count()).sum()
    }

    /// Whether some issuer has no keys yet (the proxy is then not ready:
    /// that issuer's tokens could not verify); a remote issuer needs a
    /// fetched or persisted JWKS.
    pub fn some_issuer_without_keys(&self) -> bool {
        self.issuers.iter().any(|i| !i.ready())
    }

    /// Per-issuer key status for `/readyz`.
    pub fn issuer_status(&self) -> Vec<IssuerStatus> {
        self.issuers.iter().map(|i| remote::status(i)).collect()
    }

    /// Registers `purposegate_jwks_*` metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        remote::register_metrics(&self.metrics, &self.issuers, registry);
    }

    /// Starts one background key fetcher per remote issuer; they end when
    /// `stop` turns true. Needs a Tokio runtime.
    pub fn spawn_refreshers(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.issuers
            .iter()
            .filter(|i| i.remote.is_some())
            .map(|i| tokio::spawn(remote::run(Arc::clone(i), stop.clone())))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn issuers_for_tests(&self) -> &[Arc<IssuerKeys>] {
        &self.issuers
    }

    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.issuers
            .iter()
            .map(|i| i.state.load().cache.len())
            .sum()
    }

    /// The issuer whose keys verify this token. With one issuer that is it
    /// (its `iss` is checked after the signature); with several, the
    /// unverified `iss` picks one and is verified again afterwards.
    fn route(&self, token: &str) -> Result<&Arc<IssuerKeys>, AuthError> {
        if let [only] = self.issuers.as_slice() {
            return Ok(only);
        }
        let iss = unverified_issuer(token)?;
        self.issuers
            .iter()
            .find(|i| i.cfg.issuer == iss)
            .ok_or(AuthError::WrongIssuer)
    }
}

/// The `iss` of a not yet verified token, used only to choose a key set.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    jose::encoded_header(token)?; // shape and size first
    let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    let map: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    match map.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        Some(_) => Err(AuthError::BadClaim("iss")),
        None => Err(AuthError::MissingClaim("iss")),
    }
}
