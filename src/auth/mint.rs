//! Dev tooling: minting tokens (`purposegate token mint`, `demo`, tests) and
//! generating throwaway signing keys with their public JWKS. Nothing here is
//! used to verify requests; keys made here live only as long as the caller
//! keeps them (the demo keeps them in memory, tests generate them per run).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::ClaimNames;

/// The key a token is signed with.
#[derive(Clone)]
pub enum SigningKey {
    /// HS256: the raw secret bytes (as in the secret file, minus the newline).
    Secret(Vec<u8>),
    /// RS*/PS*/ES*/EdDSA: a PKCS#8 private key in PEM (PKCS#1 also for RSA).
    Pem(Vec<u8>),
}

impl Default for SigningKey {
    fn default() -> Self {
        SigningKey::Secret(Vec::new())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, even in debug output.
        match self {
            SigningKey::Secret(_) => f.write_str("Secret([redacted])"),
            SigningKey::Pem(_) => f.write_str("Pem([redacted])"),
        }
    }
}

/// What to put in a minted token. Build it with struct update syntax:
/// `MintRequest { sub: "e1".into(), iat: now, ttl_seconds: 600, ..Default::default() }`.
///
/// Claims use the contract names, renamed per `claim_names` (the same
/// `claims:` section the verifier uses). Empty `iss`, `sub`, `roles`,
/// `subjects`, `aud` and `None` fields are left out of the token. `extra` is
/// applied last and overrides anything else, which lets tests craft claims
/// of the wrong type.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    pub alg: Algorithm,
    pub key: SigningKey,
    /// Header `kid`.
    pub kid: Option<String>,
    pub iss: String,
    /// One audience is written as a string, several as an array.
    pub aud: Vec<String>,
    pub sub: String,
    pub roles: Vec<String>,
    pub purpose: Option<String>,
    /// Justification claims, e.g. `("case_id", "C-1")`.
    pub justification: Vec<(String, String)>,
    pub subjects: Vec<String>,
    pub training_cert_exp: Option<i64>,
    /// Issued at (Unix seconds); `exp` is `iat + ttl_seconds`.
    pub iat: i64,
    pub ttl_seconds: i64,
    pub nbf: Option<i64>,
    pub jti: Option<String>,
    pub claim_names: ClaimNames,
    pub extra: Map<String, Value>,
}

/// Why minting or key generation failed. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("{alg:?} needs {needs}")]
    WrongKeyKind { alg: Algorithm, needs: &'static str },
    #[error("the signing key cannot be used for {alg:?}: {reason}")]
    BadKey { alg: Algorithm, reason: String },
    #[error("dev keys cannot be generated for {0:?}")]
    Unsupported(Algorithm),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Signs a token for `req`.
pub fn mint(req: &MintRequest) -> Result<String, MintError> {
    let key = encoding_key(req.alg, &req.key)?;
    let mut header = Header::new(req.alg);
    header.kid = req.kid.clone();
    jsonwebtoken::encode(&header, &payload(req), &key).map_err(|e| MintError::Sign(e.to_string()))
}

fn encoding_key(alg: Algorithm, key: &SigningKey) -> Result<EncodingKey, MintError> {
    let bad = |e: jsonwebtoken::errors::Error| MintError::BadKey {
        alg,
        reason: e.to_string(),
    };
    match (alg.family(), key) {
        (AlgorithmFamily::Hmac, SigningKey::Secret(s)) => EncodingKey::from_secret(s).map_err(bad),
        (AlgorithmFamily::Rsa, SigningKey::Pem(p)) => EncodingKey::from_rsa_pem(p).map_err(bad),
        (AlgorithmFamily::Ec, SigningKey::Pem(p)) => EncodingKey::from_ec_pem(p).map_err(bad),
        (AlgorithmFamily::Ed, SigningKey::Pem(p)) => EncodingKey::from_ed_pem(p).map_err(bad),
        (AlgorithmFamily::Hmac, SigningKey::Pem(_)) => Err(MintError::WrongKeyKind {
            alg,
            needs: "a secret, not a PEM key",
        }),
        (_, SigningKey::Secret(_)) => Err(MintError::WrongKeyKind {
            alg,
            needs: "a PEM private key, not a secret",
        }),
    }
}

fn payload(req: &MintRequest) -> Map<String, Value> {
    let name = |logical: &'static str| req.claim_names.token_name(logical).to_string();
    let mut p = Map::new();
    let mut put = |key: String, value: Value| {
        p.insert(key, value);
    };
    if !req.iss.is_empty() {
        put("iss".into(), json!(req.iss));
    }
    match req.aud.as_slice() {
        [] => {}
        [one] => put("aud".into(), json!(one)),
        many => put("aud".into(), json!(many)),
    }
    if !req.sub.is_empty() {
        put(name("sub"), json!(req.sub));
    }
    if !req.roles.is_empty() {
        put(name("roles"), json!(req.roles));
    }
    if let Some(purpose) = &req.purpose {
        put(name("purpose"), json!(purpose));
    }
    for (claim, value) in &req.justification {
        put(req.claim_names.token_name(claim).to_string(), json!(value));
    }
    if !req.subjects.is_empty() {
        put(name("subjects"), json!(req.subjects));
    }
    if let Some(t) = req.training_cert_exp {
        put(name("training_cert_exp"), json!(t));
    }
    put("iat".into(), json!(req.iat));
    put("exp".into(), json!(req.iat.saturating_add(req.ttl_seconds)));
    if let Some(nbf) = req.nbf {
        put("nbf".into(), json!(nbf));
    }
    if let Some(jti) = &req.jti {
        put(name("jti"), json!(jti));
    }
    for (k, v) in &req.extra {
        put(k.clone(), v.clone());
    }
    p
}

/// A generated signing key with its public JWK (which carries `kid`,
/// `alg` and `use: sig`).
#[derive(Clone)]
pub struct DevKey {
    pub alg: Algorithm,
    pub kid: String,
    /// PKCS#8 PEM, usable as `SigningKey::Pem`.
    pub private_pem: String,
    pub jwk: Value,
}

impl fmt::Debug for DevKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("private_pem", &"[redacted]")
            .field("jwk", &self.jwk)
            .finish()
    }
}

impl DevKey {
    /// The private key as a `SigningKey`.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::Pem(self.private_pem.clone().into_bytes())
    }
}

/// Generates a key for `alg`: RS256/384/512 and PS256/384/512 (RSA 2048),
/// ES256 (P-256), ES384 (P-384), EdDSA (Ed25519).
pub fn generate_dev_key(alg: Algorithm, kid: &str) -> Result<DevKey, MintError> {
    use Algorithm::*;
    let rc_alg = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => &rcgen::PKCS_RSA_SHA256,
        ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        EdDSA => &rcgen::PKCS_ED25519,
        _ => return Err(MintError::Unsupported(alg)),
    };
    let pair =
        rcgen::KeyPair::generate_for(rc_alg).map_err(|e| MintError::Generate(e.to_string()))?;
    let private_pem = pair.serialize_pem();
    let mut jwk = public_jwk(alg, &pair, &private_pem)?;
    jwk.insert("kid".into(), json!(kid));
    jwk.insert("use".into(), json!("sig"));
    jwk.insert("alg".into(), json!(alg));
    Ok(DevKey {
        alg,
        kid: kid.to_string(),
        private_pem,
        jwk: Value::Object(jwk),
    })
}

fn public_jwk(
    alg: Algorithm,
    pair: &rcgen::KeyPair,
    private_pem: &str,
) -> Result<Map<String, Value>, MintError> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let raw = pair.public_key_raw();
    let generated = |what: &str| MintError::Generate(format!("unexpected {what} public key"));
    let jwk = match alg.family() {
        // rcgen hands out the raw public key: 0x04 || x || y for EC.
        AlgorithmFamily::Ec => {
            let (crv, len) = if alg == Algorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let point = raw
                .strip_prefix(&[0x04])
                .filter(|p| p.len() == 2 * len)
                .ok_or_else(|| generated("EC"))?;
            let (x, y) = point.split_at(len);
            json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
        }
        AlgorithmFamily::Ed if raw.len() == 32 => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)})
        }
        // For RSA the raw key is PKCS#1 DER; let jsonwebtoken pull out n and e.
        AlgorithmFamily::Rsa => rsa_public_jwk(alg, private_pem)?,
        _ => return Err(generated("Ed25519")),
    };
    match jwk {
        Value::Object(map) => Ok(map),
        _ => Err(generated("JWK")),
    }
}

fn rsa_public_jwk(alg: Algorithm, private_pem: &str) -> Result<Value, MintError> {
    let fail = |e: jsonwebtoken::errors::Error| MintError::Generate(e.to_string());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(fail)?;
    match Jwk::from_encoding_key(&key, alg).map_err(fail)?.algorithm {
        AlgorithmParameters::RSA(p) => Ok(json!({"kty": "RSA", "n": p.n, "e": p.e})),
        _ => Err(MintError::Generate("unexpected RSA public key".into())),
    }
}

/// A JWKS document (`{"keys": [...]}`, pretty-printed) of the keys' public
/// halves.
pub fn jwks_json(keys: &[&DevKey]) -> String {
    let list: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
    format!("{:#}", json!({ "keys": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_layout() {
        let mut names = ClaimNames::default();
        names.renames.insert("purpose".into(), "prp".into());
        let req = MintRequest {
            iss: "i".into(),
            aud: vec!["a".into()],
            sub: "e1".into(),
            purpose: Some("abuse".into()),
            justification: vec![("case_id".into(), "C-1".into())],
            iat: 100,
            ttl_seconds: 60,
            claim_names: names,
            extra: json!({"roles": "not-a-list"}).as_object().cloned().unwrap(),
            ..Default::default()
        };
        let p = payload(&req);
        assert_eq!(p["aud"], json!("a"));
        assert_eq!(p["prp"], json!("abuse"));
        assert!(!p.contains_key("purpose"));
        assert_eq!(p["case_id"], json!("C-1"));
        assert_eq!(
            (p["iat"].as_i64(), p["exp"].as_i64()),
            (Some(100), Some(160))
        );
        assert_eq!(p["roles"], json!("not-a-list"), "extra overrides");
        assert!(!p.contains_key("subjects") && !p.contains_key("nbf"));
        let two = MintRequest {
            aud: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(payload(&two)["aud"], json!(["a", "b"]));
    }

    #[test]
    fn key_kinds_must_match_the_algorithm() {
        let pem = MintRequest {
            alg: Algorithm::HS256,
            key: SigningKey::Pem(b"-----BEGIN PUBLIC KEY-----".to_vec()),
            ..Default::default()
        };
        assert!(matches!(mint(&pem), Err(MintError::WrongKeyKind { .. })));
        let secret = MintRequest {
            alg: Algorithm::RS256,
            key: SigningKey::Secret(vec![1; 32]),
            ..Default::default()
        };
        assert!(matches!(mint(&secret), Err(MintError::WrongKeyKind { .. })));
        let empty = MintRequest::default();
        assert!(matches!(mint(&empty), Err(MintError::BadKey { .. })));
        assert_eq!(
            generate_dev_key(Algorithm::HS256, "k").err(),
            Some(MintError::Unsupported(Algorithm::HS256))
        );
    }

    #[test]
    fn debug_output_redacts_keys() {
        let k = generate_dev_key(Algorithm::ES256, "k1").unwrap();
        assert!(!format!("{k:?}").contains("PRIVATE KEY"));
        assert!(k.private_pem.contains("PRIVATE KEY"));
        let req = MintRequest {
            key: SigningKey::Secret(b"hunter2hunter2".to_vec()),
            ..Default::default()
        };
        assert!(!format!("{req:?}").contains("hunter2"));
        let jwks: Value = serde_json::from_str(&jwks_json(&[&k])).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], json!("k1"));
        assert_eq!(jwks["keys"][0]["crv"], json!("P-256"));
        assert!(jwks["keys"][0].get("d").is_none());
    }
}
