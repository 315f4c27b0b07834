//! Signed checkpoints: the Ed25519 keys (PKCS#8 PEM private key, SPKI PEM or
//! raw base64 public key), the canonical message a checkpoint signs, the
//! checkpoint record body, and `audit keygen`.
//!
//! The signed message is, byte for byte (ASCII, `\n` line ends):
//!
//! ```text
//! purposegate-audit-checkpoint-v1
//! <covers_seq as decimal>
//! <covers_hash as 64 lowercase hex>
//! ```
//!
//! (with a final `\n`). It binds the whole chain up to `covers_seq`: changing
//! any earlier record changes `covers_hash`, and re-hashing the chain without
//! the private key leaves the signature pointing at the old head.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use super::chain::{hash_hex, ChainHead, CHECKPOINT_EVENT};

/// First line of the signed message (versions the format).
const DOMAIN: &str = "purposegate-audit-checkpoint-v1";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const ED25519_PUBLIC_LEN: usize = 32;

/// A key that cannot be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub msg: String,
}

fn key_err(path: &Path, msg: impl Into<String>) -> KeyError {
    KeyError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The message a checkpoint signs (see the module doc).
pub fn checkpoint_message(covers_seq: u64, covers_hash: &str) -> Vec<u8> {
    format!("{DOMAIN}\n{covers_seq}\n{covers_hash}\n").into_bytes()
}

/// Short id of a public key: the first 16 hex digits of SHA-256 of its 32 bytes.
fn key_id(public: &[u8]) -> String {
    hash_hex(public)[..16].to_string()
}

/// The body of a `checkpoint` record (the writer adds ts, seq and the chain).
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointBody {
    pub event: &'static str,
    pub covers_seq: u64,
    pub covers_hash: String,
    pub key_id: String,
    pub signature: String,
}

/// The writer's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

impl SigningKey {
    /// Loads an Ed25519 private key from a PKCS#8 PEM file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let der = pem_body(&text, "PRIVATE KEY")
            .ok_or_else(|| key_err(path, "not a PEM \"PRIVATE KEY\" (PKCS#8) file"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| key_err(path, format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, key_id })
    }

    /// A checkpoint record body covering `head`.
    pub fn checkpoint(&self, head: &ChainHead) -> CheckpointBody {
        let sig = self.pair.sign(&checkpoint_message(head.seq, &head.hash));
        CheckpointBody {
            event: CHECKPOINT_EVENT,
            covers_seq: head.seq,
            covers_hash: head.hash.clone(),
            key_id: self.key_id.clone(),
            signature: B64.encode(sig.as_ref()),
        }
    }
}

/// A public key for `audit verify --public-key`.
#[derive(Debug, Clone)]
pub struct PublicKey {
    raw: Vec<u8>,
    pub key_id: String,
}

impl PublicKey {
    /// Reads an SPKI PEM ("PUBLIC KEY") or a file holding the raw 32-byte key in base64.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let raw = match pem_body(&text, "PUBLIC KEY") {
            Some(der) => der
                .strip_prefix(&SPKI_PREFIX)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| key_err(path, "not an Ed25519 public key"))?,
            None => B64
                .decode(text.trim())
                .map_err(|_| key_err(path, "neither a PEM public key nor base64"))?,
        };
        if raw.len() != ED25519_PUBLIC_LEN {
            return Err(key_err(path, "an Ed25519 public key is 32 bytes"));
        }
        Ok(PublicKey {
            key_id: key_id(&raw),
            raw,
        })
    }

    /// Whether `signature` (base64) signs the checkpoint of `covers_seq`/`covers_hash`.
    pub fn verify(&self, covers_seq: u64, covers_hash: &str, signature: &str) -> bool {
        let Ok(sig) = B64.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::ED25519, &self.raw)
            .verify(&checkpoint_message(covers_seq, covers_hash), &sig)
            .is_ok()
    }
}

/// The files `audit keygen` wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key_id: String,
}

/// Generates a key pair into `dir`: `audit-signing.pem` (PKCS#8, mode 0600)
/// and `audit-signing.pub.pem` (SPKI). Refuses to overwrite a private key.
pub fn keygen(dir: &Path) -> Result<Generated, KeyError> {
    std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e.to_string()))?;
    let private = dir.join("audit-signing.pem");
    let public = dir.join("audit-signing.pub.pem");
    if private.exists() {
        return Err(key_err(
            &private,
            "already exists; not overwriting a signing key",
        ));
    }
    let pair = Ed25519KeyPair::generate().map_err(|_| key_err(dir, "key generation failed"))?;
    let pkcs8 = pair
        .to_pkcs8()
        .map_err(|_| key_err(dir, "cannot encode the key"))?;
    let mut spki = SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    crate::files::write_private_file(&private, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .map_err(|e| key_err(&private, e))?;
    std::fs::write(&public, pem("PUBLIC KEY", &spki))
        .map_err(|e| key_err(&public, e.to_string()))?;
    Ok(Generated {
        private,
        public,
        key_id: key_id(pair.public_key().as_ref()),
    })
}

/// PEM-encodes `der` with 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The decoded body of the first `label` block in `text`.
fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_verify_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = keygen(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&g.private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sk = SigningKey::load(&g.private).unwrap();
        let pk = PublicKey::load(&g.public).unwrap();
        assert_eq!(pk.key_id, g.key_id);
        let head = ChainHead {
            seq: 7,
            hash: "ab".repeat(32),
        };
        let cp = sk.checkpoint(&head);
        assert_eq!(cp.key_id, g.key_id);
        assert!(pk.verify(7, &head.hash, &cp.signature));
        assert!(!pk.verify(8, &head.hash, &cp.signature));
        assert!(!pk.verify(7, &"cd".repeat(32), &cp.signature));
        assert!(!pk.verify(7, &head.hash, "bm90IGEgc2ln"));
        assert!(keygen(dir.path()).is_err(), "must not overwrite");
    }

    #[test]
    fn raw_base64_public_key_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let g = keygen(dir.path()).unwrap();
        let pem_text = std::fs::read_to_string(&g.public).unwrap();
        let der = pem_body(&pem_text, "PUBLIC KEY").unwrap();
        let raw = dir.path().join("raw.pub");
        std::fs::write(&raw, B64.encode(&der[SPKI_PREFIX.len()..])).unwrap();
        assert_eq!(PublicKey::load(&raw).unwrap().key_id, g.key_id);
        std::fs::write(&raw, "garbage").unwrap();
        assert!(PublicKey::load(&raw).is_err());
        assert!(SigningKey::load(&g.public).is_err());
    }

    #[test]
    fn message_is_the_documented_bytes() {
        assert_eq!(
            checkpoint_message(3, "ff"),
            b"purposegate-audit-checkpoint-v1\n3\nff\n".to_vec()
        );
    }
}
