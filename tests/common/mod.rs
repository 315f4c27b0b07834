//! Shared integration-test harness: a recording upstream on 127.0.0.1:0, dev
//! keys generated per run, a config in a temp dir pointing at the shipped
//! default policy, the real proxy started in-process, and a small client.
#![allow(dead_code)]

pub mod process;

pub mod pg;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::Algorithm;
use purposegate::auth::mint::{generate_dev_key, jwks_json, mint, DevKey, MintRequest, SigningKey};
use tokio::net::TcpListener;

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "purposegate";

/// The consent registry the tests run against (docs/reference.md §5 example + more).
pub const CONSENT: &str = r#"
users:
  u2:
    training_opt_outs: [{from: "2026-03-01T00:00:00Z"}]
  u3:
    deletion_requested_at: "2026-10-01T00:00:00Z"
  u6:
    training_opt_outs: [{from: "2026-01-01T00:00:00Z", until: "2026-02-01T00:00:00Z"}]
orgs:
  org-9:
    api_training_opt_ins: [{from: "2026-01-01T00:00:00Z", until: "2026-06-01T00:00:00Z"}]
"#;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
}

/// How the upstream answers one path.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Stream this many bytes of generated content (in 64 KiB chunks) instead of `body`.
    pub stream_bytes: Option<u64>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Answer with `Connection: close`, ending the connection after this reply.
    pub close: bool,
}

impl Reply {
    pub fn ok(meta: &[(&str, &str)]) -> Reply {
        Reply {
            status: 200,
            headers: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"user content".to_vec(),
            ..Reply::default()
        }
    }
}

/// A real hyper upstream that records every request it receives.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    /// TCP connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            replies: Arc::default(),
            accepted: Arc::default(),
        };
        let server = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                server
                    .accepted
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let server = server.clone();
                let service = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.answer(req).await) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        up
    }

    /// Sets the reply for a path (default: 200, owner from the path, "user content").
    pub fn reply(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_string(), reply);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many TCP connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
    ) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        self.seen.lock().unwrap().push(Seen {
            method: req.method().clone(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: req.headers().clone(),
        });
        let reply = self
            .replies
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or_else(|| default_reply(&path));
        if let Some(d) = reply.delay {
            tokio::time::sleep(d).await;
        }
        let mut builder = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
        for (k, v) in &reply.headers {
            builder = builder.header(k, v);
        }
        if reply.close {
            builder = builder.header("connection", "close");
        }
        let body = match reply.stream_bytes {
            Some(n) => streamed(n),
            None => Full::new(Bytes::from(reply.body))
                .map_err(|e| match e {})
                .boxed(),
        };
        builder.body(body).unwrap()
    }
}

/// Generated content streamed in 64 KiB chunks, never held whole.
fn streamed(total: u64) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    use futures_util::stream::{self, StreamExt};
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = total.div_ceil(64 * 1024);
    let s = stream::iter(0..chunks).map(move |i| {
        let len = if i + 1 == chunks {
            (total - i * 64 * 1024) as usize
        } else {
            chunk.len()
        };
        Ok::<_, Infallible>(hyper::body::Frame::data(chunk.slice(..len)))
    });
    BodyExt::boxed(http_body_util::StreamBody::new(s))
}

fn default_reply(path: &str) -> Reply {
    let owner = path.split('/').nth(3).unwrap_or("").to_string();
    Reply::ok(&[("x-content-owner", &owner), ("content-type", "text/plain")])
}

/// What goes in a test token.
#[derive(Clone, Debug)]
pub struct Tok {
    pub sub: String,
    pub roles: Vec<String>,
    pub purpose: Option<String>,
    pub justification: Vec<(String, String)>,
    pub subjects: Vec<String>,
    pub cert_days: Option<i64>,
    pub ttl: i64,
    pub iat_offset: i64,
    pub jti: Option<String>,
}

impl Tok {
    pub fn new(role: &str, purpose: &str) -> Tok {
        Tok {
            sub: "e-1".into(),
            roles: vec![role.into()],
            purpose: Some(purpose.into()),
            justification: vec![],
            subjects: vec![],
            cert_days: Some(90),
            ttl: 600,
            iat_offset: 0,
            jti: None,
        }
    }
    /// Abuse investigation of `user` under case C-1.
    pub fn abuse(user: &str) -> Tok {
        Tok::new("trust-safety", "abuse")
            .just("case_id", "C-1")
            .subject(user)
    }
    pub fn support(user: &str) -> Tok {
        Tok::new("support", "support")
            .just("ticket_id", "T-1")
            .subject(user)
    }
    pub fn legal(user: &str) -> Tok {
        Tok::new("legal", "legal")
            .just("matter_id", "M-1")
            .subject(user)
    }
    pub fn training() -> Tok {
        Tok::new("research", "training")
    }
    pub fn just(mut self, k: &str, v: &str) -> Tok {
        self.justification.push((k.into(), v.into()));
        self
    }
    pub fn subject(mut self, u: &str) -> Tok {
        self.subjects.push(u.into());
        self
    }
}

/// A running proxy in front of a recording upstream.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub key: DevKey,
    pub running: Option<purposegate::server::Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
}

/// Options for `Harness::start_with`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub fsync: &'static str,
    /// Point the `content` upstream at this address instead of the recording one.
    pub upstream_override: Option<SocketAddr>,
    pub response_timeout_ms: u64,
    pub extra_yaml: String,
    /// A `consent:` section (PostgreSQL backend) written instead of `consent_file`.
    pub consent_section: Option<String>,
    /// The audit log's path (default `audit/audit.jsonl` in the test dir).
    pub audit_path: Option<String>,
    /// More keys of the `audit:` section, each line indented by two spaces.
    pub audit_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            fsync: "batch",
            upstream_override: None,
            response_timeout_ms: 2000,
            extra_yaml: String::new(),
            consent_section: None,
            audit_path: None,
            audit_extra: String::new(),
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the shipped default policy into `dir/policies` (tests may edit it).
pub fn copy_policy(dir: &Path) -> PathBuf {
    let to = dir.join("policies");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = e.unwrap().path();
        let is_yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if p.is_file() && is_yaml && p.file_name().unwrap() != "consent.yaml" {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// Writes key, JWKS, consent, policy copy and config into `dir`; returns the config path.
pub fn write_config(dir: &Path, key: &DevKey, upstream: SocketAddr, opts: &Opts) -> PathBuf {
    std::fs::write(dir.join("jwks.json"), jwks_json(&[key])).unwrap();
    std::fs::write(dir.join("consent.yaml"), CONSENT).unwrap();
    copy_policy(dir);
    let config = format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
jwt:
  issuer: "{ISSUER}"
  audiences: ["{AUDIENCE}"]
  algorithms: ["ES256", "RS256"]
  jwks_file: "jwks.json"
  leeway_seconds: 5
  max_lifetime_seconds: 3600
policy_dir: "policies"
{consent}
upstreams:
  content: {{url: "http://{upstream}", response_timeout_ms: {timeout}, connect_timeout_ms: 500}}
audit:
  path: "{audit_path}"
  fsync: "{fsync}"
{audit_extra}reload_interval_ms: 100
shutdown_grace_seconds: 5
{extra}"#,
        timeout = opts.response_timeout_ms,
        fsync = opts.fsync,
        audit_path = opts.audit_path.as_deref().unwrap_or("audit/audit.jsonl"),
        audit_extra = opts.audit_extra,
        extra = opts.extra_yaml,
        consent = opts
            .consent_section
            .clone()
            .unwrap_or_else(|| "consent_file: \"consent.yaml\"".to_string()),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Harness {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let key = generate_dev_key(Algorithm::ES256, "test-1").unwrap();
        let target = opts.upstream_override.unwrap_or(upstream.addr);
        let config_path = write_config(dir.path(), &key, target, &opts);
        let config = purposegate::config::Config::load(&config_path).unwrap();
        let running = purposegate::server::start(config).await.unwrap();
        Harness {
            addr: running.addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
            upstream,
            key,
            config_path,
        }
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit/audit.jsonl")
    }

    /// Mints a token with this harness's key.
    pub fn token(&self, t: &Tok) -> String {
        mint_with(&self.key, t)
    }

    /// GET with an optional token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, &[]).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        send(self.addr, method, path, token, headers).await
    }

    /// The admin endpoint's body.
    pub async fn admin_get(&self, path: &str) -> Resp {
        send(self.admin, Method::GET, path, None, &[]).await
    }

    /// Stops the proxy gracefully (flushes the audit log).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// All audit records, parsed.
    /// The request records (`decision`, `complete`) of the log, in order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        request_records(&self.audit_path())
    }
}

/// The request records of a log, without the writer's own (chain and file
/// headers, checkpoints, `resumed`).
pub fn request_records(path: &Path) -> Vec<serde_json::Value> {
    read_audit(path)
        .into_iter()
        .filter(|r| r["event"] == "decision" || r["event"] == "complete")
        .collect()
}

pub fn read_audit(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn mint_with(key: &DevKey, t: &Tok) -> String {
    let now = purposegate::time::now_millis() / 1000 + t.iat_offset;
    let req = MintRequest {
        alg: key.alg,
        key: SigningKey::Pem(key.private_pem.as_bytes().to_vec()),
        kid: Some(key.kid.clone()),
        iss: ISSUER.into(),
        aud: vec![AUDIENCE.into()],
        sub: t.sub.clone(),
        roles: t.roles.clone(),
        purpose: t.purpose.clone(),
        justification: t.justification.clone(),
        subjects: t.subjects.clone(),
        training_cert_exp: t.cert_days.map(|d| now + d * 86_400),
        iat: now,
        ttl_seconds: t.ttl,
        nbf: None,
        jti: t.jti.clone(),
        claim_names: Default::default(),
        extra: serde_json::Map::new(),
    };
    mint(&req).unwrap()
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn reason(&self) -> Option<String> {
        self.json()
            .get("reason")
            .and_then(|r| r.as_str())
            .map(str::to_string)
    }
    pub fn request_id(&self) -> String {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes;
/// returns how long it took, or None.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Like `within`, but a condition not reached within `limit` fails the test.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if within(limit, check).await.is_none() {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// `promtool check metrics` on a /metrics text, when promtool is installed
/// (CI installs it).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else { return };
    let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
