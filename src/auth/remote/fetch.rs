//! One HTTP GET of a key document (JWKS or OIDC discovery), bounded in time
//! and size, and the discovery step itself: the document's `issuer` must
//! equal the configured one and its `jwks_uri` must pass the same transport
//! rule as a configured `jwks_url`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

use super::schedule;
use crate::config::checked_key_url;
use crate::tls::https_client::HttpsClient;

/// Largest key document accepted (real JWKS are a few KiB).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a fetch failed. Messages name URLs and statuses, never key material.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response body: {0}")]
    Body(String),
    #[error("OIDC discovery: {0}")]
    Discovery(String),
    #[error("unusable JWKS: {0}")]
    BadJwks(String),
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// A fetched document and the freshness the server gave it.
pub(crate) struct Fetched {
    pub body: Bytes,
    pub max_age: Option<u64>,
}

/// GETs `uri`, expecting a 2xx JSON answer within `timeout`.
pub(crate) async fn get(
    client: &HttpsClient,
    uri: &http::Uri,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let req = Request::get(uri.clone())
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "purposegate")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::Internal("request build"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchError::Transport(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max_age = schedule::max_age(resp.headers());
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        Ok(Fetched { body, max_age })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// Reads the OIDC discovery document of `issuer` and returns its checked
/// `jwks_uri`.
pub(crate) async fn discover(
    client: &HttpsClient,
    issuer: &str,
    allow_insecure_http: bool,
    timeout: Duration,
) -> Result<http::Uri, FetchError> {
    let url = crate::config::discovery_url(issuer);
    let uri = checked_key_url(&url, allow_insecure_http).map_err(FetchError::Discovery)?;
    let doc = get(client, &uri, timeout).await?;
    jwks_uri_of(&doc.body, issuer, allow_insecure_http)
}

/// The `jwks_uri` of a discovery document, after checking its `issuer`.
pub(crate) fn jwks_uri_of(
    body: &[u8],
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<http::Uri, FetchError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| FetchError::Discovery(format!("not JSON: {e}")))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(found) if found == issuer => {}
        Some(found) => {
            return Err(FetchError::Discovery(format!(
                "the document names issuer `{found}`, expected `{issuer}`"
            )))
        }
        None => return Err(FetchError::Discovery("no `issuer` member".into())),
    }
    let jwks = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| FetchError::Discovery("no `jwks_uri` member".into()))?;
    checked_key_url(jwks, allow_insecure_http)
        .map_err(|m| FetchError::Discovery(format!("jwks_uri {m}")))
}

/// An error with its sources (hyper's top-level messages say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_document_checks() {
        let iss = "https://idp.example";
        let ok = br#"{"issuer":"https://idp.example","jwks_uri":"https://idp.example/keys"}"#;
        assert_eq!(
            jwks_uri_of(ok, iss, false).unwrap(),
            "https://idp.example/keys"
        );
        let other = br#"{"issuer":"https://evil.example","jwks_uri":"https://idp.example/keys"}"#;
        assert!(jwks_uri_of(other, iss, false).is_err());
        let http = br#"{"issuer":"https://idp.example","jwks_uri":"http://idp.example/keys"}"#;
        assert!(jwks_uri_of(http, iss, false).is_err());
        assert!(jwks_uri_of(http, iss, true).is_ok());
        assert!(jwks_uri_of(br#"{"issuer":"https://idp.example"}"#, iss, false).is_err());
        assert!(jwks_uri_of(b"not json", iss, false).is_err());
    }
}
