//! Verified token claims, as the decision core consumes them. Produced only by
//! `auth::Verifier` after the signature and registered claims have been checked.

use std::collections::BTreeMap;

/// The claims of a verified token, under their logical (contract) names even
/// when the `claims:` config section renamed them in the token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    /// `sub`: the employee id.
    pub sub: String,
    /// `roles`; empty when absent.
    pub roles: Vec<String>,
    /// `purpose`; `None` when absent.
    pub purpose: Option<String>,
    /// `subjects`: user ids the access is scoped to; empty when absent.
    pub subjects: Vec<String>,
    /// `training_cert_exp` (NumericDate, seconds); `None` when absent.
    pub training_cert_exp: Option<i64>,
    /// Registered claims (seconds since the epoch).
    pub iss: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: Option<i64>,
    /// `jti`, recorded in the audit log as `token_id`.
    pub jti: Option<String>,
    /// Every other top-level string claim by logical name (justifications such
    /// as `case_id`, `ticket_id`, `matter_id` live here).
    pub strings: BTreeMap<String, String>,
}

impl Claims {
    /// A non-registered string claim by logical name, e.g. `case_id`.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.strings.get(name).map(String::as_str)
    }
}
