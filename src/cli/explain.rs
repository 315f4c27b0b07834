//! `purposegate explain`: the decision for a token and request, with every
//! check made, computed by the same pure functions `serve` uses and without
//! contacting the upstream (`--meta` simulates its response metadata).

use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{fail, ExplainArgs};
use crate::auth::Verifier;
use crate::config::Config;
use std::sync::Arc;

use crate::consent::file::{ConsentData, FileConsent};
use crate::consent::postgres::PgConsent;
use crate::consent::ConsentStore;
use crate::metrics::Metrics;
use crate::policy::decide::has_method_override;
use crate::policy::{
    decide_post, decide_pre, AuthState, Check, Lookup, Outcome, RequestFacts, ResponseMeta,
};
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
    let now = match &args.now {
        Some(t) => parse_rfc3339(t).ok_or_else(|| format!("--now `{t}` is not RFC 3339"))?,
        None => now_millis(),
    };
    let method: Method = args
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("bad method `{}`", args.method))?;
    let request_headers = header_map(&args.headers, "--header")?;
    let meta_headers = header_map(&args.meta, "--meta")?;
    let path = args.path.split('?').next().unwrap_or_default();

    let token = args.token.trim().trim_start_matches("Bearer ").trim();
    let verified = if token.is_empty() {
        None
    } else {
        Some(
            verifier
                .verify_uncached(token, now / 1000)
                .map_err(|e| e.to_string()),
        )
    };
    let auth = match &verified {
        None => AuthState::Missing,
        Some(Ok(claims)) => AuthState::Valid(claims),
        Some(Err(why)) => AuthState::Invalid(why),
    };
    let facts = RequestFacts::new(
        &policy,
        &method,
        path,
        has_method_override(&request_headers),
    );
    let user = match facts.route {
        Some(r) => consent.user(r.owner).await.ok(),
        None => Some(Arc::default()),
    };
    let user_lookup = match &user {
        Some(u) => Lookup::Known(u.as_ref()),
        None => Lookup::Unavailable,
    };
    let mut trace: Vec<Check> = Vec::new();
    let mut outcome = decide_pre(&policy, &facts, auth, user_lookup, now, &mut trace);
    let mut post_ran = false;
    if let (Outcome::Allow, AuthState::Valid(claims), Some(route), Some(user)) =
        (outcome, auth, facts.route, &user)
    {
        if !args.meta.is_empty() {
            post_ran = true;
            let status = meta_headers
                .get("status")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let meta = ResponseMeta::from_headers(status, &meta_headers);
            let org = match meta.org {
                Some(o) => Some(consent.org(o).await.ok()),
                None => None,
            };
            let org_lookup = org.as_ref().map(|o| match o {
                Some(o) => Lookup::Known(o.as_ref()),
                None => Lookup::Unavailable,
            });
            outcome = decide_post(
                &policy,
                claims,
                route.owner,
                &meta,
                user,
                org_lookup,
                now,
                &mut trace,
            );
        }
    }
    Ok((
        render(&method, path, outcome, &trace, post_ran),
        outcome == Outcome::Allow,
    ))
}

fn render(
    method: &Method,
    path: &str,
    outcome: Outcome,
    trace: &[Check],
    post_ran: bool,
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
            "  [{mark}] {:>2} {:<32} {}\n",
            c.rule, c.name, c.detail
        ));
    }
    if outcome == Outcome::Allow && !post_ran {
        out.push_str("note: response rules 12-16 (owner match; for training: de-identified, opt-outs, API opt-in) run on the upstream's metadata; pass --meta NAME:VALUE to simulate them\n");
    }
    out
}
