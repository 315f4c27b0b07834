//! `purposegate explain`: the decision for a token and request, with every
//! check made, computed by the same shell (`policy::engine`) and the same
//! pure rules `serve` uses, without contacting the upstream. The response
//! rules run on `--meta` (the simulated response head) or, without it, on a
//! 2xx response without metadata — as `serve` would judge a store that sends
//! none — and the output says which. Rule 18 reads the employee's access
//! budget in Redis without consuming any of it (`Budgets::peek`) and prints
//! the usage counted now.

use std::future::Future;
use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{fail, ExplainArgs};
use crate::auth::Verifier;
use crate::budget::{self, Budgets, BudgetsConfig, Peek, Unavailable};
use crate::config::Config;
use crate::consent::file::{ConsentData, FileConsent};
use crate::consent::postgres::PgConsent;
use crate::consent::{ConsentStore, OrgConsent, UserConsent};
use crate::metrics::Metrics;
use crate::policy::decide::has_method_override;
use crate::policy::engine::{self, Facts, Held, Registry};
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

/// The access budgets as `serve` builds them, for reading only. A check may
/// wait for the first connection too: explain is not on a request path.
fn budgets(config: &Config) -> Result<Option<Budgets>, String> {
    let Some(cfg) = &config.budgets else {
        return Ok(None);
    };
    let cfg = BudgetsConfig {
        timeout: cfg.timeout + cfg.connect_timeout,
        ..cfg.clone()
    };
    let mut unused = prometheus_client::registry::Registry::default();
    Budgets::new(&cfg, &mut unused)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `serve`'s fact source, except that rule 18 peeks instead of charging and
/// keeps what it read for the output.
struct Explaining<'a> {
    registry: Registry<'a>,
    budgets: Option<&'a Budgets>,
    peeked: Mutex<Option<Result<Peek, Unavailable>>>,
}

impl Facts for Explaining<'_> {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send {
        self.registry.user(owner)
    }

    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send {
        self.registry.org(org)
    }

    fn justification(
        &self,
        purpose: &crate::policy::PurposeRule,
        id: &str,
    ) -> impl Future<Output = Option<crate::justification::Looked>> + Send {
        self.registry.justification(purpose, id)
    }

    fn budget(
        &self,
        sub: &str,
        purpose: &str,
        owner: &str,
    ) -> impl Future<Output = Option<budget::Outcome>> + Send {
        let (budgets, peeked) = (self.budgets, &self.peeked);
        async move {
            let peek = budgets?.peek(sub, purpose, owner).await;
            let outcome = match &peek {
                Ok(p) => p.if_charged.clone(),
                Err(why) => budget::Outcome::Unavailable(why.clone()),
            };
            if let Ok(mut slot) = peeked.lock() {
                *slot = Some(peek);
            }
            Some(outcome)
        }
    }
}

/// The usage line of the output: what rule 18 read (nothing was consumed).
fn budget_line(purpose: &str, peeked: Option<Result<Peek, Unavailable>>) -> Option<String> {
    match peeked? {
        Ok(p) if p.current.is_empty() => None,
        Ok(p) => Some(format!(
            "budget: {purpose} counted now, before this request (explain consumes nothing; rule 18 above shows the count with it): {}\n",
            budget::describe(&p.current)
        )),
        Err(why) => Some(format!("budget: usage unknown: {why}\n")),
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
    let budgets = budgets(&config)?;
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
    let source = Explaining {
        registry: Registry::new(consent.as_ref(), justifications.as_ref(), None),
        budgets: budgets.as_ref(),
        peeked: Mutex::new(None),
    };
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
    // Rule 18 last before the store, as in `serve`.
    let checked = match &admitted {
        Ok(permitted) => engine::charge_budget(permitted, &source, &mut trace)
            .await
            .result()
            .map(|()| permitted),
        Err(reason) => Err(*reason),
    };
    let outcome = match checked {
        Err(reason) => Outcome::Deny(reason),
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
    let post_ran = checked.is_ok();
    let mut text = render(
        &method,
        path,
        outcome,
        &trace,
        post_ran,
        args.meta.is_empty(),
    );
    let purpose = authenticated
        .claims()
        .and_then(|c| c.purpose.clone())
        .unwrap_or_default();
    let peeked = source.peeked.lock().ok().and_then(|mut p| p.take());
    if let Some(line) = budget_line(&purpose, peeked) {
        text.push_str(&line);
    }
    Ok((text, outcome == Outcome::Allow))
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
