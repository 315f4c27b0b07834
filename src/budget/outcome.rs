//! What a budget check found, and the pure functions built on it: `evaluate`
//! (the decision the Lua script makes, for `peek` and for `policy test` cases
//! that state usage inline), `rule18` (an outcome as allow / deny with the
//! docs/reference.md §11 reason codes and a trace detail) and `audit_facts` (the usage
//! and limits at decision time, for the audit record). No I/O here.

use std::time::Duration;

use serde::Serialize;

use super::config::{Limit, LimitKind};

/// One limit's state at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitUsage {
    pub kind: LimitKind,
    pub max: u64,
    pub window_seconds: u64,
    /// Owners or requests counted in the current window: after this request
    /// when it was charged and allowed, before it otherwise.
    pub used: u64,
    /// `distinct_owners`: the owner was already counted in this window before
    /// the request, so reading it cost nothing. Always false for `requests`.
    pub owner_counted: bool,
    /// Time until the current window ends (its count then starts at zero).
    pub resets_in: Duration,
    /// This limit refused the request.
    pub refused: bool,
}

/// Why Redis gave no answer; the check fails closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "Redis failed less than a second ago; not waiting for it (reconnecting in the background)"
    )]
    FailingFast,
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from the budget script: {0}")]
    Reply(String),
}

/// The result of `Budgets::charge` (or of `evaluate`).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every limit of the purpose had room (or the purpose has none); the
    /// request was counted. `usage` is in config order.
    Allowed { usage: Vec<LimitUsage> },
    /// A limit had no room; nothing was counted, on any limit.
    Exceeded {
        /// The first limit that refused.
        limit: LimitUsage,
        /// Every limit of the purpose, in config order.
        usage: Vec<LimitUsage>,
        /// Until every refusing limit's window ends, in whole seconds (at
        /// least 1): the `Retry-After` value.
        retry_after: Duration,
    },
    /// Redis did not answer: fail closed.
    Unavailable(Unavailable),
}

impl Outcome {
    /// The `result` label of `purposegate_budget_checks_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Outcome::Allowed { .. } => "allowed",
            Outcome::Exceeded { .. } => "exceeded",
            Outcome::Unavailable(_) => "unavailable",
        }
    }

    /// Every limit's state (empty when unavailable).
    pub fn usage(&self) -> &[LimitUsage] {
        match self {
            Outcome::Allowed { usage } | Outcome::Exceeded { usage, .. } => usage,
            Outcome::Unavailable(_) => &[],
        }
    }
}

/// What is counted for one limit before a request: the script's reading of
/// Redis, or what a `policy test` case states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub used: u64,
    /// `distinct_owners`: the request's owner is already in the window's set.
    pub owner_counted: bool,
    pub resets_in: Duration,
}

/// The decision the budget script makes, on what is counted before the
/// request (`counted[i]` belongs to `limits[i]`): all or nothing — allowed
/// (and counted on every limit) only when every limit has room, where an
/// owner already counted needs none. Missing entries count as zero.
pub fn evaluate(limits: &[&Limit], counted: &[Counted]) -> Outcome {
    let mut usage: Vec<LimitUsage> = limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let c = counted.get(i).copied().unwrap_or(Counted {
                used: 0,
                owner_counted: false,
                resets_in: Duration::from_secs(l.window_seconds),
            });
            let owner_counted = l.kind == LimitKind::DistinctOwners && c.owner_counted;
            LimitUsage {
                kind: l.kind,
                max: l.max,
                window_seconds: l.window_seconds,
                used: c.used,
                owner_counted,
                resets_in: c.resets_in,
                refused: !owner_counted && c.used >= l.max,
            }
        })
        .collect();
    if usage.iter().any(|u| u.refused) {
        return exceeded(usage);
    }
    for u in usage.iter_mut().filter(|u| !u.owner_counted) {
        u.used += 1;
    }
    Outcome::Allowed { usage }
}

/// An `Exceeded` outcome from usage where at least one limit refused.
pub(crate) fn exceeded(usage: Vec<LimitUsage>) -> Outcome {
    let refusing = usage.iter().filter(|u| u.refused);
    let longest = refusing.map(|u| u.resets_in).max().unwrap_or_default();
    let limit = usage
        .iter()
        .find(|u| u.refused)
        .cloned()
        .unwrap_or_else(|| usage[0].clone());
    Outcome::Exceeded {
        limit,
        usage,
        retry_after: Duration::from_secs(ceil_secs(longest).max(1)),
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Rule 18's verdict on an outcome. The reason codes are docs/reference.md §11's;
/// the caller maps them onto its `Reason` and rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetVerdict {
    Allow,
    /// 429 `access_budget_exceeded` with `Retry-After: <seconds>`.
    Exceeded {
        retry_after_secs: u64,
    },
    /// 503 `budget_unavailable`.
    Unavailable,
}

impl BudgetVerdict {
    /// The reason code of a denial (None when allowed).
    pub fn code(self) -> Option<&'static str> {
        match self {
            BudgetVerdict::Allow => None,
            BudgetVerdict::Exceeded { .. } => Some("access_budget_exceeded"),
            BudgetVerdict::Unavailable => Some("budget_unavailable"),
        }
    }

    /// The HTTP status of a denial (None when allowed).
    pub fn status(self) -> Option<u16> {
        match self {
            BudgetVerdict::Allow => None,
            BudgetVerdict::Exceeded { .. } => Some(429),
            BudgetVerdict::Unavailable => Some(503),
        }
    }

    /// The `Retry-After` seconds of a denial that has one.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            BudgetVerdict::Exceeded { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        }
    }
}

/// Rule 18's verdict on an outcome alone (no text built: the request path
/// calls this, and `rule18` only when a trace wants the detail).
pub fn verdict(outcome: &Outcome) -> BudgetVerdict {
    match outcome {
        Outcome::Allowed { .. } => BudgetVerdict::Allow,
        Outcome::Exceeded { retry_after, .. } => BudgetVerdict::Exceeded {
            retry_after_secs: retry_after.as_secs(),
        },
        Outcome::Unavailable(_) => BudgetVerdict::Unavailable,
    }
}

/// Rule 18 on an outcome: the verdict and a one-line detail for traces
/// (`explain`) and logs. The detail names limits and counts, never ids.
pub fn rule18(purpose: &str, outcome: &Outcome) -> (BudgetVerdict, String) {
    match outcome {
        Outcome::Allowed { usage } if usage.is_empty() => (
            BudgetVerdict::Allow,
            format!("no access budget for purpose {purpose}"),
        ),
        Outcome::Allowed { usage } => (
            BudgetVerdict::Allow,
            format!("{purpose}: {}", describe(usage)),
        ),
        Outcome::Exceeded {
            limit,
            usage,
            retry_after,
        } => (
            BudgetVerdict::Exceeded {
                retry_after_secs: retry_after.as_secs(),
            },
            format!(
                "{purpose}: {} budget of {} per {} s exhausted, frees in {} s ({})",
                limit.kind.as_str(),
                limit.max,
                limit.window_seconds,
                retry_after.as_secs(),
                describe(usage)
            ),
        ),
        Outcome::Unavailable(why) => (
            BudgetVerdict::Unavailable,
            format!("{purpose}: access budget unknown, failing closed: {why}"),
        ),
    }
}

/// Every limit's usage on one line (`explain` prints the current usage with it).
pub fn describe(usage: &[LimitUsage]) -> String {
    let parts: Vec<String> = usage
        .iter()
        .map(|u| {
            let note = if u.refused {
                ", refused"
            } else if u.owner_counted {
                ", owner already counted"
            } else {
                ""
            };
            format!(
                "{} {}/{} per {} s, window resets in {} s{note}",
                u.kind.as_str(),
                u.used,
                u.max,
                u.window_seconds,
                ceil_secs(u.resets_in)
            )
        })
        .collect();
    parts.join("; ")
}

/// One limit in the audit record (proposed field `budget`: an array of these,
/// in config order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetFact {
    /// `distinct_owners` or `requests`.
    pub limit: &'static str,
    /// Counted in the window at decision time (including this request when allowed).
    pub used: u64,
    pub max: u64,
    pub window_seconds: u64,
    /// `distinct_owners`: the owner was already counted (the read was free).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub owner_counted: bool,
    /// This limit refused the request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// The facts for the audit record: None when the purpose has no limits or
/// Redis did not answer (the reason code says which).
pub fn audit_facts(outcome: &Outcome) -> Option<Vec<BudgetFact>> {
    let usage = outcome.usage();
    (!usage.is_empty()).then(|| {
        usage
            .iter()
            .map(|u| BudgetFact {
                limit: u.kind.as_str(),
                used: u.used,
                max: u.max,
                window_seconds: u.window_seconds,
                owner_counted: u.owner_counted,
                refused: u.refused,
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(kind: LimitKind, max: u64, window_seconds: u64) -> Limit {
        Limit {
            purpose: "support".into(),
            kind,
            max,
            window_seconds,
            line: None,
        }
    }

    fn counted(used: u64, owner_counted: bool, resets_ms: u64) -> Counted {
        Counted {
            used,
            owner_counted,
            resets_in: Duration::from_millis(resets_ms),
        }
    }

    #[test]
    fn room_on_every_limit_counts_the_request() {
        let owners = limit(LimitKind::DistinctOwners, 3, 60);
        let reqs = limit(LimitKind::Requests, 10, 3600);
        let o = evaluate(
            &[&owners, &reqs],
            &[counted(2, false, 1000), counted(9, false, 5000)],
        );
        let Outcome::Allowed { usage } = &o else {
            panic!("{o:?}")
        };
        assert_eq!((usage[0].used, usage[1].used), (3, 10));
        assert_eq!(o.result_label(), "allowed");
        let (v, detail) = rule18("support", &o);
        assert_eq!(v, BudgetVerdict::Allow);
        assert_eq!(v.code(), None);
        assert!(
            detail.contains("distinct_owners 3/3 per 60 s") && detail.contains("requests 10/10"),
            "{detail}"
        );
    }

    #[test]
    fn a_counted_owner_is_free_even_at_the_limit() {
        let owners = limit(LimitKind::DistinctOwners, 3, 60);
        let o = evaluate(&[&owners], &[counted(3, true, 1000)]);
        let Outcome::Allowed { usage } = &o else {
            panic!("{o:?}")
        };
        assert_eq!(usage[0].used, 3);
        assert!(usage[0].owner_counted);
        assert!(rule18("support", &o).1.contains("owner already counted"));
        // For a request budget "owner counted" means nothing.
        let reqs = limit(LimitKind::Requests, 3, 60);
        let o = evaluate(&[&reqs], &[counted(3, true, 1000)]);
        assert_eq!(o.result_label(), "exceeded");
    }

    #[test]
    fn one_full_limit_refuses_all_with_the_longest_retry() {
        let owners = limit(LimitKind::DistinctOwners, 3, 60);
        let reqs = limit(LimitKind::Requests, 10, 3600);
        let o = evaluate(
            &[&owners, &reqs],
            &[counted(3, false, 1500), counted(10, false, 2_000_001)],
        );
        let Outcome::Exceeded {
            limit,
            usage,
            retry_after,
        } = &o
        else {
            panic!("{o:?}")
        };
        assert_eq!(limit.kind, LimitKind::DistinctOwners);
        assert_eq!(*retry_after, Duration::from_secs(2001));
        // Nothing counted: usage stays as read.
        assert_eq!((usage[0].used, usage[1].used), (3, 10));
        assert!(usage[0].refused && usage[1].refused);
        let (v, detail) = rule18("support", &o);
        assert_eq!(
            v,
            BudgetVerdict::Exceeded {
                retry_after_secs: 2001
            }
        );
        assert_eq!(v.code(), Some("access_budget_exceeded"));
        assert_eq!(v.status(), Some(429));
        assert_eq!(v.retry_after_secs(), Some(2001));
        assert!(
            detail.starts_with(
                "support: distinct_owners budget of 3 per 60 s exhausted, frees in 2001 s"
            ),
            "{detail}"
        );

        let facts = audit_facts(&o).unwrap();
        assert_eq!(
            serde_json::to_string(&facts).unwrap(),
            r#"[{"limit":"distinct_owners","used":3,"max":3,"window_seconds":60,"refused":true},{"limit":"requests","used":10,"max":10,"window_seconds":3600,"refused":true}]"#
        );
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let reqs = limit(LimitKind::Requests, 1, 1);
        let o = evaluate(&[&reqs], &[counted(1, false, 0)]);
        let Outcome::Exceeded { retry_after, .. } = o else {
            panic!()
        };
        assert_eq!(retry_after, Duration::from_secs(1));
    }

    #[test]
    fn unavailable_fails_closed_with_503() {
        let o = Outcome::Unavailable(Unavailable::Timeout(Duration::from_millis(50)));
        let (v, detail) = rule18("training", &o);
        assert_eq!(v, BudgetVerdict::Unavailable);
        assert_eq!(v.code(), Some("budget_unavailable"));
        assert_eq!(v.status(), Some(503));
        assert_eq!(v.retry_after_secs(), None);
        assert!(detail.contains("within 50 ms"), "{detail}");
        assert!(audit_facts(&o).is_none());
        assert_eq!(o.result_label(), "unavailable");
    }

    #[test]
    fn verdict_agrees_with_rule18() {
        let reqs = limit(LimitKind::Requests, 2, 60);
        let outcomes = [
            evaluate(&[&reqs], &[counted(1, false, 1000)]),
            evaluate(&[&reqs], &[counted(2, false, 2500)]),
            Outcome::Unavailable(Unavailable::FailingFast),
            evaluate(&[], &[]),
        ];
        let verdicts: Vec<BudgetVerdict> = outcomes.iter().map(verdict).collect();
        assert_eq!(
            verdicts[1],
            BudgetVerdict::Exceeded {
                retry_after_secs: 3
            }
        );
        for (o, v) in outcomes.iter().zip(verdicts) {
            assert_eq!(v, rule18("support", o).0, "{o:?}");
        }
    }

    #[test]
    fn no_limits_allow_without_facts() {
        let o = evaluate(&[], &[]);
        assert_eq!(rule18("legal", &o).0, BudgetVerdict::Allow);
        assert!(audit_facts(&o).is_none());
    }
}
