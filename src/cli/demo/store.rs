//! The embedded sample content store used by `purposegate demo` (and the
//! benchmarks): a small hyper server holding a few users' conversations and
//! files, answering with the docs/reference.md §4 metadata headers. For the `training`
//! purpose it serves a de-identified rendition, as a real store would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One stored item and its metadata.
#[derive(Clone, Debug)]
pub struct Item {
    pub owner: &'static str,
    pub created_at: &'static str,
    pub source: &'static str,
    pub org: Option<&'static str>,
    pub text: &'static str,
}

/// The sample data: path → item.
pub fn sample_items() -> HashMap<&'static str, Item> {
    let item = |owner, created_at, source, org, text| Item {
        owner,
        created_at,
        source,
        org,
        text,
    };
    HashMap::from([
        (
            "/v1/users/u1/conversations/c1",
            item(
                "u1",
                "2026-05-10T09:00:00Z",
                "consumer",
                None,
                "Alice: how do I reset my password?",
            ),
        ),
        (
            "/v1/users/u1/files/f1",
            item(
                "u1",
                "2026-05-11T10:00:00Z",
                "consumer",
                None,
                "quarterly-report.pdf (uploaded by Alice)",
            ),
        ),
        (
            "/v1/users/u2/conversations/c-old",
            item(
                "u2",
                "2026-02-01T08:00:00Z",
                "consumer",
                None,
                "Bob: write a haiku about autumn",
            ),
        ),
        (
            "/v1/users/u2/conversations/c-new",
            item(
                "u2",
                "2026-04-01T08:00:00Z",
                "consumer",
                None,
                "Bob: plan my trip to Lisbon",
            ),
        ),
        (
            "/v1/users/u3/conversations/c1",
            item(
                "u3",
                "2026-09-15T12:00:00Z",
                "consumer",
                None,
                "Carol: summarise this contract",
            ),
        ),
        (
            "/v1/users/u4/conversations/c-api",
            item(
                "u4",
                "2026-02-15T12:00:00Z",
                "api",
                Some("org-9"),
                "org-9 app: classify this ticket",
            ),
        ),
        (
            "/v1/users/u5/conversations/c-api",
            item(
                "u5",
                "2026-02-15T12:00:00Z",
                "api",
                Some("org-7"),
                "org-7 app: translate this memo",
            ),
        ),
    ])
}

/// Starts the store on `addr`; returns the bound address.
pub async fn start(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let items = Arc::new(sample_items());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let items = items.clone();
            let service = service_fn(move |req| {
                let resp = answer(&items, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn answer(items: &HashMap<&'static str, Item>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(item) = items.get(req.uri().path()) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"not_found\"}")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let purpose = req
        .headers()
        .get("x-purposegate-purpose")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let deidentified = purpose == "training";
    let text = if deidentified {
        deidentify(item.text)
    } else {
        item.text.to_string()
    };
    let body =
        serde_json::json!({"owner": item.owner, "created_at": item.created_at, "text": text});
    let mut builder = Response::builder()
        .header("content-type", "application/json")
        .header("x-content-owner", item.owner)
        .header("x-content-created-at", item.created_at)
        .header("x-content-source", item.source)
        .header(
            "x-content-deidentified",
            if deidentified { "true" } else { "false" },
        );
    if let Some(org) = item.org {
        builder = builder.header("x-content-org", org);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// A toy de-identification: speaker names are replaced by a placeholder.
fn deidentify(text: &str) -> String {
    match text.split_once(':') {
        Some((_, rest)) => format!("[user]:{rest}"),
        None => text.to_string(),
    }
}
