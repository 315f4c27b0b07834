//! Coalescing of concurrent cache misses for the same key: the first caller
//! asks the database, the others wait for its answer instead of each taking
//! a pooled connection (a hot user whose entry just expired, or a burst after
//! a listener reconnect, costs one query, not one per request).

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::OnceCell;

/// The answer of one database read, shared by everyone who waited for it.
type Shared<V> = Arc<OnceCell<Result<Arc<V>, String>>>;

/// In-flight reads by key.
pub struct Inflight<V> {
    map: DashMap<String, Shared<V>>,
}

impl<V> Default for Inflight<V> {
    fn default() -> Self {
        Inflight {
            map: DashMap::new(),
        }
    }
}

impl<V> Inflight<V> {
    /// Runs `fetch` unless a read of `key` is already in flight, in which
    /// case its answer is returned. If the caller running the read is
    /// cancelled, a waiting caller runs its own `fetch` instead.
    pub async fn run<Fut>(&self, key: &str, fetch: Fut) -> Result<Arc<V>, String>
    where
        Fut: Future<Output = Result<Arc<V>, String>>,
    {
        let cell: Shared<V> = self.map.entry(key.to_string()).or_default().clone();
        let result = cell.get_or_init(|| fetch).await.clone();
        // The next miss after this one must read again.
        self.map.remove_if(key, |_, c| Arc::ptr_eq(c, &cell));
        result
    }

    /// Reads in flight (for tests).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_misses_share_one_read() {
        let inflight: Inflight<u32> = Inflight::default();
        let reads = AtomicUsize::new(0);
        let lookups = (0..20).map(|_| {
            inflight.run("u1", async {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Arc::new(7))
            })
        });
        let results = futures_util::future::join_all(lookups).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| r.as_deref() == Ok(&7)));
        assert!(inflight.is_empty());
        // The next miss reads again.
        let again = inflight
            .run("u1", async {
                reads.fetch_add(1, Ordering::SeqCst);
                Err::<Arc<u32>, _>("down".to_string())
            })
            .await;
        assert_eq!(again, Err("down".to_string()));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let inflight: Inflight<u32> = Inflight::default();
        let reads = AtomicUsize::new(0);
        let lookups = (0..5u32).map(|i| {
            let key = format!("u{i}");
            let reads = &reads;
            let inflight = &inflight;
            async move {
                inflight
                    .run(&key, async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        Ok(Arc::new(i))
                    })
                    .await
            }
        });
        let results = futures_util::future::join_all(lookups).await;
        assert_eq!(reads.load(Ordering::SeqCst), 5);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.as_deref(), Ok(&(i as u32)));
        }
    }
}
