//! End-to-end tests of `Verifier`: real keys generated at test time, tokens
//! minted with `mint`, and one property per test, each able to fail.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::mint::{jwks_json, mint, MintRequest, SigningKey};
use super::testkit::*;
use super::{AuthError, Verifier};
use crate::config::ClaimNames;

fn all_algs() -> Vec<Algorithm> {
    let mut algs = ASYMMETRIC.to_vec();
    algs.push(Algorithm::HS256);
    algs
}

/// Every dev key in the JWKS plus the secret, every algorithm allowed.
fn everything() -> Setup {
    let keys: Vec<_> = keys().iter().collect();
    Setup::new(&all_algs(), &keys, Some(SECRET))
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// A token with the given header whose payload is otherwise valid, signed
/// HS256 with `SECRET` whatever the header says.
fn hand_built(header: &Value) -> String {
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "e", "iat": NOW, "exp": NOW + 60});
    signed(&header.to_string(), &claims.to_string())
}

fn signed(header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{sig}")
}

#[test]
fn verifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
}

#[test]
fn every_algorithm_round_trips() {
    let setup = everything();
    let v = setup.verifier();
    assert_eq!(v.key_count(), keys().len() + 1);
    for alg in ASYMMETRIC {
        let c = v.verify_uncached(&tok(&request(key(alg))), NOW);
        assert_eq!(c.map(|c| c.sub), Ok("emp-1".to_string()), "{alg:?}");
    }
    let c = v.verify_uncached(&tok(&hs_request()), NOW).unwrap();
    assert_eq!(c.roles, ["trust-safety"]);
    // The JWKS describes each key with the right type.
    let doc: Value = serde_json::from_str(&jwks_json(&keys().iter().collect::<Vec<_>>())).unwrap();
    let kty: Vec<_> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert_eq!(kty, ["RSA", "RSA", "RSA", "RSA", "EC", "EC", "OKP", "RSA"]);
}

#[test]
fn alg_none_is_refused() {
    let v = everything().verifier();
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "e", "iat": NOW, "exp": NOW + 60});
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        for sig in ["", "AAAA"] {
            let token = format!("{}.{}.{sig}", b64(header), b64(&claims.to_string()));
            assert_eq!(
                v.verify(&token, NOW).unwrap_err(),
                AuthError::AlgorithmNotAllowed("none".into())
            );
        }
    }
    // The literal token from the brief's example header.
    let token = format!("eyJhbGciOiJub25lIn0.{}.", b64(&claims.to_string()));
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn hs256_with_the_public_key_is_refused_when_hs256_is_off() {
    let rsa = key(Algorithm::RS256);
    let setup = Setup::new(&[Algorithm::RS256], &[rsa], None);
    let v = setup.verifier();
    let secret = SigningKey::Secret(public_pem(rsa).into_bytes());
    for kid in [Some(rsa.kid.clone()), None] {
        let forged = tok(&MintRequest {
            alg: Algorithm::HS256,
            key: secret.clone(),
            kid,
            ..request(rsa)
        });
        assert_eq!(
            v.verify(&forged, NOW).unwrap_err(),
            AuthError::AlgorithmNotAllowed("HS256".into())
        );
    }
    assert!(
        v.verify(&tok(&request(rsa)), NOW).is_ok(),
        "the setup itself works"
    );
}

#[test]
fn hs256_with_the_public_key_is_refused_when_hs256_is_on() {
    let rsa = key(Algorithm::RS256);
    let setup = Setup::new(&[Algorithm::RS256, Algorithm::HS256], &[rsa], Some(SECRET));
    let v = setup.verifier();
    let secret = SigningKey::Secret(public_pem(rsa).into_bytes());
    let forged = |kid| {
        tok(&MintRequest {
            alg: Algorithm::HS256,
            key: secret.clone(),
            kid,
            ..request(rsa)
        })
    };
    assert_eq!(
        v.verify(&forged(Some(rsa.kid.clone())), NOW).unwrap_err(),
        AuthError::KeyAlgorithmMismatch
    );
    assert_eq!(
        v.verify(&forged(None), NOW).unwrap_err(),
        AuthError::BadSignature
    );
    assert!(
        v.verify(&tok(&hs_request()), NOW).is_ok(),
        "the real secret works"
    );
}

#[test]
fn algorithm_must_fit_the_key_type() {
    let (rsa, p256, p384) = (
        key(Algorithm::RS256),
        key(Algorithm::ES256),
        key(Algorithm::ES384),
    );
    let algs = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::PS256,
    ];
    let v = Setup::new(&algs, &[rsa, p256, p384], None).verifier();
    // RS256 header naming the EC key.
    let rs_on_ec = tok(&MintRequest {
        kid: Some(p256.kid.clone()),
        ..request(rsa)
    });
    assert_eq!(
        v.verify(&rs_on_ec, NOW).unwrap_err(),
        AuthError::KeyAlgorithmMismatch
    );
    // ES384 header naming the P-256 key.
    let es384_on_p256 = tok(&MintRequest {
        kid: Some(p256.kid.clone()),
        ..request(p384)
    });
    assert_eq!(
        v.verify(&es384_on_p256, NOW).unwrap_err(),
        AuthError::KeyAlgorithmMismatch
    );
    // The JWK says alg RS256: a PS256 signature by the same key is refused.
    let ps_on_rs = tok(&MintRequest {
        alg: Algorithm::PS256,
        ..request(rsa)
    });
    assert_eq!(
        v.verify(&ps_on_rs, NOW).unwrap_err(),
        AuthError::KeyAlgorithmMismatch
    );
}

#[test]
fn jwk_without_alg_accepts_any_fitting_algorithm() {
    let mut rsa = key(Algorithm::RS256).clone();
    rsa.jwk.as_object_mut().unwrap().remove("alg");
    let v = Setup::new(&[Algorithm::RS256, Algorithm::PS256], &[&rsa], None).verifier();
    let ps = tok(&MintRequest {
        alg: Algorithm::PS256,
        ..request(&rsa)
    });
    assert!(v.verify(&ps, NOW).is_ok());
}

#[test]
fn key_selection() {
    let (a, b) = (key(Algorithm::RS256), second_rsa());
    let two = Setup::new(&[Algorithm::RS256], &[a, b], None).verifier();
    let unknown = tok(&MintRequest {
        kid: Some("nope".into()),
        ..request(a)
    });
    assert_eq!(
        two.verify(&unknown, NOW).unwrap_err(),
        AuthError::UnknownKey
    );
    let kidless = tok(&MintRequest {
        kid: None,
        ..request(a)
    });
    assert_eq!(
        two.verify(&kidless, NOW).unwrap_err(),
        AuthError::AmbiguousKey
    );
    assert!(
        two.verify(&tok(&request(b)), NOW).is_ok(),
        "by kid, either key works"
    );
    let one = Setup::new(&[Algorithm::RS256], &[a], None).verifier();
    assert!(
        one.verify(&kidless, NOW).is_ok(),
        "a single key needs no kid"
    );
    // Signed by b but claiming a's kid.
    let wrong = tok(&MintRequest {
        kid: Some(a.kid.clone()),
        ..request(b)
    });
    assert_eq!(
        two.verify(&wrong, NOW).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn hs256_tokens_with_a_kid_do_not_reach_the_secret() {
    let setup = Setup::new(&[Algorithm::HS256], &[], Some(SECRET));
    let v = setup.verifier();
    let with_kid = tok(&MintRequest {
        kid: Some("any".into()),
        ..hs_request()
    });
    assert_eq!(v.verify(&with_kid, NOW).unwrap_err(), AuthError::UnknownKey);
}

#[test]
fn tampering_breaks_the_signature() {
    let v = everything().verifier();
    for alg in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let req = if alg == Algorithm::HS256 {
            hs_request()
        } else {
            request(key(alg))
        };
        let token = tok(&req);
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = json!({"iss": ISS, "aud": AUD, "sub": "admin", "iat": NOW, "exp": NOW + 60,
                                   "roles": ["legal"], "purpose": "legal", "matter_id": "M"});
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&forged_claims.to_string()),
            parts[2]
        );
        assert_eq!(
            v.verify(&tampered, NOW).unwrap_err(),
            AuthError::BadSignature,
            "{alg:?}"
        );
        let other = tok(&MintRequest {
            sub: "emp-2".into(),
            ..req.clone()
        });
        let spliced = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.split('.').nth(2).unwrap()
        );
        assert_eq!(
            v.verify(&spliced, NOW).unwrap_err(),
            AuthError::BadSignature,
            "{alg:?}"
        );
    }
}

#[test]
fn malformed_tokens() {
    let v = everything().verifier();
    let good = tok(&hs_request());
    let parts: Vec<&str> = good.split('.').collect();
    let not_json = format!("{}.{}.{}", b64("{nope"), parts[1], parts[2]);
    let payload_array = signed(r#"{"alg":"HS256"}"#, "[1]");
    for bad in [
        "",
        "x",
        "a.b",
        "a.b.c.d",
        "....",
        &format!("{good}."),
        &not_json,
        &payload_array,
    ] {
        assert_eq!(
            v.verify(bad, NOW).unwrap_err(),
            AuthError::Malformed,
            "{bad:?}"
        );
    }
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(40_000), parts[2]);
    assert_eq!(v.verify(&huge, NOW).unwrap_err(), AuthError::Malformed);
}

#[test]
fn critical_headers_are_refused() {
    let v = Setup::new(&[Algorithm::HS256], &[], Some(SECRET)).verifier();
    assert!(v.verify(&hand_built(&json!({"alg": "HS256"})), NOW).is_ok());
    let crit = hand_built(&json!({"alg": "HS256", "crit": ["b64"], "b64": false}));
    assert_eq!(v.verify(&crit, NOW).unwrap_err(), AuthError::CriticalHeader);
}

#[test]
fn issuer_and_audience() {
    let v = everything().verifier();
    let es = key(Algorithm::ES256);
    let check = |req: MintRequest| v.verify(&tok(&req), NOW).map(|_| ());
    assert_eq!(
        check(MintRequest {
            iss: "https://evil.test".into(),
            ..request(es)
        }),
        Err(AuthError::WrongIssuer)
    );
    assert_eq!(
        check(MintRequest {
            iss: String::new(),
            ..request(es)
        }),
        Err(AuthError::MissingClaim("iss"))
    );
    assert_eq!(
        check(MintRequest {
            aud: vec!["other".into()],
            ..request(es)
        }),
        Err(AuthError::WrongAudience)
    );
    assert_eq!(
        check(MintRequest {
            aud: vec![],
            ..request(es)
        }),
        Err(AuthError::MissingClaim("aud"))
    );
    let both = vec!["other".into(), "purposegate-staging".into()];
    assert_eq!(
        check(MintRequest {
            aud: both,
            ..request(es)
        }),
        Ok(())
    );
    let none_good = vec!["other".into(), "another".into()];
    assert_eq!(
        check(MintRequest {
            aud: none_good,
            ..request(es)
        }),
        Err(AuthError::WrongAudience)
    );
}

#[test]
fn time_claims() {
    let v = everything().verifier();
    let ed = key(Algorithm::EdDSA);
    // exp = NOW exactly.
    let token = tok(&MintRequest {
        iat: NOW - 100,
        ttl_seconds: 100,
        ..request(ed)
    });
    assert!(
        v.verify_uncached(&token, NOW + LEEWAY - 1).is_ok(),
        "within leeway"
    );
    assert_eq!(
        v.verify_uncached(&token, NOW + LEEWAY).unwrap_err(),
        AuthError::Expired
    );
    let nbf = |n| {
        tok(&MintRequest {
            nbf: Some(n),
            ..request(ed)
        })
    };
    assert!(v.verify(&nbf(NOW + LEEWAY), NOW).is_ok());
    assert_eq!(
        v.verify(&nbf(NOW + LEEWAY + 1), NOW).unwrap_err(),
        AuthError::NotYetValid
    );
    let iat = |i| {
        tok(&MintRequest {
            iat: i,
            ..request(ed)
        })
    };
    assert!(v.verify(&iat(NOW + LEEWAY), NOW).is_ok());
    assert_eq!(
        v.verify(&iat(NOW + LEEWAY + 1), NOW).unwrap_err(),
        AuthError::IssuedInFuture
    );
    let long = tok(&MintRequest {
        ttl_seconds: 3601,
        ..request(ed)
    });
    assert_eq!(
        v.verify(&long, NOW).unwrap_err(),
        AuthError::LifetimeTooLong {
            lifetime: 3601,
            max: 3600
        }
    );
    assert!(v
        .verify(
            &tok(&MintRequest {
                ttl_seconds: 3600,
                ..request(ed)
            }),
            NOW
        )
        .is_ok());
    let no_exp = tok(&MintRequest {
        extra: json!({"exp": null}).as_object().cloned().unwrap(),
        ..request(ed)
    });
    assert_eq!(
        v.verify(&no_exp, NOW).unwrap_err(),
        AuthError::BadClaim("exp")
    );
}

#[test]
fn claim_types() {
    let v = everything().verifier();
    let es = key(Algorithm::ES384);
    let with = |extra: Value| {
        tok(&MintRequest {
            extra: extra.as_object().cloned().unwrap(),
            ..request(es)
        })
    };
    assert_eq!(
        v.verify(
            &tok(&MintRequest {
                sub: String::new(),
                ..request(es)
            }),
            NOW
        )
        .unwrap_err(),
        AuthError::MissingClaim("sub")
    );
    assert_eq!(
        v.verify(&with(json!({"roles": "support"})), NOW)
            .unwrap_err(),
        AuthError::BadClaim("roles")
    );
    assert_eq!(
        v.verify(&with(json!({"subjects": [1]})), NOW).unwrap_err(),
        AuthError::BadClaim("subjects")
    );
    assert_eq!(
        v.verify(&with(json!({"training_cert_exp": "soon"})), NOW)
            .unwrap_err(),
        AuthError::BadClaim("training_cert_exp")
    );
    let c = v
        .verify(&with(json!({"training_cert_exp": 1900000000.75})), NOW)
        .unwrap();
    assert_eq!(c.training_cert_exp, Some(1_900_000_000));
}

#[test]
fn claims_are_mapped() {
    let v = everything().verifier();
    let c = v
        .verify(&tok(&request(key(Algorithm::RS384))), NOW)
        .unwrap();
    assert_eq!(c.sub, "emp-1");
    assert_eq!(c.purpose.as_deref(), Some("abuse"));
    assert_eq!(c.subjects, ["u1"]);
    assert_eq!(c.string("case_id"), Some("C-1"));
    assert_eq!(c.jti.as_deref(), Some("jti-1"));
    assert_eq!(
        (c.iss.as_str(), c.iat, c.exp, c.nbf),
        (ISS, NOW - 10, NOW + 590, None)
    );
    assert_eq!(c.training_cert_exp, Some(NOW + 86_400));
    let keys: Vec<_> = c.strings.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["case_id"],
        "registered and structured claims stay out of strings"
    );
}

#[test]
fn renamed_claims() {
    let setup = everything();
    let mut names = ClaimNames::default();
    for (logical, in_token) in [
        ("purpose", "prp"),
        ("roles", "grp"),
        ("case_id", "cid"),
        ("subjects", "scope"),
    ] {
        names.renames.insert(logical.into(), in_token.into());
    }
    let v = Verifier::new(&setup.cfg, &names).unwrap();
    let req = MintRequest {
        claim_names: names.clone(),
        extra: json!({"purpose": "marketing", "case_id": "forged"})
            .as_object()
            .cloned()
            .unwrap(),
        ..request(key(Algorithm::ES256))
    };
    let c = v.verify(&tok(&req), NOW).unwrap();
    assert_eq!(c.purpose.as_deref(), Some("abuse"));
    assert_eq!(c.roles, ["trust-safety"]);
    assert_eq!(c.subjects, ["u1"]);
    assert_eq!(c.string("case_id"), Some("C-1"));
    assert_eq!(c.string("purpose"), None);
    // The same token read without the renames has no purpose or roles.
    let plain = setup.verifier().verify(&tok(&req), NOW).unwrap();
    assert_eq!(plain.purpose.as_deref(), Some("marketing"));
    assert!(plain.roles.is_empty());
}

#[test]
fn cache_returns_the_same_claims() {
    let v = everything().verifier();
    let token = tok(&request(key(Algorithm::ES256)));
    let first = v.verify(&token, NOW).unwrap();
    let second = v.verify(&token, NOW + 1).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(v.cache_len(), 1);
    assert!(v.verify_uncached(&tok(&hs_request()), NOW).is_ok());
    assert_eq!(v.cache_len(), 1, "verify_uncached does not fill the cache");
    assert!(v.verify("x.y.z", NOW).is_err());
    assert_eq!(v.cache_len(), 1, "failures are not cached");
}

#[test]
fn cache_does_not_serve_expired_or_immature_tokens() {
    let v = everything().verifier();
    let token = tok(&MintRequest {
        iat: NOW - 100,
        ttl_seconds: 100,
        ..request(key(Algorithm::ES256))
    });
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(
        v.verify(&token, NOW + LEEWAY).unwrap_err(),
        AuthError::Expired
    );
    let later = tok(&MintRequest {
        nbf: Some(NOW + 20),
        ..request(key(Algorithm::ES256))
    });
    assert!(v.verify(&later, NOW).is_ok(), "nbf within leeway");
    assert_eq!(
        v.verify(&later, NOW - 20).unwrap_err(),
        AuthError::NotYetValid
    );
}

#[test]
fn cache_is_bounded() {
    let mut setup = everything();
    setup.cfg.cache_max_entries = 5;
    let v = setup.verifier();
    for i in 0..30 {
        let token = tok(&MintRequest {
            jti: Some(format!("j{i}")),
            ..hs_request()
        });
        assert!(v.verify(&token, NOW).is_ok());
        assert!(v.cache_len() <= 5, "len {} after {i}", v.cache_len());
    }
}

#[test]
fn reload_swaps_keys_and_clears_the_cache() {
    let (a, b) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
    let setup = Setup::new(&[Algorithm::ES256, Algorithm::EdDSA], &[a], None);
    let v = setup.verifier();
    let token_a = tok(&request(a));
    assert!(v.verify(&token_a, NOW).is_ok());
    assert_eq!(v.reload(), Ok(false), "unchanged files");
    assert_eq!(v.cache_len(), 1, "an unchanged reload keeps the cache");

    setup.write_jwks(&[b]);
    assert_eq!(v.reload(), Ok(true));
    assert_eq!(v.cache_len(), 0);
    assert_eq!(v.key_count(), 1);
    assert_eq!(
        v.verify(&token_a, NOW).unwrap_err(),
        AuthError::UnknownKey,
        "a removed key stops verifying"
    );
    let token_b = tok(&request(b));
    assert!(v.verify(&token_b, NOW).is_ok());

    std::fs::write(&setup.jwks, "{\"keys\": [").unwrap();
    let e = v.reload().unwrap_err();
    assert!(e.to_string().contains("jwks.json"), "{e}");
    assert!(
        v.verify(&token_b, NOW).is_ok(),
        "a bad file keeps the old keys"
    );
    assert!(v.reload().is_err(), "and keeps saying so");
}

#[test]
fn secret_file_rules() {
    let setup = Setup::new(&[Algorithm::HS256], &[], Some(SECRET));
    let v = setup.verifier();
    assert!(
        v.verify(&tok(&hs_request()), NOW).is_ok(),
        "the trailing newline is not part of the secret"
    );
    let with_newline = MintRequest {
        key: SigningKey::Secret([SECRET, b"\n"].concat()),
        ..hs_request()
    };
    assert_eq!(
        v.verify(&tok(&with_newline), NOW).unwrap_err(),
        AuthError::BadSignature
    );

    let short = Setup::new(&[Algorithm::HS256], &[], Some(b"too-short-secret"));
    let e = Verifier::new(&short.cfg, &ClaimNames::default())
        .err()
        .unwrap();
    assert_eq!(e.file, short.secret);
    assert!(!e.to_string().contains("too-short"), "{e}");
}

#[test]
fn key_file_errors_name_the_file() {
    let setup = Setup::new(&[Algorithm::ES256], &[key(Algorithm::ES256)], None);
    std::fs::write(
        &setup.jwks,
        "{\n  \"keys\": [\n    {\"kty\": \"EC\",}\n  ]\n}\n",
    )
    .unwrap();
    let e = Verifier::new(&setup.cfg, &ClaimNames::default())
        .err()
        .unwrap();
    assert_eq!(
        (e.file.clone(), e.line),
        (setup.jwks.clone(), Some(3)),
        "{e}"
    );
    std::fs::remove_file(&setup.jwks).unwrap();
    let e = Verifier::new(&setup.cfg, &ClaimNames::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("jwks.json: cannot read"), "{e}");
}

#[test]
fn error_messages_never_quote_the_token() {
    let v = everything().verifier();
    let es = key(Algorithm::ES256);
    let mut tokens = vec![
        tok(&MintRequest {
            iss: "https://evil.test".into(),
            ..request(es)
        }),
        tok(&MintRequest {
            kid: Some("secret-kid-value".into()),
            ..request(es)
        }),
        tok(&MintRequest {
            ttl_seconds: 9999,
            ..request(es)
        }),
        tok(&MintRequest {
            extra: json!({"roles": "r"}).as_object().cloned().unwrap(),
            ..request(es)
        }),
        hand_built(&json!({"alg": "<script>alert(1)</script>"})),
        hand_built(&json!({"alg": "HS256", "crit": ["x"]})),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_string(),
        "not-a-token-at-all".to_string(),
    ];
    tokens.push(tokens[0].replace('.', ".x"));
    for token in &tokens {
        let msg = v.verify(token, NOW).unwrap_err().to_string();
        assert!(msg.len() < 80, "{msg}");
        for piece in token.split('.').filter(|p| p.len() >= 6) {
            assert!(!msg.contains(piece), "{msg} quotes the token");
        }
        for word in ["evil", "secret-kid", "script", "C-1", "emp-1"] {
            assert!(!msg.contains(word), "{msg}");
        }
    }
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn verifier() -> &'static Verifier {
        static V: OnceLock<(Setup, Verifier)> = OnceLock::new();
        &V.get_or_init(|| {
            let s = everything();
            let v = s.verifier();
            (s, v)
        })
        .1
    }

    /// One genuine token per algorithm (every one verifies unchanged).
    fn genuine() -> &'static [String] {
        static T: OnceLock<Vec<String>> = OnceLock::new();
        T.get_or_init(|| {
            let mut all: Vec<String> = ASYMMETRIC.iter().map(|a| tok(&request(key(*a)))).collect();
            all.push(tok(&hs_request()));
            for t in &all {
                assert!(
                    verifier().verify_uncached(t, NOW).is_ok(),
                    "genuine token refused"
                );
            }
            all
        })
    }

    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

    proptest! {
        // Signatures are checked with keys parsed at load (`signature`), not
        // by `jsonwebtoken::decode`: any one character changed anywhere in a
        // genuine token — header, payload, signature or a separator, for
        // every algorithm — must be refused.
        #[test]
        fn any_changed_character_is_refused(which in 0usize..16, at in any::<usize>(), to in 0usize..B64URL.len()) {
            let tokens = genuine();
            let token = tokens[which % tokens.len()].as_bytes();
            let at = at % token.len();
            prop_assume!(token[at] != B64URL[to]);
            let mut changed = token.to_vec();
            changed[at] = B64URL[to];
            let changed = String::from_utf8(changed).unwrap();
            prop_assert!(verifier().verify(&changed, NOW).is_err(), "accepted after changing byte {}", at);
        }

        #[test]
        fn arbitrary_text(s in ".{0,300}") {
            let _ = verifier().verify(&s, NOW);
        }

        #[test]
        fn arbitrary_headers_and_payloads(h in ".{0,120}", p in ".{0,200}", sig in "[A-Za-z0-9_-]{0,90}") {
            let token = format!("{}.{}.{sig}", b64(&h), b64(&p));
            prop_assert!(verifier().verify(&token, NOW).is_err());
        }

        #[test]
        fn arbitrary_json_headers(alg in "[A-Za-z0-9]{0,8}", kid in proptest::option::of("[a-zA-Z0-9-]{0,10}")) {
            let header = match kid { Some(k) => json!({"alg": alg, "kid": k}), None => json!({"alg": alg}) };
            let token = hand_built(&header);
            let r = verifier().verify(&token, NOW);
            // Only a real HS256 header can pass (the token is HS256-signed).
            prop_assert!(r.is_err() || alg == "HS256");
        }
    }
}

#[test]
fn mint_refuses_hs256_with_a_pem_key() {
    let rsa = key(Algorithm::RS256);
    let r = mint(&MintRequest {
        alg: Algorithm::HS256,
        ..request(rsa)
    });
    assert!(r.is_err(), "mint never signs HMAC with a PEM key");
}
