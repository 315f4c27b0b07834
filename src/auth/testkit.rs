//! Test fixtures for the auth module: dev keys generated once per test run
//! (never committed), a temp directory holding the key files, and a valid
//! baseline token request that each test bends in one way.

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonwebtoken::Algorithm;
use tempfile::TempDir;

use super::mint::{generate_dev_key, jwks_json, mint, DevKey, MintRequest, SigningKey};
use super::Verifier;
use crate::config::{ClaimNames, JwtConfig};

pub(crate) const ISS: &str = "https://idp.example.test";
pub(crate) const AUD: &str = "purposegate";
/// The test clock (2027-01-15).
pub(crate) const NOW: i64 = 1_800_000_000;
pub(crate) const LEEWAY: i64 = 30;
pub(crate) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

/// The asymmetric algorithms the verifier is tested with.
pub(crate) const ASYMMETRIC: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One dev key per asymmetric algorithm (kid = algorithm name), plus a
/// second RS256 key (kid `RS256-b`) at the end.
pub(crate) fn keys() -> &'static [DevKey] {
    static KEYS: OnceLock<Vec<DevKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys: Vec<DevKey> = ASYMMETRIC
            .iter()
            .map(|alg| generate_dev_key(*alg, &format!("{alg:?}")).unwrap())
            .collect();
        keys.push(generate_dev_key(Algorithm::RS256, "RS256-b").unwrap());
        keys
    })
}

pub(crate) fn key(alg: Algorithm) -> &'static DevKey {
    keys().iter().find(|k| k.alg == alg).unwrap()
}

pub(crate) fn second_rsa() -> &'static DevKey {
    keys().last().unwrap()
}

/// The public key of a dev key as SPKI PEM, the bytes an attacker would use
/// as an HMAC secret in a key-confusion attack.
pub(crate) fn public_pem(key: &DevKey) -> String {
    rcgen::KeyPair::from_pem(&key.private_pem)
        .unwrap()
        .public_key_pem()
}

/// Key files in a temp directory and a config pointing at them.
pub(crate) struct Setup {
    _dir: TempDir,
    pub jwks: PathBuf,
    pub secret: PathBuf,
    pub cfg: JwtConfig,
}

impl Setup {
    /// `keys` go to the JWKS file; `secret` (written with a trailing
    /// newline) to the secret file.
    pub(crate) fn new(algorithms: &[Algorithm], keys: &[&DevKey], secret: Option<&[u8]>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let secret_path = dir.path().join("hs256.secret");
        if !keys.is_empty() {
            std::fs::write(&jwks, jwks_json(keys)).unwrap();
        }
        if let Some(s) = secret {
            std::fs::write(&secret_path, [s, b"\n"].concat()).unwrap();
        }
        let cfg = JwtConfig {
            issuer: ISS.into(),
            audiences: vec![AUD.into(), "purposegate-staging".into()],
            algorithms: algorithms.to_vec(),
            jwks_file: (!keys.is_empty()).then(|| jwks.clone()),
            hs256_secret_file: secret.map(|_| secret_path.clone()),
            leeway_seconds: LEEWAY as u64,
            max_lifetime_seconds: 3600,
            cache_max_entries: 100,
            remote: None,
            additional_issuers: Vec::new(),
        };
        Setup {
            _dir: dir,
            jwks,
            secret: secret_path,
            cfg,
        }
    }

    pub(crate) fn verifier(&self) -> Verifier {
        Verifier::new(&self.cfg, &ClaimNames::default()).unwrap()
    }

    pub(crate) fn write_jwks(&self, keys: &[&DevKey]) {
        std::fs::write(&self.jwks, jwks_json(keys)).unwrap();
    }
}

/// A request for a token that passes every check at `NOW`, signed by `key`.
pub(crate) fn request(key: &DevKey) -> MintRequest {
    MintRequest {
        alg: key.alg,
        key: key.signing_key(),
        kid: Some(key.kid.clone()),
        ..baseline()
    }
}

/// The same for HS256 with `SECRET` (no kid: the secret has none).
pub(crate) fn hs_request() -> MintRequest {
    MintRequest {
        alg: Algorithm::HS256,
        key: SigningKey::Secret(SECRET.to_vec()),
        ..baseline()
    }
}

fn baseline() -> MintRequest {
    MintRequest {
        iss: ISS.into(),
        aud: vec![AUD.into()],
        sub: "emp-1".into(),
        roles: vec!["trust-safety".into()],
        purpose: Some("abuse".into()),
        justification: vec![("case_id".into(), "C-1".into())],
        subjects: vec!["u1".into()],
        training_cert_exp: Some(NOW + 86_400),
        iat: NOW - 10,
        ttl_seconds: 600,
        jti: Some("jti-1".into()),
        ..Default::default()
    }
}

pub(crate) fn tok(req: &MintRequest) -> String {
    mint(req).unwrap()
}
