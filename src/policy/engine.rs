//! The one shell around the functional core, shared by `serve`, `explain`
//! and `policy test`: it decides *when* a fact is looked up (the owner's
//! consent only once the route matched and the token verified; an org only
//! for API content on a 2xx that a purpose with the API rule reads), asks a
//! `Facts` source for it, and hands everything to the pure rules. The three
//! commands differ only in their `Facts` (the live registry, the same
//! registry read-only, a test case's inline answers) and in where the token
//! and the response head come from.
//!
//! Order before the store: `admit` (rules 1-11), then `charge_budget` (rule
//! 18) last, so that a request any other rule refuses costs no budget.

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;

use super::decide::{
    decide_post, decide_pre, AuthState, Lookup, Outcome, Permitted, RequestFacts, ResponseMeta,
    Trace,
};
use super::model::Policy;
use super::reason::Reason;
use super::rules;
use crate::auth::{self, AuthError, Bearer, Claims};
use crate::budget::{self, BudgetFact, BudgetVerdict, Budgets};
use crate::consent::{ConsentStore, OrgConsent, UserConsent};
use crate::time::Millis;

/// Where the shell's facts come from. `None` means the source could not
/// answer: the rule that needed it fails closed.
pub trait Facts {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send;
    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send;
    /// Rule 18: the access budget check of employee `sub` reading `owner`'s
    /// content for `purpose` (charged by `serve`, read without consuming by
    /// `explain`, stated by a `policy test` case). `None`: no budgets are
    /// configured, and the rule passes.
    fn budget(
        &self,
        sub: &str,
        purpose: &str,
        owner: &str,
    ) -> impl Future<Output = Option<budget::Outcome>> + Send;
}

/// The configured consent registry (and access budgets, when configured) as
/// a fact source: what `serve` asks.
pub struct Registry<'a> {
    pub consent: &'a dyn ConsentStore,
    /// Charged by rule 18; `None` when `budgets:` is not configured.
    pub budgets: Option<&'a Budgets>,
}

impl Facts for Registry<'_> {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send {
        let lookup = self.consent.user(owner);
        async move {
            lookup
                .await
                .map_err(|e| tracing::warn!(error = %e, "consent lookup failed"))
                .ok()
        }
    }

    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send {
        let lookup = self.consent.org(org);
        async move {
            lookup
                .await
                .map_err(|e| tracing::warn!(error = %e, "consent lookup failed"))
                .ok()
        }
    }

    fn budget(
        &self,
        sub: &str,
        purpose: &str,
        owner: &str,
    ) -> impl Future<Output = Option<budget::Outcome>> + Send {
        let budgets = self.budgets;
        async move {
            match budgets {
                Some(b) => Some(b.charge(sub, purpose, owner).await),
                None => None,
            }
        }
    }
}

/// What token verification found, owned (the claims of a valid token, or
/// why it was refused).
#[derive(Debug, Clone)]
pub enum Authenticated {
    Missing,
    /// Refused; the text is the error's message, for the trace.
    Invalid(AuthError, String),
    Valid(Arc<Claims>),
}

impl Authenticated {
    fn invalid(e: AuthError) -> Self {
        let text = e.to_string();
        Authenticated::Invalid(e, text)
    }

    /// The core's view of it.
    pub fn state(&self) -> AuthState<'_> {
        match self {
            Authenticated::Missing => AuthState::Missing,
            Authenticated::Invalid(_, why) => AuthState::Invalid(why),
            Authenticated::Valid(c) => AuthState::Valid(c),
        }
    }

    /// The refusal, when the token was refused.
    pub fn error(&self) -> Option<&AuthError> {
        match self {
            Authenticated::Invalid(e, _) => Some(e),
            _ => None,
        }
    }

    /// The claims of a valid token.
    pub fn claims(&self) -> Option<&Arc<Claims>> {
        match self {
            Authenticated::Valid(c) => Some(c),
            _ => None,
        }
    }
}

/// Rules 3-4 as every command applies them: the bearer token of the
/// `Authorization` header (`auth::bearer`), verified by `verify`, whose
/// identity claims must be usable as the header values the store receives.
pub async fn authenticate<'h, F, Fut>(headers: &'h HeaderMap, verify: F) -> Authenticated
where
    F: FnOnce(&'h str) -> Fut,
    Fut: Future<Output = Result<Arc<Claims>, AuthError>>,
{
    let token = match auth::bearer(headers) {
        Bearer::Missing => return Authenticated::Missing,
        Bearer::Ambiguous => return Authenticated::invalid(AuthError::AmbiguousAuthorization),
        Bearer::Token(t) => t,
    };
    match verify(token).await {
        Ok(claims) => match unsafe_identity(&claims) {
            Some(claim) => Authenticated::invalid(AuthError::UnsafeIdentity(claim)),
            None => Authenticated::Valid(claims),
        },
        Err(e) => Authenticated::invalid(e),
    }
}

/// The identity claim that cannot travel as a header value, if any: the
/// store must never receive a request without the identity that made it.
fn unsafe_identity(claims: &Claims) -> Option<&'static str> {
    let ok = |v: &str| {
        !v.is_empty()
            && v.len() <= 256
            && v.trim() == v
            && v.bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    };
    if !ok(&claims.sub) {
        return Some("sub");
    }
    match claims.purpose.as_deref() {
        Some(p) if !ok(p) => Some("purpose"),
        _ => None,
    }
}

/// Facts the shell looked up for a request, held so that the `Permitted`
/// proof can borrow them.
#[derive(Default)]
pub struct Held {
    user: Option<Arc<UserConsent>>,
}

/// The default consent record, for requests that never get to rule 11.
fn nobody() -> Arc<UserConsent> {
    static NOBODY: std::sync::LazyLock<Arc<UserConsent>> = std::sync::LazyLock::new(Arc::default);
    NOBODY.clone()
}

/// Rules 1-11: looks up the owner's consent when the rules will need it
/// (route matched and token verified), then decides. `Ok` is the proof of
/// admission.
pub async fn admit<'p, 'a, F: Facts>(
    policy: &'p Policy,
    facts: &RequestFacts<'a, 'p>,
    auth: AuthState<'a>,
    source: &F,
    now: Millis,
    held: &'a mut Held,
    trace: &mut dyn Trace,
) -> Result<Permitted<'p, 'a>, Reason> {
    held.user = match (&facts.route, &auth) {
        (Some(route), AuthState::Valid(_)) if super::decide::owner_is_safe(route.owner) => {
            source.user(route.owner).await
        }
        _ => Some(nobody()),
    };
    let consent = match &held.user {
        Some(u) => Lookup::Known(u.as_ref()),
        None => Lookup::Unavailable,
    };
    decide_pre(policy, facts, auth, consent, now, trace)
}

/// Rules 12-16 on the response head: looks up the org when rule 15 needs
/// it, then decides.
pub async fn respond<F: Facts>(
    admitted: &Permitted<'_, '_>,
    meta: &ResponseMeta<'_>,
    source: &F,
    trace: &mut dyn Trace,
) -> Outcome {
    let api = admitted.purpose().api_content_requires_opt_in
        && meta.source.one().map(str::trim) == Some("api");
    let org = match meta.org_to_look_up().filter(|_| api) {
        Some(id) => Some(source.org(id).await),
        None => None,
    };
    let lookup = org.as_ref().map(|o| match o {
        Some(o) => Lookup::Known(o.as_ref()),
        None => Lookup::Unavailable,
    });
    decide_post(admitted, meta, lookup, trace)
}

/// What rule 18 found for an admitted request, whatever its verdict: the
/// usage and limits for the audit record, and `Retry-After` for a denial.
#[derive(Debug, Clone)]
pub struct BudgetFacts {
    /// The check's outcome; `None` when no budgets are configured.
    pub outcome: Option<budget::Outcome>,
}

impl BudgetFacts {
    /// The rule's verdict.
    pub fn verdict(&self) -> BudgetVerdict {
        self.outcome
            .as_ref()
            .map_or(BudgetVerdict::Allow, budget::verdict)
    }

    /// `Ok` when the request may go on; otherwise rule 18's reason.
    pub fn result(&self) -> Result<(), Reason> {
        match self.verdict() {
            BudgetVerdict::Allow => Ok(()),
            BudgetVerdict::Exceeded { .. } => Err(Reason::AccessBudgetExceeded),
            BudgetVerdict::Unavailable => Err(Reason::BudgetUnavailable),
        }
    }

    /// The `Retry-After` seconds of an `access_budget_exceeded` denial.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.verdict().retry_after_secs()
    }

    /// Every limit's usage at decision time, for the audit record (`None`
    /// when the purpose has no limits or Redis did not answer).
    pub fn audit(&self) -> Option<Vec<BudgetFact>> {
        self.outcome.as_ref().and_then(budget::audit_facts)
    }
}

/// Rule 18, the last rule before the store is contacted: asks `source` for
/// the employee's budget check for the admitted purpose and owner, and
/// reports it to the trace. The caller records the facts (allowed or not)
/// and refuses on `result()`.
pub async fn charge_budget<F: Facts>(
    admitted: &Permitted<'_, '_>,
    source: &F,
    trace: &mut dyn Trace,
) -> BudgetFacts {
    let purpose = admitted.purpose().name.as_str();
    let outcome = source
        .budget(&admitted.claims().sub, purpose, admitted.owner())
        .await;
    let facts = BudgetFacts { outcome };
    let passed = facts.verdict() == BudgetVerdict::Allow;
    trace.check(&rules::BUDGET, passed, &|| match &facts.outcome {
        Some(o) => budget::rule18(purpose, o).1,
        None => "no access budgets are configured".to_string(),
    });
    facts
}
