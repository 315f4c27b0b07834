//! Remote key sets without a network: loading the persisted set at start
//! (no runtime needed, as in `policy check`), readiness, and what applying a
//! fetched document does to the keys and the verified-token cache.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::persist;
use crate::auth::mint::jwks_json;
use crate::auth::testkit::{key, request, second_rsa, tok, Setup, NOW};
use crate::auth::{AuthError, Verifier};
use crate::config::{ClaimNames, JwtConfig, RemoteKeysConfig, RemoteSource};

fn remote_cfg(base: &JwtConfig, cache_dir: &std::path::Path) -> JwtConfig {
    let mut cfg = base.clone();
    cfg.jwks_file = None;
    cfg.remote = Some(RemoteKeysConfig {
        // Nothing listens there; these tests never fetch.
        source: RemoteSource::JwksUrl("https://127.0.0.1:1/jwks".parse().unwrap()),
        allow_insecure_http: false,
        refresh_min: Duration::from_secs(60),
        refresh_max: Duration::from_secs(3600),
        unknown_kid_refetch: Duration::from_secs(30),
        fetch_timeout: Duration::from_secs(1),
        cache_dir: Some(cache_dir.to_path_buf()),
        ca_file: None,
    });
    cfg
}

#[test]
fn persisted_key_set_is_loaded_at_start() {
    let es = key(Algorithm::ES256);
    let setup = Setup::new(&[Algorithm::ES256], &[es], None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = remote_cfg(&setup.cfg, dir.path());
    let token = tok(&request(es));

    let empty = Verifier::new(&cfg, &ClaimNames::default()).unwrap();
    assert!(empty.some_issuer_without_keys());
    assert_eq!(empty.verify(&token, NOW), Err(AuthError::UnknownKey));
    let status = empty.issuer_status();
    assert!(status[0].stale && status[0].source == "remote");

    let path = persist::path_for(dir.path(), &cfg.issuer);
    persist::save(&path, jwks_json(&[es]).as_bytes()).unwrap();
    let loaded = Verifier::new(&cfg, &ClaimNames::default()).unwrap();
    assert!(!loaded.some_issuer_without_keys());
    assert!(loaded.verify(&token, NOW).is_ok());
    let status = loaded.issuer_status();
    assert!(!status[0].stale, "{status:?}");
    assert!(status[0].age_seconds.is_some());

    // A damaged file is ignored, never half-used.
    std::fs::write(&path, b"{\"keys\": [").unwrap();
    let damaged = Verifier::new(&cfg, &ClaimNames::default()).unwrap();
    assert!(damaged.some_issuer_without_keys());
}

#[test]
fn applying_a_fetched_set_replaces_keys_and_drops_cached_tokens() {
    let (a, b) = (key(Algorithm::RS256), second_rsa());
    let setup = Setup::new(&[Algorithm::RS256], &[a], None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = remote_cfg(&setup.cfg, dir.path());
    let v = Verifier::new(&cfg, &ClaimNames::default()).unwrap();
    let issuer = &v.issuers_for_tests()[0];
    let (ta, tb) = (tok(&request(a)), tok(&request(b)));

    assert!(issuer
        .apply_remote(jwks_json(&[a, b]).into_bytes())
        .unwrap());
    assert!(v.verify(&ta, NOW).is_ok() && v.verify(&tb, NOW).is_ok());
    assert_eq!(v.cache_len(), 2);
    // The same document again changes nothing, cache included.
    assert!(!issuer
        .apply_remote(jwks_json(&[a, b]).into_bytes())
        .unwrap());
    assert_eq!(v.cache_len(), 2);

    assert!(issuer.apply_remote(jwks_json(&[b]).into_bytes()).unwrap());
    assert_eq!(v.cache_len(), 0, "cached tokens of the old set are gone");
    assert_eq!(v.verify(&ta, NOW), Err(AuthError::UnknownKey));
    assert!(v.verify(&tb, NOW).is_ok());

    // A broken or empty document is refused and the keys stay.
    assert!(issuer.apply_remote(b"{\"keys\": []}".to_vec()).is_err());
    assert!(issuer.apply_remote(b"<html>".to_vec()).is_err());
    assert!(v.verify(&tb, NOW).is_ok());
    // A file reload keeps the fetched set.
    assert!(!v.reload().unwrap());
    assert!(v.verify(&tb, NOW).is_ok());
}
