//! The one shell around the functional core, shared by `serve`, `explain`
//! and `policy test`: it decides *when* a fact is looked up (the owner's
//! consent only once the route matched and the token verified; the
//! justification only once rules 1-11 admitted the request; an org only
//! for API content on a 2xx that a purpose with the API rule reads), asks a
//! `Facts` source for it, and hands everything to the pure rules. The three
//! commands differ only in their `Facts` (the live registry, case service
//! and budgets; the same read-only; a test case's inline answers) and in
//! where the token and the response head come from.
//!
//! Order before the store: `admit` (rules 1-11, then 17), then
//! `charge_budget` (rule 18) last, so that a request any other rule refuses
//! costs no budget.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use http::HeaderMap;

use super::decide::{
    decide_post, decide_pre, AuthState, Lookup, Outcome, Permitted, RequestFacts, ResponseMeta,
    Trace,
};
use super::model::{Policy, PurposeRule};
use super::reason::Reason;
use super::rules;
use crate::auth::{self, AuthError, Bearer, Claims};
use crate::budget::{self, BudgetFact, BudgetVerdict, Budgets};
use crate::consent::{ConsentStore, OrgConsent, UserConsent};
use crate::justification::{self, Answer, AuditFacts, Justifications, Looked};
use crate::time::Millis;

/// Where the shell's facts come from. For consent, `None` means the source
/// could not answer: the rule that needed it fails closed.
pub trait Facts {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send;
    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send;
    /// The system of record's answer about the justification `id` that a
    /// token of `purpose` carries (rules 17a–e). `None`: the check does not
    /// apply to the purpose (not configured, or not one of
    /// `justifications.purposes`). A failed lookup is an answer
    /// (`Answer::Unavailable`), never `None`.
    fn justification(
        &self,
        purpose: &PurposeRule,
        id: &str,
    ) -> impl Future<Output = Option<Looked>> + Send;
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

/// The configured consent registry, case service and access budgets as a
/// fact source: what `serve` asks.
pub struct Registry<'a> {
    pub consent: &'a dyn ConsentStore,
    /// The live justification check, when `justifications:` is configured.
    pub justifications: Option<&'a Justifications>,
    /// Charged by rule 18; `None` when `budgets:` is not configured.
    pub budgets: Option<&'a Budgets>,
}

impl<'a> Registry<'a> {
    pub fn new(
        consent: &'a dyn ConsentStore,
        justifications: Option<&'a Justifications>,
        budgets: Option<&'a Budgets>,
    ) -> Self {
        Registry {
            consent,
            justifications,
            budgets,
        }
    }
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

    fn justification(
        &self,
        purpose: &PurposeRule,
        id: &str,
    ) -> impl Future<Output = Option<Looked>> + Send {
        let check = self.justifications.and_then(|j| {
            let kind = j.kind_for(&purpose.name, purpose.justification_claim.as_deref())?;
            Some((j, kind))
        });
        async move {
            let (j, kind) = check?;
            let looked = j.lookup(kind, id).await;
            if let Answer::Unavailable(why) = &looked.answer {
                // The id is left out: the log is not the audit trail.
                tracing::warn!(%kind, error = %why, "justification lookup failed; refusing");
            }
            Some(looked)
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

/// Facts the shell looked up for a request (one `Held` per request), held
/// so that the `Permitted` proof can borrow them while the caller still
/// reads what was verified for the audit record (hence set-once cells
/// behind a shared reference, not a `&mut`).
#[derive(Default)]
pub struct Held {
    user: OnceLock<Option<Arc<UserConsent>>>,
    justification: OnceLock<Looked>,
}

impl Held {
    /// What rule 17 saw, for the audit record: `None` when the check did
    /// not apply or was not reached.
    pub fn justification(&self) -> Option<AuditFacts> {
        self.justification.get().map(Looked::audit_facts)
    }
}

/// The default consent record, for requests that never get to rule 11.
fn nobody() -> Arc<UserConsent> {
    static NOBODY: std::sync::LazyLock<Arc<UserConsent>> = std::sync::LazyLock::new(Arc::default);
    NOBODY.clone()
}

/// Every rule checked before the store is contacted: rules 1-11 (looking
/// up the owner's consent when they will need it: route matched and token
/// verified), then 17a–e (looking up the justification once 1-11 admitted
/// the request). `Ok` is the proof of admission; a denial never reaches the
/// store. What was looked up stays in `held` for the audit record, on
/// either outcome.
pub async fn admit<'p, 'a, F: Facts>(
    policy: &'p Policy,
    facts: &RequestFacts<'a, 'p>,
    auth: AuthState<'a>,
    source: &F,
    now: Millis,
    held: &'a Held,
    trace: &mut dyn Trace,
) -> Result<Permitted<'p, 'a>, Reason> {
    let user = match (&facts.route, &auth) {
        (Some(route), AuthState::Valid(_)) if super::decide::owner_is_safe(route.owner) => {
            source.user(route.owner).await
        }
        _ => Some(nobody()),
    };
    let consent = match held.user.get_or_init(|| user) {
        Some(u) => Lookup::Known(u.as_ref()),
        None => Lookup::Unavailable,
    };
    let admitted = decide_pre(policy, facts, auth, consent, now, trace)?;
    justify(&admitted, source, held, trace).await?;
    // Rule 18 (budgets) goes here: last before the store.
    Ok(admitted)
}

/// Rules 17a–e for an admitted request: asks `source` about the purpose's
/// justification and checks the answer (`justification::rules`). A purpose
/// the check does not apply to passes with a note in the trace.
async fn justify<F: Facts>(
    admitted: &Permitted<'_, '_>,
    source: &F,
    held: &Held,
    trace: &mut dyn Trace,
) -> Result<(), Reason> {
    let purpose = admitted.purpose();
    let claims = admitted.claims();
    // Rule 9 admitted the request, so a purpose with a claim has a value.
    let id = purpose
        .justification_claim
        .as_deref()
        .and_then(|c| claims.string(c));
    let looked = match id {
        Some(id) => source.justification(purpose, id).await,
        None => None,
    };
    let (Some(id), Some(looked)) = (id, looked) else {
        trace.check(&rules::JUSTIFICATION_EXISTS, true, &|| {
            format!(
                "purpose `{}` is not checked against the system of record (rules 17a-e do not apply)",
                purpose.name
            )
        });
        return Ok(());
    };
    let looked = held.justification.get_or_init(|| looked);
    let facts = justification::Facts {
        id,
        sub: &claims.sub,
        owner: admitted.owner(),
        requested_by_required: justification::rules::requires_requested_by(&purpose.name),
    };
    justification::rules::check(looked, &facts, trace)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::justification::{Justification, Kind, Status};
    use crate::policy::{Check, RequestFacts};
    use futures_util::FutureExt;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Consent of nobody; one open ticket about u1 assigned to e1; counts
    /// the justification lookups.
    #[derive(Default)]
    struct Counting {
        asked: AtomicUsize,
    }

    impl Facts for Counting {
        fn user(&self, _: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send {
            std::future::ready(Some(Arc::default()))
        }
        fn org(&self, _: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send {
            std::future::ready(Some(Arc::default()))
        }
        fn justification(
            &self,
            purpose: &PurposeRule,
            _: &str,
        ) -> impl Future<Output = Option<Looked>> + Send {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let kind = purpose
                .justification_claim
                .as_deref()
                .and_then(Kind::from_claim);
            let ticket = Justification {
                status: Status::Open,
                assignees: vec!["e1".into()],
                subjects: vec!["u1".into()],
                requested_by: Some("u1".into()),
            };
            std::future::ready(kind.map(|k| Looked::stated(k, Answer::Found(Arc::new(ticket)))))
        }
        fn budget(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> impl Future<Output = Option<budget::Outcome>> + Send {
            std::future::ready(None)
        }
    }

    fn policy() -> Policy {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let consent = root.join("consent.yaml");
        super::super::load::load_dir(&root, &[consent.as_path()]).unwrap()
    }

    fn support(subjects: &[&str]) -> Claims {
        Claims {
            sub: "e1".into(),
            roles: vec!["support".into()],
            purpose: Some("support".into()),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            training_cert_exp: Some(2_000_000_000),
            iss: "i".into(),
            exp: 0,
            iat: 0,
            nbf: None,
            jti: None,
            strings: BTreeMap::from([("ticket_id".to_string(), "T-1".to_string())]),
        }
    }

    fn admit_now(
        policy: &Policy,
        path: &str,
        claims: &Claims,
        source: &Counting,
    ) -> (Result<(), Reason>, Option<AuditFacts>, Vec<Check>) {
        let method = http::Method::GET;
        let facts = RequestFacts::new(policy, &method, path, false);
        let held = Held::default();
        let mut trace = Vec::new();
        let now = 1_800_000_000_000;
        let r = admit(
            policy,
            &facts,
            AuthState::Valid(claims),
            source,
            now,
            &held,
            &mut trace,
        )
        .now_or_never()
        .unwrap()
        .map(|_| ());
        (r, held.justification(), trace)
    }

    #[test]
    fn rule_17_runs_after_rule_11_and_only_on_admitted_requests() {
        let policy = policy();
        let source = Counting::default();
        let (r, seen, trace) =
            admit_now(&policy, "/v1/users/u1/files/f", &support(&["u1"]), &source);
        assert_eq!(r, Ok(()));
        assert_eq!(source.asked.load(Ordering::Relaxed), 1);
        let seen = seen.unwrap();
        assert_eq!(seen.justification_state.as_str(), "open");
        let numbers: Vec<&str> = trace.iter().map(|c| c.rule).collect();
        let at = numbers.iter().position(|n| *n == "11").unwrap();
        assert_eq!(numbers[at + 1..], ["17a", "17b", "17c", "17d", "17e"]);
        // Refused by rule 10: the justification is never asked about.
        let (r, seen, _) = admit_now(&policy, "/v1/users/u2/files/f", &support(&["u1"]), &source);
        assert_eq!(r, Err(Reason::SubjectNotInScope));
        assert!(seen.is_none());
        assert_eq!(source.asked.load(Ordering::Relaxed), 1);
        // Refused by 17d: what was seen is kept for the record.
        let (r, seen, _) = admit_now(
            &policy,
            "/v1/users/u2/files/f",
            &support(&["u1", "u2"]),
            &source,
        );
        assert_eq!(r, Err(Reason::JustificationSubjectMismatch));
        assert_eq!(seen.unwrap().justification_state.as_str(), "open");
    }
}
