//! Per-employee access budgets shared by every replica (docs/reference.md §11, rule
//! 18): how many distinct owners' content, or how many requests, one employee
//! (`sub`) may read for one purpose in a window, counted in Redis so that all
//! replicas sharing it see one count.
//!
//! `Budgets` is the handle the proxy holds: `charge` (one atomic round trip
//! that decides and consumes on every limit of the purpose, or on none),
//! `peek` (read-only, for `explain`), and `limits_for`. `outcome::rule18`
//! turns an `Outcome` into the rule's verdict and `outcome::audit_facts` into
//! the audit record's `budget` field; neither does I/O.
//!
//! Parts: `config` (the `budgets:` section), `keys` (hashed Redis names),
//! `script` (the Lua scripts and their replies), `client` (the connection,
//! timeouts, fail-fast and reconnection), `metrics`, `outcome`.

pub mod client;
pub mod config;
mod keys;
pub mod metrics;
pub mod outcome;
pub mod script;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;

pub use config::{BudgetsConfig, Limit, LimitKind, RawBudgets, SecretError};
pub use metrics::BudgetMetrics;
pub use outcome::{
    audit_facts, describe, evaluate, rule18, verdict, BudgetFact, BudgetVerdict, Counted,
    LimitUsage, Outcome, Unavailable,
};
pub use script::Peek;

use client::Conn;
use keys::Hasher;

/// Why `Budgets::new` failed (a start-up error: the proxy should not start).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("budgets.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The access budgets of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Conn>,
    hasher: Hasher,
    prefix: String,
    /// Limits by purpose, in config order.
    limits: BTreeMap<String, Vec<Limit>>,
    metrics: BudgetMetrics,
    charge: redis::Script,
    peek: redis::Script,
}

impl Budgets {
    /// Reads the password and hash key (blocking file reads: call at start),
    /// registers the metrics in `registry` and starts connecting to Redis in
    /// the background; it returns without waiting for Redis. Must be called
    /// inside a Tokio runtime.
    pub fn new(cfg: &BudgetsConfig, registry: &mut Registry) -> Result<Budgets, BudgetError> {
        let info = cfg.connection_info()?;
        let hash_key = cfg.hash_key()?;
        let mut limits: BTreeMap<String, Vec<Limit>> = BTreeMap::new();
        for l in &cfg.limits {
            limits.entry(l.purpose.clone()).or_default().push(l.clone());
        }
        let metrics = BudgetMetrics::register(registry, limits.keys().map(String::as_str));
        let conn = Conn::start(info, cfg.timeout, cfg.connect_timeout)?;
        Ok(Budgets {
            inner: Arc::new(Inner {
                conn,
                hasher: Hasher::new(hash_key.as_deref()),
                prefix: cfg.key_prefix.clone(),
                limits,
                metrics,
                charge: redis::Script::new(script::CHARGE),
                peek: redis::Script::new(script::PEEK),
            }),
        })
    }

    /// Whether the purpose has limits (rule 18 applies to it).
    pub fn limits_for(&self, purpose: &str) -> bool {
        self.inner.limits.contains_key(purpose)
    }

    /// The limits of a purpose, in config order (empty when it has none).
    pub fn limits(&self, purpose: &str) -> &[Limit] {
        self.inner
            .limits
            .get(purpose)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether checks currently fail fast (Redis failed within the last second).
    pub fn failing_fast(&self) -> bool {
        self.inner.conn.failing_fast()
    }

    /// Rule 18: decides and, when allowed, counts the request on every limit
    /// of `purpose` for employee `sub` reading `owner`'s content — atomically,
    /// in one round trip, over every replica sharing the Redis. Never waits
    /// longer than `timeout_ms`. A purpose without limits is allowed without
    /// contacting Redis.
    pub async fn charge(&self, sub: &str, purpose: &str, owner: &str) -> Outcome {
        let limits: Vec<&Limit> = self.limits(purpose).iter().collect();
        if limits.is_empty() {
            return Outcome::Allowed { usage: Vec::new() };
        }
        let started = Instant::now();
        let mut inv = self.inner.charge.prepare_invoke();
        self.add_args(&mut inv, sub, owner, &limits);
        let outcome = match self.inner.conn.invoke::<Vec<i64>>(&inv).await {
            Ok(reply) => script::charge_outcome(&limits, &reply),
            Err(why) => Outcome::Unavailable(why),
        };
        self.inner.metrics.observe(
            purpose,
            outcome.result_label(),
            started.elapsed().as_secs_f64(),
        );
        outcome
    }

    /// What `charge` would find, without counting anything (for `explain`).
    /// Bounded by `timeout_ms` like a charge; not counted in the metrics.
    pub async fn peek(&self, sub: &str, purpose: &str, owner: &str) -> Result<Peek, Unavailable> {
        let limits: Vec<&Limit> = self.limits(purpose).iter().collect();
        if limits.is_empty() {
            return Ok(Peek {
                current: Vec::new(),
                if_charged: Outcome::Allowed { usage: Vec::new() },
            });
        }
        let mut inv = self.inner.peek.prepare_invoke();
        self.add_args(&mut inv, sub, owner, &limits);
        let reply = self.inner.conn.invoke::<Vec<i64>>(&inv).await?;
        script::peek_outcome(&limits, &reply)
    }

    fn add_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        sub: &str,
        owner: &str,
        limits: &[&Limit],
    ) {
        let tag = self.inner.hasher.employee_tag(sub);
        let keys: Vec<String> = limits
            .iter()
            .map(|l| keys::key(&self.inner.prefix, &tag, l))
            .collect();
        script::add_args(inv, &keys, &self.inner.hasher.owner_member(owner), limits);
    }
}
