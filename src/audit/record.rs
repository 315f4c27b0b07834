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

/// One audit event (docs/reference.md §7). Never holds the token or any content.
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
    /// What the live justification check saw (rules 17a–e): `open`,
    /// `closed`, `not_found` or `unavailable`; absent when the purpose is
    /// not checked (or the request was refused before rule 17).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification_state: Option<&'static str>,
    /// Where that answer came from: `fresh`, `cached` or `stale`; absent
    /// when there was none (`unavailable`) or no check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification_source: Option<&'static str>,
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
    /// Why the token was refused (`invalid_token`): the verifier's code,
    /// never token content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_error: Option<&'static str>,
    /// The `x-request-id` the client sent (bounded); never forwarded as ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// The client went away before the request was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// Whether the store had been contacted (written on cancelled records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_contacted: Option<bool>,
    /// `complete` records: how the response ended (`complete`,
    /// `upstream_error`: the store's body broke off, `client_gone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<&'static str>,
    /// Rule 18: every access-budget limit of the purpose at decision time
    /// (`limit`, `used` — this request included when allowed — `max`,
    /// `window_seconds`, `owner_counted`, `refused`), in config order, at
    /// most `MAX_BUDGET_LIMITS`; absent when the purpose has no limits or
    /// Redis did not answer (the reason then says `budget_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Vec<crate::budget::BudgetFact>>,
    /// SHA-256 of the whole path, when `path` holds only its first
    /// `MAX_PATH` bytes (a record's size is bounded whatever a client sends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_sha256: Option<String>,
    /// SHA-256 of the whole method, when `method` was cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_sha256: Option<String>,
    /// Fields cut to their bound (other than path and method).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
}

/// Bytes of the path a record keeps.
pub const MAX_PATH: usize = 512;
/// Bytes of the method a record keeps.
pub const MAX_METHOD: usize = 16;
/// Bytes of any other text field from a client or a token.
pub const MAX_FIELD: usize = 256;
/// Roles a record lists.
pub const MAX_ROLES: usize = 16;
/// Budget limits a record lists.
pub const MAX_BUDGET_LIMITS: usize = 16;

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl AuditEvent {
    /// Sets `path`, keeping a bounded prefix and the hash of the whole.
    pub fn set_path(&mut self, path: &str) {
        self.path = prefix(path, MAX_PATH).to_string();
        self.path_sha256 = (path.len() > MAX_PATH).then(|| super::chain::hash_hex(path.as_bytes()));
    }

    /// Sets `method`, keeping a bounded prefix and the hash of the whole.
    pub fn set_method(&mut self, method: &str) {
        self.method = prefix(method, MAX_METHOD).to_string();
        self.method_sha256 =
            (method.len() > MAX_METHOD).then(|| super::chain::hash_hex(method.as_bytes()));
    }

    /// A bounded copy of a text field, noting the cut under `name`.
    pub fn bounded(&mut self, name: &'static str, value: &str) -> String {
        if value.len() > MAX_FIELD {
            self.truncated.push(name);
        }
        prefix(value, MAX_FIELD).to_string()
    }

    /// Sets `budget`, bounded in count (each entry is numbers only).
    pub fn set_budget(&mut self, facts: Option<Vec<crate::budget::BudgetFact>>) {
        self.budget = facts.map(|mut f| {
            if f.len() > MAX_BUDGET_LIMITS {
                f.truncate(MAX_BUDGET_LIMITS);
                self.truncated.push("budget");
            }
            f
        });
    }

    /// Sets `roles`, bounded in count and length.
    pub fn set_roles(&mut self, roles: &[String]) {
        let cut = roles.len() > MAX_ROLES || roles.iter().any(|r| r.len() > MAX_FIELD / 4);
        self.roles = roles
            .iter()
            .take(MAX_ROLES)
            .map(|r| prefix(r, MAX_FIELD / 4).to_string())
            .collect();
        if cut {
            self.truncated.push("roles");
        }
    }
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

    #[test]
    fn records_stay_small_whatever_the_client_sends() {
        let mut ev = AuditEvent::default();
        let path = format!("/v1/users/u1/files/{}", "é".repeat(30_000));
        ev.set_path(&path);
        ev.set_method(&"X".repeat(5000));
        let j = ev.bounded("justification", &"j".repeat(10_000));
        ev.justification = Some(j);
        ev.set_roles(&vec!["r".repeat(100); 1000]);
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.len() < 3000, "{} bytes", line.len());
        assert!(ev.path.len() <= MAX_PATH && path.starts_with(&ev.path));
        assert_eq!(
            ev.path_sha256.as_deref(),
            Some(crate::audit::chain::hash_hex(path.as_bytes()).as_str())
        );
        assert!(ev.method_sha256.is_some());
        assert_eq!(ev.truncated, ["justification", "roles"]);
        let fact = crate::budget::BudgetFact {
            limit: "requests",
            used: 3,
            max: 3,
            window_seconds: 60,
            owner_counted: false,
            refused: true,
        };
        ev.set_budget(Some(vec![fact; 100]));
        assert_eq!(ev.budget.as_ref().map(Vec::len), Some(MAX_BUDGET_LIMITS));
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.len() < 4000, "{} bytes", line.len());
        assert_eq!(ev.truncated, ["justification", "roles", "budget"]);
        let mut short = AuditEvent::default();
        short.set_path("/v1/users/u1/files/f");
        assert!(short.path_sha256.is_none());
        let v = serde_json::to_value(&short).unwrap();
        assert!(v.get("path_sha256").is_none());
        assert!(v.get("budget").is_none());
    }
}
