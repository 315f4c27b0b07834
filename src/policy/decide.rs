//! The functional core: CONTRACT §6 rules as pure functions. No I/O, no clock,
//! no globals: `serve`, `explain` and `policy test` all call these, so what a
//! test or `explain` shows is exactly what the proxy does.
//!
//! Rules are checked in table order and the first failure decides. Every
//! check made is reported to a `Trace`; its detail text is built only inside
//! the closure handed to the tracer, so with `NoTrace` a decision allocates
//! nothing.

use http::{HeaderMap, Method};

use super::model::{Policy, PurposeRule};
use super::reason::Reason;
use super::routes::RouteMatch;
use crate::auth::Claims;
use crate::consent::{OrgConsent, UserConsent};
use crate::time::{format_rfc3339, parse_rfc3339, Millis};

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(Reason),
}

impl Outcome {
    /// The denial's reason, if denied.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Outcome::Allow => None,
            Outcome::Deny(r) => Some(r),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Allow => f.write_str("allow"),
            Outcome::Deny(r) => write!(f, "deny {r}"),
        }
    }
}

/// The request headers that ask a server to treat a request as another
/// method (rule 1). Frameworks behind the proxy may honour them, so their mere
/// presence turns a read into a possible write.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether any method-override header is present (names are case-insensitive).
pub fn has_method_override(headers: &HeaderMap) -> bool {
    METHOD_OVERRIDE_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// One check made, for `explain` and `policy test` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Rule number of CONTRACT §6 (1-16; 0 for checks outside the table).
    pub rule: u8,
    /// Short rule name, e.g. `subject_scope`.
    pub name: &'static str,
    pub passed: bool,
    /// Human-readable facts behind the result (never a token or content).
    pub detail: String,
}

/// Receives checks as they are made. `NoTrace` costs nothing on the hot path.
pub trait Trace {
    fn check(&mut self, rule: u8, name: &'static str, passed: bool, detail: &dyn Fn() -> String);
}

/// A tracer that records nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    #[inline]
    fn check(&mut self, _: u8, _: &'static str, _: bool, _: &dyn Fn() -> String) {}
}

impl Trace for Vec<Check> {
    fn check(&mut self, rule: u8, name: &'static str, passed: bool, detail: &dyn Fn() -> String) {
        self.push(Check {
            rule,
            name,
            passed,
            detail: detail(),
        });
    }
}

/// The request facts the pre-upstream rules need.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a, 'p> {
    pub method: &'a Method,
    /// The path as received (no query string).
    pub path: &'a str,
    /// Whether a method-override header was present.
    pub method_override: bool,
    /// The policy route the path matches (see `RequestFacts::new`).
    pub route: Option<RouteMatch<'p, 'a>>,
}

impl<'a, 'p> RequestFacts<'a, 'p> {
    /// Builds the facts, matching the path against the policy's routes.
    pub fn new(
        policy: &'p Policy,
        method: &'a Method,
        path: &'a str,
        method_override: bool,
    ) -> Self {
        RequestFacts {
            method,
            path,
            method_override,
            route: policy.routes.lookup(path),
        }
    }
}

/// What token verification found (rules 3-4).
#[derive(Debug, Clone, Copy)]
pub enum AuthState<'a> {
    Missing,
    /// Verification failed; the text says why (for the trace, never the token).
    Invalid(&'a str),
    Valid(&'a Claims),
}

/// A consent lookup's result as the core sees it.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    Known(&'a T),
    /// The registry could not answer: fail closed.
    Unavailable,
}

// Manual impls: a derive would require `T: Copy`, but only a reference is copied.
impl<T> Clone for Lookup<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Lookup<'_, T> {}

/// Content metadata from the upstream's response head (CONTRACT §4), raw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseMeta<'a> {
    pub status: u16,
    pub owner: Option<&'a str>,
    pub created_at: Option<&'a str>,
    pub source: Option<&'a str>,
    pub org: Option<&'a str>,
    pub deidentified: Option<&'a str>,
}

impl<'a> ResponseMeta<'a> {
    /// Reads the CONTRACT §4 headers (a header that is not visible ASCII
    /// counts as absent, which the training rules treat as missing).
    pub fn from_headers(status: u16, h: &'a http::HeaderMap) -> Self {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        ResponseMeta {
            status,
            owner: text("x-content-owner"),
            created_at: text("x-content-created-at"),
            source: text("x-content-source"),
            org: text("x-content-org"),
            deidentified: text("x-content-deidentified"),
        }
    }
}

/// Rules 1-11, before the upstream is contacted.
pub fn decide_pre(
    policy: &Policy,
    req: &RequestFacts<'_, '_>,
    auth: AuthState<'_>,
    consent: Lookup<'_, UserConsent>,
    now: Millis,
    trace: &mut dyn Trace,
) -> Outcome {
    outcome(pre_rules(policy, req, auth, consent, now, trace))
}

/// Rules 12-16, on the upstream's response head, for a request `decide_pre`
/// allowed. `owner` is the path owner; `org` is the lookup for `meta.org`
/// (None when the caller did not look one up). A non-2xx response carries no
/// content metadata and is allowed through untouched.
#[allow(clippy::too_many_arguments)]
pub fn decide_post(
    policy: &Policy,
    claims: &Claims,
    owner: &str,
    meta: &ResponseMeta<'_>,
    user: &UserConsent,
    org: Option<Lookup<'_, OrgConsent>>,
    _now: Millis,
    trace: &mut dyn Trace,
) -> Outcome {
    outcome(post_rules(policy, claims, owner, meta, user, org, trace))
}

fn outcome(r: Result<(), Reason>) -> Outcome {
    match r {
        Ok(()) => Outcome::Allow,
        Err(reason) => Outcome::Deny(reason),
    }
}

/// Records a check and turns a failure into the rule's reason.
fn gate(
    trace: &mut dyn Trace,
    rule: u8,
    name: &'static str,
    ok: bool,
    reason: Reason,
    detail: &dyn Fn() -> String,
) -> Result<(), Reason> {
    trace.check(rule, name, ok, detail);
    if ok {
        Ok(())
    } else {
        Err(reason)
    }
}

fn pre_rules(
    policy: &Policy,
    req: &RequestFacts<'_, '_>,
    auth: AuthState<'_>,
    consent: Lookup<'_, UserConsent>,
    now: Millis,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    check_method(req, trace)?;
    check_canonical(req.path, trace)?;
    let claims = check_token(auth, trace)?;
    let route = check_route(req, trace)?;
    let rule = check_purpose(policy, claims, trace)?;
    check_role(policy, claims, &rule.name, trace)?;
    check_certification(claims, now, trace)?;
    check_justification(rule, claims, trace)?;
    check_subject(rule, claims, route.owner, trace)?;
    check_deletion(rule, route.owner, consent, now, trace)
}

/// Rule 1.
fn check_method(req: &RequestFacts<'_, '_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let read = *req.method == Method::GET || *req.method == Method::HEAD;
    let ok = read && !req.method_override;
    gate(
        trace,
        1,
        "method",
        ok,
        Reason::MethodNotAllowed,
        &|| match (read, req.method_override) {
            (true, false) => format!("{} is a read", req.method),
            (true, true) => format!("{} carries a method-override header", req.method),
            _ => format!("{} is not a read (only GET and HEAD)", req.method),
        },
    )
}

/// Rule 2.
fn check_canonical(path: &str, trace: &mut dyn Trace) -> Result<(), Reason> {
    let ok = super::canonical::is_canonical(path);
    gate(
        trace,
        2,
        "canonical_path",
        ok,
        Reason::NonCanonicalPath,
        &|| {
            if ok {
                format!("path {path:?} is canonical")
            } else {
                format!("path {path:?} is not canonical (dot or empty segment, backslash, encoded / \\ . or control character, or bad escape)")
            }
        },
    )
}

/// Rules 3 and 4.
fn check_token<'c>(auth: AuthState<'c>, trace: &mut dyn Trace) -> Result<&'c Claims, Reason> {
    let present = !matches!(auth, AuthState::Missing);
    gate(
        trace,
        3,
        "token_present",
        present,
        Reason::MissingToken,
        &|| {
            if present {
                "bearer token present".to_string()
            } else {
                "no bearer token in the Authorization header".to_string()
            }
        },
    )?;
    match auth {
        AuthState::Valid(claims) => {
            trace.check(4, "token_valid", true, &|| {
                format!("token of `{}` verified", claims.sub)
            });
            Ok(claims)
        }
        AuthState::Invalid(why) => {
            trace.check(4, "token_valid", false, &|| format!("token refused: {why}"));
            Err(Reason::InvalidToken)
        }
        AuthState::Missing => Err(Reason::MissingToken),
    }
}

/// Rule 5.
fn check_route<'r, 'p>(
    req: &RequestFacts<'p, 'r>,
    trace: &mut dyn Trace,
) -> Result<RouteMatch<'r, 'p>, Reason> {
    match req.route {
        Some(m) => {
            trace.check(5, "route", true, &|| {
                format!(
                    "route `{}` ({}) to upstream `{}`, owner {}",
                    m.route.name, m.route.template, m.route.upstream, m.owner
                )
            });
            Ok(m)
        }
        None => {
            trace.check(5, "route", false, &|| {
                format!("no policy route matches {:?}", req.path)
            });
            Err(Reason::NoRoute)
        }
    }
}

/// Rule 6: a prohibited purpose is named as such before "unknown".
fn check_purpose<'p>(
    policy: &'p Policy,
    claims: &Claims,
    trace: &mut dyn Trace,
) -> Result<&'p PurposeRule, Reason> {
    let Some(purpose) = claims.purpose.as_deref() else {
        trace.check(6, "purpose", false, &|| "no purpose claim".to_string());
        return Err(Reason::UnknownPurpose);
    };
    if policy.prohibited.contains(purpose) {
        trace.check(6, "purpose", false, &|| {
            format!("purpose `{purpose}` is prohibited")
        });
        return Err(Reason::ProhibitedPurpose);
    }
    let rule = policy.purpose(purpose);
    trace.check(6, "purpose", rule.is_some(), &|| match rule {
        Some(_) => format!("purpose `{purpose}` is defined"),
        None => format!("purpose `{purpose}` is not defined by the policy"),
    });
    rule.ok_or(Reason::UnknownPurpose)
}

/// Rule 7.
fn check_role(
    policy: &Policy,
    claims: &Claims,
    purpose: &str,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let role = policy.permitting_role(&claims.roles, purpose);
    gate(
        trace,
        7,
        "role",
        role.is_some(),
        Reason::RoleNotPermitted,
        &|| match role {
            Some(r) => format!("purpose `{purpose}` permitted by role `{r}`"),
            None => format!(
                "no role of [{}] permits purpose `{purpose}`",
                claims.roles.join(", ")
            ),
        },
    )
}

/// Rule 8: the certification must still be valid now (strictly in the future).
fn check_certification(claims: &Claims, now: Millis, trace: &mut dyn Trace) -> Result<(), Reason> {
    let exp = claims.training_cert_exp.map(|s| s.saturating_mul(1000));
    let ok = exp.is_some_and(|e| e > now);
    gate(
        trace,
        8,
        "training_certification",
        ok,
        Reason::TrainingCertificationRequired,
        &|| match exp {
            None => "no training_cert_exp claim".to_string(),
            Some(e) if ok => format!("training certification valid until {}", format_rfc3339(e)),
            Some(e) => format!("training certification expired at {}", format_rfc3339(e)),
        },
    )
}

/// Rule 9.
fn check_justification(
    rule: &PurposeRule,
    claims: &Claims,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let Some(name) = rule.justification_claim.as_deref() else {
        trace.check(9, "justification", true, &|| {
            format!("purpose `{}` needs no justification claim", rule.name)
        });
        return Ok(());
    };
    let value = claims.string(name).filter(|v| !v.trim().is_empty());
    gate(
        trace,
        9,
        "justification",
        value.is_some(),
        Reason::MissingJustification,
        &|| match value {
            Some(v) => format!("{name} = {v}"),
            None => format!("purpose `{}` needs a non-empty `{name}` claim", rule.name),
        },
    )
}

/// Rule 10.
fn check_subject(
    rule: &PurposeRule,
    claims: &Claims,
    owner: &str,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    if !rule.subject_scoped {
        trace.check(10, "subject_scope", true, &|| {
            format!("purpose `{}` is not subject-scoped", rule.name)
        });
        return Ok(());
    }
    let ok = claims.subjects.iter().any(|s| s == owner);
    gate(
        trace,
        10,
        "subject_scope",
        ok,
        Reason::SubjectNotInScope,
        &|| {
            let subjects = claims.subjects.join(", ");
            let verb = if ok { "in" } else { "not in" };
            format!("owner {owner} {verb} subjects [{subjects}]")
        },
    )
}

/// Rule 11: fail closed when the registry cannot answer.
fn check_deletion(
    rule: &PurposeRule,
    owner: &str,
    consent: Lookup<'_, UserConsent>,
    now: Millis,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let Lookup::Known(user) = consent else {
        trace.check(11, "account_deletion", false, &|| {
            format!("consent registry unavailable for owner {owner}")
        });
        return Err(Reason::ConsentUnavailable);
    };
    let deleted = user.deleted_at(now);
    let ok = !deleted || rule.deletion_exempt;
    gate(
        trace,
        11,
        "account_deletion",
        ok,
        Reason::AccountDeleted,
        &|| {
            let at = user.deletion_requested_at.map(format_rfc3339);
            match (deleted, at) {
                (true, Some(at)) if ok => format!(
                    "owner {owner} requested deletion at {at}; purpose `{}` is exempt (legal hold)",
                    rule.name
                ),
                (true, Some(at)) => format!("owner {owner} requested deletion at {at}"),
                _ => format!("owner {owner} has no deletion request in force"),
            }
        },
    )
}

fn post_rules(
    policy: &Policy,
    claims: &Claims,
    owner: &str,
    meta: &ResponseMeta<'_>,
    user: &UserConsent,
    org: Option<Lookup<'_, OrgConsent>>,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    if !(200..300).contains(&meta.status) {
        trace.check(0, "upstream_status", true, &|| {
            format!(
                "upstream answered {}: no content, rules 12-16 do not apply",
                meta.status
            )
        });
        return Ok(());
    }
    check_owner(meta, owner, trace)?;
    let rule = post_purpose(policy, claims, trace)?;
    let mut created = None;
    if rule.deidentified_only {
        check_deidentified(meta, trace)?;
    }
    if rule.honour_opt_outs {
        let c = need_created(meta, 14, trace)?;
        created = Some(c);
        check_opt_out(user, owner, meta, c, trace)?;
    }
    if rule.api_content_requires_opt_in {
        check_api_content(meta, org, created, trace)?;
    }
    if rule.deidentified_only || rule.honour_opt_outs || rule.api_content_requires_opt_in {
        trace.check(16, "metadata", true, &|| {
            "the metadata rules 13-15 need is present and parses".to_string()
        });
    }
    Ok(())
}

/// Rule 12, for every purpose.
fn check_owner(meta: &ResponseMeta<'_>, owner: &str, trace: &mut dyn Trace) -> Result<(), Reason> {
    let ok = meta.owner.is_none_or(|o| o == owner);
    gate(
        trace,
        12,
        "owner_match",
        ok,
        Reason::OwnerMismatch,
        &|| match meta.owner {
            None => "no x-content-owner header".to_string(),
            Some(o) if ok => format!("x-content-owner {o} is the path owner"),
            Some(o) => format!("x-content-owner {o} is not the path owner {owner}"),
        },
    )
}

/// The purpose's rule again (defensive: `decide_pre` already checked it).
fn post_purpose<'p>(
    policy: &'p Policy,
    claims: &Claims,
    trace: &mut dyn Trace,
) -> Result<&'p PurposeRule, Reason> {
    let purpose = claims.purpose.as_deref().unwrap_or("");
    let rule = policy.purpose(purpose);
    if rule.is_none() {
        trace.check(6, "purpose", false, &|| {
            format!("purpose `{purpose}` is not defined by the policy")
        });
    }
    rule.ok_or(Reason::UnknownPurpose)
}

/// Rule 16: a needed header is absent or does not parse.
fn missing(trace: &mut dyn Trace, detail: &dyn Fn() -> String) -> Reason {
    trace.check(16, "metadata", false, detail);
    Reason::MetadataMissing
}

/// Rule 13.
fn check_deidentified(meta: &ResponseMeta<'_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let value = meta.deidentified.map(str::trim);
    let flag = match value {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(missing(trace, &|| match value {
                None => "x-content-deidentified is absent (rule 13 needs it)".to_string(),
                Some(v) => format!("x-content-deidentified {v:?} is not true or false"),
            }))
        }
    };
    gate(
        trace,
        13,
        "deidentified",
        flag,
        Reason::NotDeidentified,
        &|| format!("x-content-deidentified: {flag}"),
    )
}

/// The creation time, which rules 14 and 15 need.
fn need_created(
    meta: &ResponseMeta<'_>,
    rule: u8,
    trace: &mut dyn Trace,
) -> Result<Millis, Reason> {
    match meta.created_at.map(|c| (c, parse_rfc3339(c))) {
        Some((_, Some(t))) => Ok(t),
        Some((raw, None)) => Err(missing(trace, &|| {
            format!("x-content-created-at {raw:?} is not RFC 3339 (rule {rule} needs it)")
        })),
        None => Err(missing(trace, &|| {
            format!("x-content-created-at is absent (rule {rule} needs it)")
        })),
    }
}

/// Rule 14: opt-outs apply to content created inside an opt-out period only.
fn check_opt_out(
    user: &UserConsent,
    owner: &str,
    meta: &ResponseMeta<'_>,
    created: Millis,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let out = user.opted_out_at(created);
    gate(trace, 14, "opt_out", !out, Reason::OptedOut, &|| {
        let at = meta.created_at.unwrap_or("");
        let verb = if out { "inside" } else { "outside" };
        format!("content created {at} is {verb} the training opt-outs of owner {owner}")
    })
}

/// Rule 15: API content only when created inside an opt-in of its org.
fn check_api_content(
    meta: &ResponseMeta<'_>,
    org: Option<Lookup<'_, OrgConsent>>,
    created: Option<Millis>,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    match meta.source.map(str::trim) {
        Some("consumer") => {
            trace.check(15, "api_opt_in", true, &|| {
                "x-content-source: consumer (not API content)".to_string()
            });
            return Ok(());
        }
        Some("api") => {}
        other => {
            return Err(missing(trace, &|| match other {
                None => "x-content-source is absent (rule 15 needs it)".to_string(),
                Some(v) => format!("x-content-source {v:?} is not consumer or api"),
            }))
        }
    }
    let Some(org_id) = meta.org.filter(|o| !o.trim().is_empty()) else {
        return Err(missing(trace, &|| {
            "x-content-org is absent for API content (rule 15 needs it)".to_string()
        }));
    };
    let created = match created {
        Some(c) => c,
        None => need_created(meta, 15, trace)?,
    };
    let Some(Lookup::Known(consent)) = org else {
        trace.check(15, "api_opt_in", false, &|| {
            format!("consent registry unavailable for org {org_id}")
        });
        return Err(Reason::ConsentUnavailable);
    };
    let shared = consent.opted_in_at(created);
    gate(
        trace,
        15,
        "api_opt_in",
        shared,
        Reason::ApiContentNotShared,
        &|| {
            let at = format_rfc3339(created);
            let verb = if shared { "inside" } else { "outside" };
            format!("API content of org {org_id} created {at} is {verb} its training opt-ins")
        },
    )
}
