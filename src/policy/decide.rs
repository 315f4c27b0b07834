//! The functional core: the rules of the table (`rules`) as pure functions.
//! No I/O, no clock, no globals: `serve`, `explain` and `policy test` drive
//! them through one shell (`engine`), so what a test or `explain` shows is
//! exactly what the proxy does.
//!
//! `decide_pre` (rules 1-11) returns a `Permitted`: the proof of what it
//! admitted (claims, route match, purpose rule, consent facts). The later
//! rules take that proof, so they cannot run on a request it did not admit.
//! Every check made is reported to a `Trace`; its detail text is built only
//! inside the closure handed to the tracer, so with `NoTrace` a decision
//! allocates nothing.

use http::{HeaderMap, Method};

use super::model::{Policy, PurposeRule};
use super::reason::Reason;
use super::routes::RouteMatch;
use super::rules::{self, Rule};
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
    /// The rule's number in the table (`-` for notes outside it).
    pub rule: &'static str,
    /// The rule's name (its reason code), e.g. `subject_not_in_scope`.
    pub name: &'static str,
    pub passed: bool,
    /// Human-readable facts behind the result (never a token or content).
    pub detail: String,
}

/// Receives checks as they are made. `NoTrace` costs nothing on the hot path.
pub trait Trace: Send {
    fn check(&mut self, rule: &'static Rule, passed: bool, detail: &dyn Fn() -> String);
}

/// A tracer that records nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    #[inline]
    fn check(&mut self, _: &'static Rule, _: bool, _: &dyn Fn() -> String) {}
}

impl Trace for Vec<Check> {
    fn check(&mut self, rule: &'static Rule, passed: bool, detail: &dyn Fn() -> String) {
        self.push(Check {
            rule: rule.number,
            name: rule.name(),
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

/// One content-metadata header as the store sent it. Anything but exactly
/// one visible-ASCII value is `Invalid`: a store (or something between it and
/// us) that repeats a header must not get to choose which value we read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetaValue<'a> {
    #[default]
    Absent,
    One(&'a str),
    /// Repeated, or not visible ASCII; the text says which.
    Invalid(&'static str),
}

impl<'a> MetaValue<'a> {
    /// Reads header `name` of `h`.
    pub fn read(h: &'a http::HeaderMap, name: &str) -> Self {
        let mut values = h.get_all(name).iter();
        let Some(first) = values.next() else {
            return MetaValue::Absent;
        };
        if values.next().is_some() {
            return MetaValue::Invalid("sent more than once");
        }
        match first.to_str() {
            Ok(v) => MetaValue::One(v),
            Err(_) => MetaValue::Invalid("not visible ASCII"),
        }
    }

    /// The value, when there is exactly one.
    pub fn one(self) -> Option<&'a str> {
        match self {
            MetaValue::One(v) => Some(v),
            _ => None,
        }
    }

    /// Whether a value was sent at all (one or several).
    pub fn present(self) -> bool {
        !matches!(self, MetaValue::Absent)
    }
}

impl<'a> From<Option<&'a str>> for MetaValue<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(MetaValue::Absent, MetaValue::One)
    }
}

/// Content metadata from the store's response head (reference §4).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseMeta<'a> {
    pub status: u16,
    pub owner: MetaValue<'a>,
    pub created_at: MetaValue<'a>,
    pub source: MetaValue<'a>,
    pub org: MetaValue<'a>,
    pub deidentified: MetaValue<'a>,
}

impl<'a> ResponseMeta<'a> {
    /// Reads the reference §4 headers.
    pub fn from_headers(status: u16, h: &'a http::HeaderMap) -> Self {
        ResponseMeta {
            status,
            owner: MetaValue::read(h, "x-content-owner"),
            created_at: MetaValue::read(h, "x-content-created-at"),
            source: MetaValue::read(h, "x-content-source"),
            org: MetaValue::read(h, "x-content-org"),
            deidentified: MetaValue::read(h, "x-content-deidentified"),
        }
    }

    /// The org whose consent rule 15 needs, when the response names exactly
    /// one (the shell looks it up only then, and only for a 2xx).
    pub fn org_to_look_up(&self) -> Option<&'a str> {
        (200..300)
            .contains(&self.status)
            .then(|| self.org.one())
            .flatten()
            .filter(|o| !o.trim().is_empty())
    }
}

/// The proof that rules 1-11 admitted a request: only `decide_pre` makes
/// one, and the later rules (and forwarding) take it.
#[derive(Debug, Clone, Copy)]
pub struct Permitted<'p, 'a> {
    claims: &'a Claims,
    route: RouteMatch<'p, 'a>,
    purpose: &'p PurposeRule,
    user: &'a UserConsent,
}

impl<'p, 'a> Permitted<'p, 'a> {
    /// The verified claims.
    pub fn claims(&self) -> &'a Claims {
        self.claims
    }

    /// The route and the path owner.
    pub fn route(&self) -> RouteMatch<'p, 'a> {
        self.route
    }

    /// The path owner (safe characters only, see rule 2).
    pub fn owner(&self) -> &'a str {
        self.route.owner
    }

    /// The purpose's rule.
    pub fn purpose(&self) -> &'p PurposeRule {
        self.purpose
    }

    /// The owner's consent facts as looked up for rule 11.
    pub fn user(&self) -> &'a UserConsent {
        self.user
    }
}

/// The characters a path owner may consist of: RFC 3986 unreserved plus `@`.
/// A store decodes nothing in them, so the id the checks saw is the one it
/// serves (`%75%32` or `u2;v=1` would be `u2` to a decoding store).
pub fn owner_is_safe(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= 256
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@'))
}

/// Rules 1-11, before the store is contacted. `Ok` is the proof of
/// admission that the later rules take.
pub fn decide_pre<'p, 'a>(
    policy: &'p Policy,
    req: &RequestFacts<'a, 'p>,
    auth: AuthState<'a>,
    consent: Lookup<'a, UserConsent>,
    now: Millis,
    trace: &mut dyn Trace,
) -> Result<Permitted<'p, 'a>, Reason> {
    check_method(req, trace)?;
    check_canonical(req, trace)?;
    let claims = check_token(auth, trace)?;
    let route = check_route(req, trace)?;
    let purpose = check_purpose(policy, claims, trace)?;
    check_role(policy, claims, &purpose.name, trace)?;
    check_certification(claims, now, trace)?;
    check_justification(purpose, claims, trace)?;
    check_subject(purpose, claims, route.owner, trace)?;
    let user = check_deletion(purpose, route.owner, consent, now, trace)?;
    Ok(Permitted {
        claims,
        route,
        purpose,
        user,
    })
}

/// Rules 12-16 on the store's response head, for a request `decide_pre`
/// admitted. `org` is the lookup of `meta.org_to_look_up()` (None when the
/// response names no org). A non-2xx response carries no content metadata
/// and is let through untouched.
pub fn decide_post(
    admitted: &Permitted<'_, '_>,
    meta: &ResponseMeta<'_>,
    org: Option<Lookup<'_, OrgConsent>>,
    trace: &mut dyn Trace,
) -> Outcome {
    outcome(post_rules(admitted, meta, org, trace))
}

/// The outcome of a sequence of rules.
pub fn outcome(r: Result<(), Reason>) -> Outcome {
    match r {
        Ok(()) => Outcome::Allow,
        Err(reason) => Outcome::Deny(reason),
    }
}

/// Records a check and turns a failure into `reason`.
pub(crate) fn gate_with(
    trace: &mut dyn Trace,
    rule: &'static Rule,
    ok: bool,
    reason: Reason,
    detail: &dyn Fn() -> String,
) -> Result<(), Reason> {
    trace.check(rule, ok, detail);
    if ok {
        Ok(())
    } else {
        Err(reason)
    }
}

/// Records a check and turns a failure into the rule's reason.
pub(crate) fn gate(
    trace: &mut dyn Trace,
    rule: &'static Rule,
    ok: bool,
    detail: &dyn Fn() -> String,
) -> Result<(), Reason> {
    gate_with(trace, rule, ok, rule.reason, detail)
}

/// Rule 1.
fn check_method(req: &RequestFacts<'_, '_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let read = *req.method == Method::GET || *req.method == Method::HEAD;
    let ok = read && !req.method_override;
    gate(
        trace,
        &rules::METHOD,
        ok,
        &|| match (read, req.method_override) {
            (true, false) => format!("{} is a read", req.method),
            (true, true) => format!("{} carries a method-override header", req.method),
            _ => format!("{} is not a read (only GET and HEAD)", req.method),
        },
    )
}

/// Rule 2, including the owner segment of the matched route.
fn check_canonical(req: &RequestFacts<'_, '_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let path = req.path;
    let canonical = super::canonical::is_canonical(path);
    let bad_owner = req.route.map(|m| m.owner).filter(|o| !owner_is_safe(o));
    let ok = canonical && bad_owner.is_none();
    gate(trace, &rules::CANONICAL_PATH, ok, &|| {
        if let (true, Some(owner)) = (canonical, bad_owner) {
            return format!("owner segment {owner:?} has characters outside A-Z a-z 0-9 - . _ ~ @ (a store might decode it into another user)");
        }
        if ok {
            format!("path {path:?} is canonical")
        } else {
            format!("path {path:?} is not canonical (dot or empty segment, backslash, encoded / \\ . or control character, or bad escape)")
        }
    })
}

/// Rules 3 and 4.
fn check_token<'c>(auth: AuthState<'c>, trace: &mut dyn Trace) -> Result<&'c Claims, Reason> {
    let present = !matches!(auth, AuthState::Missing);
    gate(trace, &rules::TOKEN_PRESENT, present, &|| {
        if present {
            "bearer token present".to_string()
        } else {
            "no bearer token in the Authorization header".to_string()
        }
    })?;
    match auth {
        AuthState::Valid(claims) => {
            trace.check(&rules::TOKEN_VALID, true, &|| {
                format!("token of `{}` verified", claims.sub)
            });
            Ok(claims)
        }
        AuthState::Invalid(why) => {
            trace.check(&rules::TOKEN_VALID, false, &|| {
                format!("token refused: {why}")
            });
            Err(Reason::InvalidToken)
        }
        AuthState::Missing => Err(Reason::MissingToken),
    }
}

/// Rule 5.
fn check_route<'p, 'a>(
    req: &RequestFacts<'a, 'p>,
    trace: &mut dyn Trace,
) -> Result<RouteMatch<'p, 'a>, Reason> {
    let m = req.route;
    gate(trace, &rules::ROUTE, m.is_some(), &|| match m {
        Some(m) => format!(
            "route `{}` ({}) to upstream `{}`, owner {}",
            m.route.name, m.route.template, m.route.upstream, m.owner
        ),
        None => format!("no policy route matches {:?}", req.path),
    })?;
    m.ok_or(Reason::NoRoute)
}

/// Rule 6: a prohibited purpose is named as such before "unknown".
fn check_purpose<'p>(
    policy: &'p Policy,
    claims: &Claims,
    trace: &mut dyn Trace,
) -> Result<&'p PurposeRule, Reason> {
    let Some(purpose) = claims.purpose.as_deref() else {
        trace.check(&rules::PURPOSE, false, &|| "no purpose claim".to_string());
        return Err(Reason::UnknownPurpose);
    };
    if policy.prohibited.contains(purpose) {
        trace.check(&rules::PURPOSE, false, &|| {
            format!("purpose `{purpose}` is prohibited")
        });
        return Err(Reason::ProhibitedPurpose);
    }
    let rule = policy.purpose(purpose);
    trace.check(&rules::PURPOSE, rule.is_some(), &|| match rule {
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
    gate(trace, &rules::ROLE, role.is_some(), &|| match role {
        Some(r) => format!("purpose `{purpose}` permitted by role `{r}`"),
        None => format!(
            "no role of [{}] permits purpose `{purpose}`",
            claims.roles.join(", ")
        ),
    })
}

/// Rule 8: the certification must still be valid now (strictly in the future).
fn check_certification(claims: &Claims, now: Millis, trace: &mut dyn Trace) -> Result<(), Reason> {
    let exp = claims.training_cert_exp.map(|s| s.saturating_mul(1000));
    let ok = exp.is_some_and(|e| e > now);
    gate(trace, &rules::TRAINING_CERTIFICATION, ok, &|| match exp {
        None => "no training_cert_exp claim".to_string(),
        Some(e) if ok => format!("training certification valid until {}", format_rfc3339(e)),
        Some(e) => format!("training certification expired at {}", format_rfc3339(e)),
    })
}

/// Rule 9.
fn check_justification(
    rule: &PurposeRule,
    claims: &Claims,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let Some(name) = rule.justification_claim.as_deref() else {
        trace.check(&rules::JUSTIFICATION, true, &|| {
            format!("purpose `{}` needs no justification claim", rule.name)
        });
        return Ok(());
    };
    let value = claims.string(name).filter(|v| !v.trim().is_empty());
    gate(
        trace,
        &rules::JUSTIFICATION,
        value.is_some(),
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
        trace.check(&rules::SUBJECT_SCOPE, true, &|| {
            format!("purpose `{}` is not subject-scoped", rule.name)
        });
        return Ok(());
    }
    let ok = claims.subjects.iter().any(|s| s == owner);
    gate(trace, &rules::SUBJECT_SCOPE, ok, &|| {
        let subjects = claims.subjects.join(", ");
        let verb = if ok { "in" } else { "not in" };
        format!("owner {owner} {verb} subjects [{subjects}]")
    })
}

/// Rule 11: fail closed when the registry cannot answer.
fn check_deletion<'a>(
    rule: &PurposeRule,
    owner: &str,
    consent: Lookup<'a, UserConsent>,
    now: Millis,
    trace: &mut dyn Trace,
) -> Result<&'a UserConsent, Reason> {
    let Lookup::Known(user) = consent else {
        trace.check(&rules::ACCOUNT_DELETION, false, &|| {
            format!("consent registry unavailable for owner {owner}")
        });
        return Err(Reason::ConsentUnavailable);
    };
    let deleted = user.deleted_at(now);
    let ok = !deleted || rule.deletion_exempt;
    gate(trace, &rules::ACCOUNT_DELETION, ok, &|| {
        let at = user.deletion_requested_at.map(format_rfc3339);
        match (deleted, at) {
            (true, Some(at)) if ok => format!(
                "owner {owner} requested deletion at {at}; purpose `{}` is exempt (legal hold)",
                rule.name
            ),
            (true, Some(at)) => format!("owner {owner} requested deletion at {at}"),
            _ => format!("owner {owner} has no deletion request in force"),
        }
    })?;
    Ok(user)
}

fn post_rules(
    admitted: &Permitted<'_, '_>,
    meta: &ResponseMeta<'_>,
    org: Option<Lookup<'_, OrgConsent>>,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    if !(200..300).contains(&meta.status) {
        trace.check(&rules::UPSTREAM_STATUS, true, &|| {
            format!(
                "upstream answered {}: no content, rules 12-16 do not apply",
                meta.status
            )
        });
        return Ok(());
    }
    let owner = admitted.owner();
    check_owner(meta, owner, trace)?;
    let rule = admitted.purpose;
    let training =
        rule.deidentified_only || rule.honour_opt_outs || rule.api_content_requires_opt_in;
    if training && !meta.owner.present() {
        // The consent rules are about the content's owner: the store must say.
        return Err(missing(trace, &|| {
            "x-content-owner is absent (the consent rules need it)".to_string()
        }));
    }
    let mut created = None;
    if rule.deidentified_only {
        check_deidentified(meta, trace)?;
    }
    if rule.honour_opt_outs {
        let c = need_created(meta, 14, trace)?;
        created = Some(c);
        check_opt_out(admitted.user, owner, meta, c, trace)?;
    }
    if rule.api_content_requires_opt_in {
        check_api_content(meta, org, created, trace)?;
    }
    if training {
        trace.check(&rules::METADATA, true, &|| {
            "the metadata rules 13-15 need is present, one value each, and parses".to_string()
        });
    }
    Ok(())
}

/// Rule 12, for every purpose.
fn check_owner(meta: &ResponseMeta<'_>, owner: &str, trace: &mut dyn Trace) -> Result<(), Reason> {
    let ok = match meta.owner {
        MetaValue::Absent => true,
        MetaValue::One(o) => o == owner,
        MetaValue::Invalid(_) => false,
    };
    gate(trace, &rules::OWNER_MATCH, ok, &|| match meta.owner {
        MetaValue::Absent => "no x-content-owner header".to_string(),
        MetaValue::One(o) if ok => format!("x-content-owner {o} is the path owner"),
        MetaValue::One(o) => format!("x-content-owner {o} is not the path owner {owner}"),
        MetaValue::Invalid(why) => format!("x-content-owner {why}: cannot be the path owner"),
    })
}

/// Rule 16: a needed header is absent, repeated or does not parse.
fn missing(trace: &mut dyn Trace, detail: &dyn Fn() -> String) -> Reason {
    trace.check(&rules::METADATA, false, detail);
    Reason::MetadataMissing
}

/// The one value of a needed header, or rule 16's denial.
fn need<'a>(
    value: MetaValue<'a>,
    name: &'static str,
    rule: u8,
    trace: &mut dyn Trace,
) -> Result<&'a str, Reason> {
    match value {
        MetaValue::One(v) => Ok(v),
        MetaValue::Absent => Err(missing(trace, &|| {
            format!("{name} is absent (rule {rule} needs it)")
        })),
        MetaValue::Invalid(why) => Err(missing(trace, &|| {
            format!("{name} {why} (rule {rule} needs one value)")
        })),
    }
}

/// Rule 13.
fn check_deidentified(meta: &ResponseMeta<'_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let value = need(meta.deidentified, "x-content-deidentified", 13, trace)?.trim();
    let flag = if value.eq_ignore_ascii_case("true") {
        true
    } else if value.eq_ignore_ascii_case("false") {
        false
    } else {
        return Err(missing(trace, &|| {
            format!("x-content-deidentified {value:?} is not true or false")
        }));
    };
    gate(trace, &rules::DEIDENTIFIED, flag, &|| {
        format!("x-content-deidentified: {flag}")
    })
}

/// The creation time, which rules 14 and 15 need.
fn need_created(
    meta: &ResponseMeta<'_>,
    rule: u8,
    trace: &mut dyn Trace,
) -> Result<Millis, Reason> {
    let raw = need(meta.created_at, "x-content-created-at", rule, trace)?;
    parse_rfc3339(raw).ok_or_else(|| {
        missing(trace, &|| {
            format!("x-content-created-at {raw:?} is not RFC 3339 (rule {rule} needs it)")
        })
    })
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
    gate(trace, &rules::OPTED_OUT, !out, &|| {
        let at = meta.created_at.one().unwrap_or("");
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
    match need(meta.source, "x-content-source", 15, trace)?.trim() {
        "consumer" => {
            trace.check(&rules::API_CONTENT, true, &|| {
                "x-content-source: consumer (not API content)".to_string()
            });
            return Ok(());
        }
        "api" => {}
        other => {
            return Err(missing(trace, &|| {
                format!("x-content-source {other:?} is not consumer or api")
            }))
        }
    }
    let org_id = need(meta.org, "x-content-org", 15, trace)?;
    if org_id.trim().is_empty() {
        return Err(missing(trace, &|| {
            "x-content-org is empty for API content (rule 15 needs it)".to_string()
        }));
    }
    let created = match created {
        Some(c) => c,
        None => need_created(meta, 15, trace)?,
    };
    let Some(Lookup::Known(consent)) = org else {
        return gate_with(
            trace,
            &rules::API_CONTENT,
            false,
            Reason::ConsentUnavailable,
            &|| format!("consent registry unavailable for org {org_id}"),
        );
    };
    let shared = consent.opted_in_at(created);
    gate(trace, &rules::API_CONTENT, shared, &|| {
        let at = format_rfc3339(created);
        let verb = if shared { "inside" } else { "outside" };
        format!("API content of org {org_id} created {at} is {verb} its training opt-ins")
    })
}
