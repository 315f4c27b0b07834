//! Redis names of the budget counters. Employee and owner ids never appear in
//! Redis as written: each is hashed (HMAC-SHA-256 with `hash_key_file`, else
//! SHA-256, with a domain tag so the two kinds never collide) and truncated,
//! so names have a bounded size and nothing personal is readable there.
//!
//! A key is `<prefix>{<employee hash>}:<purpose>:<o|r>:<window_seconds>`.
//! The braces are a Redis Cluster hash tag: every key of one employee lives in
//! one hash slot, which the budget script (touching all limits of a purpose at
//! once) needs.

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};

use super::config::Limit;

/// Turns ids into Redis names.
pub(crate) struct Hasher {
    key: Option<hmac::Key>,
}

impl Hasher {
    /// `key`: the HMAC key (None: plain SHA-256).
    pub(crate) fn new(key: Option<&[u8]>) -> Hasher {
        Hasher {
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        }
    }

    fn digest(&self, domain: &[u8], id: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        match &self.key {
            Some(key) => {
                let mut ctx = hmac::Context::with_key(key);
                ctx.update(domain);
                ctx.update(id.as_bytes());
                out.copy_from_slice(ctx.sign().as_ref());
            }
            None => {
                let mut h = Sha256::new();
                h.update(domain);
                h.update(id.as_bytes());
                out.copy_from_slice(&h.finalize());
            }
        }
        out
    }

    /// The employee's hash tag: 128 bits as 32 hex digits (a collision would
    /// merge two employees' budgets, so this is kept wide).
    pub(crate) fn employee_tag(&self, sub: &str) -> String {
        hex::encode(&self.digest(b"purposegate/budget/employee\0", sub)[..16])
    }

    /// The owner's set member: 63 bits as a decimal integer, so that Redis
    /// stores small sets as compact integer sets (8 bytes a member). Members
    /// only meet within one employee's set of one window, where a collision
    /// (one owner read for free) is negligible at 63 bits.
    pub(crate) fn owner_member(&self, owner: &str) -> String {
        let d = self.digest(b"purposegate/budget/owner\0", owner);
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        (u64::from_be_bytes(first) >> 1).to_string()
    }
}

/// The key of one limit's counter for one employee.
pub(crate) fn key(prefix: &str, employee_tag: &str, limit: &Limit) -> String {
    format!(
        "{prefix}{{{employee_tag}}}:{}:{}:{}",
        limit.purpose,
        limit.kind.tag(),
        limit.window_seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::config::LimitKind;

    fn limit(kind: LimitKind) -> Limit {
        Limit {
            purpose: "support".into(),
            kind,
            max: 20,
            window_seconds: 86400,
            line: None,
        }
    }

    #[test]
    fn names_are_bounded_and_hide_the_ids() {
        let h = Hasher::new(None);
        let sub = "alice@corp.example";
        let tag = h.employee_tag(sub);
        assert_eq!(tag.len(), 32);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        let k = key("pg:", &tag, &limit(LimitKind::DistinctOwners));
        assert_eq!(k, format!("pg:{{{tag}}}:support:o:86400"));
        assert!(!k.contains("alice"));
        let member = h.owner_member("user-123");
        assert!(member.parse::<i64>().unwrap() >= 0, "{member}");
        // Deterministic across replicas, distinct across ids and kinds.
        assert_eq!(Hasher::new(None).employee_tag(sub), tag);
        assert_ne!(h.employee_tag("bob"), tag);
        assert_ne!(h.owner_member("user-124"), member);
        // The domain tag separates employee and owner hashes of one id.
        assert_ne!(
            h.digest(b"purposegate/budget/employee\0", "x"),
            h.digest(b"purposegate/budget/owner\0", "x")
        );
    }

    #[test]
    fn a_hash_key_changes_every_name() {
        let plain = Hasher::new(None);
        let keyed = Hasher::new(Some(b"secret"));
        assert_ne!(plain.employee_tag("alice"), keyed.employee_tag("alice"));
        assert_ne!(plain.owner_member("u1"), keyed.owner_member("u1"));
        assert_eq!(
            keyed.employee_tag("alice"),
            Hasher::new(Some(b"secret")).employee_tag("alice")
        );
    }

    #[test]
    fn the_hash_tag_is_the_first_braces() {
        let tag = Hasher::new(None).employee_tag("alice");
        let k = key("purposegate:budget:", &tag, &limit(LimitKind::Requests));
        let open = k.find('{').unwrap();
        let close = k.find('}').unwrap();
        assert_eq!(&k[open + 1..close], tag);
        assert!(k.ends_with(":support:r:86400"));
    }
}
