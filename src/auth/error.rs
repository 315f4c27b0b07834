//! Why a token was refused. The messages end up in logs and in `explain`
//! output, so they are short and never quote the token, a key or a secret;
//! the only token-derived text is an algorithm name, and only when it is one
//! of the names we know (see `jose::alg_label`).

/// Why a token was refused (every variant maps to 401 `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed token")]
    Malformed,
    #[error("token header marks extensions as critical; none are supported")]
    CriticalHeader,
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no verification key matches the token's key id")]
    UnknownKey,
    #[error("token has no key id and more than one key could verify it")]
    AmbiguousKey,
    #[error("the selected key does not fit the token's algorithm")]
    KeyAlgorithmMismatch,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("issuer is not accepted")]
    WrongIssuer,
    #[error("audience is not accepted")]
    WrongAudience,
    #[error("token lifetime of {lifetime}s exceeds the maximum of {max}s")]
    LifetimeTooLong { lifetime: i64, max: u64 },
    #[error("claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("claim `{0}` has the wrong type or value")]
    BadClaim(&'static str),
    #[error("more than one Authorization header")]
    AmbiguousAuthorization,
    #[error("claim `{0}` cannot be forwarded as an identity header value")]
    UnsafeIdentity(&'static str),
}

impl AuthError {
    /// A short stable code for the audit record's `token_error` field and
    /// logs (never token content).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::CriticalHeader => "critical_header",
            AuthError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::AmbiguousKey => "ambiguous_key",
            AuthError::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::LifetimeTooLong { .. } => "lifetime_too_long",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::BadClaim(_) => "bad_claim",
            AuthError::AmbiguousAuthorization => "ambiguous_authorization",
            AuthError::UnsafeIdentity(_) => "unsafe_identity",
        }
    }
}
