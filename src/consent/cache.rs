//! The in-process consent cache of the PostgreSQL backend: a bounded
//! `DashMap` of answers (negative ones too: "no record" is cached as the
//! default record) with a freshness TTL and a longer staleness limit that
//! applies only while the database cannot answer. Invalidation (LISTEN/NOTIFY)
//! removes entries and bumps an epoch so that a lookup that raced with a
//! change does not put the old answer back; `expire_all` (after a listener
//! reconnect) turns every entry into a fallback that is re-read on next use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One cached answer and when it was read from the database.
struct Entry<V> {
    value: Arc<V>,
    fetched: Instant,
}

/// What the cache knows of a key at a moment.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached<V> {
    /// Younger than the TTL: use without asking the database.
    Fresh(Arc<V>),
    /// Older than the TTL but younger than the staleness limit: usable only
    /// when the database cannot answer.
    Stale(Arc<V>),
    /// Unknown, invalidated, or too old to use at all.
    Missing,
}

/// A bounded TTL cache keyed by user or org id.
pub struct ConsentCache<V> {
    map: DashMap<String, Entry<V>>,
    ttl: Duration,
    max_staleness: Duration,
    max_entries: usize,
    epoch: AtomicU64,
    /// Reference point for `fresh_after_nanos`.
    base: Instant,
    /// Entries read before this point (nanoseconds after `base`) are never
    /// fresh: `expire_all` moves it to "now".
    fresh_after_nanos: AtomicU64,
}

impl<V> ConsentCache<V> {
    pub fn new(ttl: Duration, max_staleness: Duration, max_entries: usize) -> Self {
        ConsentCache {
            map: DashMap::new(),
            ttl,
            max_staleness: max_staleness.max(ttl),
            max_entries: max_entries.max(1),
            epoch: AtomicU64::new(0),
            base: Instant::now(),
            fresh_after_nanos: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The entry for `key` as of `now`.
    pub fn get(&self, key: &str, now: Instant) -> Cached<V> {
        let Some(e) = self.map.get(key) else {
            return Cached::Missing;
        };
        let age = now.saturating_duration_since(e.fetched);
        let revalidate = self.nanos(e.fetched) < self.fresh_after_nanos.load(Ordering::Acquire);
        if age < self.ttl && !revalidate {
            Cached::Fresh(e.value.clone())
        } else if age < self.max_staleness {
            Cached::Stale(e.value.clone())
        } else {
            Cached::Missing
        }
    }

    /// The invalidation epoch; read it before a database query and pass it
    /// to `insert` so that an answer older than an invalidation is dropped.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Stores an answer read at `fetched`, unless an invalidation happened
    /// since `epoch` was read. Evicts first when the cache is full.
    pub fn insert(&self, key: &str, value: Arc<V>, fetched: Instant, epoch: u64) -> bool {
        if self.epoch() != epoch {
            return false;
        }
        if self.map.len() >= self.max_entries && !self.map.contains_key(key) {
            self.evict(fetched);
        }
        self.map.insert(key.to_string(), Entry { value, fetched });
        // An invalidation that landed between the check and the insert must win.
        if self.epoch() != epoch {
            self.map.remove(key);
            return false;
        }
        true
    }

    /// Drops one key (a change was notified for it).
    pub fn invalidate(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.remove(key);
    }

    /// Makes every cached answer stale at `now`: each is read again from the
    /// database on its next use, but remains a fallback (within the staleness
    /// limit) if the database cannot answer. Used when notifications may have
    /// been missed, where dropping everything would turn a reconnect into a
    /// burst of misses with no fallback.
    pub fn expire_all(&self, now: Instant) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.fresh_after_nanos
            .fetch_max(self.nanos(now).saturating_add(1), Ordering::AcqRel);
    }

    /// Drops everything (the data itself went away, e.g. TRUNCATE).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Makes room: first drops entries past the staleness limit, then (if
    /// still at least 90% full) entries past the TTL, then arbitrary entries
    /// (DashMap's iteration order is effectively random) down to 90%.
    fn evict(&self, now: Instant) {
        let target = self.max_entries - self.max_entries / 10 - 1;
        let staleness = self.max_staleness;
        self.map
            .retain(|_, e| now.saturating_duration_since(e.fetched) < staleness);
        if self.map.len() > target {
            let ttl = self.ttl;
            self.map
                .retain(|_, e| now.saturating_duration_since(e.fetched) < ttl);
        }
        let excess = self.map.len().saturating_sub(target);
        if excess > 0 {
            let victims: Vec<String> = self
                .map
                .iter()
                .take(excess)
                .map(|e| e.key().clone())
                .collect();
            for k in victims {
                self.map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: usize) -> ConsentCache<u32> {
        ConsentCache::new(Duration::from_secs(10), Duration::from_secs(60), max)
    }

    #[test]
    fn fresh_then_stale_then_missing() {
        let c = cache(10);
        let t0 = Instant::now();
        assert_eq!(c.get("u1", t0), Cached::Missing);
        assert!(c.insert("u1", Arc::new(7), t0, c.epoch()));
        assert_eq!(
            c.get("u1", t0 + Duration::from_secs(9)),
            Cached::Fresh(Arc::new(7))
        );
        assert_eq!(
            c.get("u1", t0 + Duration::from_secs(10)),
            Cached::Stale(Arc::new(7))
        );
        assert_eq!(
            c.get("u1", t0 + Duration::from_secs(59)),
            Cached::Stale(Arc::new(7))
        );
        assert_eq!(c.get("u1", t0 + Duration::from_secs(60)), Cached::Missing);
    }

    #[test]
    fn negative_answers_are_cached_like_any_other() {
        // The backend stores the default record for an unknown user; the
        // cache must hand it back without a second database query.
        let c: ConsentCache<crate::consent::UserConsent> =
            ConsentCache::new(Duration::from_secs(10), Duration::from_secs(60), 10);
        let t0 = Instant::now();
        c.insert("nobody", Arc::new(Default::default()), t0, c.epoch());
        match c.get("nobody", t0 + Duration::from_secs(1)) {
            Cached::Fresh(v) => assert_eq!(*v, crate::consent::UserConsent::default()),
            other => panic!("expected a fresh negative entry, got {other:?}"),
        }
    }

    #[test]
    fn invalidation_removes_and_blocks_racing_inserts() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert("u1", Arc::new(1), t0, c.epoch());
        let before_query = c.epoch();
        c.invalidate("u1");
        assert_eq!(c.get("u1", t0), Cached::Missing);
        // The answer read before the invalidation must not come back.
        assert!(!c.insert("u1", Arc::new(1), t0, before_query));
        assert_eq!(c.get("u1", t0), Cached::Missing);
        assert!(c.insert("u1", Arc::new(2), t0, c.epoch()));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn expire_all_keeps_entries_only_as_a_fallback() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert("u1", Arc::new(1), t0, c.epoch());
        let before = c.epoch();
        let t1 = t0 + Duration::from_secs(1);
        c.expire_all(t1);
        assert_eq!(c.get("u1", t1), Cached::Stale(Arc::new(1)));
        assert_eq!(c.get("u1", t0 + Duration::from_secs(60)), Cached::Missing);
        // A read that started before the expiry is not stored as fresh.
        assert!(!c.insert("u2", Arc::new(2), t0, before));
        // A read after it is fresh again.
        let t2 = t1 + Duration::from_millis(1);
        assert!(c.insert("u1", Arc::new(3), t2, c.epoch()));
        assert_eq!(c.get("u1", t2), Cached::Fresh(Arc::new(3)));
    }

    #[test]
    fn size_is_bounded() {
        let c = cache(100);
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(&format!("u{i}"), Arc::new(i), t0, c.epoch());
            assert!(c.len() <= 100, "len {} after {i}", c.len());
        }
        // The newest entry always survives its own insert.
        assert_eq!(c.get("u999", t0), Cached::Fresh(Arc::new(999)));
    }

    #[test]
    fn eviction_prefers_old_entries() {
        let c = cache(10);
        let t0 = Instant::now();
        for i in 0..5 {
            c.insert(&format!("old{i}"), Arc::new(i), t0, c.epoch());
        }
        let later = t0 + Duration::from_secs(30);
        for i in 0..5 {
            c.insert(&format!("new{i}"), Arc::new(i), later, c.epoch());
        }
        c.insert("newest", Arc::new(99), later, c.epoch());
        for i in 0..5 {
            assert!(matches!(c.get(&format!("new{i}"), later), Cached::Fresh(_)));
        }
        assert!(c.len() <= 10);
    }
}
