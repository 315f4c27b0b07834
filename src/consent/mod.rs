//! Consent facts (docs/reference.md §5): training opt-out periods and deletion requests
//! per user, API-training opt-in periods per org. The `ConsentStore` trait is
//! what the proxy asks; `file` is the embedded YAML backend, `postgres` the
//! PostgreSQL one (with `cache`, `coalesce`, `postgres_listen`, `pg_config`,
//! `migrate`).

pub mod cache;
pub mod coalesce;
pub mod file;
pub mod migrate;
pub mod pg_config;
pub mod postgres;
pub mod postgres_listen;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::time::Millis;

/// A half-open period `[from, until)`; `until: None` means still in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Millis,
    pub until: Option<Millis>,
}

impl Period {
    /// Whether `t` falls inside the period.
    pub fn contains(&self, t: Millis) -> bool {
        t >= self.from && self.until.is_none_or(|u| t < u)
    }
}

/// What is known of one user's consent. A user without a record has the
/// default: no opt-outs, no deletion request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserConsent {
    pub training_opt_outs: Vec<Period>,
    pub deletion_requested_at: Option<Millis>,
}

impl UserConsent {
    /// Whether content created at `t` falls in an opt-out period (the opt-out
    /// applies going forward only, so earlier content is unaffected).
    pub fn opted_out_at(&self, t: Millis) -> bool {
        self.training_opt_outs.iter().any(|p| p.contains(t))
    }

    /// Whether the account has a deletion request in force at `now`.
    pub fn deleted_at(&self, now: Millis) -> bool {
        self.deletion_requested_at.is_some_and(|d| d <= now)
    }
}

/// What is known of one API customer org's consent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgConsent {
    pub api_training_opt_ins: Vec<Period>,
}

impl OrgConsent {
    /// Whether content created at `t` was shared for training by the org.
    pub fn opted_in_at(&self, t: Millis) -> bool {
        self.api_training_opt_ins.iter().any(|p| p.contains(t))
    }
}

/// A consent lookup could not be answered (backend down, too stale).
#[derive(Debug, Clone, thiserror::Error)]
#[error("consent registry unavailable: {0}")]
pub struct ConsentError(pub String);

/// A boxed lookup future; the file backend resolves it immediately.
pub type ConsentFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ConsentError>> + Send + 'a>>;

/// The consent registry as the proxy sees it.
pub trait ConsentStore: Send + Sync {
    /// The user's consent; the default record when the user is unknown.
    fn user(&self, user_id: &str) -> ConsentFuture<'_, Arc<UserConsent>>;
    /// The org's consent; the default record (no opt-ins) when unknown.
    fn org(&self, org_id: &str) -> ConsentFuture<'_, Arc<OrgConsent>>;
    /// Whether the backend can currently answer (for `/readyz`).
    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_half_open() {
        let p = Period {
            from: 10,
            until: Some(20),
        };
        assert!(!p.contains(9));
        assert!(p.contains(10));
        assert!(p.contains(19));
        assert!(!p.contains(20));
        let open = Period {
            from: 10,
            until: None,
        };
        assert!(open.contains(i64::MAX));
    }

    #[test]
    fn deletion_takes_effect_at_request_time() {
        let u = UserConsent {
            deletion_requested_at: Some(100),
            ..Default::default()
        };
        assert!(!u.deleted_at(99));
        assert!(u.deleted_at(100));
        assert!(!UserConsent::default().deleted_at(i64::MAX));
    }
}
