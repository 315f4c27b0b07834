//! An embedded sample case service (docs/reference.md §10's API) for `purposegate
//! demo` and for tests: a small hyper server on a given listener answering
//! `GET /v1/justifications/{kind}/{id}` from an in-memory map. It records
//! every request it gets (path as received, decoded kind and id, the
//! `Authorization` header), can require a bearer credential, and can be told
//! to misbehave (`Fault`) so tests see what the proxy does when it must not
//! trust the answer. It serves until dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{Justification, Kind, Status};

/// The path prefix the service answers under.
pub const PATH_PREFIX: &str = "/v1/justifications/";

/// A demo ticket that is closed (`justification_closed`).
pub const CLOSED_TICKET: &str = "TICKET-70";
/// A demo ticket u2 opened about u1's shared conversation: reading u1 under
/// it is `support_not_requested_by_user`.
pub const OTHER_USERS_TICKET: &str = "TICKET-80";
/// A demo case assigned to someone other than the demo trust-and-safety
/// employee (`justification_not_assigned`).
pub const UNASSIGNED_CASE: &str = "CASE-1043";

/// One request the service received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub method: String,
    /// Path and query exactly as received (still percent-encoded).
    pub path: String,
    /// The kind and decoded id, when the path had the service's shape.
    pub kind: Option<Kind>,
    pub id: Option<String>,
    pub authorization: Option<String>,
}

/// A way to misbehave, applied to every request while set.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Accept the request and answer nothing for 30 s (then 503).
    Hang,
    /// Answer 302 to this location.
    Redirect(String),
    /// Answer with this status and raw body.
    Body { status: u16, body: Bytes },
}

struct Shared {
    records: Mutex<HashMap<(Kind, String), Justification>>,
    asked: Mutex<Vec<Asked>>,
    fault: Mutex<Option<Fault>>,
    /// `Authorization` value required, when set.
    required: Option<String>,
}

/// A running sample case service.
pub struct CaseService {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

/// A poisoned lock only means a test panicked elsewhere; the data is fine.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CaseService {
    /// Serves `records` on `listener`; with `bearer_token`, requests without
    /// `Authorization: Bearer <token>` get 401.
    pub fn start(
        listener: TcpListener,
        records: impl IntoIterator<Item = (Kind, String, Justification)>,
        bearer_token: Option<&str>,
    ) -> std::io::Result<CaseService> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            records: Mutex::new(records.into_iter().map(|(k, id, j)| ((k, id), j)).collect()),
            asked: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            required: bearer_token.map(|t| format!("Bearer {t}")),
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, shared.clone(), stopped));
        Ok(CaseService {
            addr,
            shared,
            _stop: stop,
        })
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves the demo records.
    pub async fn demo(addr: SocketAddr) -> std::io::Result<CaseService> {
        let records = demo_records()
            .into_iter()
            .map(|(k, id, j)| (k, id.to_string(), j));
        CaseService::start(TcpListener::bind(addr).await?, records, None)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `justifications.url` template that reaches this service.
    pub fn url(&self) -> String {
        format!("http://{}{PATH_PREFIX}{{kind}}/{{id}}", self.addr)
    }

    /// Adds or replaces a justification.
    pub fn insert(&self, kind: Kind, id: &str, j: Justification) {
        lock(&self.shared.records).insert((kind, id.to_string()), j);
    }

    /// Changes a justification's status; false if there is none.
    pub fn set_status(&self, kind: Kind, id: &str, status: Status) -> bool {
        let mut records = lock(&self.shared.records);
        match records.get_mut(&(kind, id.to_string())) {
            Some(j) => {
                j.status = status;
                true
            }
            None => false,
        }
    }

    /// Removes a justification (it then answers 404).
    pub fn remove(&self, kind: Kind, id: &str) {
        lock(&self.shared.records).remove(&(kind, id.to_string()));
    }

    /// Sets (or, with `None`, clears) the fault applied to every request.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.fault) = fault;
    }

    /// Every request received so far, oldest first.
    pub fn asked(&self) -> Vec<Asked> {
        lock(&self.shared.asked).clone()
    }

    pub fn asked_count(&self) -> usize {
        lock(&self.shared.asked).len()
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(answer(&shared, &req).await) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let target = parse_path(req.uri().path());
    let asked = Asked {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        kind: target.as_ref().map(|t| t.0),
        id: target.as_ref().map(|t| t.1.clone()),
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    lock(&shared.asked).push(asked.clone());
    let fault = lock(&shared.fault).clone();
    if let Some(fault) = fault {
        return faulty(fault).await;
    }
    if shared.required.is_some() && asked.authorization != shared.required {
        return reply(StatusCode::UNAUTHORIZED, Bytes::new(), None);
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), None);
    }
    let found = target.and_then(|key| lock(&shared.records).get(&key).cloned());
    match found.and_then(|j| serde_json::to_vec(&j).ok()) {
        Some(body) => reply(StatusCode::OK, Bytes::from(body), Some("application/json")),
        None => reply(StatusCode::NOT_FOUND, Bytes::new(), None),
    }
}

async fn faulty(fault: Fault) -> Response<Full<Bytes>> {
    match fault {
        Fault::Status(s) => reply(status(s), Bytes::new(), None),
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new(), None)
        }
        Fault::Redirect(to) => {
            let mut resp = reply(StatusCode::FOUND, Bytes::new(), None);
            if let Ok(v) = header::HeaderValue::from_str(&to) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Fault::Body { status: s, body } => reply(status(s), body, Some("application/json")),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn reply(status: StatusCode, body: Bytes, content_type: Option<&str>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Some(ct) = content_type.and_then(|c| header::HeaderValue::from_str(c).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// `/v1/justifications/<kind>/<id>` → (kind, decoded id). The id must be one
/// path segment: a raw `/` means the client did not encode it.
fn parse_path(path: &str) -> Option<(Kind, String)> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let (kind, id) = rest.split_once('/')?;
    if id.contains('/') {
        return None;
    }
    Some((Kind::parse(kind)?, percent_decode(id)?))
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn j(status: Status, assignees: &[&str], subjects: &[&str], by: Option<&str>) -> Justification {
    Justification {
        status,
        assignees: assignees.iter().map(|s| s.to_string()).collect(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        requested_by: by.map(str::to_string),
    }
}

/// The demo's justifications. Demo employees are `employee-<role>`
/// (`employee-trust-safety`, `employee-support`, `employee-legal`); demo
/// users are u1–u5.
/// - case `CASE-1042`: open, trust & safety, about u1;
/// - case `CASE-1043`: open, assigned to another investigator, about u1;
/// - ticket `TICKET-77`: open, support, u1 reached out;
/// - ticket `TICKET-78`: open, support, u3 reached out;
/// - ticket `TICKET-70`: closed, support, u1 had reached out;
/// - ticket `TICKET-80`: open, support, about u1 and u2, opened by u2;
/// - matter `MATTER-9`: open, legal, about u3.
pub fn demo_records() -> Vec<(Kind, &'static str, Justification)> {
    use Status::{Closed, Open};
    let ts = "employee-trust-safety";
    let support = "employee-support";
    vec![
        (Kind::Case, "CASE-1042", j(Open, &[ts], &["u1"], None)),
        (
            Kind::Case,
            UNASSIGNED_CASE,
            j(Open, &["employee-trust-safety-lead"], &["u1"], None),
        ),
        (
            Kind::Ticket,
            "TICKET-77",
            j(Open, &[support], &["u1"], Some("u1")),
        ),
        (
            Kind::Ticket,
            "TICKET-78",
            j(Open, &[support], &["u3"], Some("u3")),
        ),
        (
            Kind::Ticket,
            CLOSED_TICKET,
            j(Closed, &[support], &["u1"], Some("u1")),
        ),
        (
            Kind::Ticket,
            OTHER_USERS_TICKET,
            j(Open, &[support], &["u1", "u2"], Some("u2")),
        ),
        (
            Kind::Matter,
            "MATTER-9",
            j(Open, &["employee-legal"], &["u3"], None),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode() {
        assert_eq!(
            parse_path("/v1/justifications/ticket/T%201%2Fx"),
            Some((Kind::Ticket, "T 1/x".to_string()))
        );
        assert_eq!(parse_path("/v1/justifications/ticket/a/b"), None);
        assert_eq!(parse_path("/v1/justifications/incident/a"), None);
        assert_eq!(parse_path("/v1/justifications/case/%zz"), None);
        assert_eq!(parse_path("/v1/justifications/case/%C3"), None);
        assert_eq!(percent_decode("%C3%BC"), Some("ü".to_string()));
    }

    #[test]
    fn demo_records_cover_the_walkthrough() {
        let records = demo_records();
        let get = |id: &str| records.iter().find(|r| r.1 == id).map(|r| &r.2).unwrap();
        assert_eq!(get(CLOSED_TICKET).status, Status::Closed);
        assert_eq!(get(OTHER_USERS_TICKET).requested_by.as_deref(), Some("u2"));
        assert!(get(OTHER_USERS_TICKET).subjects.contains(&"u1".to_string()));
        assert!(!get(UNASSIGNED_CASE)
            .assignees
            .contains(&"employee-trust-safety".to_string()));
    }
}
