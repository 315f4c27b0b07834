//! The request pipeline (one request, in phases):
//!
//! ```text
//! head ─► facts (method, override, route) ─► token → claims ─► consent(owner)
//!      ─► decide_pre ─► justification(kind, id) ─► rules 17a-e
//!                   ── deny ─► audit(deny) ─► 4xx/503  (upstream never contacted)
//!      ─► budget (rule 18, last) ── deny ─► audit(deny) ─► 429/503
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
mod record;
pub mod request_id;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::audit::{AuditEvent, DecisionKind};
use crate::auth::Claims;
use crate::metrics::RequestLabels;
use crate::policy::decide::has_method_override;
use crate::policy::engine::{self, Held, Registry};
use crate::policy::{NoTrace, Outcome, Permitted, Policy, Reason, RequestFacts, ResponseMeta};
use crate::state::App;
use crate::time::now_millis;
use crate::upstream::{ForwardBody, UpstreamBody};
pub use body::{AuditedBody, ProxyBody};
use record::Recorder;
use respond::Denial;

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
/// (or is a 503 `audit_unavailable` because that record could not be
/// written). If the future is dropped (the client went away), the
/// `Recorder` writes the record instead.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    client: Arc<ClientConn>,
) -> Response<ProxyBody> {
    let request_id = request_id::next();
    let span = tracing::info_span!("request", request_id = %request_id);
    serve_one(app, req, client, request_id)
        .instrument(span)
        .await
}

async fn serve_one(
    app: Arc<App>,
    req: Request<Incoming>,
    client: Arc<ClientConn>,
    request_id: String,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let policy = app.policy.load_full();
    let mut rec = Recorder::new(
        app.clone(),
        policy.clone(),
        base_event(&req, request_id, &client),
        started,
    );
    let resp = match pipeline(&app, &policy, req, &client, &mut rec).await {
        Ok(resp) => stream(rec, resp),
        Err(denial) => deny(&app, &policy, rec, denial).await,
    };
    app.metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The fields of the audit record known from the request head alone, each
/// bounded so that a record stays small whatever the client sends.
fn base_event(req: &Request<Incoming>, request_id: String, client: &ClientConn) -> AuditEvent {
    let mut ev = AuditEvent {
        request_id,
        client_addr: client.addr_text.clone(),
        client_cert_subject: client.cert_subject.as_ref().map(|p| p.0.to_string()),
        ..AuditEvent::default()
    };
    ev.set_method(req.method().as_str());
    ev.set_path(req.uri().path());
    if let Some(id) = req
        .headers()
        .get(headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        ev.client_request_id = Some(ev.bounded("client_request_id", id));
    }
    ev
}

/// Writes the denial's decision record and builds its response; if even that
/// record cannot be written the answer is 503 `audit_unavailable`.
async fn deny(
    app: &App,
    policy: &Policy,
    mut rec: Recorder,
    denial: Denial,
) -> Response<ProxyBody> {
    let status = denial.reason.status().as_u16();
    let denial = match rec
        .write_decision(DecisionKind::Deny, status, Some(denial.reason))
        .await
    {
        Ok(_) => denial,
        Err(e) => {
            tracing::error!(error = %e, "audit record not written; refusing");
            Reason::AuditUnavailable.into()
        }
    };
    count(app, policy, &rec.event, denial.reason.code());
    respond::denial(denial, &rec.event.request_id).map(Either::Left)
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
    event.subject = Some(event.bounded("subject", &claims.sub));
    event.set_roles(&claims.roles);
    event.purpose = claims
        .purpose
        .as_deref()
        .map(|p| event.bounded("purpose", p));
    event.token_id = claims.jti.as_deref().map(|j| event.bounded("token_id", j));
    let rule = claims
        .purpose
        .as_deref()
        .and_then(|p| policy.purposes.get(p));
    let claim = rule.and_then(|r| r.justification_claim.as_deref());
    event.justification = claim
        .and_then(|c| claims.string(c))
        .map(|j| event.bounded("justification", j));
}

/// Fills what the live justification check verified (rule 17), allowed or
/// denied: values of a fixed set, so bounded by construction.
fn describe_justification(event: &mut AuditEvent, held: &Held) {
    if let Some(seen) = held.justification() {
        event.justification_state = Some(seen.justification_state.as_str());
        event.justification_source = seen.justification_source.map(|s| s.as_str());
    }
}

/// Every rule and the forwarding; `Ok` is the store's response head, whose
/// allow decision is recorded durably. `Err(denial)` is a denial for
/// `handle` to record and render.
async fn pipeline(
    app: &App,
    policy: &Policy,
    req: Request<Incoming>,
    client: &ClientConn,
    rec: &mut Recorder,
) -> Result<Response<UpstreamBody>, Denial> {
    let now = now_millis();
    let (parts, _body) = req.into_parts();
    check_uri_length(app, &parts.uri)?;
    let uri = parts.uri.clone();
    let method = parts.method.clone();
    let authenticated =
        engine::authenticate(&parts.headers, |t| app.verifier.verify_async(t, now / 1000)).await;
    if let Some(e) = authenticated.error() {
        tracing::debug!(token_error = e.code(), error = %e, "token refused");
        rec.event.token_error = Some(e.code());
    }
    if let Some(claims) = authenticated.claims() {
        describe_claims(&mut rec.event, policy, claims);
    }
    let facts = RequestFacts::new(
        policy,
        &method,
        uri.path(),
        has_method_override(&parts.headers),
    );
    if let Some(m) = &facts.route {
        rec.event.owner = Some(rec.event.bounded("owner", m.owner));
        rec.event.route = Some(m.route.name.clone());
    }
    let source = Registry::new(
        app.consent.as_ref(),
        app.justifications.as_ref(),
        app.budgets.as_ref(),
    );
    let held = Held::default();
    let admitted = engine::admit(
        policy,
        &facts,
        authenticated.state(),
        &source,
        now,
        &held,
        &mut NoTrace,
    )
    .await;
    describe_justification(&mut rec.event, &held);
    let admitted = admitted?;
    charge_budget(&admitted, &source, rec).await?;
    // The store is contacted only while the records of this request can be
    // written (disk, reserve and local bound all fine).
    app.audit.admit().map_err(|blocked| {
        tracing::warn!(why = %blocked, "audit log cannot take records; refusing before the store");
        Reason::AuditUnavailable
    })?;
    let upstream = app
        .upstreams
        .get(&admitted.route().route.upstream)
        .ok_or(Reason::UpstreamUnavailable)?;
    let upstream_req = forward_request(
        upstream,
        parts,
        admitted.claims(),
        &rec.event.request_id,
        client,
    )?;
    rec.contacted = true;
    let upstream_started = Instant::now();
    let sent = upstream.send(upstream_req).await.map_err(upstream_failed);
    app.metrics
        .upstream_duration
        .observe(upstream_started.elapsed().as_secs_f64());
    let resp = sent?;
    let meta = ResponseMeta::from_headers(resp.status().as_u16(), resp.headers());
    if let Outcome::Deny(reason) = engine::respond(&admitted, &meta, &source, &mut NoTrace).await {
        return Err(reason.into());
    }
    let status = resp.status().as_u16();
    if let Err(e) = rec.write_decision(DecisionKind::Allow, status, None).await {
        tracing::error!(error = %e, "audit record not written; refusing");
        return Err(Reason::AuditUnavailable.into());
    }
    count(app, policy, &rec.event, "none");
    Ok(resp)
}

/// Rule 18, the last rule before the store is contacted, so that a request
/// any other rule refuses costs no budget. The usage and limits at decision
/// time go into the record whether the request is allowed or refused.
async fn charge_budget(
    admitted: &Permitted<'_, '_>,
    source: &Registry<'_>,
    rec: &mut Recorder,
) -> Result<(), Denial> {
    let budget = engine::charge_budget(admitted, source, &mut NoTrace).await;
    rec.event.set_budget(budget.audit());
    budget.result().map_err(|reason| Denial {
        reason,
        retry_after: budget.retry_after_secs(),
    })
}

/// Rule outside the table: a request target longer than the configured
/// bound is refused (414) before anything else looks at it.
fn check_uri_length(app: &App, uri: &http::Uri) -> Result<(), Reason> {
    let len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if len > app.config.limits.max_uri_bytes {
        return Err(Reason::UriTooLong);
    }
    Ok(())
}

/// The reason an upstream failure is answered with; logged here, inside the
/// request's span, so the warning names its request.
fn upstream_failed(e: crate::upstream::UpstreamError) -> Reason {
    tracing::warn!(error = %e, "upstream request failed");
    e.reason()
}

/// Builds the request to the upstream: same method, path and query, no
/// body, headers cleaned and identity added.
fn forward_request(
    upstream: &crate::upstream::Upstream,
    mut parts: http::request::Parts,
    claims: &Claims,
    request_id: &str,
    client: &ClientConn,
) -> Result<Request<ForwardBody>, Reason> {
    parts.uri = upstream
        .uri(parts.uri.path_and_query().cloned())
        .map_err(upstream_failed)?;
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
    Ok(Request::from_parts(parts, ForwardBody::new()))
}

/// Streams the response of a request whose allow decision is recorded; the
/// record moves into the body, which completes it.
fn stream(rec: Recorder, resp: Response<UpstreamBody>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    // The client side speaks HTTP/1.1 (keep-alive) or HTTP/2 whatever the
    // store spoke: an HTTP/1.0 store must not close every client connection.
    parts.version = http::Version::HTTP_11;
    if let Ok(v) = http::HeaderValue::from_str(&rec.event.request_id) {
        parts.headers.insert(headers::X_REQUEST_ID, v);
    }
    Response::from_parts(parts, Either::Right(rec.into_body(body)))
}
