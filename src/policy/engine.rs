//! The one shell around the functional core, shared by `serve`, `explain`
//! and `policy test`: it decides *when* a fact is looked up (the owner's
//! consent only once the route matched and the token verified; an org only
//! for API content on a 2xx that a purpose with the API rule reads), asks a
//! `Facts` source for it, and hands everything to the pure rules. The three
//! commands differ only in their `Facts` (the live registry, the same
//! registry read-only, a test case's inline answers) and in where the token
//! and the response head come from.

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;

use super::decide::{
    decide_post, decide_pre, AuthState, Lookup, Outcome, Permitted, RequestFacts, ResponseMeta,
    Trace,
};
use super::model::Policy;
use super::reason::Reason;
use crate::auth::{self, AuthError, Bearer, Claims};
use crate::consent::{ConsentStore, OrgConsent, UserConsent};
use crate::time::Millis;

/// Where the shell's facts come from. `None` means the source could not
/// answer: the rule that needed it fails closed.
pub trait Facts {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send;
    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send;
}

/// The configured consent registry as a fact source.
pub struct Registry<'a>(pub &'a dyn ConsentStore);

impl Facts for Registry<'_> {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send {
        let lookup = self.0.user(owner);
        async move {
            lookup
                .await
                .map_err(|e| tracing::warn!(error = %e, "consent lookup failed"))
                .ok()
        }
    }

    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send {
        let lookup = self.0.org(org);
        async move {
            lookup
                .await
                .map_err(|e| tracing::warn!(error = %e, "consent lookup failed"))
                .ok()
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
