//! The live justification check (docs/reference.md §10, rules 17a–e): the justification
//! a token names (`case_id`, `ticket_id`, `matter_id`) is looked up in the
//! system of record before the store is contacted.
//!
//! This module owns the whole check except its place in the request pipeline:
//! - `config`: the `justifications:` section and which purposes it covers;
//! - `client`: one bounded HTTPS GET per lookup and the strict answer parser;
//! - `cache`: per (kind, id) caching, coalescing, stale fallback, fail-fast;
//! - `rules`: how rules 17a–e are checked on a looked-up answer (the rules'
//!   numbers, names and reasons are the policy's rule table);
//! - `facts`: what the audit record says was verified;
//! - `metrics`: `purposegate_justification_lookups_total{result}` and the
//!   lookup-duration histogram;
//! - `sample`: an embedded case service for the demo and tests.
//!
//! `Justifications` is the handle the proxy holds: `kind_for` says whether a
//! purpose is checked, `lookup` asks (or answers from the cache), and
//! `rules::check` decides on the answer. The request pipeline reaches it
//! through `policy::engine` (its `Facts::justification`), which runs the
//! rules after rule 11 for `serve`, `explain` and `policy test` alike.

pub mod cache;
pub mod client;
pub mod config;
pub mod facts;
pub mod metrics;
pub mod rules;
pub mod sample;
mod template;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use cache::{Clock, ManualClock, SystemClock};
pub use client::LookupError;
pub use config::JustificationsConfig;
pub use facts::{AuditFacts, State};
pub use metrics::JustificationMetrics;
pub use rules::Facts;
pub use template::percent_encode;

use crate::config::ConfigError;

/// What a justification is, from the claim that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Case,
    Ticket,
    Matter,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Case, Kind::Ticket, Kind::Matter];

    /// The `{kind}` value of the URL template.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Case => "case",
            Kind::Ticket => "ticket",
            Kind::Matter => "matter",
        }
    }

    /// The claim a purpose's `justification_claim` names, mapped to a kind:
    /// `case_id` → case, `ticket_id` → ticket, `matter_id` → matter.
    pub fn from_claim(claim: &str) -> Option<Kind> {
        match claim {
            "case_id" => Some(Kind::Case),
            "ticket_id" => Some(Kind::Ticket),
            "matter_id" => Some(Kind::Matter),
            _ => None,
        }
    }

    /// The kind named by its `{kind}` value.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A justification's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Closed,
}

/// One justification as the system of record describes it. `Deserialize`
/// is the strict shape for answers stated inline (policy test cases:
/// unknown keys refused); answers from the service go through
/// `client::parse_answer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justification {
    pub status: Status,
    /// Employee `sub`s the justification is assigned to.
    pub assignees: Vec<String>,
    /// User ids it concerns.
    pub subjects: Vec<String>,
    /// The user who reached out (support tickets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// Why no answer could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// A lookup failed moments ago; this one did not wait for the timeout.
    #[error("the case service failed moments ago; not asked again yet")]
    FailingFast,
    #[error(transparent)]
    Failed(#[from] LookupError),
    /// A `policy test` case states the service is unavailable.
    #[error("the test case states the case service is unavailable")]
    Stated,
    /// A `policy test` case reaches rule 17 for a checked purpose without
    /// stating the service's answer (the case fails with this error).
    #[error("the test case states no `justification:` answer")]
    NotStated,
}

/// The answer a lookup produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Found(Arc<Justification>),
    /// The service answered 404.
    NotFound,
    /// No answer in time and nothing usable cached.
    Unavailable(Unavailable),
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Asked the service for this lookup (or shared a concurrent one's call).
    Fresh,
    /// Cached within `cache_ttl_seconds`.
    Cached,
    /// Cached within `max_staleness_seconds`, used because the service failed.
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fresh => "fresh",
            Source::Cached => "cached",
            Source::Stale => "stale",
        }
    }
}

/// The result of one lookup: the answer and where it came from (`None`
/// exactly when the answer is `Unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Looked {
    pub kind: Kind,
    pub answer: Answer,
    pub source: Option<Source>,
}

impl Looked {
    /// An answer stated rather than looked up (policy test cases, which
    /// never call out): `Fresh` unless it is `Unavailable`.
    pub fn stated(kind: Kind, answer: Answer) -> Looked {
        let source = match answer {
            Answer::Unavailable(_) => None,
            _ => Some(Source::Fresh),
        };
        Looked {
            kind,
            answer,
            source,
        }
    }
}

/// The live check, shared by every request (cheap to share behind an `Arc`).
pub struct Justifications {
    cfg: JustificationsConfig,
    client: client::CaseClient,
    cache: cache::LookupCache,
    metrics: JustificationMetrics,
}

impl std::fmt::Debug for Justifications {
    // Only the URL template: the bearer credential must never be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Justifications")
            .field("url", &self.cfg.url_text)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Justifications {
    /// Builds the client (reading `ca_file` and `bearer_token_file`: call at
    /// start, not on the runtime's request path) with the system clock.
    pub fn new(
        cfg: &JustificationsConfig,
        metrics: JustificationMetrics,
    ) -> Result<Self, ConfigError> {
        Self::with_clock(cfg, metrics, Arc::new(SystemClock))
    }

    /// As `new`, with the clock that ages cached answers and the fail-fast
    /// window (tests use a `ManualClock`).
    pub fn with_clock(
        cfg: &JustificationsConfig,
        metrics: JustificationMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        Ok(Justifications {
            client: client::CaseClient::new(cfg)?,
            cache: cache::LookupCache::new(cfg, clock),
            metrics,
            cfg: cfg.clone(),
        })
    }

    /// The config this handle was built from.
    pub fn config(&self) -> &JustificationsConfig {
        &self.cfg
    }

    /// Whether rules 17a–e apply to `purpose`, and to which kind (see
    /// `JustificationsConfig::kind_for`).
    pub fn kind_for(&self, purpose: &str, justification_claim: Option<&str>) -> Option<Kind> {
        self.cfg.kind_for(purpose, justification_claim)
    }

    /// Looks the justification up: from the cache, else one GET shared with
    /// every concurrent lookup of the same (kind, id). Never fails: an
    /// unusable outcome is `Answer::Unavailable`.
    pub async fn lookup(&self, kind: Kind, id: &str) -> Looked {
        let started = Instant::now();
        let key = cache::key(kind, id);
        let resolved = self.cache.get(&key, || self.client.fetch(kind, id)).await;
        self.metrics
            .observe(resolved.result, started.elapsed().as_secs_f64());
        Looked {
            kind,
            answer: resolved.answer,
            source: resolved.source,
        }
    }

    /// Re-reads `bearer_token_file`. Blocking file I/O: call where the other
    /// files are reloaded (a `spawn_blocking` task). On error the previous
    /// credential stays in use.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.client.reload_token()
    }

    /// The files whose change should trigger `reload`.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.cfg.watched_files()
    }

    /// Cached (kind, id) answers (for tests and diagnostics).
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_from_claims_and_names() {
        assert_eq!(Kind::from_claim("case_id"), Some(Kind::Case));
        assert_eq!(Kind::from_claim("ticket_id"), Some(Kind::Ticket));
        assert_eq!(Kind::from_claim("matter_id"), Some(Kind::Matter));
        assert_eq!(Kind::from_claim("incident_id"), None);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Case"), None);
    }

    #[test]
    fn stated_answers_for_policy_tests() {
        let j: Justification = serde_saphyr::from_str(
            "{status: open, assignees: [e1], subjects: [u1], requested_by: u1}",
        )
        .unwrap();
        assert_eq!(j.requested_by.as_deref(), Some("u1"));
        assert!(serde_saphyr::from_str::<Justification>(
            "{status: open, assignees: [], subjects: [], title: x}"
        )
        .is_err());
        let l = Looked::stated(Kind::Ticket, Answer::Found(Arc::new(j)));
        assert_eq!(l.source, Some(Source::Fresh));
        let l = Looked::stated(Kind::Case, Answer::Unavailable(Unavailable::FailingFast));
        assert_eq!(l.source, None);
    }

    /// The proxy awaits lookups inside hyper services, which need `Send`.
    #[test]
    fn the_handle_and_its_lookups_are_send_and_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let text = "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {url: \"http://127.0.0.1:9090\"}\naudit:\n  path: \"audit.jsonl\"\njustifications:\n  url: \"http://127.0.0.1:1/{kind}/{id}\"\n";
        let cfg = crate::config::Config::parse(std::path::Path::new("c.yaml"), text)
            .unwrap()
            .justifications
            .unwrap();
        let j = Justifications::new(&cfg, JustificationMetrics::default()).unwrap();
        send_sync(&j);
        send(j.lookup(Kind::Case, "C-1"));
    }
}
