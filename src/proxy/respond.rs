//! The one place that turns a `Reason` into an HTTP response: status, JSON
//! body `{"error","reason","request_id"}` and the headers the status needs.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::headers::X_REQUEST_ID;
use crate::policy::Reason;

/// The denial response for `reason`.
pub fn denial(reason: Reason, request_id: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": reason.error_name(),
        "reason": reason.code(),
        "request_id": request_id,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = reason.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    match reason.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        StatusCode::UNAUTHORIZED => {
            let v = match reason {
                Reason::InvalidToken => "Bearer error=\"invalid_token\"",
                _ => "Bearer",
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn denial_bodies_follow_the_contract() {
        let resp = denial(Reason::MethodNotAllowed, "r1");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
        assert_eq!(resp.headers()["x-request-id"], "r1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "method_not_allowed", "reason": "method_not_allowed", "request_id": "r1"})
        );
        assert_eq!(denial(Reason::SubjectNotInScope, "r").status(), 403);
        assert!(denial(Reason::InvalidToken, "r")
            .headers()
            .contains_key("www-authenticate"));
    }
}
