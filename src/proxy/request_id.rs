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
    let mut id = String::with_capacity(33);
    push_hex(&mut id, prefix);
    id.push('-');
    push_hex(&mut id, n);
    id
}

/// Appends `v` as 16 lower-case hex digits (what `{:016x}` gives, without
/// the formatting machinery on every request).
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((v >> (shift * 4)) & 0xf) as usize]));
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
    fn hex_matches_the_format_macro() {
        for v in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut s = String::new();
            super::push_hex(&mut s, v);
            assert_eq!(s, format!("{v:016x}"));
        }
    }
}
