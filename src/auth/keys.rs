//! Verification keys: what kind each key is, which algorithms it may verify
//! (the guard against algorithm/key-type confusion), choosing the key for a
//! token, and reading the key files (JWKS, HS256 secret) with a fingerprint
//! so that a reload can tell whether anything changed.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use sha2::{Digest, Sha256};

use super::signature::SigKey;
use super::{jwks, AuthError};
use crate::config::{ConfigError, JwtConfig};

/// Shortest HS256 secret we accept: RFC 7518 §3.2 wants a key at least as
/// long as the hash output (256 bits).
const MIN_SECRET_BYTES: usize = 32;

/// The type of a key, precise enough to decide which `alg` it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn family(self) -> AlgorithmFamily {
        match self {
            KeyKind::Hmac => AlgorithmFamily::Hmac,
            KeyKind::Rsa => AlgorithmFamily::Rsa,
            KeyKind::EcP256 | KeyKind::EcP384 => AlgorithmFamily::Ec,
            KeyKind::Ed25519 => AlgorithmFamily::Ed,
        }
    }

    /// Whether a key of this kind may verify `alg`. This is the one place
    /// that prevents e.g. an HS256 token being checked with an RSA public key
    /// as the HMAC secret, or ES384 against a P-256 key.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => alg == HS256,
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Hmac => "HMAC",
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
        })
    }
}

/// One key that can verify signatures.
#[derive(Debug)] // SigKey redacts its bytes
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK `alg` member; when present the token's `alg` must equal it.
    pub alg: Option<Algorithm>,
    pub key: SigKey,
}

impl VerifyKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// All keys loaded from the configured files. Kids are unique (checked when
/// the JWKS is parsed).
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token: by `kid` when the token names one, otherwise the
    /// only key of the algorithm's family (a kid-less token must not make us
    /// try several keys). The key must then fit `alg`.
    pub(crate) fn select(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<&VerifyKey, AuthError> {
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(AuthError::UnknownKey)?,
            None => self.only_key_of(alg.family())?,
        };
        if key.accepts(alg) {
            Ok(key)
        } else {
            Err(AuthError::KeyAlgorithmMismatch)
        }
    }

    fn only_key_of(&self, family: AlgorithmFamily) -> Result<&VerifyKey, AuthError> {
        let mut same = self.keys.iter().filter(|k| k.kind.family() == family);
        match (same.next(), same.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(AuthError::UnknownKey),
            (Some(_), Some(_)) => Err(AuthError::AmbiguousKey),
        }
    }
}

/// The content of one key file.
struct FileBytes {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl FileBytes {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
        Ok(FileBytes {
            path: path.to_path_buf(),
            bytes,
        })
    }
}

/// The key files as read from disk, not yet parsed.
pub(crate) struct KeyFiles {
    jwks: Option<FileBytes>,
    secret: Option<FileBytes>,
}

impl KeyFiles {
    /// Reads the configured files. The secret is read only when HS256 is an
    /// allowed algorithm: otherwise it could never be used anyway.
    pub(crate) fn read(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        let jwks = cfg.jwks_file.as_deref().map(FileBytes::read).transpose()?;
        let secret = match &cfg.hs256_secret_file {
            Some(path) if cfg.algorithms.contains(&Algorithm::HS256) => {
                Some(FileBytes::read(path)?)
            }
            _ => None,
        };
        Ok(KeyFiles { jwks, secret })
    }

    /// Uses a fetched JWKS document (labelled, in messages, by its URL) in
    /// place of a JWKS file.
    pub(crate) fn set_jwks(&mut self, label: &Path, bytes: Vec<u8>) {
        self.jwks = Some(FileBytes {
            path: label.to_path_buf(),
            bytes,
        });
    }

    /// A digest of both files' contents, to detect changes on reload.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for file in [&self.jwks, &self.secret] {
            match file {
                // Length-prefixed so that bytes cannot shift between files.
                Some(f) => {
                    hasher.update([1]);
                    hasher.update((f.bytes.len() as u64).to_le_bytes());
                    hasher.update(&f.bytes);
                }
                None => hasher.update([0]),
            }
        }
        hasher.finalize().into()
    }

    pub(crate) fn parse(&self) -> Result<KeySet, ConfigError> {
        let mut keys = match &self.jwks {
            Some(f) => jwks::parse_jwks(&f.path, &f.bytes)?,
            None => Vec::new(),
        };
        if let Some(f) = &self.secret {
            keys.push(secret_key(&f.path, &f.bytes)?);
        }
        Ok(KeySet { keys })
    }
}

/// The HS256 secret: the file's bytes minus one trailing newline (editors
/// add one; it is never meant to be part of the secret).
fn secret_key(path: &Path, bytes: &[u8]) -> Result<VerifyKey, ConfigError> {
    let secret = trim_one_newline(bytes);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::new(
            path,
            None,
            format!("the HS256 secret must be at least {MIN_SECRET_BYTES} bytes long"),
        ));
    }
    Ok(VerifyKey {
        kid: None,
        kind: KeyKind::Hmac,
        alg: Some(Algorithm::HS256),
        key: SigKey::hmac_sha256(secret),
    })
}

fn trim_one_newline(bytes: &[u8]) -> &[u8] {
    match bytes {
        [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n'] => rest,
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: Option<&str>, kind: KeyKind, alg: Option<Algorithm>) -> VerifyKey {
        VerifyKey {
            kid: kid.map(str::to_string),
            kind,
            alg,
            // The bytes do not matter for selection.
            key: SigKey::hmac_sha256(&[0; 32]),
        }
    }

    #[test]
    fn kinds_fit_only_their_algorithms() {
        use Algorithm::*;
        let all = [
            HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
        ];
        let fits = |kind: KeyKind| all.iter().filter(|a| kind.fits(**a)).count();
        assert_eq!(fits(KeyKind::Hmac), 1);
        assert_eq!(fits(KeyKind::Rsa), 6);
        assert!(KeyKind::EcP256.fits(ES256) && !KeyKind::EcP256.fits(ES384));
        assert!(KeyKind::EcP384.fits(ES384) && !KeyKind::EcP384.fits(ES256));
        assert!(KeyKind::Ed25519.fits(EdDSA) && fits(KeyKind::Ed25519) == 1);
        assert!(!KeyKind::Rsa.fits(HS256) && !KeyKind::EcP256.fits(HS256));
    }

    #[test]
    fn selection_by_kid_and_family() {
        let set = KeySet {
            keys: vec![
                key(Some("r1"), KeyKind::Rsa, Some(Algorithm::RS256)),
                key(Some("r2"), KeyKind::Rsa, None),
                key(Some("e1"), KeyKind::EcP256, None),
                key(None, KeyKind::Hmac, Some(Algorithm::HS256)),
            ],
        };
        let kid = |alg, kid| set.select(alg, kid).map(|k| k.kid.clone());
        assert_eq!(kid(Algorithm::RS256, Some("r1")), Ok(Some("r1".into())));
        assert_eq!(
            kid(Algorithm::PS256, Some("r1")),
            Err(AuthError::KeyAlgorithmMismatch)
        );
        assert_eq!(kid(Algorithm::PS256, Some("r2")), Ok(Some("r2".into())));
        assert_eq!(
            kid(Algorithm::RS256, Some("zz")),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(kid(Algorithm::RS256, None), Err(AuthError::AmbiguousKey));
        assert_eq!(kid(Algorithm::ES256, None), Ok(Some("e1".into())));
        assert_eq!(
            kid(Algorithm::ES384, None),
            Err(AuthError::KeyAlgorithmMismatch)
        );
        assert_eq!(kid(Algorithm::EdDSA, None), Err(AuthError::UnknownKey));
        assert_eq!(kid(Algorithm::HS256, None), Ok(None));
        // An HS256 token naming an RSA key's kid must never reach that key.
        assert_eq!(
            kid(Algorithm::HS256, Some("r1")),
            Err(AuthError::KeyAlgorithmMismatch)
        );
        assert_eq!(
            kid(Algorithm::RS256, Some("e1")),
            Err(AuthError::KeyAlgorithmMismatch)
        );
    }

    #[test]
    fn secret_rules() {
        let p = Path::new("secret.txt");
        assert_eq!(trim_one_newline(b"abc\n\n"), b"abc\n");
        assert_eq!(trim_one_newline(b"abc\r\n"), b"abc");
        assert_eq!(trim_one_newline(b"abc"), b"abc");
        let e = secret_key(p, &[b'x'; 31]).err().unwrap();
        assert!(e.to_string().starts_with("secret.txt: "), "{e}");
        assert!(!e.to_string().contains("xxx"), "{e}");
        let mut s = vec![b'x'; 31];
        s.push(b'\n');
        assert!(secret_key(p, &s).is_err(), "the newline must not count");
        assert!(secret_key(p, &[b'x'; 32]).is_ok());
    }
}
