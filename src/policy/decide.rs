//! The functional core: CONTRACT §6 rules as pure functions. No I/O, no clock,
//! no globals: `serve`, `explain` and `policy test` all call these.
//! STUB: to be implemented (policy helper).

use http::Method;

use super::model::Policy;
use super::reason::Reason;
use super::routes::RouteMatch;
use crate::auth::Claims;
use crate::consent::{OrgConsent, UserConsent};
use crate::time::Millis;

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(Reason),
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
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a, T> {
    Known(&'a T),
    /// The registry could not answer: fail closed.
    Unavailable,
}

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

/// Rules 1-11, before the upstream is contacted.
pub fn decide_pre(
    _policy: &Policy,
    _req: &RequestFacts<'_, '_>,
    _auth: AuthState<'_>,
    _consent: Lookup<'_, UserConsent>,
    _now: Millis,
    _trace: &mut dyn Trace,
) -> Outcome {
    Outcome::Deny(Reason::NoRoute)
}

/// Rules 12-16, on the upstream's response head, for a request `decide_pre`
/// allowed. `owner` is the path owner; `org` is the lookup for `meta.org`.
#[allow(clippy::too_many_arguments)]
pub fn decide_post(
    _policy: &Policy,
    _claims: &Claims,
    _owner: &str,
    _meta: &ResponseMeta<'_>,
    _user: &UserConsent,
    _org: Option<Lookup<'_, OrgConsent>>,
    _now: Millis,
    _trace: &mut dyn Trace,
) -> Outcome {
    Outcome::Deny(Reason::MetadataMissing)
}
