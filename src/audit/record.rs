//! The audit event as the proxy supplies it. The writer adds `ts`, `seq`,
//! `prev_hash` and `hash`; the field order here is the order on disk.

use serde::Serialize;

/// Which point of a request a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The access decision, written durably before any content is sent.
    #[default]
    Decision,
    /// The end of an allowed request (status, bytes, duration).
    Complete,
}

/// The outcome of the access decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Allow,
    /// The default, so a half-filled event never claims an access was allowed.
    #[default]
    Deny,
}

/// One audit event (CONTRACT §7). Never holds the token or any content.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditEvent {
    pub request_id: String,
    pub event: EventKind,
    pub decision: DecisionKind,
    /// Reason code; `None` for allowed requests.
    pub reason: Option<&'static str>,
    pub subject: Option<String>,
    pub roles: Vec<String>,
    pub purpose: Option<String>,
    pub justification: Option<String>,
    pub method: String,
    pub path: String,
    pub owner: Option<String>,
    pub route: Option<String>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub duration_ms: Option<f64>,
    pub client_addr: String,
    /// The token's `jti`.
    pub token_id: Option<String>,
    /// Subject DN of the client certificate verified on the TLS connection
    /// (mTLS); absent, and not written, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_subject: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_lowercase() {
        let ev = AuditEvent {
            event: EventKind::Complete,
            decision: DecisionKind::Allow,
            ..AuditEvent::default()
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["event"], "complete");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["reason"], serde_json::Value::Null);
        assert_eq!(
            serde_json::to_value(AuditEvent::default()).unwrap()["decision"],
            "deny"
        );
    }
}
