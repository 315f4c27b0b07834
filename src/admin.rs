//! The admin listener: `GET /metrics` (Prometheus text), `/healthz` (the
//! process serves) and `/readyz` (policy, keys, consent and a writable audit
//! sink are in place and the proxy is not draining).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::state::App;

/// Answers one admin request.
pub fn handle<B>(app: &Arc<App>, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => metrics(app, wants_openmetrics(req)),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => readyz(app),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The metrics page; gauges read on demand are refreshed first.
fn metrics(app: &App, openmetrics: bool) -> Response<Full<Bytes>> {
    app.metrics
        .audit_local_bytes
        .set(i64::try_from(app.audit.local_bytes()).unwrap_or(i64::MAX));
    app.metrics.audit_max_local_bytes.set(
        app.config
            .audit
            .max_local_bytes
            .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX)),
    );
    // /proc reads: in-memory, a few microseconds; not worth a thread hop.
    app.metrics.process.refresh();
    if openmetrics {
        text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::encode(&app.registry),
        )
    } else {
        text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::encode_classic(&app.registry),
        )
    }
}

/// Prometheus asks for OpenMetrics in its Accept header; everything else gets
/// the classic text format.
fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn readyz(app: &App) -> Response<Full<Bytes>> {
    let problems = app.readiness();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let issuers = app.verifier.issuer_status();
    let stale: Vec<&str> = issuers
        .iter()
        .filter(|s| s.stale)
        .map(|s| s.issuer.as_str())
        .collect();
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "policy": app.policy.load().digest,
        "keys": app.verifier.key_count(),
        "issuers": issuers,
        "stale_issuers": stale,
    });
    text(status, "application/json", format!("{body}\n"))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
