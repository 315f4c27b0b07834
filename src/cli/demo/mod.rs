//! `purposegate demo`: everything on loopback with no setup. Writes a dev key,
//! the default policy, a consent registry and a config into a directory,
//! starts the sample content store, the sample case service (tickets opened
//! by the demo users, cases assigned to the demo employees:
//! `justification::sample`) and the proxy, then walks through an allowed
//! read per purpose and several denials, printing a ready-to-paste `curl`
//! line for each next to the answer it got.

pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;

use crate::auth::mint::{generate_dev_key, jwks_json, mint, DevKey, MintRequest, SigningKey};
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::justification::sample::{
    CaseService, CLOSED_TICKET, OTHER_USERS_TICKET, UNASSIGNED_CASE,
};

/// The shipped default policy, embedded so the demo needs no checkout.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/policy.yaml");
/// The docs/reference.md §5 example registry, matching the sample store's users.
pub const DEMO_CONSENT: &str = r#"# Demo consent registry (docs/reference.md §5).
users:
  u2:
    training_opt_outs: [{from: "2026-03-01T00:00:00Z"}]     # opted out; applies going forward only
  u3:
    deletion_requested_at: "2026-10-01T00:00:00Z"           # account deletion requested
orgs:
  org-9:
    api_training_opt_ins: [{from: "2026-01-01T00:00:00Z", until: "2026-06-01T00:00:00Z"}]
"#;

const ISSUER: &str = "https://idp.demo.purposegate.test";

/// One walkthrough step.
struct Step {
    title: &'static str,
    method: Method,
    path: &'static str,
    token: Option<Token>,
    expect: &'static str,
}

/// What to put in a demo token.
#[derive(Clone, Default)]
struct Token {
    role: &'static str,
    purpose: &'static str,
    justification: Option<(&'static str, &'static str)>,
    subjects: &'static [&'static str],
    cert_days: i64,
}

fn token(
    role: &'static str,
    purpose: &'static str,
    just: Option<(&'static str, &'static str)>,
    subjects: &'static [&'static str],
) -> Option<Token> {
    Some(Token {
        role,
        purpose,
        justification: just,
        subjects,
        cert_days: 180,
    })
}

fn steps() -> Vec<Step> {
    let get = Method::GET;
    let step = |title, method: &Method, path, token, expect| Step {
        title,
        method: method.clone(),
        path,
        token,
        expect,
    };
    vec![
        step(
            "abuse: trust & safety investigates a reported conversation",
            &get,
            "/v1/users/u1/conversations/c1",
            token(
                "trust-safety",
                "abuse",
                Some(("case_id", "CASE-1042")),
                &["u1"],
            ),
            "200",
        ),
        step(
            "support: agent reads the file the user asked about",
            &get,
            "/v1/users/u1/files/f1",
            token(
                "support",
                "support",
                Some(("ticket_id", "TICKET-77")),
                &["u1"],
            ),
            "200",
        ),
        step(
            "legal: counsel reads a deleted account under legal hold",
            &get,
            "/v1/users/u3/conversations/c1",
            token("legal", "legal", Some(("matter_id", "MATTER-9")), &["u3"]),
            "200",
        ),
        step(
            "training: researcher reads de-identified content from before the user's opt-out",
            &get,
            "/v1/users/u2/conversations/c-old",
            token("research", "training", None, &[]),
            "200",
        ),
        step(
            "training: API content the org chose to share",
            &get,
            "/v1/users/u4/conversations/c-api",
            token("annotation-contractor", "training", None, &[]),
            "200",
        ),
        step(
            "no token",
            &get,
            "/v1/users/u1/conversations/c1",
            None,
            "401 missing_token",
        ),
        step(
            "marketing is never a purpose",
            &get,
            "/v1/users/u1/conversations/c1",
            token("support", "marketing", None, &["u1"]),
            "403 prohibited_purpose",
        ),
        step(
            "support agent outside the ticket's users",
            &get,
            "/v1/users/u2/conversations/c-new",
            token(
                "support",
                "support",
                Some(("ticket_id", "TICKET-77")),
                &["u1"],
            ),
            "403 subject_not_in_scope",
        ),
        step(
            "support without a ticket",
            &get,
            "/v1/users/u1/conversations/c1",
            token("support", "support", None, &["u1"]),
            "403 missing_justification",
        ),
        step(
            "support on a ticket that is closed",
            &get,
            "/v1/users/u1/conversations/c1",
            token(
                "support",
                "support",
                Some(("ticket_id", CLOSED_TICKET)),
                &["u1"],
            ),
            "403 justification_closed",
        ),
        step(
            "support reading u1 under a ticket u2 opened (u1 did not reach out)",
            &get,
            "/v1/users/u1/conversations/c1",
            token(
                "support",
                "support",
                Some(("ticket_id", OTHER_USERS_TICKET)),
                &["u1", "u2"],
            ),
            "403 support_not_requested_by_user",
        ),
        step(
            "abuse under a case assigned to another investigator",
            &get,
            "/v1/users/u1/conversations/c1",
            token(
                "trust-safety",
                "abuse",
                Some(("case_id", UNASSIGNED_CASE)),
                &["u1"],
            ),
            "403 justification_not_assigned",
        ),
        step(
            "support on an account whose deletion was requested",
            &get,
            "/v1/users/u3/conversations/c1",
            token(
                "support",
                "support",
                Some(("ticket_id", "TICKET-78")),
                &["u3"],
            ),
            "403 account_deleted",
        ),
        step(
            "training on content created after the user opted out",
            &get,
            "/v1/users/u2/conversations/c-new",
            token("research", "training", None, &[]),
            "403 opted_out",
        ),
        step(
            "training on API content the org never shared",
            &get,
            "/v1/users/u5/conversations/c-api",
            token("research", "training", None, &[]),
            "403 api_content_not_shared",
        ),
        step(
            "a support agent trying to do training",
            &get,
            "/v1/users/u1/conversations/c1",
            token("support", "training", None, &[]),
            "403 role_not_permitted",
        ),
        step(
            "writes are never reads",
            &Method::DELETE,
            "/v1/users/u1/conversations/c1",
            token(
                "support",
                "support",
                Some(("ticket_id", "TICKET-77")),
                &["u1"],
            ),
            "405 method_not_allowed",
        ),
    ]
}

/// Runs the demo; serves until Ctrl-C unless `--once`.
pub fn run(args: DemoArgs) -> ExitCode {
    crate::logging::init_plain();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return crate::cli::fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::cli::fail(format!("demo failed: {e}")),
    }
}

/// Prepares the demo directory and returns (config path, dev key). The
/// config checks justifications against the case service at `cases_url`.
pub fn prepare(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    store: SocketAddr,
    cases_url: &str,
) -> Result<(PathBuf, DevKey), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| io(&policies, e))?;
    let key = generate_dev_key(Algorithm::ES256, "demo-1").map_err(|e| e.to_string())?;
    let write = |p: PathBuf, text: &str| std::fs::write(&p, text).map_err(|e| io(&p, e));
    crate::files::write_private_file(&dir.join("demo-1.pem"), key.private_pem.as_bytes())?;
    write(dir.join("jwks.json"), &jwks_json(&[&key]))?;
    write(policies.join("policy.yaml"), DEFAULT_POLICY)?;
    write(dir.join("consent.yaml"), DEMO_CONSENT)?;
    let config = format!(
        "listen: \"{listen}\"\nadmin_listen: \"{admin}\"\njwt:\n  issuer: \"{ISSUER}\"\n  audiences: [\"purposegate\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\n  leeway_seconds: 30\n  max_lifetime_seconds: 3600\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {{url: \"http://{store}\"}}\naudit:\n  path: \"audit/audit.jsonl\"\n  fsync: \"batch\"\njustifications:\n  url: \"{cases_url}\"\n"
    );
    let path = dir.join("config.yaml");
    write(path.clone(), &config)?;
    Ok((path, key))
}

/// `addr` if it can be bound now, else an ephemeral port on the same host.
fn free_or_ephemeral(addr: &str) -> Result<SocketAddr, String> {
    let wanted: SocketAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an address"))?;
    if !wanted.ip().is_loopback() {
        return Err(format!("the demo listens on loopback only, not {wanted}"));
    }
    match std::net::TcpListener::bind(wanted) {
        Ok(_) => Ok(wanted),
        Err(_) => Ok(SocketAddr::new(wanted.ip(), 0)),
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("purposegate-demo-{}", std::process::id())),
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(|_| "bad address")?;
    let store = store::start(loopback).await.map_err(|e| e.to_string())?;
    // Serves until dropped at the end of the demo.
    let cases = CaseService::demo(loopback)
        .await
        .map_err(|e| format!("sample case service: {e}"))?;
    let (config_path, key) = prepare(
        &dir,
        free_or_ephemeral(&args.listen)?,
        free_or_ephemeral(&args.admin_listen)?,
        store,
        &cases.url(),
    )?;
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let running = crate::server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!("purposegate demo\n  proxy:   http://{}\n  admin:   http://{}/metrics  /healthz  /readyz\n  store:   http://{store} (sample content store; reach it only through the proxy)\n  cases:   http://{} (sample case service: tickets, cases and matters the proxy checks justifications against)\n  files:   {}\n", running.addr, running.admin_addr, cases.addr(), dir.display());
    println!("Each step shows the answer the proxy gave; [ok] means it is the answer the walkthrough\nexpects (the allowed read, or the named denial). Paste the export and curl lines to replay one.\n");
    let mut denials = 0;
    for (i, step) in steps().iter().enumerate() {
        let token = step.token.as_ref().map(|t| mint_for(&key, t)).transpose()?;
        let (status, reason) = send(running.addr, step, token.as_deref()).await?;
        let got = match &reason {
            Some(r) => format!("{status} {r}"),
            None => status.to_string(),
        };
        if status >= 400 {
            denials += 1;
        }
        let mark = if got == step.expect {
            "ok"
        } else {
            "UNEXPECTED"
        };
        let var = format!("T{}", i + 1);
        let export = match &token {
            Some(t) => format!("export {var}='{t}'\n    "),
            None => String::new(),
        };
        println!(
            "{:>2}. {}\n    got {got} [{mark}]\n    {export}{}\n",
            i + 1,
            step.title,
            curl(running.addr, step, token.as_ref().map(|_| var.as_str()))
        );
    }
    println!("{denials} denials shown. Audit log: {}\n  verify it: purposegate audit verify {}\n  explain a decision: purposegate explain --config {} --token <TOKEN> GET <PATH>\n", dir.join("audit/audit.jsonl").display(), dir.join("audit/audit.jsonl").display(), config_path.display());
    let keep = args.dir.is_some();
    if !args.once {
        let fate = if keep {
            "its files stay in the directory above"
        } else {
            "its temporary directory is removed then; pass --dir DIR to keep the files"
        };
        println!("Serving until Ctrl-C (tokens above are valid for an hour); {fate}.");
        crate::server::shutdown_signal().await;
    }
    running.shutdown().await;
    if keep {
        println!("files kept in {}", dir.display());
    } else if std::fs::remove_dir_all(&dir).is_ok() {
        println!("removed {}", dir.display());
    }
    Ok(())
}

fn mint_for(key: &DevKey, t: &Token) -> Result<String, String> {
    let now = crate::time::now_millis() / 1000;
    let req = MintRequest {
        alg: key.alg,
        key: SigningKey::Pem(key.private_pem.as_bytes().to_vec()),
        kid: Some(key.kid.clone()),
        iss: ISSUER.to_string(),
        aud: vec!["purposegate".to_string()],
        sub: format!("employee-{}", t.role),
        roles: vec![t.role.to_string()],
        purpose: Some(t.purpose.to_string()),
        justification: t
            .justification
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        subjects: t.subjects.iter().map(|s| s.to_string()).collect(),
        training_cert_exp: Some(now + t.cert_days * 86_400),
        iat: now,
        ttl_seconds: 3600,
        nbf: None,
        jti: Some(format!("demo-{}", crate::proxy::request_id::next())),
        claim_names: Default::default(),
        extra: serde_json::Map::new(),
    };
    mint(&req).map_err(|e| e.to_string())
}

/// The step's curl line; `token_var` names the shell variable holding the
/// token (exported on the line before), so the line stays short and editable.
fn curl(addr: SocketAddr, step: &Step, token_var: Option<&str>) -> String {
    let mut line = String::from("curl -si");
    if step.method != Method::GET {
        line.push_str(&format!(" -X {}", step.method));
    }
    if let Some(v) = token_var {
        line.push_str(&format!(" -H \"Authorization: Bearer ${v}\""));
    }
    line.push_str(&format!(" http://{addr}{}", step.path));
    line
}

/// Sends one step's request; returns the status and the denial reason.
async fn send(
    addr: SocketAddr,
    step: &Step,
    token: Option<&str>,
) -> Result<(u16, Option<String>), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(step.method.clone())
        .uri(format!("http://{addr}{}", step.path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let reason = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .filter(|_| status >= 400);
    Ok((status, reason))
}
