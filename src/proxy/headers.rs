//! Header hygiene for both directions: hop-by-hop headers removed, the
//! client's credentials and any client-sent `x-purposegate-*` header dropped
//! before forwarding, identity headers and `X-Forwarded-For` added.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The prefix of headers only purposegate may set toward the upstream.
pub const IDENTITY_PREFIX: &str = "x-purposegate-";
pub const SUBJECT: HeaderName = HeaderName::from_static("x-purposegate-subject");
pub const PURPOSE: HeaderName = HeaderName::from_static("x-purposegate-purpose");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-purposegate-request-id");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Prepares the request headers for the upstream: hop-by-hop, credentials
/// and spoofable identity headers out; the verified identity in.
pub fn for_upstream(
    headers: &mut HeaderMap,
    subject: &str,
    purpose: &str,
    request_id: &str,
    client_ip: &str,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    // No body is forwarded (reads only), so nothing may announce one.
    headers.remove(header::CONTENT_LENGTH);
    // The client's own id is recorded (`client_request_id`), never passed
    // off as ours: the store gets `x-purposegate-request-id`.
    headers.remove(X_REQUEST_ID);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    insert_text(headers, SUBJECT, subject);
    insert_text(headers, PURPOSE, purpose);
    insert_text(headers, REQUEST_ID, request_id);
    append_forwarded_for(headers, client_ip);
}

/// Appends the client address to `X-Forwarded-For` (one combined value).
fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &str) {
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if prior.is_empty() {
        insert_text(headers, X_FORWARDED_FOR, client_ip);
        return;
    }
    let value = format!("{}, {client_ip}", prior.join(", "));
    insert_text(headers, X_FORWARDED_FOR, &value);
}

/// Inserts a header whose value came from a verified claim; a value that is
/// not a valid header value is dropped rather than forwarded garbled.
fn insert_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials_spoofs_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert("x-purposegate-subject", HeaderValue::from_static("mallory"));
        h.insert("X-PurposeGate-Extra", HeaderValue::from_static("1"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.insert("x-request-id", HeaderValue::from_static("client-chosen"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        for_upstream(&mut h, "e1", "support", "rid", "127.0.0.1");
        assert!(h.get("x-request-id").is_none());
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h["x-purposegate-subject"], "e1");
        assert_eq!(h["x-purposegate-purpose"], "support");
        assert_eq!(h["x-purposegate-request-id"], "rid");
        assert!(h.get("x-purposegate-extra").is_none());
        assert!(h.get("x-private").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["accept"], "application/json");
    }
}
