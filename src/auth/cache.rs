//! The verified-token cache: saves the signature check (tens of microseconds
//! for RSA) when the same token comes back, as it does for every request of a
//! session. Keyed by the SHA-256 of the token so the token itself is never
//! kept; an entry is served only inside the token's validity window, so the
//! cache can never extend a token's life. Only successes are cached: a
//! failure costs the attacker as much as it costs us.
//!
//! One cache belongs to one key set (see `verifier::KeyState`): a reload
//! brings an empty cache, and an in-flight verification against the old keys
//! can only insert into the old, discarded cache.

use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::Claims;

pub(crate) type TokenKey = [u8; 32];

pub(crate) fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    claims: Arc<Claims>,
    /// `[valid_from, valid_until)` as computed by `registered::window`.
    valid_from: i64,
    valid_until: i64,
}

impl Entry {
    fn usable(&self, now: i64) -> bool {
        self.valid_from <= now && now < self.valid_until
    }
}

pub(crate) struct TokenCache {
    map: DashMap<TokenKey, Entry>,
    max: usize,
}

impl TokenCache {
    pub(crate) fn new(max: usize) -> Self {
        TokenCache {
            map: DashMap::new(),
            max: max.max(1),
        }
    }

    /// The cached claims, if the token is cached and usable at `now`. An
    /// expired entry is dropped on the way.
    pub(crate) fn get(&self, key: &TokenKey, now: i64) -> Option<Arc<Claims>> {
        let (claims, usable) = {
            let entry = self.map.get(key)?;
            (Arc::clone(&entry.claims), entry.usable(now))
        }; // the shard lock is released here, before any removal
        if usable {
            return Some(claims);
        }
        self.map.remove_if(key, |_, e| now >= e.valid_until);
        None
    }

    /// Remembers a verified token for its window `(valid_from, valid_until)`.
    /// The bound is approximate under concurrency (each racing inserter may
    /// add one entry past it), which is fine for a memory bound.
    pub(crate) fn insert(&self, key: TokenKey, claims: Arc<Claims>, window: (i64, i64), now: i64) {
        if self.map.len() >= self.max {
            self.evict(now);
        }
        let (valid_from, valid_until) = window;
        self.map.insert(
            key,
            Entry {
                claims,
                valid_from,
                valid_until,
            },
        );
    }

    /// Makes room: first expired entries go; if the cache is still full, an
    /// arbitrary tenth of it (at least enough for one insert), which keeps
    /// eviction rare instead of running on every insert.
    fn evict(&self, now: i64) {
        self.map.retain(|_, e| now < e.valid_until);
        let len = self.map.len();
        if len < self.max {
            return;
        }
        let count = (self.max / 10).max(len + 1 - self.max);
        let victims: Vec<TokenKey> = self.map.iter().take(count).map(|e| *e.key()).collect();
        for key in victims {
            self.map.remove(&key);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims {
            sub: sub.into(),
            ..Claims::default()
        })
    }

    #[test]
    fn serves_only_inside_the_window() {
        let cache = TokenCache::new(10);
        let k = token_key("t");
        cache.insert(k, claims("a"), (100, 200), 150);
        assert!(cache.get(&k, 99).is_none(), "before nbf");
        assert_eq!(cache.len(), 1, "a not-yet-valid entry is kept");
        assert_eq!(cache.get(&k, 100).unwrap().sub, "a");
        assert!(cache.get(&k, 199).is_some());
        assert!(cache.get(&k, 200).is_none(), "at valid_until");
        assert_eq!(cache.len(), 0, "an expired entry is dropped");
    }

    #[test]
    fn bounded_preferring_expired_victims() {
        let cache = TokenCache::new(10);
        for i in 0..5 {
            cache.insert(token_key(&format!("old{i}")), claims("old"), (0, 100), 50);
        }
        for i in 0..5 {
            cache.insert(token_key(&format!("new{i}")), claims("new"), (0, 1000), 50);
        }
        assert_eq!(cache.len(), 10);
        cache.insert(token_key("x"), claims("x"), (0, 1000), 500);
        assert_eq!(cache.len(), 6, "the five expired entries went");
        for i in 0..5 {
            assert!(cache.get(&token_key(&format!("new{i}")), 500).is_some());
        }
        for i in 0..100 {
            cache.insert(token_key(&format!("more{i}")), claims("m"), (0, 1000), 500);
            assert!(cache.len() <= 10, "len {} after {i}", cache.len());
        }
    }

    #[test]
    fn bound_of_one() {
        let cache = TokenCache::new(0);
        cache.insert(token_key("a"), claims("a"), (0, 10), 1);
        cache.insert(token_key("b"), claims("b"), (0, 10), 1);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&token_key("b"), 1).is_some());
    }
}
