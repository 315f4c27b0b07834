//! The two Lua scripts (one round trip each, run atomically by Redis) and the
//! parsing of their replies.
//!
//! Windows are fixed and aligned to the Unix epoch in Redis's own clock
//! (`TIME`, so every replica shares one): a window of W seconds runs from a
//! multiple of W to the next. A limit's counter is one key (a set of owner
//! hashes, or an integer) that expires one millisecond before its window
//! ends, so the next window starts from nothing; a key whose expiry does not
//! belong to the current window (or that has none) is treated as empty.
//!
//! Arguments: `KEYS[i]` is limit i's key; `ARGV[1]` the owner's member;
//! `ARGV[3i-1]`, `ARGV[3i]`, `ARGV[3i+1]` limit i's kind (`o` / `r`), max and
//! window seconds. Both scripts reply with integers: `charge` with
//! `allowed (1|0)` then per limit `used, owner_counted, ms_until_reset`;
//! `peek` with the per-limit triples only (nothing written).

use std::time::Duration;

use super::config::{Limit, LimitKind};
use super::outcome::{evaluate, exceeded, Counted, LimitUsage, Outcome, Unavailable};

/// Reads every limit's state: `used`, `counted`, `reset`, `fresh` (the key
/// is absent or stale, so a write must create it and set its expiry).
macro_rules! read_state {
    () => {
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = ARGV[1]
local n = #KEYS
local used, counted, reset, fresh, stale = {}, {}, {}, {}, {}
for i = 1, n do
  local kind = ARGV[3 * i - 1]
  local win = tonumber(ARGV[3 * i + 1]) * 1000
  reset[i] = win - (now % win)
  local ttl = redis.call('PTTL', KEYS[i])
  -- A current key expires at the window's end less 1 ms; one expiring half a
  -- window or more before that is from an earlier window, one without expiry
  -- is not ours to trust.
  stale[i] = ttl == -1 or (ttl >= 0 and ttl < reset[i] - 1 - win / 2)
  fresh[i] = ttl == -2 or stale[i]
  if fresh[i] then
    used[i] = 0
    counted[i] = 0
  elseif kind == 'o' then
    used[i] = redis.call('SCARD', KEYS[i])
    counted[i] = redis.call('SISMEMBER', KEYS[i], owner)
  else
    used[i] = tonumber(redis.call('GET', KEYS[i])) or 0
    counted[i] = 0
  end
end
"#
    };
}

/// Charges a request on every limit of its purpose, or on none.
pub(crate) const CHARGE: &str = concat!(
    read_state!(),
    r#"
local allowed = 1
for i = 1, n do
  if counted[i] == 0 and used[i] >= tonumber(ARGV[3 * i]) then allowed = 0 end
end
if allowed == 1 then
  for i = 1, n do
    if counted[i] == 0 then
      if stale[i] then redis.call('DEL', KEYS[i]) end
      if ARGV[3 * i - 1] == 'o' then
        redis.call('SADD', KEYS[i], owner)
        used[i] = used[i] + 1
      else
        used[i] = redis.call('INCR', KEYS[i])
      end
      if fresh[i] then redis.call('PEXPIREAT', KEYS[i], now + reset[i] - 1) end
    end
  end
end
local out = {allowed}
for i = 1, n do
  out[#out + 1] = used[i]
  out[#out + 1] = counted[i]
  out[#out + 1] = reset[i]
end
return out
"#
);

/// Reads every limit of a purpose without writing.
pub(crate) const PEEK: &str = concat!(
    read_state!(),
    r#"
local out = {}
for i = 1, n do
  out[#out + 1] = used[i]
  out[#out + 1] = counted[i]
  out[#out + 1] = reset[i]
end
return out
"#
);

/// Adds the arguments of one check to an invocation.
pub(crate) fn add_args(
    inv: &mut redis::ScriptInvocation<'_>,
    keys: &[String],
    owner_member: &str,
    limits: &[&Limit],
) {
    for k in keys {
        inv.key(k);
    }
    inv.arg(owner_member);
    for l in limits {
        inv.arg(l.kind.tag()).arg(l.max).arg(l.window_seconds);
    }
}

/// The per-limit triples of a reply.
fn triples(limits: &[&Limit], reply: &[i64]) -> Result<Vec<Counted>, Unavailable> {
    if reply.len() != limits.len() * 3 {
        return Err(Unavailable::Reply(format!(
            "{} integers for {} limits",
            reply.len(),
            limits.len()
        )));
    }
    let counted = reply
        .chunks_exact(3)
        .map(|c| Counted {
            used: u64::try_from(c[0]).unwrap_or(0),
            owner_counted: c[1] == 1,
            resets_in: Duration::from_millis(u64::try_from(c[2]).unwrap_or(0)),
        })
        .collect();
    Ok(counted)
}

/// The outcome of a `CHARGE` reply. `used` is taken as Redis reports it
/// (after the request when allowed).
pub(crate) fn charge_outcome(limits: &[&Limit], reply: &[i64]) -> Outcome {
    let Some((&allowed, rest)) = reply.split_first() else {
        return Outcome::Unavailable(Unavailable::Reply("empty reply".into()));
    };
    let counted = match triples(limits, rest) {
        Ok(c) => c,
        Err(e) => return Outcome::Unavailable(e),
    };
    let usage: Vec<LimitUsage> = limits
        .iter()
        .zip(&counted)
        .map(|(l, c)| {
            let owner_counted = l.kind == LimitKind::DistinctOwners && c.owner_counted;
            LimitUsage {
                kind: l.kind,
                max: l.max,
                window_seconds: l.window_seconds,
                used: c.used,
                owner_counted,
                resets_in: c.resets_in,
                refused: allowed == 0 && !owner_counted && c.used >= l.max,
            }
        })
        .collect();
    match allowed {
        1 => Outcome::Allowed { usage },
        0 if usage.iter().any(|u| u.refused) => exceeded(usage),
        _ => Outcome::Unavailable(Unavailable::Reply(format!(
            "allowed flag {allowed} with the usage it reports"
        ))),
    }
}

/// What `peek` found: the usage now, and what a charge would return.
#[derive(Debug, Clone)]
pub struct Peek {
    /// Every limit of the purpose as counted now (nothing consumed).
    pub current: Vec<LimitUsage>,
    /// What charging this request now would give (`Allowed` usage includes it).
    pub if_charged: Outcome,
}

/// The `Peek` of a `PEEK` reply.
pub(crate) fn peek_outcome(limits: &[&Limit], reply: &[i64]) -> Result<Peek, Unavailable> {
    let counted = triples(limits, reply)?;
    let if_charged = evaluate(limits, &counted);
    let current = if_charged
        .usage()
        .iter()
        .zip(&counted)
        .map(|(u, c)| LimitUsage {
            used: c.used,
            ..u.clone()
        })
        .collect();
    Ok(Peek {
        current,
        if_charged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(kind: LimitKind, max: u64) -> Limit {
        Limit {
            purpose: "p".into(),
            kind,
            max,
            window_seconds: 60,
            line: None,
        }
    }

    #[test]
    fn charge_replies_parse() {
        let o = limit(LimitKind::DistinctOwners, 2);
        let r = limit(LimitKind::Requests, 5);
        let ls = [&o, &r];
        let allowed = charge_outcome(&ls, &[1, 2, 0, 1000, 3, 0, 1000]);
        assert_eq!(allowed.result_label(), "allowed");
        assert_eq!(allowed.usage()[1].used, 3);

        let refused = charge_outcome(&ls, &[0, 2, 0, 1500, 3, 0, 1000]);
        let Outcome::Exceeded {
            limit, retry_after, ..
        } = &refused
        else {
            panic!("{refused:?}")
        };
        assert_eq!(limit.kind, LimitKind::DistinctOwners);
        assert_eq!(retry_after.as_secs(), 2);
        assert!(!refused.usage()[1].refused);

        for bad in [
            &[][..],
            &[1, 2, 0][..],
            &[0, 1, 0, 5, 1, 0, 5][..],
            &[7, 0, 0, 1, 0, 0, 1][..],
        ] {
            assert_eq!(
                charge_outcome(&ls, bad).result_label(),
                "unavailable",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn peek_replies_show_current_usage_and_the_would_be_outcome() {
        let o = limit(LimitKind::DistinctOwners, 2);
        let p = peek_outcome(&[&o], &[1, 0, 800]).unwrap();
        assert_eq!(p.current[0].used, 1);
        assert_eq!(p.if_charged.usage()[0].used, 2);
        let p = peek_outcome(&[&o], &[2, 1, 800]).unwrap();
        assert_eq!(p.if_charged.result_label(), "allowed");
        let p = peek_outcome(&[&o], &[2, 0, 800]).unwrap();
        assert_eq!(p.if_charged.result_label(), "exceeded");
        assert_eq!(p.current[0].used, 2);
        assert!(peek_outcome(&[&o], &[2, 0]).is_err());
    }
}
