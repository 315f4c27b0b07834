//! Micro-benchmarks of the per-request cryptography: the verified-token cache
//! hit (`Verifier::verify` of a token already seen), uncached JWT verification
//! (RS256 and ES256, `verify_uncached`) and audit record encoding + hashing
//! (`audit::chain::encode`). Keys are generated at start-up, never stored.
//! Run: `cargo bench --bench crypto`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use purposegate::audit::chain::{encode, ChainHead};
use purposegate::audit::{AuditEvent, DecisionKind, EventKind};
use purposegate::auth::mint::{generate_dev_key, jwks_json, mint, DevKey, MintRequest};
use purposegate::auth::Verifier;
use purposegate::config::Config;

const ISS: &str = "https://idp.example.test";
const AUD: &str = "purposegate";

fn now() -> i64 {
    purposegate::time::now_millis() / 1000
}

fn key(alg: Algorithm, kid: &str) -> DevKey {
    match generate_dev_key(alg, kid) {
        Ok(k) => k,
        Err(e) => panic!("key generation: {e}"),
    }
}

/// A token shaped like the ones the proxy sees (~720 bytes for RS256).
fn token(key: &DevKey) -> String {
    let req = MintRequest {
        alg: key.alg,
        key: key.signing_key(),
        kid: Some(key.kid.clone()),
        iss: ISS.into(),
        aud: vec![AUD.into()],
        sub: "employee-42".into(),
        roles: vec!["support".into()],
        purpose: Some("support".into()),
        justification: vec![("ticket_id".into(), "T-1".into())],
        subjects: vec!["u1".into()],
        iat: now(),
        ttl_seconds: 3000,
        jti: Some("bench-jti-0001".into()),
        ..MintRequest::default()
    };
    match mint(&req) {
        Ok(t) => t,
        Err(e) => panic!("mint: {e}"),
    }
}

/// A verifier built the way `serve` builds it: from a config file whose JWKS
/// holds both keys.
fn verifier(dir: &std::path::Path, keys: &[&DevKey]) -> Verifier {
    let jwks = dir.join("jwks.json");
    let written = std::fs::write(&jwks, jwks_json(keys));
    assert!(written.is_ok(), "write jwks");
    let file = dir.join("config.yaml");
    let text = format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\n\
         jwt: {{issuer: \"{ISS}\", audiences: [\"{AUD}\"], algorithms: [\"RS256\", \"ES256\"], jwks_file: \"jwks.json\"}}\n\
         policy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\n\
         upstreams: {{content: {{url: \"http://127.0.0.1:9\"}}}}\n\
         audit: {{path: \"audit.jsonl\", fsync: \"never\"}}\n"
    );
    let cfg = match Config::parse(&file, &text) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    };
    match Verifier::new(&cfg.jwt, &cfg.claims) {
        Ok(v) => v,
        Err(e) => panic!("verifier: {e}"),
    }
}

fn bench_tokens(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let rs = key(Algorithm::RS256, "bench-rs");
    let es = key(Algorithm::ES256, "bench-es");
    let v = verifier(dir.path(), &[&rs, &es]);
    let (rs_tok, es_tok) = (token(&rs), token(&es));
    let t = now();
    assert!(
        v.verify_uncached(&rs_tok, t).is_ok(),
        "RS256 token verifies"
    );
    assert!(
        v.verify_uncached(&es_tok, t).is_ok(),
        "ES256 token verifies"
    );
    assert!(v.verify(&rs_tok, t).is_ok(), "cache warm-up");
    let mut g = c.benchmark_group("token");
    g.bench_function("cache_hit_rs256", |b| {
        b.iter(|| v.verify(black_box(&rs_tok), t).is_ok())
    });
    g.bench_function("verify_uncached_rs256", |b| {
        b.iter(|| v.verify_uncached(black_box(&rs_tok), t).is_ok())
    });
    g.bench_function("verify_uncached_es256", |b| {
        b.iter(|| v.verify_uncached(black_box(&es_tok), t).is_ok())
    });
    g.finish();
}

fn event() -> AuditEvent {
    AuditEvent {
        request_id: "01JDQ8Z6V3K9W2R5T7Y1M4N8P0".into(),
        event: EventKind::Decision,
        decision: DecisionKind::Allow,
        reason: None,
        subject: Some("employee-42".into()),
        roles: vec!["support".into()],
        purpose: Some("support".into()),
        justification: Some("T-1".into()),
        method: "GET".into(),
        path: "/v1/users/u1/conversations/c1".into(),
        owner: Some("u1".into()),
        route: Some("conversations".into()),
        status: 200,
        client_addr: "127.0.0.1:50000".into(),
        token_id: Some("bench-jti-0001".into()),
        ..AuditEvent::default()
    }
}

fn bench_audit(c: &mut Criterion) {
    let head = ChainHead::genesis();
    let ev = event();
    let ts = "2026-11-29T12:00:00.123Z";
    assert!(encode(&head, ts, &ev).is_ok());
    c.bench_function("audit/encode_and_hash", |b| {
        b.iter(|| encode(black_box(&head), ts, black_box(&ev)).map(|e| e.line.len()))
    });
}

/// The floor under `verify_uncached_rs256`: aws-lc-rs checking one RS256
/// signature, with the public key parsed once (`ParsedPublicKey`, what the
/// verifier keeps per JWKS key) and parsed again on every call.
fn bench_rsa_floor(c: &mut Criterion) {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey, RSA_PKCS1_SHA256};
    let pair = match KeyPair::generate(KeySize::Rsa2048) {
        Ok(p) => p,
        Err(e) => panic!("rsa keygen: {e}"),
    };
    let msg = [b'x'; 600];
    let mut sig = vec![0; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    assert!(pair.sign(&RSA_PKCS1_SHA256, &rng, &msg, &mut sig).is_ok());
    let der = pair.public_key().as_ref().to_vec();
    let unparsed = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &der);
    let parsed = match unparsed.parse() {
        Ok(p) => p,
        Err(e) => panic!("parse: {e}"),
    };
    assert!(parsed.verify_sig(&msg, &sig).is_ok());
    let mut g = c.benchmark_group("rsa2048_sha256_verify");
    g.bench_function("key_parsed_once", |b| {
        b.iter(|| parsed.verify_sig(black_box(&msg), black_box(&sig)).is_ok())
    });
    g.bench_function("key_parsed_per_call", |b| {
        b.iter(|| unparsed.verify(black_box(&msg), black_box(&sig)).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench_tokens, bench_audit, bench_rsa_floor);
criterion_main!(benches);
