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
    let mut id = [b'-'; 33];
    // `hex` into a fixed buffer: no formatting machinery on every request.
    let halves = hex::encode_to_slice(prefix.to_be_bytes(), &mut id[..16])
        .and(hex::encode_to_slice(n.to_be_bytes(), &mut id[17..]));
    match (halves, std::str::from_utf8(&id)) {
        (Ok(()), Ok(text)) => text.to_owned(),
        // Unreachable (8 bytes are 16 hex digits, all ASCII); kept total.
        _ => format!("{prefix:016x}-{n:016x}"),
    }
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

    #[test]
    fn ids_are_the_prefix_and_counter_in_hex() {
        let id = super::next();
        let (prefix, n) = id.split_once('-').unwrap();
        assert_eq!((prefix.len(), n.len()), (16, 16));
        let n = u64::from_str_radix(n, 16).unwrap();
        // Other tests may take ids in between: later ids count up from here.
        let next = super::next();
        let (next_prefix, m) = next.split_once('-').unwrap();
        assert_eq!(next_prefix, prefix);
        assert!(u64::from_str_radix(m, 16).unwrap() > n);
    }
}
