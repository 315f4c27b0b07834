//! Fuzzing entry points, shared by the bounded property tests that run in
//! `cargo test` (`tests/fuzz_props.rs`) and the cargo-fuzz targets under
//! `fuzz/` (see docs/testing.md). Each takes arbitrary bytes, must never
//! panic on them, and asserts the invariant its input guards:
//!
//! - `path`: a request path admitted by rules 1-11 has exactly one owner,
//!   and it is the owner the store serves: the owner segment is safe (no
//!   escape a store could decode into another user), equal to the path's
//!   segment after the route prefix, and the path forwarded is byte for byte
//!   the path checked.
//! - `claims`: any JSON payload yields claims or a refusal, and accepted
//!   claims are exactly what the payload said.
//! - `yaml`: config, policy, consent and test-case files are parsed or
//!   refused with a `file:line` error.
//! - `audit_lines`: `audit verify` reads any file and answers; the shipper
//!   ships only lines the verifier reads the same way.

#![doc(hidden)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use http::Method;
use serde_json::{Map, Value};

use crate::auth::Claims;
use crate::config::{ClaimNames, Config, JwtConfig};
use crate::consent::UserConsent;
use crate::policy::{decide_pre, owner_is_safe, AuthState, Lookup, NoTrace, Policy, RequestFacts};

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        match crate::policy::load_dir(&dir, &[]) {
            Ok(p) => p,
            Err(e) => panic!("the shipped policy does not load: {e}"),
        }
    })
}

fn reader() -> Claims {
    Claims {
        sub: "fuzz".into(),
        roles: vec!["research".into()],
        purpose: Some("training".into()),
        training_cert_exp: Some(i64::MAX / 2000),
        ..Claims::default()
    }
}

/// Rules 1-11 and route matching on an arbitrary path; true when admitted.
pub fn path(input: &[u8]) -> bool {
    let Ok(path) = std::str::from_utf8(input) else {
        return false;
    };
    let claims = reader();
    let user = UserConsent::default();
    let facts = RequestFacts::new(policy(), &Method::GET, path, false);
    let admitted = decide_pre(
        policy(),
        &facts,
        AuthState::Valid(&claims),
        Lookup::Known(&user),
        0,
        &mut NoTrace,
    );
    let Ok(admitted) = admitted else {
        return false;
    };
    let owner = admitted.owner();
    assert!(owner_is_safe(owner), "admitted an unsafe owner {owner:?}");
    assert!(crate::policy::is_canonical(path), "admitted {path:?}");
    // The owner is the path's own segment (templates put it at index 2 of
    // `/v1/users/{owner}/...`), untouched by any decoding.
    assert_eq!(path.split('/').nth(3), Some(owner), "{path:?}");
    assert!(!owner.contains('%'));
    // What the upstream receives is the checked path, byte for byte.
    let uri: http::Uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return true,
    };
    assert_eq!(uri.path(), path);
    true
}

fn jwt_config() -> &'static JwtConfig {
    static C: OnceLock<JwtConfig> = OnceLock::new();
    C.get_or_init(|| JwtConfig {
        issuer: "https://idp.example.test".into(),
        audiences: vec!["purposegate".into()],
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
        jwks_file: None,
        hs256_secret_file: None,
        leeway_seconds: 30,
        max_lifetime_seconds: 3600,
        cache_max_entries: 1,
        remote: None,
        additional_issuers: Vec::new(),
    })
}

/// Registered-claim checks and claim extraction on an arbitrary payload.
pub fn claims(input: &[u8]) {
    let Ok(Value::Object(payload)) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let now = 1_800_000_000;
    let Ok(reg) = crate::auth::registered::check(&payload, jwt_config(), now) else {
        return;
    };
    let Ok(c) = crate::auth::extract::claims(&payload, &ClaimNames::default(), reg) else {
        return;
    };
    assert_eq!(
        payload.get("sub").and_then(Value::as_str),
        Some(c.sub.as_str())
    );
    let listed = |k: &str| -> Vec<String> {
        payload
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(c.roles, listed("roles"));
    assert_eq!(c.subjects, listed("subjects"));
    assert!(c.exp >= c.iat && c.exp - c.iat <= 3600);
    let _: &Map<String, Value> = &payload;
}

fn scratch() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("purposegate-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

/// Every YAML format the proxy reads, on arbitrary text.
pub fn yaml(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let file = Path::new("/fuzz/config.yaml");
    if let Err(e) = Config::parse(file, text) {
        assert_eq!(e.file, file);
    }
    if let Err(e) = crate::consent::file::ConsentData::parse(Path::new("/fuzz/consent.yaml"), text)
    {
        assert!(!e.message.is_empty());
    }
    // Policy and test-case files are read from a directory.
    let dir = scratch().join(format!("yaml-{:?}", std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(dir.join("p.yaml"), text).is_err() {
        return;
    }
    if let Err(e) = crate::policy::load_dir(&dir, &[]) {
        assert!(e.file.starts_with(&dir) || e.file == dir, "{e}");
    }
    let _ = crate::policy::testcases::load_cases(&dir);
}

/// `audit verify`, the line parser and the shipper's row parser on arbitrary
/// file content: a line the shipper accepts is one the verifier reads the
/// same way (hash intact, same `seq`, `prev_hash` and `hash`).
pub fn audit_lines(input: &[u8]) {
    for line in input.split(|b| *b == b'\n') {
        let parsed = crate::audit::chain::parse_line(line);
        if let Ok(p) = &parsed {
            assert_eq!(p.hash.len(), 64);
        }
        if let Ok(row) = crate::audit::ship::row::parse(line) {
            let p = parsed.as_ref().ok();
            assert!(
                p.is_some_and(|p| p.hash_ok()),
                "shipped a line the verifier refuses"
            );
            let p = p.map(|p| (p.seq, p.prev_hash.as_str(), p.hash.as_str()));
            assert_eq!(
                p,
                Some((row.seq, row.prev_hash.as_str(), row.hash.as_str()))
            );
            assert_eq!(row.record.as_bytes(), line);
        }
    }
    let file = scratch().join(format!("audit-{:?}.jsonl", std::thread::current().id()));
    if std::fs::write(&file, input).is_ok() {
        match crate::audit::verify::verify_files(std::slice::from_ref(&file)) {
            Ok(r) => assert!(r.records as usize <= input.len()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
