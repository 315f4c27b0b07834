//! Request ids: a random per-process prefix plus a counter, unique across
//! restarts and replicas without a syscall or lock per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PREFIX: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The next request id, e.g. `9f2c41d07ab3e815-000000000000002a`.
pub fn next() -> String {
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}-{n:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_share_a_prefix() {
        let (a, b) = (super::next(), super::next());
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16]);
        assert_eq!(a.len(), 33);
    }
}
