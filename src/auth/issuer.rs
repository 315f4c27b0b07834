//! One issuer's live key set: its config, the keys and the cache of tokens
//! verified with them (swapped as one unit), and — when its keys come from
//! the identity provider — the fetcher state (`remote::Remote`). A key-set
//! change, from a file reload or a fetch, always starts an empty cache, so a
//! token verified with a key that has since been removed is not served from
//! the cache either.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::cache::{TokenCache, TokenKey};
use super::keys::{KeyFiles, KeySet};
use super::remote::Remote;
use super::signature::SigKey;
use super::{extract, jose, registered, AuthError, Claims};
use crate::config::{ClaimNames, ConfigError, JwtConfig};

/// Keys and the cache of tokens verified with them, swapped as one unit so
/// that a cached answer never outlives the keys that produced it.
pub(crate) struct KeyState {
    pub keys: KeySet,
    pub cache: TokenCache,
    /// Digest of the key material this state was built from.
    fingerprint: [u8; 32],
}

/// One configured issuer.
pub(crate) struct IssuerKeys {
    pub cfg: JwtConfig,
    pub state: ArcSwap<KeyState>,
    /// Serializes rebuilds so that two of them cannot interleave their
    /// compare-and-swap of the key state.
    rebuild_lock: Mutex<()>,
    /// Present when keys are fetched (`jwks_url` / `oidc_issuer`).
    pub remote: Option<Remote>,
}

impl IssuerKeys {
    /// Loads the issuer's key files; a remote issuer starts with the key set
    /// persisted in `cache_dir`, if any, or else with no JWKS keys.
    pub(crate) fn new(cfg: &JwtConfig, remote: Option<Remote>) -> Result<Self, ConfigError> {
        let files = KeyFiles::read(cfg)?;
        let state = KeyState {
            keys: files.parse()?,
            cache: TokenCache::new(cfg.cache_max_entries),
            fingerprint: files.fingerprint(),
        };
        let issuer = IssuerKeys {
            cfg: cfg.clone(),
            state: ArcSwap::from_pointee(state),
            rebuild_lock: Mutex::new(()),
            remote,
        };
        issuer.load_persisted();
        Ok(issuer)
    }

    fn load_persisted(&self) {
        let Some(remote) = &self.remote else { return };
        let Some((bytes, saved_at)) = remote.load_persisted() else {
            return;
        };
        match self.apply_remote(bytes) {
            Ok(_) => {
                remote.mark_loaded_from_disk(saved_at);
                tracing::info!(issuer = %self.cfg.issuer, keys = self.key_count(), "loaded the last good key set from cache_dir");
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "ignoring the persisted key set")
            }
        }
    }

    /// Re-reads the key files (keeping the last fetched JWKS, if remote).
    pub(crate) fn reload(&self) -> Result<bool, ConfigError> {
        let _guard = self.lock();
        let fetched = self.remote.as_ref().and_then(Remote::current);
        self.rebuild(fetched.as_deref())
    }

    /// Installs a fetched JWKS document if it parses; it then becomes the
    /// issuer's current remote document. A bad document changes nothing.
    pub(crate) fn apply_remote(&self, bytes: Vec<u8>) -> Result<bool, ConfigError> {
        let _guard = self.lock();
        let changed = self.rebuild(Some(&bytes))?;
        if let Some(remote) = &self.remote {
            remote.set_current(bytes);
        }
        Ok(changed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.rebuild_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the state from the files plus `fetched`; swaps it in (with an
    /// empty cache) only when the key material changed.
    fn rebuild(&self, fetched: Option<&[u8]>) -> Result<bool, ConfigError> {
        let mut files = KeyFiles::read(&self.cfg)?;
        if let (Some(bytes), Some(remote)) = (fetched, &self.remote) {
            files.set_jwks(Path::new(remote.label()), bytes.to_vec());
        }
        let fingerprint = files.fingerprint();
        if fingerprint == self.state.load().fingerprint {
            return Ok(false);
        }
        let state = KeyState {
            keys: files.parse()?,
            cache: TokenCache::new(self.cfg.cache_max_entries),
            fingerprint,
        };
        self.state.store(Arc::new(state));
        Ok(true)
    }

    /// Keys are in place: for a remote issuer, a fetched or persisted JWKS.
    pub(crate) fn ready(&self) -> bool {
        self.key_count() > 0 && self.remote.as_ref().is_none_or(|r| r.current().is_some())
    }

    pub(crate) fn key_count(&self) -> usize {
        self.state.load().keys.len()
    }

    /// Full verification with the current keys, filling the cache.
    pub(crate) fn verify(
        &self,
        names: &ClaimNames,
        token: &str,
        key: TokenKey,
        now: i64,
    ) -> Result<Arc<Claims>, AuthError> {
        let state = self.state.load();
        if let Some(claims) = state.cache.get(&key, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.check(&state.keys, names, token, now)?);
        let window = registered::window(claims.exp, claims.nbf, registered::leeway(&self.cfg));
        state.cache.insert(key, Arc::clone(&claims), window, now);
        Ok(claims)
    }

    pub(crate) fn check(
        &self,
        keys: &KeySet,
        names: &ClaimNames,
        token: &str,
        now: i64,
    ) -> Result<Claims, AuthError> {
        let header = jose::read_header(jose::encoded_header(token)?, &self.cfg.algorithms)?;
        let key = keys.select(header.alg, header.kid.as_deref())?;
        let payload = signed_payload(token, header.alg, &key.key)?;
        let reg = registered::check(&payload, &self.cfg, now)?;
        extract::claims(&payload, names, reg)
    }
}

/// Checks the signature with exactly one algorithm (RFC 7515 §5.2: over the
/// encoded `header.payload`, as sent) and only then decodes the payload.
/// `jose::encoded_header` has already checked the three-part base64url shape.
fn signed_payload(
    token: &str,
    alg: Algorithm,
    key: &SigKey,
) -> Result<Map<String, Value>, AuthError> {
    let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::Malformed)?;
    key.verify(alg, message.as_bytes(), &signature)?;
    let (_, payload) = message.split_once('.').ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}
