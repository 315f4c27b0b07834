//! Reason codes (docs/reference.md §6) and the one place that maps each to an
//! HTTP status. Which rule yields which reason is the rule table's business
//! (`rules`).

use http::StatusCode;

/// Why a request was refused. `code()` is the stable wire name used in denial
/// bodies, audit records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MethodNotAllowed,
    NonCanonicalPath,
    MissingToken,
    InvalidToken,
    NoRoute,
    UnknownPurpose,
    ProhibitedPurpose,
    RoleNotPermitted,
    TrainingCertificationRequired,
    MissingJustification,
    SubjectNotInScope,
    AccountDeleted,
    OwnerMismatch,
    NotDeidentified,
    OptedOut,
    ApiContentNotShared,
    MetadataMissing,
    JustificationNotFound,
    JustificationClosed,
    JustificationNotAssigned,
    JustificationSubjectMismatch,
    SupportNotRequestedByUser,
    JustificationUnavailable,
    AccessBudgetExceeded,
    BudgetUnavailable,
    ConsentUnavailable,
    AuditUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// The request line is longer than `limits.max_uri_bytes`.
    UriTooLong,
    /// The client went away before its request was decided.
    ClientCancelled,
}

impl Reason {
    /// Every reason, in rule order.
    pub const ALL: [Reason; 31] = [
        Reason::MethodNotAllowed,
        Reason::NonCanonicalPath,
        Reason::MissingToken,
        Reason::InvalidToken,
        Reason::NoRoute,
        Reason::UnknownPurpose,
        Reason::ProhibitedPurpose,
        Reason::RoleNotPermitted,
        Reason::TrainingCertificationRequired,
        Reason::MissingJustification,
        Reason::SubjectNotInScope,
        Reason::AccountDeleted,
        Reason::OwnerMismatch,
        Reason::NotDeidentified,
        Reason::OptedOut,
        Reason::ApiContentNotShared,
        Reason::MetadataMissing,
        Reason::JustificationNotFound,
        Reason::JustificationClosed,
        Reason::JustificationNotAssigned,
        Reason::JustificationSubjectMismatch,
        Reason::SupportNotRequestedByUser,
        Reason::JustificationUnavailable,
        Reason::AccessBudgetExceeded,
        Reason::BudgetUnavailable,
        Reason::ConsentUnavailable,
        Reason::AuditUnavailable,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
        Reason::UriTooLong,
        Reason::ClientCancelled,
    ];

    /// The stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::NonCanonicalPath => "non_canonical_path",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::NoRoute => "no_route",
            Reason::UnknownPurpose => "unknown_purpose",
            Reason::ProhibitedPurpose => "prohibited_purpose",
            Reason::RoleNotPermitted => "role_not_permitted",
            Reason::TrainingCertificationRequired => "training_certification_required",
            Reason::MissingJustification => "missing_justification",
            Reason::SubjectNotInScope => "subject_not_in_scope",
            Reason::AccountDeleted => "account_deleted",
            Reason::OwnerMismatch => "owner_mismatch",
            Reason::NotDeidentified => "not_deidentified",
            Reason::OptedOut => "opted_out",
            Reason::ApiContentNotShared => "api_content_not_shared",
            Reason::MetadataMissing => "metadata_missing",
            Reason::JustificationNotFound => "justification_not_found",
            Reason::JustificationClosed => "justification_closed",
            Reason::JustificationNotAssigned => "justification_not_assigned",
            Reason::JustificationSubjectMismatch => "justification_subject_mismatch",
            Reason::SupportNotRequestedByUser => "support_not_requested_by_user",
            Reason::JustificationUnavailable => "justification_unavailable",
            Reason::AccessBudgetExceeded => "access_budget_exceeded",
            Reason::BudgetUnavailable => "budget_unavailable",
            Reason::ConsentUnavailable => "consent_unavailable",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UriTooLong => "uri_too_long",
            Reason::ClientCancelled => "client_cancelled",
        }
    }

    /// The HTTP status a denial with this reason gets.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reason::NonCanonicalPath => StatusCode::BAD_REQUEST,
            Reason::MissingToken | Reason::InvalidToken => StatusCode::UNAUTHORIZED,
            Reason::NoRoute => StatusCode::NOT_FOUND,
            Reason::ConsentUnavailable
            | Reason::AuditUnavailable
            | Reason::JustificationUnavailable
            | Reason::BudgetUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reason::AccessBudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            Reason::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::UriTooLong => StatusCode::URI_TOO_LONG,
            // nginx's "client closed request": never sent (nobody listens),
            // only recorded.
            Reason::ClientCancelled => match StatusCode::from_u16(499) {
                Ok(s) => s,
                Err(_) => StatusCode::BAD_REQUEST,
            },
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// Parses a code back (for `policy test` expectations).
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The `error` field of a denial body: the status's name in snake case.
    pub fn error_name(self) -> &'static str {
        match self.status() {
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::BAD_GATEWAY => "bad_gateway",
            StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "client_closed_request",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()));
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Reason::MethodNotAllowed.status(), 405);
        assert_eq!(Reason::NonCanonicalPath.status(), 400);
        assert_eq!(Reason::InvalidToken.status(), 401);
        assert_eq!(Reason::NoRoute.status(), 404);
        assert_eq!(Reason::OptedOut.status(), 403);
        assert_eq!(Reason::AuditUnavailable.status(), 503);
        assert_eq!(Reason::UpstreamTimeout.status(), 504);
        assert_eq!(Reason::OwnerMismatch.error_name(), "forbidden");
    }
}
