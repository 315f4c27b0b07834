//! `purposegate explain`: the decision for a token and request, with every
//! check made, computed by the same shell (`policy::engine`) and the same
//! pure rules `serve` uses, without contacting the upstream. The response
//! rules run on `--meta` (the simulated response head) or, without it, on a
//! 2xx response without metadata — as `serve` would judge a store that sends
//! none — and the output says which.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{fail, ExplainArgs};
use crate::auth::Verifier;
use crate::config::Config;
use crate::consent::file::{ConsentData, FileConsent};
use crate::consent::postgres::PgConsent;
use crate::consent::ConsentStore;
use crate::metrics::Metrics;
use crate::policy::decide::has_method_override;
use crate::policy::engine::{self, Held, Registry};
use crate::policy::{Check, Outcome, RequestFacts, ResponseMeta};
use crate::time::{now_millis, parse_rfc3339};

/// Runs `explain`; exit 0 for allow, 1 for deny or bad input.
pub fn run(args: &ExplainArgs) -> ExitCode {
    match explain(args) {
        Ok((text, allowed)) => {
            print!("{text}");
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

/// Parses `NAME:VALUE` pairs into a header map.
fn header_map(pairs: &[String], flag: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once(':')
            .ok_or_else(|| format!("{flag} `{pair}`: expected NAME:VALUE"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{flag} `{pair}`: bad header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("{flag} `{pair}`: bad header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The token text from `--token` or `--token-file` (`-`: stdin).
fn token_text(args: &ExplainArgs) -> Result<String, String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    let Some(file) = &args.token_file else {
        return Err("give --token or --token-file".into());
    };
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the token from stdin: {e}"))?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    }
    Ok(text)
}

/// The request headers with the token as `serve` would receive it, so that
/// one bearer parser decides (any case of `Bearer`, one header only).
fn with_authorization(mut headers: HeaderMap, token: &str) -> Result<HeaderMap, String> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(headers);
    }
    let has_scheme = token
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "));
    let value = if has_scheme {
        token.to_string()
    } else {
        format!("Bearer {token}")
    };
    let value = HeaderValue::from_str(&value).map_err(|_| "the token is not header text")?;
    headers.append(http::header::AUTHORIZATION, value);
    Ok(headers)
}

/// Computes the explanation text and whether the request would be allowed.
/// Consent is looked up in the configured registry (the file, or PostgreSQL),
/// so the answer is the one `serve` would give now.
pub fn explain(args: &ExplainArgs) -> Result<(String, bool), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(explain_with_registry(args))
}

/// The configured consent registry, as `serve` builds it.
fn consent_store(config: &Config, data: ConsentData) -> Result<Arc<dyn ConsentStore>, String> {
    match &config.consent_db {
        Some(db) => PgConsent::start(db, Metrics::new().0)
            .map(|pg| Arc::new(pg) as Arc<dyn ConsentStore>)
            .map_err(|e| e.to_string()),
        None => Ok(Arc::new(FileConsent::new(data))),
    }
}

async fn explain_with_registry(args: &ExplainArgs) -> Result<(String, bool), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let (policy, consent) =
        crate::state::load_policy_and_consent(&config).map_err(|e| e.to_string())?;
    let verifier = Verifier::new(&config.jwt, &config.claims).map_err(|e| e.to_string())?;
    let consent = consent_store(&config, consent)?;
    // The live check as serve builds it (same section, same client); a
    // lookup is a read, and this process's cache and metrics are its own.
    let justifications = crate::state::build_justifications(&config, &policy, &Metrics::new().0)
        .map_err(|e| e.to_string())?;
    let now = match &args.now {
        Some(t) => parse_rfc3339(t).ok_or_else(|| format!("--now `{t}` is not RFC 3339"))?,
        None => now_millis(),
    };
    let method: Method = args
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("bad method `{}`", args.method))?;
    let headers = with_authorization(header_map(&args.headers, "--header")?, &token_text(args)?)?;
    let meta_headers = header_map(&args.meta, "--meta")?;
    let path = args.path.split('?').next().unwrap_or_default();

    let authenticated = engine::authenticate(&headers, |t| {
        std::future::ready(verifier.verify_uncached(t, now / 1000).map(Arc::new))
    })
    .await;
    let facts = RequestFacts::new(&policy, &method, path, has_method_override(&headers));
    let source = Registry::new(consent.as_ref(), justifications.as_ref());
    let mut trace: Vec<Check> = Vec::new();
    let held = Held::default();
    let admitted = engine::admit(
        &policy,
        &facts,
        authenticated.state(),
        &source,
        now,
        &held,
        &mut trace,
    )
    .await;
    let outcome = match &admitted {
        Err(reason) => Outcome::Deny(*reason),
        Ok(permitted) => {
            let status = meta_headers
                .get("status")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let meta = ResponseMeta::from_headers(status, &meta_headers);
            engine::respond(permitted, &meta, &source, &mut trace).await
        }
    };
    let post_ran = admitted.is_ok();
    Ok((
        render(
            &method,
            path,
            outcome,
            &trace,
            post_ran,
            args.meta.is_empty(),
        ),
        outcome == Outcome::Allow,
    ))
}

fn render(
    method: &Method,
    path: &str,
    outcome: Outcome,
    trace: &[Check],
    post_ran: bool,
    no_meta: bool,
) -> String {
    let mut out = format!("request: {method} {path}\n");
    match outcome {
        Outcome::Allow => out.push_str("decision: allow\n"),
        Outcome::Deny(r) => out.push_str(&format!(
            "decision: deny\nreason: {} ({})\n",
            r.code(),
            r.status().as_u16()
        )),
    }
    out.push_str("checks:\n");
    for c in trace {
        let mark = if c.passed { "pass" } else { "FAIL" };
        out.push_str(&format!(
            "  [{mark}] {:>3} {:<32} {}\n",
            c.rule, c.name, c.detail
        ));
    }
    if post_ran && no_meta {
        out.push_str("note: no --meta given: the response rules 12-16 were evaluated as for a store that answers 200 without any x-content-* header (as serve would); pass --meta NAME:VALUE to simulate the store's metadata\n");
    }
    out
}
