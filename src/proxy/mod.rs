//! The request pipeline (one request, in phases):
//!
//! ```text
//! head ─► facts (method, override, route) ─► token → claims ─► consent(owner)
//!      ─► decide_pre ── deny ─► audit(deny) ─► 4xx      (upstream never contacted)
//!      ─► forward (credentials and x-purposegate-* stripped, identity added)
//!      ─► upstream head ─► decide_post ── deny ─► audit(deny) ─► 403 (body dropped)
//!      ─► audit(allow, durable) ─► stream head + body ─► audit(complete)
//! ```
//!
//! `handle` is the outer shell: it owns the request id, the clock, metrics and
//! the single place where a denial becomes a response; `Flow` carries what is
//! known about the request so that every path writes exactly one decision
//! record.

pub mod body;
pub mod headers;
pub mod request_id;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::audit::{AuditEvent, DecisionKind, EventKind};
use crate::auth::{self, Bearer, Claims};
use crate::consent::UserConsent;
use crate::metrics::RequestLabels;
use crate::policy::decide::has_method_override;
use crate::policy::{
    decide_post, decide_pre, AuthState, Lookup, NoTrace, Outcome, Policy, Reason, RequestFacts,
    ResponseMeta,
};
use crate::state::App;
use crate::time::now_millis;
use crate::upstream::UpstreamBody;
pub use body::{AuditedBody, ProxyBody};

/// What is known about a client connection, worked out once when it is
/// accepted rather than on every request it carries.
pub struct ClientConn {
    /// The peer address as the audit record's `client_addr`.
    addr_text: String,
    /// The IP address alone, as `X-Forwarded-For` carries it.
    ip_text: String,
    /// The verified client certificate's subject (mTLS), if any.
    cert_subject: Option<crate::tls::PeerSubject>,
}

impl ClientConn {
    pub fn new(addr: SocketAddr, cert_subject: Option<crate::tls::PeerSubject>) -> Self {
        ClientConn {
            addr_text: addr.to_string(),
            ip_text: addr.ip().to_string(),
            cert_subject,
        }
    }
}

/// Handles one client request end to end. Never fails: every outcome is a
/// response, and every response was preceded by its audit decision record
/// (or is a 503 `audit_unavailable` because that record could not be written).
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    client: Arc<ClientConn>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let request_id = request_id::next();
    let policy = app.policy.load_full();
    let mut event = base_event(&req, request_id, &client);
    let result = pipeline(&app, &policy, req, &client, &mut event, started).await;
    let resp = match result {
        Ok(resp) => resp,
        Err(reason) => deny(&app, &policy, &mut event, reason).await,
    };
    app.metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The fields of the audit record known from the request head alone.
fn base_event(req: &Request<Incoming>, request_id: String, client: &ClientConn) -> AuditEvent {
    AuditEvent {
        request_id,
        event: EventKind::Decision,
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        client_addr: client.addr_text.clone(),
        client_cert_subject: client.cert_subject.as_ref().map(|p| p.0.to_string()),
        ..AuditEvent::default()
    }
}

/// Writes the denial's decision record and builds its response; if even that
/// record cannot be written the answer is 503 `audit_unavailable`.
async fn deny(
    app: &App,
    policy: &Policy,
    event: &mut AuditEvent,
    reason: Reason,
) -> Response<ProxyBody> {
    event.decision = DecisionKind::Deny;
    event.reason = Some(reason.code());
    event.status = reason.status().as_u16();
    let reason = match app.audit.record(event).await {
        Ok(_) => reason,
        Err(e) => {
            tracing::error!(request_id = %event.request_id, error = %e, "audit record not written; refusing");
            Reason::AuditUnavailable
        }
    };
    count(app, policy, event, reason.code());
    respond::denial(reason, &event.request_id).map(Either::Left)
}

fn count(app: &App, policy: &Policy, event: &AuditEvent, reason: &'static str) {
    let decision = match event.decision {
        DecisionKind::Allow => "allow",
        DecisionKind::Deny => "deny",
    };
    let purpose = purpose_label(policy, event.purpose.as_deref());
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            decision,
            purpose,
            reason,
        })
        .inc();
}

/// A bounded label value for a claimed purpose: a policy purpose, a named
/// prohibited one, `unknown` for anything else, `none` when absent.
fn purpose_label(policy: &Policy, purpose: Option<&str>) -> String {
    match purpose {
        None => "none".to_string(),
        Some(p) if policy.purposes.contains_key(p) || policy.prohibited.contains(p) => {
            p.to_string()
        }
        Some(_) => "unknown".to_string(),
    }
}

/// Fills the identity fields of the audit record from verified claims.
fn describe_claims(event: &mut AuditEvent, policy: &Policy, claims: &Claims) {
    event.subject = Some(claims.sub.clone());
    event.roles = claims.roles.clone();
    event.purpose = claims.purpose.clone();
    event.token_id = claims.jti.clone();
    let rule = claims
        .purpose
        .as_deref()
        .and_then(|p| policy.purposes.get(p));
    let claim = rule.and_then(|r| r.justification_claim.as_deref());
    event.justification = claim.and_then(|c| claims.string(c)).map(str::to_string);
}

/// Verifies the bearer token (rules 3-4). Returns the claims or the
/// verification failure as text for the trace.
async fn authenticate(
    app: &App,
    req: &Request<Incoming>,
    now_secs: i64,
) -> Result<Option<Arc<Claims>>, String> {
    match auth::bearer(req.headers()) {
        Bearer::Missing => Ok(None),
        Bearer::Ambiguous => Err("more than one Authorization header".to_string()),
        Bearer::Token(token) => app
            .verifier
            .verify_async(token, now_secs)
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// Rules 1-16 and forwarding. `Err(reason)` is a denial for `handle` to write.
async fn pipeline(
    app: &App,
    policy: &Policy,
    req: Request<Incoming>,
    client: &ClientConn,
    event: &mut AuditEvent,
    started: Instant,
) -> Result<Response<ProxyBody>, Reason> {
    let now = now_millis();
    let path = req.uri().path();
    let facts = RequestFacts::new(
        policy,
        req.method(),
        path,
        has_method_override(req.headers()),
    );
    let verified = authenticate(app, &req, now / 1000).await;
    let auth_state = match &verified {
        Ok(None) => AuthState::Missing,
        Ok(Some(claims)) => AuthState::Valid(claims),
        Err(why) => AuthState::Invalid(why),
    };
    if let AuthState::Valid(claims) = auth_state {
        describe_claims(event, policy, claims);
    }
    if let Some(m) = &facts.route {
        event.owner = Some(m.owner.to_string());
        event.route = Some(m.route.name.clone());
    }
    let user = lookup_user(app, &facts, &auth_state).await;
    let consent = match &user {
        Some(u) => Lookup::Known(u.as_ref()),
        None => Lookup::Unavailable,
    };
    if let Outcome::Deny(reason) =
        decide_pre(policy, &facts, auth_state, consent, now, &mut NoTrace)
    {
        return Err(reason);
    }
    // decide_pre allowed, so the route matched and the token verified.
    let (Some(route), Ok(Some(claims)), Some(user)) = (facts.route, &verified, &user) else {
        return Err(Reason::NoRoute);
    };
    let upstream = app
        .upstreams
        .get(&route.route.upstream)
        .ok_or(Reason::UpstreamUnavailable)?;
    let owner = route.owner.to_string();
    let upstream_req = forward_request(upstream, req, claims, &event.request_id, client)?;
    let upstream_started = Instant::now();
    let sent = upstream.send(upstream_req).await;
    app.metrics
        .upstream_duration
        .observe(upstream_started.elapsed().as_secs_f64());
    let resp = sent?;
    check_response(app, policy, claims, &owner, user, &resp, now).await?;
    allow(app, policy, event, resp, started).await
}

/// Looks up the owner's consent when the rules will need it (route matched
/// and token verified). `None` means the registry could not answer.
async fn lookup_user(
    app: &App,
    facts: &RequestFacts<'_, '_>,
    auth: &AuthState<'_>,
) -> Option<Arc<UserConsent>> {
    // Not needed: an earlier rule decides. The default record is shared.
    static NOT_LOOKED_UP: std::sync::LazyLock<Arc<UserConsent>> =
        std::sync::LazyLock::new(Arc::default);
    let (Some(route), AuthState::Valid(_)) = (&facts.route, auth) else {
        return Some(NOT_LOOKED_UP.clone());
    };
    match app.consent.user(route.owner).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(error = %e, "consent lookup failed");
            None
        }
    }
}

/// Builds the request to the upstream: same method, path and query, body
/// streamed through, headers cleaned and identity added.
fn forward_request(
    upstream: &crate::upstream::Upstream,
    req: Request<Incoming>,
    claims: &Claims,
    request_id: &str,
    client: &ClientConn,
) -> Result<Request<Incoming>, Reason> {
    let (mut parts, body) = req.into_parts();
    parts.uri = upstream.uri(parts.uri.path_and_query().cloned())?;
    parts.version = http::Version::HTTP_11;
    let purpose = claims.purpose.as_deref().unwrap_or_default();
    headers::for_upstream(
        &mut parts.headers,
        &claims.sub,
        purpose,
        request_id,
        &client.ip_text,
    );
    parts
        .headers
        .insert(http::header::HOST, upstream.host_header().clone());
    Ok(Request::from_parts(parts, body))
}

/// Rules 12-16 on the upstream's response head.
async fn check_response(
    app: &App,
    policy: &Policy,
    claims: &Claims,
    owner: &str,
    user: &UserConsent,
    resp: &Response<UpstreamBody>,
    now: i64,
) -> Result<(), Reason> {
    let meta = ResponseMeta::from_headers(resp.status().as_u16(), resp.headers());
    let org = match meta.org {
        Some(org) if resp.status().is_success() => Some(app.consent.org(org).await),
        _ => None,
    };
    let org_lookup = match &org {
        None => None,
        Some(Ok(o)) => Some(Lookup::Known(o.as_ref())),
        Some(Err(_)) => Some(Lookup::Unavailable),
    };
    match decide_post(
        policy,
        claims,
        owner,
        &meta,
        user,
        org_lookup,
        now,
        &mut NoTrace,
    ) {
        Outcome::Allow => Ok(()),
        Outcome::Deny(reason) => Err(reason),
    }
}

/// Writes the allow decision record durably, then streams the response.
async fn allow(
    app: &App,
    policy: &Policy,
    event: &mut AuditEvent,
    resp: Response<UpstreamBody>,
    started: Instant,
) -> Result<Response<ProxyBody>, Reason> {
    event.decision = DecisionKind::Allow;
    event.reason = None;
    event.status = resp.status().as_u16();
    if let Err(e) = app.audit.record(event).await {
        tracing::error!(request_id = %event.request_id, error = %e, "audit record not written; refusing");
        return Err(Reason::AuditUnavailable);
    }
    count(app, policy, event, "none");
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = http::HeaderValue::from_str(&event.request_id) {
        parts.headers.insert(headers::X_REQUEST_ID, v);
    }
    // The decision is recorded and nothing below can fail, so the record
    // moves into the body, which completes it; no second copy is made.
    let body = AuditedBody::new(body, app.audit.clone(), std::mem::take(event), started);
    Ok(Response::from_parts(parts, Either::Right(body)))
}
