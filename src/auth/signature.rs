//! Checking a JWS signature (RFC 7515 §5.2 steps 7-8) with keys prepared
//! once, when the key set is loaded.
//!
//! `jsonwebtoken::decode` rebuilds the public key from its JWK components on
//! every call (for RSA that includes the Montgomery set-up of the modulus),
//! parses the header a second time after `jose` did, and deserializes the
//! claims twice. On the path of a token the cache has not seen, that was
//! ~40% of the verification time next to the RSA operation itself
//! (`cargo bench --bench crypto`: `token/verify_uncached_rs256` against
//! `rsa2048_sha256_verify`). So the public keys are parsed into aws-lc-rs
//! `ParsedPublicKey`s here, one per algorithm the key may verify — the same
//! aws-lc-rs algorithms `jsonwebtoken`'s `aws_lc_rs` provider uses — and
//! HS256 uses aws-lc-rs' constant-time HMAC verification. `jsonwebtoken`
//! still names the algorithms and signs the dev tokens (`mint`).
//!
//! Which key may verify which `alg` is decided before this module is reached
//! (`keys::KeyKind::fits`); a key asked for an algorithm it was not prepared
//! for refuses, so a mistake there fails closed.

use std::fmt;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters};
use aws_lc_rs::{hmac, rsa::PublicKeyComponents};
use jsonwebtoken::Algorithm;

use super::AuthError;

/// Key material ready to check signatures.
pub(crate) enum SigKey {
    /// The HS256 secret (boxed: aws-lc-rs keeps the whole HMAC context inline).
    Hmac(Box<hmac::Key>),
    /// A public key, parsed once per algorithm it may verify.
    Public(Vec<(Algorithm, ParsedPublicKey)>),
}

impl fmt::Debug for SigKey {
    // Never the key bytes (a secret must not reach a log line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigKey::Hmac(_) => f.write_str("SigKey::Hmac(..)"),
            SigKey::Public(parsed) => {
                let algs: Vec<_> = parsed.iter().map(|(a, _)| a).collect();
                write!(f, "SigKey::Public({algs:?})")
            }
        }
    }
}

/// The RSA algorithms a JWK may be used with and their aws-lc-rs parameters
/// (2048-8192-bit moduli, as `jwks` enforces on load).
const RSA_ALGS: [(Algorithm, &RsaParameters); 6] = [
    (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
];

impl SigKey {
    pub(crate) fn hmac_sha256(secret: &[u8]) -> SigKey {
        SigKey::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// An RSA public key from its big-endian modulus and exponent, prepared
    /// for `only` (the JWK's `alg`) or, without one, every RSA algorithm.
    pub(crate) fn rsa(n: &[u8], e: &[u8], only: Option<Algorithm>) -> Result<SigKey, String> {
        let components = PublicKeyComponents { n, e };
        let mut parsed = Vec::new();
        for (alg, params) in RSA_ALGS {
            if only.is_none_or(|o| o == alg) {
                let key = components
                    .to_parsed_public_key(params)
                    .map_err(|e| format!("unusable RSA key: {e}"))?;
                parsed.push((alg, key));
            }
        }
        Ok(SigKey::Public(parsed))
    }

    /// An EC public key (uncompressed SEC1 point `04 || x || y`); the point
    /// must lie on the curve.
    pub(crate) fn ec(alg: Algorithm, point: &[u8]) -> Result<SigKey, String> {
        let params = match alg {
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            _ => return Err(format!("{alg:?} is not an EC algorithm")),
        };
        let key = ParsedPublicKey::new(params, point)
            .map_err(|e| format!("x and y are not a point on the curve: {e}"))?;
        Ok(SigKey::Public(vec![(alg, key)]))
    }

    /// An Ed25519 public key (32 bytes).
    pub(crate) fn ed25519(x: &[u8]) -> Result<SigKey, String> {
        let key = ParsedPublicKey::new(&sig::ED25519, x)
            .map_err(|e| format!("unusable Ed25519 key: {e}"))?;
        Ok(SigKey::Public(vec![(Algorithm::EdDSA, key)]))
    }

    /// Checks `signature` over `message` (the token's `header.payload`).
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let ok = match self {
            SigKey::Hmac(_) if alg != Algorithm::HS256 => {
                return Err(AuthError::KeyAlgorithmMismatch)
            }
            SigKey::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            SigKey::Public(parsed) => {
                let Some((_, key)) = parsed.iter().find(|(a, _)| *a == alg) else {
                    return Err(AuthError::KeyAlgorithmMismatch);
                };
                key.verify_sig(message, signature).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    #[test]
    fn ec_checks_the_point_and_the_signature() {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let key = SigKey::ec(Algorithm::ES256, &point).unwrap();
        let signature = pair.sign(&rng, b"h.p").unwrap();
        assert_eq!(
            key.verify(Algorithm::ES256, b"h.p", signature.as_ref()),
            Ok(())
        );
        assert_eq!(
            key.verify(Algorithm::ES256, b"h.q", signature.as_ref()),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            key.verify(Algorithm::ES384, b"h.p", signature.as_ref()),
            Err(AuthError::KeyAlgorithmMismatch)
        );
        let mut off_curve = point.clone();
        off_curve[40] ^= 1;
        assert!(SigKey::ec(Algorithm::ES256, &off_curve)
            .unwrap_err()
            .contains("not a point on the curve"));
        assert!(SigKey::ec(Algorithm::RS256, &point).is_err());
    }

    #[test]
    fn rsa_is_prepared_for_the_jwk_alg_only_when_it_names_one() {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let components: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
        let (n, e) = (components.n.as_slice(), components.e.as_slice());
        let all = SigKey::rsa(n, e, None).unwrap();
        let one = SigKey::rsa(n, e, Some(Algorithm::PS256)).unwrap();
        let algs = |k: &SigKey| match k {
            SigKey::Public(p) => p.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            SigKey::Hmac(_) => Vec::new(),
        };
        assert_eq!(algs(&all).len(), 6);
        assert_eq!(algs(&one), [Algorithm::PS256]);
        let rng = SystemRandom::new();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&sig::RSA_PKCS1_SHA256, &rng, b"h.p", &mut signature)
            .unwrap();
        assert_eq!(all.verify(Algorithm::RS256, b"h.p", &signature), Ok(()));
        assert_eq!(
            all.verify(Algorithm::PS256, b"h.p", &signature),
            Err(AuthError::BadSignature),
            "a PKCS#1 signature is not a PSS one"
        );
        assert_eq!(
            one.verify(Algorithm::RS256, b"h.p", &signature),
            Err(AuthError::KeyAlgorithmMismatch)
        );
    }

    #[test]
    fn hmac_is_hs256_only_and_constant_time_checked() {
        let key = SigKey::hmac_sha256(&[7; 32]);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]), b"h.p");
        assert_eq!(key.verify(Algorithm::HS256, b"h.p", tag.as_ref()), Ok(()));
        assert_eq!(
            key.verify(Algorithm::HS256, b"h.p", &tag.as_ref()[..31]),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            key.verify(Algorithm::HS384, b"h.p", tag.as_ref()),
            Err(AuthError::KeyAlgorithmMismatch)
        );
        assert!(!format!("{key:?}").contains('7'));
    }
}
