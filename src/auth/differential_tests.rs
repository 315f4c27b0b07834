//! Differential test of token verification: generated and mutated tokens
//! (header, payload and signature mutations, every algorithm) go to
//! purposegate's verifier (hand-written on aws-lc-rs) and to
//! `jsonwebtoken::decode` with the same keys and validation; both must
//! accept and refuse alike. Where purposegate is deliberately stricter
//! (lifetime bound, `iat` in the future, `crit` headers, a kid on an HS256
//! token, ambiguous key selection), the reference applies the same
//! documented rule explicitly in `stricter_rules`, so every other difference
//! is a bug in one of the two.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Map, Value};

use super::mint::DevKey;
use super::testkit::*;
use super::Verifier;

const ALGS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

fn setup() -> &'static (Setup, Verifier) {
    static S: std::sync::OnceLock<(Setup, Verifier)> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let mut algs = ASYMMETRIC.to_vec();
        algs.push(Algorithm::HS256);
        let keys: Vec<&DevKey> = keys().iter().collect();
        let s = Setup::new(&algs, &keys, Some(SECRET));
        let v = s.verifier();
        (s, v)
    })
}

fn now() -> i64 {
    crate::time::now_millis() / 1000
}

/// How the token is signed.
#[derive(Debug, Clone, Copy)]
enum Sig {
    /// With the key its header names (the right one).
    Right,
    /// With another key of the same algorithm family or the HMAC secret.
    Wrong,
    /// Signature bytes cut short.
    Truncated,
    /// No signature at all.
    Empty,
}

/// One generated token: header and payload as JSON, and how it is signed.
#[derive(Debug, Clone)]
struct Case {
    alg_name: String,
    /// The algorithm whose key signs (`None`: unsignable, e.g. `none`).
    signing_alg: Option<Algorithm>,
    kid: Option<String>,
    typ: Option<&'static str>,
    crit: bool,
    payload: Map<String, Value>,
    sig: Sig,
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

fn key_for(alg: Algorithm) -> Option<&'static DevKey> {
    keys().iter().find(|k| k.alg == alg)
}

fn encoding_key(alg: Algorithm, wrong: bool) -> EncodingKey {
    if alg == Algorithm::HS256 {
        let secret: &[u8] = if wrong {
            b"another-secret-another-secret-xx"
        } else {
            SECRET
        };
        return EncodingKey::from_secret(secret).unwrap();
    }
    let k = if wrong && alg == Algorithm::RS256 {
        second_rsa()
    } else if wrong {
        // A key of another curve/type cannot sign this alg; use a fresh one.
        return fresh_key(alg);
    } else {
        key_for(alg).unwrap()
    };
    pem_key(alg, k.private_pem.as_bytes())
}

fn pem_key(alg: Algorithm, pem: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    }
}

/// A key of `alg` that is not in the key set.
fn fresh_key(alg: Algorithm) -> EncodingKey {
    static FRESH: std::sync::OnceLock<Vec<DevKey>> = std::sync::OnceLock::new();
    let fresh = FRESH.get_or_init(|| {
        ASYMMETRIC
            .iter()
            .map(|a| super::mint::generate_dev_key(*a, "fresh").unwrap())
            .collect()
    });
    let k = fresh.iter().find(|k| k.alg == alg).unwrap();
    pem_key(alg, k.private_pem.as_bytes())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Case {
    fn header(&self) -> Value {
        let mut h = Map::new();
        h.insert("alg".into(), json!(self.alg_name));
        if let Some(k) = &self.kid {
            h.insert("kid".into(), json!(k));
        }
        if let Some(t) = self.typ {
            h.insert("typ".into(), json!(t));
        }
        if self.crit {
            h.insert("crit".into(), json!(["exp"]));
        }
        Value::Object(h)
    }

    fn token(&self) -> String {
        let message = format!(
            "{}.{}",
            b64(self.header().to_string().as_bytes()),
            b64(Value::Object(self.payload.clone()).to_string().as_bytes())
        );
        let sig = match (self.signing_alg, self.sig) {
            (None, _) | (_, Sig::Empty) => String::new(),
            (Some(alg), Sig::Right) => {
                jsonwebtoken::crypto::sign(message.as_bytes(), &encoding_key(alg, false), alg)
                    .unwrap()
            }
            (Some(alg), Sig::Wrong) => {
                jsonwebtoken::crypto::sign(message.as_bytes(), &encoding_key(alg, true), alg)
                    .unwrap()
            }
            (Some(alg), Sig::Truncated) => {
                let s =
                    jsonwebtoken::crypto::sign(message.as_bytes(), &encoding_key(alg, false), alg)
                        .unwrap();
                s[..s.len() / 2].to_string()
            }
        };
        format!("{message}.{sig}")
    }
}

/// jsonwebtoken's verdict with the same keys and validation.
fn reference(case: &Case, token: &str, now: i64) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let alg = header.alg;
    let key = match (alg, header.kid.as_deref()) {
        (Algorithm::HS256, _) => match DecodingKey::from_secret(SECRET) {
            Ok(d) => d,
            Err(_) => return false,
        },
        (_, Some(kid)) => match keys().iter().find(|k| k.kid == kid) {
            Some(k) => {
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.jwk.clone()).unwrap();
                match DecodingKey::from_jwk(&jwk) {
                    Ok(d) => d,
                    Err(_) => return false,
                }
            }
            None => return false,
        },
        // No kid: the only key of the algorithm's family (RSA, EC, OKP),
        // which must then accept the algorithm; two of a family are
        // ambiguous and refused rather than tried in turn.
        (_, None) => {
            let family: Vec<&DevKey> = keys()
                .iter()
                .filter(|k| k.alg.family() == alg.family())
                .collect();
            let [k] = family.as_slice() else {
                return false;
            };
            if k.alg != alg {
                return false;
            }
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.jwk.clone()).unwrap();
            match DecodingKey::from_jwk(&jwk) {
                Ok(d) => d,
                Err(_) => return false,
            }
        }
    };
    let mut v = Validation::new(alg);
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD, "purposegate-staging"]);
    v.leeway = LEEWAY as u64;
    v.validate_nbf = true;
    v.required_spec_claims = ["exp", "iss", "aud", "sub"]
        .into_iter()
        .map(String::from)
        .collect::<HashSet<_>>();
    // A key may only verify its own algorithm (the JWK names it).
    if let (false, Some(kid)) = (alg == Algorithm::HS256, header.kid.as_deref()) {
        if keys().iter().find(|k| k.kid == kid).map(|k| k.alg) != Some(alg) {
            return false;
        }
    }
    jsonwebtoken::decode::<Value>(token, &key, &v).is_ok() && stricter_rules(case, now)
}

/// The rules purposegate adds to RFC 7519 validation (docs/keys.md):
/// `iat` required, not in the future, `exp` not before it and `exp - iat`
/// within `max_lifetime_seconds`; no `crit` header; no `kid` on an HS256 token
/// (the secret has none); `sub` a string. Key selection (a kid names the
/// key; without one, the only key that fits the algorithm) is modelled in
/// `reference`.
fn stricter_rules(case: &Case, now: i64) -> bool {
    let p = &case.payload;
    let (Some(iat), Some(exp)) = (
        p.get("iat").and_then(Value::as_i64),
        p.get("exp").and_then(Value::as_i64),
    ) else {
        return false;
    };
    !case.crit
        && iat <= now + LEEWAY
        && exp >= iat
        && exp - iat <= 3600
        && !(case.alg_name == "HS256" && case.kid.is_some())
        && p.get("sub").is_some_and(Value::is_string)
}

fn payload(
    now: i64,
    iat: i64,
    exp: Option<i64>,
    nbf: Option<i64>,
    iss: u8,
    aud: u8,
) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("sub".into(), json!("emp-1"));
    p.insert("roles".into(), json!(["trust-safety"]));
    p.insert("purpose".into(), json!("abuse"));
    p.insert("case_id".into(), json!("C-1"));
    p.insert("subjects".into(), json!(["u1"]));
    p.insert("training_cert_exp".into(), json!(now + 86_400));
    p.insert("iat".into(), json!(now + iat));
    if let Some(e) = exp {
        p.insert("exp".into(), json!(now + e));
    }
    if let Some(n) = nbf {
        p.insert("nbf".into(), json!(now + n));
    }
    match iss {
        0 => {}
        1 => {
            p.insert("iss".into(), json!(ISS));
        }
        2 => {
            p.insert("iss".into(), json!("https://evil.example"));
        }
        _ => {
            p.insert("iss".into(), json!(ISS.to_uppercase()));
        }
    }
    match aud {
        0 => {}
        1 => {
            p.insert("aud".into(), json!(AUD));
        }
        2 => {
            p.insert("aud".into(), json!(["someone-else", AUD]));
        }
        3 => {
            p.insert("aud".into(), json!(["someone-else"]));
        }
        _ => {
            p.insert("aud".into(), json!("purposegate "));
        }
    }
    p
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let alg = 0usize..ALGS.len();
    let header_alg = prop_oneof![
        16 => Just(None),                     // the signing algorithm itself
        1 => Just(Some("none".to_string())),
        1 => Just(Some("HS256".to_string())),
        1 => Just(Some("rs256".to_string())),
        1 => (0usize..ALGS.len()).prop_map(|i| Some(alg_name(ALGS[i]))),
    ];
    let kid = prop_oneof![
        14 => Just(0u8), // the signing key's kid (none for HS256)
        1 => Just(1u8), // another key's kid
        1 => Just(2u8), // unknown kid
        1 => Just(3u8), // no kid
    ];
    let times = (
        prop_oneof![8 => Just(-10i64), 1 => Just(-4000), 1 => Just(LEEWAY + 60), 1 => Just(LEEWAY - 10)],
        prop_oneof![
            12 => Just(Some(600i64)),
            1 => Just(Some(-(LEEWAY + 60))),
            1 => Just(Some(-(LEEWAY - 10))),
            1 => Just(Some(7200)),
            1 => Just(None)
        ],
        prop_oneof![
            8 => Just(None),
            1 => Just(Some(LEEWAY + 60)),
            1 => Just(Some(LEEWAY - 10)),
            1 => Just(Some(-100i64))
        ],
    );
    let claims = (
        prop_oneof![8 => Just(1u8), 1 => Just(0u8), 1 => Just(2u8), 1 => Just(3u8)],
        prop_oneof![6 => Just(1u8), 2 => Just(2u8), 1 => Just(0u8), 1 => Just(3u8), 1 => Just(4u8)],
    );
    let sig = prop_oneof![
        14 => Just(Sig::Right),
        1 => Just(Sig::Wrong),
        1 => Just(Sig::Truncated),
        1 => Just(Sig::Empty),
    ];
    let extra = (
        prop::option::of(prop_oneof![Just("JWT"), Just("at+jwt")]),
        prop::bool::weighted(0.05),
    );
    (alg, header_alg, kid, times, claims, sig, extra).prop_map(
        |(ai, header_alg, kid, (iat, exp, nbf), (iss, aud), sig, (typ, crit))| {
            let signing = ALGS[ai];
            let now = now();
            let own_kid = (signing != Algorithm::HS256).then(|| alg_name(signing));
            let kid = match kid {
                0 => own_kid,
                1 => Some(if signing == Algorithm::RS256 {
                    "RS256-b".into()
                } else {
                    "RS256".into()
                }),
                2 => Some("no-such-key".into()),
                _ => None,
            };
            Case {
                alg_name: header_alg.unwrap_or_else(|| alg_name(signing)),
                signing_alg: Some(signing),
                kid,
                typ,
                crit,
                payload: payload(now, iat, exp, nbf, iss, aud),
                sig,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn purposegate_and_jsonwebtoken_agree(case in case_strategy()) {
        let (_, verifier) = setup();
        let token = case.token();
        let now = now();
        let ours = verifier.verify_uncached(&token, now);
        let theirs = reference(&case, &token, now);
        prop_assert_eq!(ours.is_ok(), theirs, "case {:?}: purposegate {:?}", case, ours.err());
    }
}

#[test]
fn the_generator_produces_both_verdicts() {
    // A differential test whose cases are all refused proves nothing.
    let (_, verifier) = setup();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..300 {
        let case = case_strategy().new_tree(&mut runner).unwrap().current();
        match verifier.verify_uncached(&case.token(), now()) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted >= 20 && refused >= 20,
        "{accepted} accepted, {refused} refused"
    );
}
