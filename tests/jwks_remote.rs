//! Keys from a real local HTTPS identity provider (hyper + tokio-rustls on
//! 127.0.0.1:0, with an rcgen CA the proxy trusts via `jwt.ca_file`) that
//! rotates keys, goes down and counts its fetches: rotation, the unknown-kid
//! storm, outages at start and later, removed keys, OIDC discovery,
//! `Cache-Control`, several issuers, metrics and `/readyz`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{copy_policy, send, Resp, Tok, Upstream, AUDIENCE, CONSENT};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use purposegate::auth::mint::{generate_dev_key, jwks_json, mint, DevKey, MintRequest, SigningKey};
use purposegate::server::Running;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const PATH: &str = "/v1/users/u1/conversations/c1";

/// What the fake IdP serves and what it has seen.
#[derive(Default)]
struct IdpState {
    jwks: Mutex<String>,
    second_jwks: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    second_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

/// A local HTTPS identity provider: `/jwks`, `/jwks2` (a second issuer's
/// keys) and `/.well-known/openid-configuration`.
struct Idp {
    base: String,
    ca_pem: String,
    state: Arc<IdpState>,
}

impl Idp {
    async fn start() -> Idp {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "purposegate test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState::default());
        tokio::spawn(serve(listener, acceptor, state.clone(), addr));
        Idp {
            base: format!("https://{addr}"),
            ca_pem: ca.pem(),
            state,
        }
    }

    fn set_keys(&self, keys: &[&DevKey]) {
        *self.state.jwks.lock().unwrap() = jwks_json(keys);
    }

    fn set_second_keys(&self, keys: &[&DevKey]) {
        *self.state.second_jwks.lock().unwrap() = jwks_json(keys);
    }

    fn cache_control(&self, v: &str) {
        *self.state.cache_control.lock().unwrap() = Some(v.to_string());
    }

    fn down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<IdpState>,
    addr: SocketAddr,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req, addr)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn answer(state: &IdpState, req: &Request<Incoming>, addr: SocketAddr) -> Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        let mut b = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        if let Some(cc) = state.cache_control.lock().unwrap().as_deref() {
            b = b.header("cache-control", cc);
        }
        b.body(Full::new(Bytes::from(body))).unwrap()
    };
    let path = req.uri().path();
    match path {
        "/jwks" => state.jwks_fetches.fetch_add(1, Ordering::SeqCst),
        "/jwks2" => state.second_fetches.fetch_add(1, Ordering::SeqCst),
        _ => state.discovery_fetches.fetch_add(1, Ordering::SeqCst),
    };
    if state.down.load(Ordering::SeqCst) {
        return reply(503, "{}".into());
    }
    match path {
        "/jwks" => reply(200, state.jwks.lock().unwrap().clone()),
        "/jwks2" => reply(200, state.second_jwks.lock().unwrap().clone()),
        "/.well-known/openid-configuration" => {
            let base = format!("https://{addr}");
            let doc = serde_json::json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
            reply(200, doc.to_string())
        }
        _ => reply(404, "{}".into()),
    }
}

fn key(kid: &str) -> DevKey {
    generate_dev_key(Algorithm::ES256, kid).unwrap()
}

fn token(key: &DevKey, iss: &str) -> String {
    let t = Tok::abuse("u1");
    let now = purposegate::time::now_millis() / 1000;
    mint(&MintRequest {
        alg: key.alg,
        key: SigningKey::Pem(key.private_pem.as_bytes().to_vec()),
        kid: Some(key.kid.clone()),
        iss: iss.into(),
        aud: vec![AUDIENCE.into()],
        sub: t.sub,
        roles: t.roles,
        purpose: t.purpose,
        justification: t.justification,
        subjects: t.subjects,
        training_cert_exp: Some(now + 90 * 86_400),
        iat: now,
        ttl_seconds: 600,
        nbf: None,
        jti: None,
        claim_names: Default::default(),
        extra: serde_json::Map::new(),
    })
    .unwrap()
}

/// A proxy configured against the IdP; `keys` is the key-source part of
/// the `jwt:` block (plus any extra jwt options).
struct Proxy {
    running: Option<Running>,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn write_config(dir: &Path, idp: &Idp, upstream: SocketAddr, keys: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ca.pem"), &idp.ca_pem).unwrap();
    std::fs::write(dir.join("consent.yaml"), CONSENT).unwrap();
    copy_policy(dir);
    let config = format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
jwt:
  issuer: "{iss}"
  audiences: ["{AUDIENCE}"]
  algorithms: ["ES256"]
  leeway_seconds: 5
  ca_file: "ca.pem"
  cache_dir: "keys"
  fetch_timeout_ms: 2000
  refresh_min_seconds: 1
  {keys}
policy_dir: "policies"
consent_file: "consent.yaml"
upstreams:
  content: {{url: "http://{upstream}", response_timeout_ms: 2000, connect_timeout_ms: 500}}
audit:
  path: "audit/audit.jsonl"
reload_interval_ms: 100
shutdown_grace_seconds: 2
"#,
        iss = idp.base,
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

impl Proxy {
    async fn start(dir: &Path, idp: &Idp, upstream: &Upstream, keys: &str) -> Proxy {
        let path = write_config(dir, idp, upstream.addr, keys);
        let config = purposegate::config::Config::load(&path).unwrap();
        let running = purposegate::server::start(config).await.unwrap();
        Proxy {
            addr: running.addr,
            admin: running.admin_addr,
            running: Some(running),
        }
    }

    async fn get(&self, token: &str) -> Resp {
        send(self.addr, Method::GET, PATH, Some(token), &[]).await
    }

    async fn admin(&self, path: &str) -> Resp {
        send(self.admin, Method::GET, path, None, &[]).await
    }

    /// Polls `/readyz` (bounded: 10 s) and returns the last answer.
    async fn wait_ready(&self) -> Resp {
        for _ in 0..200 {
            let r = self.admin("/readyz").await;
            if r.status == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.admin("/readyz").await
    }

    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

const URL_KEYS: &str = "jwks_url: \"IDP/jwks\"\n  unknown_kid_refetch_seconds: 30";

fn url_keys(idp: &Idp) -> String {
    URL_KEYS.replace("IDP", &idp.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_accepts_a_new_kid_within_one_request_and_exports_metrics() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (key("k1"), key("k2"));
    idp.set_keys(&[&k1]);
    idp.cache_control("max-age=3600");
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    let ready = proxy.wait_ready().await;
    assert_eq!(ready.status, 200, "{:?}", ready.json());
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    idp.set_keys(&[&k1, &k2]);
    let first = proxy.get(&token(&k2, &idp.base)).await;
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert_eq!(idp.fetches(), 2, "exactly one refetch for the new kid");
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);

    let metrics = String::from_utf8(proxy.admin("/metrics").await.body.to_vec()).unwrap();
    let iss = &idp.base;
    for line in [
        format!("purposegate_jwks_refresh_total{{issuer=\"{iss}\",result=\"ok\"}} 2"),
        format!("purposegate_jwks_refresh_total{{issuer=\"{iss}\",result=\"error\"}} 0"),
        format!("purposegate_jwks_keys{{issuer=\"{iss}\"}} 2"),
        format!("purposegate_jwks_age_seconds{{issuer=\"{iss}\"}} "),
    ] {
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    common::promtool_check_metrics(&metrics);
    let ready = proxy.admin("/readyz").await.json();
    assert_eq!(ready["issuers"][0]["source"], "remote");
    assert_eq!(ready["issuers"][0]["stale"], false, "{ready}");
    assert_eq!(ready["stale_issuers"], serde_json::json!([]));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_storm_causes_at_most_one_fetch() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (k1, bogus) = (key("k1"), key("bogus"));
    idp.set_keys(&[&k1]);
    idp.cache_control("max-age=3600");
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    assert_eq!(proxy.wait_ready().await.status, 200);
    assert_eq!(idp.fetches(), 1);
    let bad = token(&bogus, &idp.base);
    for round in 0..2 {
        let started = std::time::Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..300 {
            let (addr, bad) = (proxy.addr, bad.clone());
            set.spawn(async move { send(addr, Method::GET, PATH, Some(&bad), &[]).await });
        }
        let mut refused = 0;
        while let Some(r) = set.join_next().await {
            let r = r.unwrap();
            assert_eq!(r.status, 401);
            assert_eq!(r.reason().as_deref(), Some("invalid_token"));
            refused += 1;
        }
        assert_eq!(refused, 300);
        // A figure for the report, not an assertion.
        eprintln!(
            "round {round}: 300 concurrent bogus-kid requests answered in {:?}",
            started.elapsed()
        );
        assert_eq!(idp.fetches(), 2, "round {round}: one refetch in all");
    }
    assert_eq!(up.count(), 0, "the upstream is never reached");
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_at_start_uses_the_persisted_key_set() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let k1 = key("k1");
    idp.set_keys(&[&k1]);
    idp.cache_control("max-age=3600");
    let mut first = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    assert_eq!(first.wait_ready().await.status, 200);
    first.stop().await;
    let persisted: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .collect();
    assert_eq!(persisted.len(), 1, "one persisted key set");

    idp.down(true);
    let before = idp.fetches();
    let mut second = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    let ready = second.wait_ready().await;
    assert_eq!(ready.status, 200, "{:?}", ready.json());
    assert_eq!(second.get(&token(&k1, &idp.base)).await.status, 200);
    // The failed fetch at start is visible: stale, with the error.
    let iss = idp.base.clone();
    let stale = common::within(Duration::from_secs(5), || async {
        second.admin("/readyz").await.json()["stale_issuers"] == serde_json::json!([iss])
    })
    .await
    .is_some();
    assert!(stale, "{:?}", second.admin("/readyz").await.json());
    assert!(idp.fetches() > before, "it did try the IdP");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_at_start_without_a_persisted_set_is_not_ready() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let k1 = key("k1");
    idp.set_keys(&[&k1]);
    idp.down(true);
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    assert!(
        common::within(Duration::from_secs(5), || async { idp.fetches() >= 1 })
            .await
            .is_some()
    );
    let r = proxy.admin("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["problems"], serde_json::json!(["no_keys"]));
    let refused = proxy.get(&token(&k1, &idp.base)).await;
    assert_eq!(refused.status, 401);
    // The IdP comes back: the backoff retries pick the keys up.
    idp.down(false);
    assert_eq!(proxy.wait_ready().await.status, 200);
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_later_keeps_verifying_and_a_removed_key_is_refused() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (key("k1"), key("k2"));
    idp.set_keys(&[&k1, &k2]);
    idp.cache_control("max-age=1");
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &url_keys(&idp)).await;
    assert_eq!(proxy.wait_ready().await.status, 200);
    let t1 = token(&k1, &idp.base);
    assert_eq!(proxy.get(&t1).await.status, 200, "now cached");

    // Down: refreshes fail, the last good set keeps verifying.
    idp.down(true);
    let errors_seen = common::within(Duration::from_secs(10), || async {
        let m = String::from_utf8(proxy.admin("/metrics").await.body.to_vec()).unwrap();
        !m.contains(&format!(
            "purposegate_jwks_refresh_total{{issuer=\"{}\",result=\"error\"}} 0",
            idp.base
        ))
    })
    .await
    .is_some();
    assert!(errors_seen);
    assert_eq!(proxy.get(&t1).await.status, 200);
    assert_eq!(proxy.get(&token(&k2, &idp.base)).await.status, 200);
    let ready = proxy.admin("/readyz").await;
    assert_eq!(ready.status, 200, "stale keys still serve");
    assert_eq!(ready.json()["stale_issuers"][0], idp.base.as_str());

    // Back up without k1: the cached k1 token and fresh k1 tokens are refused.
    idp.set_keys(&[&k2]);
    idp.down(false);
    let removed = common::within(Duration::from_secs(10), || async {
        proxy.get(&t1).await.status == 401
    })
    .await
    .is_some();
    assert!(removed, "the removed key stops verifying, cached or not");
    let fresh = proxy.get(&token(&k1, &idp.base)).await;
    assert_eq!(fresh.reason().as_deref(), Some("invalid_token"));
    assert_eq!(proxy.get(&token(&k2, &idp.base)).await.status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_is_honoured() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let k1 = key("k1");
    idp.set_keys(&[&k1]);

    // max-age=1 with refresh_min 1: refetched about every second.
    idp.cache_control("max-age=1");
    let short = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(short.path(), &idp, &up, &url_keys(&idp)).await;
    assert_eq!(proxy.wait_ready().await.status, 200);
    assert!(
        common::within(Duration::from_secs(10), || async { idp.fetches() >= 3 })
            .await
            .is_some()
    );
    proxy.stop().await;

    // max-age=3600: no refetch while the test watches.
    idp.cache_control("max-age=3600");
    let long = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(long.path(), &idp, &up, &url_keys(&idp)).await;
    assert_eq!(proxy.wait_ready().await.status, 200);
    let after_start = idp.fetches();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);
    assert_eq!(idp.fetches(), after_start, "no refetch within max-age");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_finds_the_jwks() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let k1 = key("k1");
    idp.set_keys(&[&k1]);
    idp.cache_control("max-age=3600");
    let keys = format!("oidc_issuer: \"{}\"", idp.base);
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &keys).await;
    assert_eq!(proxy.wait_ready().await.status, 200);
    assert!(idp.state.discovery_fetches.load(Ordering::SeqCst) >= 1);
    assert_eq!(idp.fetches(), 1);
    assert_eq!(proxy.get(&token(&k1, &idp.base)).await.status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_issuers_each_with_their_own_keys() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (key("ka"), key("kb"));
    idp.set_keys(&[&ka]);
    idp.set_second_keys(&[&kb]);
    idp.cache_control("max-age=3600");
    let other = "https://justification.test";
    let keys = format!(
        "{}\n  additional_issuers:\n    - {{issuer: \"{other}\", audiences: [\"{AUDIENCE}\"], jwks_url: \"{}/jwks2\"}}",
        url_keys(&idp),
        idp.base
    );
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &keys).await;
    let ready = proxy.wait_ready().await;
    assert_eq!(ready.status, 200, "{:?}", ready.json());
    assert_eq!(ready.json()["issuers"].as_array().unwrap().len(), 2);
    assert_eq!(proxy.get(&token(&ka, &idp.base)).await.status, 200);
    assert_eq!(proxy.get(&token(&kb, other)).await.status, 200);
    // A key of one issuer never verifies another issuer's tokens.
    assert_eq!(proxy.get(&token(&ka, other)).await.status, 401);
    assert_eq!(proxy.get(&token(&kb, &idp.base)).await.status, 401);
    assert_eq!(
        proxy.get(&token(&ka, "https://unknown.test")).await.status,
        401
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_refuses_a_document_naming_another_issuer() {
    let (idp, up) = (Idp::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let k1 = key("k1");
    idp.set_keys(&[&k1]);
    // Same server, but under the name `localhost`: the document still says
    // `https://127.0.0.1:PORT`, which is not the configured issuer.
    let other_name = idp.base.replace("127.0.0.1", "localhost");
    let keys = format!("oidc_issuer: \"{other_name}\"");
    let mut proxy = Proxy::start(dir.path(), &idp, &up, &keys).await;
    let discovered = common::within(Duration::from_secs(5), || async {
        idp.state.discovery_fetches.load(Ordering::SeqCst) >= 1
    })
    .await
    .is_some();
    assert!(discovered);
    let error_recorded = common::within(Duration::from_secs(5), || async {
        let r = proxy.admin("/readyz").await.json();
        r["issuers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("OIDC discovery"))
    })
    .await
    .is_some();
    assert!(error_recorded, "{:?}", proxy.admin("/readyz").await.json());
    assert_eq!(proxy.admin("/readyz").await.status, 503);
    assert_eq!(
        idp.fetches(),
        0,
        "the JWKS named by that document is never read"
    );
    proxy.stop().await;
}
