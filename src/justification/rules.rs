//! Rules 17a–e of docs/reference.md §10 as pure functions over a looked-up answer: no
//! I/O, no clock. The rules themselves — number, name, reason — are the
//! policy's rule table (`policy::rules::JUSTIFICATION_EXISTS` …
//! `SUPPORT_REQUESTED`); this file only says how each is checked. Checked in
//! order; the first failure decides. Each check is reported to a `Trace`
//! whose detail text is built only when asked, so with `NoTrace` a check
//! allocates nothing.
//!
//! A lookup that produced no answer fails rule 17a with the table's
//! fail-closed reason `justification_unavailable` (503).

use super::{Answer, Justification, Looked, Status};
use crate::policy::decide::gate;
use crate::policy::rules::{
    JUSTIFICATION_ASSIGNED, JUSTIFICATION_EXISTS, JUSTIFICATION_OPEN, JUSTIFICATION_SUBJECT,
    SUPPORT_REQUESTED,
};
use crate::policy::{NoTrace, Reason, Trace};

/// The request facts the rules compare against the justification.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The justification's id (the claim's value).
    pub id: &'a str,
    /// The token's `sub`.
    pub sub: &'a str,
    /// The owner of the content the path names.
    pub owner: &'a str,
    /// Whether rule 17e applies (see `requires_requested_by`).
    pub requested_by_required: bool,
}

/// Whether rule 17e (the user reached out) applies to a purpose: support.
pub fn requires_requested_by(purpose: &str) -> bool {
    purpose == "support"
}

/// Checks rules 17a–e, without a trace.
pub fn check_quiet(looked: &Looked, facts: &Facts<'_>) -> Result<(), Reason> {
    check(looked, facts, &mut NoTrace)
}

/// Checks rules 17a–e in order, reporting each to `trace`; the first
/// failure's reason is returned.
pub fn check(looked: &Looked, facts: &Facts<'_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    let j = answered(looked, facts, trace)?;
    gate(
        trace,
        &JUSTIFICATION_OPEN,
        j.status == Status::Open,
        &|| {
            let state = match j.status {
                Status::Open => "open",
                Status::Closed => "closed",
            };
            format!("{} {} is {state}", looked.kind, facts.id)
        },
    )?;
    let assigned = j.assignees.iter().any(|a| a == facts.sub);
    gate(trace, &JUSTIFICATION_ASSIGNED, assigned, &|| {
        let verb = if assigned { "in" } else { "not in" };
        format!(
            "sub {} {verb} assignees [{}]",
            facts.sub,
            list(&j.assignees)
        )
    })?;
    let subject = j.subjects.iter().any(|s| s == facts.owner);
    gate(trace, &JUSTIFICATION_SUBJECT, subject, &|| {
        let verb = if subject { "in" } else { "not in" };
        format!(
            "owner {} {verb} subjects [{}]",
            facts.owner,
            list(&j.subjects)
        )
    })?;
    requested_by(j, facts, trace)
}

/// 17a: the lookup produced an answer and it names a justification.
fn answered<'l>(
    looked: &'l Looked,
    facts: &Facts<'_>,
    trace: &mut dyn Trace,
) -> Result<&'l Justification, Reason> {
    let kind = looked.kind;
    let from = looked.source.map(|s| s.as_str()).unwrap_or("nowhere");
    match &looked.answer {
        Answer::Found(j) => {
            trace.check(&JUSTIFICATION_EXISTS, true, &|| {
                format!("{kind} {} exists (answer {from})", facts.id)
            });
            Ok(j)
        }
        Answer::NotFound => Err(fail(trace, Reason::JustificationNotFound, &|| {
            format!(
                "the case service knows no {kind} {} (answer {from})",
                facts.id
            )
        })),
        Answer::Unavailable(why) => Err(fail(trace, Reason::JustificationUnavailable, &|| {
            format!(
                "{kind} {}: no answer ({why}) and none recent enough cached",
                facts.id
            )
        })),
    }
}

/// Reports rule 17a failing with `reason` (its primary reason or its
/// fail-closed variant) and returns it.
fn fail(trace: &mut dyn Trace, reason: Reason, detail: &dyn Fn() -> String) -> Reason {
    trace.check(&JUSTIFICATION_EXISTS, false, detail);
    reason
}

/// 17e.
fn requested_by(j: &Justification, facts: &Facts<'_>, trace: &mut dyn Trace) -> Result<(), Reason> {
    if !facts.requested_by_required {
        trace.check(&SUPPORT_REQUESTED, true, &|| {
            "not a support read: no requested_by needed".to_string()
        });
        return Ok(());
    }
    let by = j.requested_by.as_deref();
    let ok = by == Some(facts.owner);
    gate(trace, &SUPPORT_REQUESTED, ok, &|| match by {
        None => format!("the ticket names no requested_by; owner {}", facts.owner),
        Some(u) if ok => format!("owner {} reached out (requested_by {u})", facts.owner),
        Some(u) => format!("owner {} did not reach out (requested_by {u})", facts.owner),
    })
}

/// A list for a detail line, cut after a few entries.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out = items
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(", … ({} in all)", items.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::justification::{Kind, LookupError, Source, Unavailable};
    use crate::policy::{rules, Check};
    use std::sync::Arc;

    fn found(status: Status, requested_by: Option<&str>) -> Looked {
        Looked {
            kind: Kind::Ticket,
            answer: Answer::Found(Arc::new(Justification {
                status,
                assignees: vec!["e-support".into(), "e-other".into()],
                subjects: vec!["u1".into(), "u2".into()],
                requested_by: requested_by.map(str::to_string),
            })),
            source: Some(Source::Fresh),
        }
    }

    fn facts(sub: &'static str, owner: &'static str, support: bool) -> Facts<'static> {
        Facts {
            id: "T-1",
            sub,
            owner,
            requested_by_required: support,
        }
    }

    fn denial(looked: &Looked, f: &Facts<'_>) -> Option<Reason> {
        check_quiet(looked, f).err()
    }

    #[test]
    fn every_rule_allows_and_denies() {
        let open = found(Status::Open, Some("u1"));
        // All pass.
        assert_eq!(denial(&open, &facts("e-support", "u1", true)), None);
        assert_eq!(denial(&open, &facts("e-other", "u2", false)), None);
        // 17a
        let missing = Looked {
            kind: Kind::Case,
            answer: Answer::NotFound,
            source: Some(Source::Cached),
        };
        assert_eq!(
            denial(&missing, &facts("e-support", "u1", false)),
            Some(Reason::JustificationNotFound)
        );
        // 17b
        let closed = found(Status::Closed, Some("u1"));
        assert_eq!(
            denial(&closed, &facts("e-support", "u1", true)),
            Some(Reason::JustificationClosed)
        );
        // 17c
        assert_eq!(
            denial(&open, &facts("e-intruder", "u1", true)),
            Some(Reason::JustificationNotAssigned)
        );
        // 17d
        assert_eq!(
            denial(&open, &facts("e-support", "u3", true)),
            Some(Reason::JustificationSubjectMismatch)
        );
        // 17e: u2 is a subject but did not reach out; applies only to support.
        assert_eq!(
            denial(&open, &facts("e-support", "u2", true)),
            Some(Reason::SupportNotRequestedByUser)
        );
        assert_eq!(denial(&open, &facts("e-support", "u2", false)), None);
        let nobody = found(Status::Open, None);
        assert_eq!(
            denial(&nobody, &facts("e-support", "u1", true)),
            Some(Reason::SupportNotRequestedByUser)
        );
    }

    #[test]
    fn no_answer_fails_17a_closed_with_503() {
        let down = Looked {
            kind: Kind::Matter,
            answer: Answer::Unavailable(Unavailable::Failed(LookupError::Timeout)),
            source: None,
        };
        let mut trace: Vec<Check> = Vec::new();
        let r = check(&down, &facts("e-support", "u1", false), &mut trace);
        assert_eq!(r, Err(Reason::JustificationUnavailable));
        assert_eq!(Reason::JustificationUnavailable.status(), 503);
        assert_eq!(trace.len(), 1);
        assert_eq!((trace[0].rule, trace[0].passed), ("17a", false));
        assert!(trace[0].detail.contains("timeout"), "{}", trace[0].detail);
    }

    #[test]
    fn each_check_is_the_table_rule_of_its_reason() {
        // A denial's reason is the primary reason of the rule the trace
        // shows failing (or a listed fail-closed variant of it).
        let open = found(Status::Open, Some("u1"));
        let closed = found(Status::Closed, Some("u1"));
        let cases = [
            (&closed, facts("e-support", "u1", true)),
            (&open, facts("e-intruder", "u1", true)),
            (&open, facts("e-support", "u3", true)),
            (&open, facts("e-support", "u2", true)),
        ];
        for (looked, f) in cases {
            let mut trace: Vec<Check> = Vec::new();
            let reason = check(looked, &f, &mut trace).unwrap_err();
            let last = trace.last().unwrap();
            assert!(!last.passed);
            let rule = rules::rule_of(reason).unwrap();
            assert_eq!((last.rule, last.name), (rule.number, rule.name()));
        }
    }

    #[test]
    fn the_trace_shows_each_check_up_to_the_first_failure() {
        let open = found(Status::Open, Some("u1"));
        let mut seen: Vec<Check> = Vec::new();
        assert!(check(&open, &facts("e-support", "u1", true), &mut seen).is_ok());
        let numbers: Vec<&str> = seen.iter().map(|c| c.rule).collect();
        assert_eq!(numbers, ["17a", "17b", "17c", "17d", "17e"]);
        assert!(seen.iter().all(|c| c.passed));
        assert_eq!(seen[0].detail, "ticket T-1 exists (answer fresh)");
        assert_eq!(
            seen[2].detail,
            "sub e-support in assignees [e-support, e-other]"
        );

        seen.clear();
        let r = check(&open, &facts("e-intruder", "u1", true), &mut seen);
        assert_eq!(r, Err(Reason::JustificationNotAssigned));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].name, "justification_not_assigned");
        assert!(!seen[2].passed);
        assert!(
            seen[2].detail.contains("not in assignees"),
            "{}",
            seen[2].detail
        );
    }

    #[test]
    fn long_lists_are_cut_in_details() {
        let many: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
        assert_eq!(list(&many), "e0, e1, e2, e3, e4, … (20 in all)");
        assert!(requires_requested_by("support"));
        assert!(!requires_requested_by("abuse"));
    }
}
