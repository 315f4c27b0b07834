//! The PostgreSQL consent backend: pooled async lookups (one prepared query,
//! one round trip per cache miss), answered from `ConsentCache` while fresh,
//! kept current by the LISTEN/NOTIFY listener (`postgres_listen`), and — while
//! the database is down or slow — served stale up to `max_staleness`, after
//! which lookups fail and the proxy fails closed (503 `consent_unavailable`).
//! Concurrent misses for one key share a single read (`coalesce`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::NoTls;

use super::cache::{Cached, ConsentCache};
use super::coalesce::Inflight;
use super::pg_config::PgConsentConfig;
use super::{ConsentError, ConsentFuture, ConsentStore, OrgConsent, Period, UserConsent};
use crate::metrics::Metrics;
use crate::time::Millis;

/// A user's opt-out periods and deletion request in one round trip.
const USER_SQL: &str = "\
SELECT true AS opt_out,
       floor(extract(epoch FROM valid_from) * 1000)::int8 AS from_ms,
       floor(extract(epoch FROM valid_until) * 1000)::int8 AS until_ms
  FROM consent_user_opt_outs WHERE user_id = $1
UNION ALL
SELECT false, floor(extract(epoch FROM requested_at) * 1000)::int8, NULL
  FROM consent_deletion_requests WHERE user_id = $1";

/// An org's API-training opt-in periods.
const ORG_SQL: &str = "\
SELECT floor(extract(epoch FROM valid_from) * 1000)::int8 AS from_ms,
       floor(extract(epoch FROM valid_until) * 1000)::int8 AS until_ms
  FROM consent_org_opt_ins WHERE org_id = $1";

/// After a failed database round trip, lookups without a usable cached
/// answer fail at once for this long instead of each waiting for a timeout.
const FAIL_FAST: Duration = Duration::from_millis(1000);

/// Whether the database answered lately; shared with the listener task.
pub(crate) struct Health {
    base: Instant,
    ok: AtomicBool,
    /// Milliseconds after `base` until which lookups fail fast.
    down_until_ms: AtomicU64,
}

impl Health {
    fn new() -> Self {
        Health {
            base: Instant::now(),
            // Not ready until the database has answered once.
            ok: AtomicBool::new(false),
            down_until_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn mark_ok(&self) {
        self.ok.store(true, Ordering::Relaxed);
        self.down_until_ms.store(0, Ordering::Relaxed);
    }

    pub(crate) fn mark_failed(&self, at: Instant) {
        if self.ok.swap(false, Ordering::Relaxed) {
            tracing::warn!("consent database unavailable");
        }
        let until = self.millis(at + FAIL_FAST);
        self.down_until_ms.store(until, Ordering::Relaxed);
    }

    fn failing_fast(&self, at: Instant) -> bool {
        self.millis(at) < self.down_until_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }
}

/// The PostgreSQL-backed `ConsentStore`.
pub struct PgConsent {
    pool: Pool,
    users: Arc<ConsentCache<UserConsent>>,
    orgs: Arc<ConsentCache<OrgConsent>>,
    user_reads: Inflight<UserConsent>,
    org_reads: Inflight<OrgConsent>,
    health: Arc<Health>,
    lookup_timeout: Duration,
    metrics: Metrics,
    default_user: Arc<UserConsent>,
    default_org: Arc<OrgConsent>,
    /// Dropped with the store; ends the listener task.
    _stop: oneshot::Sender<()>,
}

/// Why the backend could not be set up (the database itself may be down:
/// that is not an error at start, lookups fail closed until it answers).
#[derive(Debug, thiserror::Error)]
pub enum PgStartError {
    #[error("{0}")]
    Password(#[from] super::pg_config::PasswordError),
    #[error("consent database pool: {0}")]
    Pool(String),
    #[error("the PostgreSQL consent backend needs a tokio runtime")]
    NoRuntime,
}

impl PgConsent {
    /// Builds the pool and the caches and spawns the listener task. Does not
    /// wait for the database: connections are made on first use.
    pub fn start(config: &PgConsentConfig, metrics: Metrics) -> Result<PgConsent, PgStartError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| PgStartError::NoRuntime)?;
        let pg = config.connect_config()?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.lookup_timeout))
            .create_timeout(Some(config.lookup_timeout))
            .recycle_timeout(Some(config.lookup_timeout))
            .build()
            .map_err(|e| PgStartError::Pool(e.to_string()))?;
        let users = Arc::new(ConsentCache::new(
            config.cache_ttl,
            config.max_staleness,
            config.cache_max_entries,
        ));
        let orgs = Arc::new(ConsentCache::new(
            config.cache_ttl,
            config.max_staleness,
            config.cache_max_entries,
        ));
        let health = Arc::new(Health::new());
        let (stop, stopped) = oneshot::channel();
        let listener = super::postgres_listen::Listener {
            pg,
            users: users.clone(),
            orgs: orgs.clone(),
            health: health.clone(),
            probe_timeout: config.lookup_timeout.max(Duration::from_secs(1)),
        };
        handle.spawn(listener.run(stopped));
        Ok(PgConsent {
            pool,
            users,
            orgs,
            user_reads: Inflight::default(),
            org_reads: Inflight::default(),
            health,
            lookup_timeout: config.lookup_timeout,
            metrics,
            default_user: Arc::new(UserConsent::default()),
            default_org: Arc::new(OrgConsent::default()),
            _stop: stop,
        })
    }

    /// One database round trip for a user (no cache).
    pub async fn fetch_user(&self, user_id: &str) -> Result<UserConsent, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached(USER_SQL)
            .await
            .map_err(|e| e.to_string())?;
        let rows = client
            .query(&stmt, &[&user_id])
            .await
            .map_err(|e| e.to_string())?;
        let mut user = UserConsent::default();
        for row in rows {
            let opt_out: bool = row.try_get(0).map_err(|e| e.to_string())?;
            let from: Millis = row.try_get(1).map_err(|e| e.to_string())?;
            let until: Option<Millis> = row.try_get(2).map_err(|e| e.to_string())?;
            if opt_out {
                user.training_opt_outs.push(Period { from, until });
            } else {
                user.deletion_requested_at = Some(from);
            }
        }
        Ok(user)
    }

    /// One database round trip for an org (no cache).
    pub async fn fetch_org(&self, org_id: &str) -> Result<OrgConsent, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached(ORG_SQL)
            .await
            .map_err(|e| e.to_string())?;
        let rows = client
            .query(&stmt, &[&org_id])
            .await
            .map_err(|e| e.to_string())?;
        let mut org = OrgConsent::default();
        for row in rows {
            let from: Millis = row.try_get(0).map_err(|e| e.to_string())?;
            let until: Option<Millis> = row.try_get(1).map_err(|e| e.to_string())?;
            org.api_training_opt_ins.push(Period { from, until });
        }
        Ok(org)
    }

    /// Whether the database answered its last round trip.
    pub fn database_ok(&self) -> bool {
        self.health.is_ok()
    }

    /// Drops every cached answer (tests and benchmarks measure misses).
    pub fn clear_cache(&self) {
        self.users.clear();
        self.orgs.clear();
    }

    /// The cache-then-database lookup shared by users and orgs.
    async fn lookup<V, Fut>(
        &self,
        cache: &ConsentCache<V>,
        inflight: &Inflight<V>,
        key: &str,
        default: &Arc<V>,
        fetch: Fut,
    ) -> Result<Arc<V>, ConsentError>
    where
        V: PartialEq + Default,
        Fut: Future<Output = Result<V, String>>,
    {
        let started = Instant::now();
        let cached = cache.get(key, started);
        let stale = match cached {
            Cached::Fresh(v) => return Ok(self.done("hit", started, v)),
            Cached::Stale(v) => Some(v),
            Cached::Missing => None,
        };
        let fetched = if self.health.failing_fast(started) {
            Err("database unavailable".to_string())
        } else {
            inflight
                .run(key, self.read_through(cache, key, default, fetch))
                .await
        };
        match (fetched, stale) {
            (Ok(v), _) => Ok(self.done("miss", started, v)),
            (Err(_), Some(v)) => {
                self.health.mark_failed(Instant::now());
                Ok(self.done("stale", started, v))
            }
            (Err(e), None) => {
                self.health.mark_failed(Instant::now());
                self.metrics
                    .consent_lookup("error", started.elapsed().as_secs_f64());
                Err(ConsentError(e))
            }
        }
    }

    /// One bounded database read whose answer is cached (unless a change
    /// was notified meanwhile).
    async fn read_through<V, Fut>(
        &self,
        cache: &ConsentCache<V>,
        key: &str,
        default: &Arc<V>,
        fetch: Fut,
    ) -> Result<Arc<V>, String>
    where
        V: PartialEq + Default,
        Fut: Future<Output = Result<V, String>>,
    {
        let started = Instant::now();
        let epoch = cache.epoch();
        match tokio::time::timeout(self.lookup_timeout, fetch).await {
            Ok(Ok(v)) => {
                self.health.mark_ok();
                // Negative answers share one allocation.
                let v = if v == V::default() {
                    default.clone()
                } else {
                    Arc::new(v)
                };
                cache.insert(key, v.clone(), started, epoch);
                Ok(v)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", self.lookup_timeout)),
        }
    }

    fn done<V>(&self, result: &'static str, started: Instant, v: Arc<V>) -> Arc<V> {
        self.metrics
            .consent_lookup(result, started.elapsed().as_secs_f64());
        v
    }
}

impl ConsentStore for PgConsent {
    fn user(&self, user_id: &str) -> ConsentFuture<'_, Arc<UserConsent>> {
        let key = user_id.to_string();
        Box::pin(async move {
            let fetch = self.fetch_user(&key);
            self.lookup(
                &self.users,
                &self.user_reads,
                &key,
                &self.default_user,
                fetch,
            )
            .await
        })
    }

    fn org(&self, org_id: &str) -> ConsentFuture<'_, Arc<OrgConsent>> {
        let key = org_id.to_string();
        Box::pin(async move {
            let fetch = self.fetch_org(&key);
            self.lookup(&self.orgs, &self.org_reads, &key, &self.default_org, fetch)
                .await
        })
    }

    fn healthy(&self) -> bool {
        self.database_ok()
    }
}
