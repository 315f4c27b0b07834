//! The one place that turns a `Reason` into an HTTP response: status, JSON
//! body `{"error","reason","request_id"}` and the headers the status needs.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::headers::X_REQUEST_ID;
use crate::policy::Reason;

/// A refusal on its way to the client: its reason, and what its response
/// needs beyond the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    /// `Retry-After` seconds of a 429 (rule 18: until the window frees budget).
    pub retry_after: Option<u64>,
}

impl From<Reason> for Denial {
    fn from(reason: Reason) -> Self {
        Denial {
            reason,
            retry_after: None,
        }
    }
}

/// The denial response.
pub fn denial(denial: Denial, request_id: &str) -> Response<Full<Bytes>> {
    let reason = denial.reason;
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
        StatusCode::TOO_MANY_REQUESTS => {
            if let Some(secs) = denial.retry_after {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
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
        let resp = denial(Reason::MethodNotAllowed.into(), "r1");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
        assert_eq!(resp.headers()["x-request-id"], "r1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "method_not_allowed", "reason": "method_not_allowed", "request_id": "r1"})
        );
        assert_eq!(denial(Reason::SubjectNotInScope.into(), "r").status(), 403);
        assert!(denial(Reason::InvalidToken.into(), "r")
            .headers()
            .contains_key("www-authenticate"));
    }

    #[test]
    fn budget_denials_say_when_to_retry() {
        let exceeded = Denial {
            reason: Reason::AccessBudgetExceeded,
            retry_after: Some(3599),
        };
        let resp = denial(exceeded, "r");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "3599");
        let resp = denial(Reason::BudgetUnavailable.into(), "r");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        // Only a 429 carries the seconds it was given.
        let other = Denial {
            reason: Reason::SubjectNotInScope,
            retry_after: Some(5),
        };
        assert!(!denial(other, "r").headers().contains_key("retry-after"));
    }
}
