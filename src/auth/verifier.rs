//! `Verifier`: the shared, reloadable entry point of token verification.
//! Order of checks (each failure ends it): envelope shape → header `alg`
//! allowed → `crit` absent → key chosen by `kid` and fitting `alg` →
//! signature (by `jsonwebtoken`) → registered claims at `now` → claim types.
//! The payload is not even parsed before its signature checks out.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::cache::{token_key, TokenCache};
use super::keys::{KeyFiles, KeySet};
use super::{extract, jose, registered, AuthError, Claims};
use crate::config::{ClaimNames, ConfigError, JwtConfig};

/// Keys and the cache of tokens verified with them, swapped as one unit so
/// that a cached answer never outlives the keys that produced it.
struct KeyState {
    keys: KeySet,
    cache: TokenCache,
    /// Digest of the key files this state was built from.
    fingerprint: [u8; 32],
}

/// Verifies bearer tokens; `Send + Sync`, shared behind an `Arc`.
pub struct Verifier {
    cfg: JwtConfig,
    names: ClaimNames,
    state: ArcSwap<KeyState>,
    /// Serializes reloads so that two of them cannot interleave their
    /// compare-and-swap of the key state.
    reload_lock: Mutex<()>,
}

impl Verifier {
    /// Loads keys per config (`jwks_file` and/or `hs256_secret_file`).
    /// Errors name the file (and for a JWKS JSON syntax error, the line).
    pub fn new(cfg: &JwtConfig, claims: &ClaimNames) -> Result<Verifier, ConfigError> {
        let files = KeyFiles::read(cfg)?;
        let state = KeyState {
            keys: files.parse()?,
            cache: TokenCache::new(cfg.cache_max_entries),
            fingerprint: files.fingerprint(),
        };
        Ok(Verifier {
            cfg: cfg.clone(),
            names: claims.clone(),
            state: ArcSwap::from_pointee(state),
            reload_lock: Mutex::new(()),
        })
    }

    /// Re-reads the key files. When their content changed, swaps in the new
    /// keys with an empty cache and returns `Ok(true)`. A file that cannot be
    /// read or parsed leaves the current keys in place and returns `Err`
    /// (again on every call, until the file is fixed).
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let files = KeyFiles::read(&self.cfg)?;
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

    /// Verifies a compact JWS, or answers from the cache. `now` is Unix
    /// seconds; the clock is read by the caller, never here.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Claims>, AuthError> {
        if token.len() > jose::MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed); // before hashing it
        }
        let state = self.state.load();
        let key = token_key(token);
        if let Some(claims) = state.cache.get(&key, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.check(&state.keys, token, now)?);
        let window = registered::window(claims.exp, claims.nbf, registered::leeway(&self.cfg));
        state.cache.insert(key, Arc::clone(&claims), window, now);
        Ok(claims)
    }

    /// Like `verify`, without reading or filling the cache (for `explain`).
    pub fn verify_uncached(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        self.check(&self.state.load().keys, token, now)
    }

    /// Number of keys loaded (JWKS keys plus the HS256 secret, if any).
    pub fn key_count(&self) -> usize {
        self.state.load().keys.len()
    }

    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.state.load().cache.len()
    }

    fn check(&self, keys: &KeySet, token: &str, now: i64) -> Result<Claims, AuthError> {
        let header = jose::read_header(jose::encoded_header(token)?, &self.cfg.algorithms)?;
        let key = keys.select(header.alg, header.kid.as_deref())?;
        let payload = signed_payload(token, header.alg, &key.key)?;
        let reg = registered::check(&payload, &self.cfg, now)?;
        extract::claims(&payload, &self.names, reg)
    }
}

/// Checks the signature with exactly one algorithm and returns the payload.
/// `jsonwebtoken`'s own claim validation is switched off: it would read the
/// system clock, and `registered` does those checks with the caller's `now`.
fn signed_payload(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
) -> Result<Map<String, Value>, AuthError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| jwt_error(e.kind()))
}

fn jwt_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => AuthError::Malformed,
        K::InvalidAlgorithm
        | K::InvalidKeyFormat
        | K::InvalidEcdsaKey
        | K::InvalidEddsaKey
        | K::InvalidRsaKey(_) => AuthError::KeyAlgorithmMismatch,
        // Anything else (including future variants) fails closed.
        _ => AuthError::BadSignature,
    }
}
