//! Rules 17a–e of CONTRACT §10 as pure functions over a looked-up answer: no
//! I/O, no clock. Checked in order; the first failure decides. Each check is
//! reported to a tracer closure whose detail text is built only when asked,
//! so a quiet check allocates nothing unless it denies.

use super::{Answer, Justification, Looked, Source, Status};

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

/// One check of the justification table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The lookup produced an answer (fails as `justification_unavailable`).
    Lookup,
    /// 17a: the justification exists.
    Exists,
    /// 17b: its status is open.
    Open,
    /// 17c: the token's `sub` is an assignee.
    Assigned,
    /// 17d: the path owner is a subject.
    Subject,
    /// 17e: support only: the path owner is `requested_by`.
    RequestedBy,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::Lookup,
        Rule::Exists,
        Rule::Open,
        Rule::Assigned,
        Rule::Subject,
        Rule::RequestedBy,
    ];

    /// The rule's label in CONTRACT §10 (`17` for the lookup itself).
    pub fn label(self) -> &'static str {
        match self {
            Rule::Lookup => "17",
            Rule::Exists => "17a",
            Rule::Open => "17b",
            Rule::Assigned => "17c",
            Rule::Subject => "17d",
            Rule::RequestedBy => "17e",
        }
    }

    /// A short name for traces.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Lookup => "justification_lookup",
            Rule::Exists => "justification_exists",
            Rule::Open => "justification_open",
            Rule::Assigned => "justification_assigned",
            Rule::Subject => "justification_subject",
            Rule::RequestedBy => "support_requested_by",
        }
    }

    /// The denial when this rule fails.
    pub fn denial(self) -> Denial {
        match self {
            Rule::Lookup => Denial::Unavailable,
            Rule::Exists => Denial::NotFound,
            Rule::Open => Denial::Closed,
            Rule::Assigned => Denial::NotAssigned,
            Rule::Subject => Denial::SubjectMismatch,
            Rule::RequestedBy => Denial::NotRequestedByUser,
        }
    }
}

/// Why the justification check refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    NotFound,
    Closed,
    NotAssigned,
    SubjectMismatch,
    NotRequestedByUser,
    Unavailable,
}

impl Denial {
    /// The reason code (CONTRACT §10; final names).
    pub fn code(self) -> &'static str {
        match self {
            Denial::NotFound => "justification_not_found",
            Denial::Closed => "justification_closed",
            Denial::NotAssigned => "justification_not_assigned",
            Denial::SubjectMismatch => "justification_subject_mismatch",
            Denial::NotRequestedByUser => "support_not_requested_by_user",
            Denial::Unavailable => "justification_unavailable",
        }
    }

    /// The HTTP status of the denial.
    pub fn status(self) -> u16 {
        match self {
            Denial::Unavailable => 503,
            _ => 403,
        }
    }

    /// The rule that fails with this denial.
    pub fn rule(self) -> Rule {
        match self {
            Denial::Unavailable => Rule::Lookup,
            Denial::NotFound => Rule::Exists,
            Denial::Closed => Rule::Open,
            Denial::NotAssigned => Rule::Assigned,
            Denial::SubjectMismatch => Rule::Subject,
            Denial::NotRequestedByUser => Rule::RequestedBy,
        }
    }
}

/// A denial and the facts behind it (for traces; never a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub denial: Denial,
    pub detail: String,
}

/// Receives every check made: rule, passed, detail (built on demand).
pub type Tracer<'t> = dyn FnMut(Rule, bool, &dyn Fn() -> String) + 't;

/// Checks rules 17a–e, without a trace.
pub fn check_quiet(looked: &Looked, facts: &Facts<'_>) -> Result<(), Denied> {
    check(looked, facts, &mut |_, _, _| {})
}

/// Checks the lookup and rules 17a–e in order, reporting each to `trace`;
/// the first failure is returned.
pub fn check(looked: &Looked, facts: &Facts<'_>, trace: &mut Tracer<'_>) -> Result<(), Denied> {
    let j = answered(looked, facts, trace)?;
    gate(trace, Rule::Open, j.status == Status::Open, &|| {
        let state = match j.status {
            Status::Open => "open",
            Status::Closed => "closed",
        };
        format!("{} {} is {state}", looked.kind, facts.id)
    })?;
    let assigned = j.assignees.iter().any(|a| a == facts.sub);
    gate(trace, Rule::Assigned, assigned, &|| {
        let verb = if assigned { "in" } else { "not in" };
        format!(
            "sub {} {verb} assignees [{}]",
            facts.sub,
            list(&j.assignees)
        )
    })?;
    let subject = j.subjects.iter().any(|s| s == facts.owner);
    gate(trace, Rule::Subject, subject, &|| {
        let verb = if subject { "in" } else { "not in" };
        format!(
            "owner {} {verb} subjects [{}]",
            facts.owner,
            list(&j.subjects)
        )
    })?;
    requested_by(j, facts, trace)
}

/// The lookup produced an answer (`Lookup`) and it names a justification (17a).
fn answered<'l>(
    looked: &'l Looked,
    facts: &Facts<'_>,
    trace: &mut Tracer<'_>,
) -> Result<&'l Justification, Denied> {
    let kind = looked.kind;
    let from = looked.source.map(Source::as_str).unwrap_or("nowhere");
    if let Answer::Unavailable(why) = &looked.answer {
        return Err(deny(trace, Rule::Lookup, &|| {
            format!("{kind} {}: no answer ({why})", facts.id)
        }));
    }
    trace(Rule::Lookup, true, &|| {
        format!("{kind} {}: answer {from}", facts.id)
    });
    match &looked.answer {
        Answer::Found(j) => {
            trace(Rule::Exists, true, &|| {
                format!("{kind} {} exists", facts.id)
            });
            Ok(j)
        }
        _ => Err(deny(trace, Rule::Exists, &|| {
            format!("the case service knows no {kind} {}", facts.id)
        })),
    }
}

/// 17e.
fn requested_by(
    j: &Justification,
    facts: &Facts<'_>,
    trace: &mut Tracer<'_>,
) -> Result<(), Denied> {
    if !facts.requested_by_required {
        trace(Rule::RequestedBy, true, &|| {
            "not a support read: no requested_by needed".to_string()
        });
        return Ok(());
    }
    let by = j.requested_by.as_deref();
    let ok = by == Some(facts.owner);
    gate(trace, Rule::RequestedBy, ok, &|| match by {
        None => format!("the ticket names no requested_by; owner {}", facts.owner),
        Some(u) if ok => format!("owner {} reached out (requested_by {u})", facts.owner),
        Some(u) => format!("owner {} did not reach out (requested_by {u})", facts.owner),
    })
}

/// Reports a check; on failure returns its denial with the detail.
fn gate(
    trace: &mut Tracer<'_>,
    rule: Rule,
    ok: bool,
    detail: &dyn Fn() -> String,
) -> Result<(), Denied> {
    if ok {
        trace(rule, true, detail);
        Ok(())
    } else {
        Err(deny(trace, rule, detail))
    }
}

/// Reports a failed check and builds its denial.
fn deny(trace: &mut Tracer<'_>, rule: Rule, detail: &dyn Fn() -> String) -> Denied {
    trace(rule, false, detail);
    Denied {
        denial: rule.denial(),
        detail: detail(),
    }
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
    use crate::justification::{Kind, LookupError, Unavailable};
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

    fn denial(looked: &Looked, f: &Facts<'_>) -> Option<Denial> {
        check_quiet(looked, f).err().map(|d| d.denial)
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
            Some(Denial::NotFound)
        );
        // 17b
        let closed = found(Status::Closed, Some("u1"));
        assert_eq!(
            denial(&closed, &facts("e-support", "u1", true)),
            Some(Denial::Closed)
        );
        // 17c
        assert_eq!(
            denial(&open, &facts("e-intruder", "u1", true)),
            Some(Denial::NotAssigned)
        );
        // 17d
        assert_eq!(
            denial(&open, &facts("e-support", "u3", true)),
            Some(Denial::SubjectMismatch)
        );
        // 17e: u2 is a subject but did not reach out; applies only to support.
        assert_eq!(
            denial(&open, &facts("e-support", "u2", true)),
            Some(Denial::NotRequestedByUser)
        );
        assert_eq!(denial(&open, &facts("e-support", "u2", false)), None);
        let nobody = found(Status::Open, None);
        assert_eq!(
            denial(&nobody, &facts("e-support", "u1", true)),
            Some(Denial::NotRequestedByUser)
        );
        // Unavailable.
        let down = Looked {
            kind: Kind::Matter,
            answer: Answer::Unavailable(Unavailable::Failed(LookupError::Timeout)),
            source: None,
        };
        let d = check_quiet(&down, &facts("e-support", "u1", false)).unwrap_err();
        assert_eq!(d.denial, Denial::Unavailable);
        assert_eq!(
            (d.denial.code(), d.denial.status()),
            ("justification_unavailable", 503)
        );
        assert!(d.detail.contains("timeout"), "{}", d.detail);
    }

    #[test]
    fn codes_statuses_and_rules_agree() {
        let codes: Vec<&str> = Rule::ALL.iter().map(|r| r.denial().code()).collect();
        assert_eq!(
            codes,
            [
                "justification_unavailable",
                "justification_not_found",
                "justification_closed",
                "justification_not_assigned",
                "justification_subject_mismatch",
                "support_not_requested_by_user",
            ]
        );
        for r in Rule::ALL {
            assert_eq!(r.denial().rule(), r);
            let want = if r == Rule::Lookup { 503 } else { 403 };
            assert_eq!(r.denial().status(), want);
        }
        let labels: Vec<&str> = Rule::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["17", "17a", "17b", "17c", "17d", "17e"]);
    }

    #[test]
    fn the_trace_shows_each_check_up_to_the_first_failure() {
        let mut seen = Vec::new();
        let open = found(Status::Open, Some("u1"));
        let r = check(
            &open,
            &facts("e-support", "u1", true),
            &mut |rule, ok, d| seen.push((rule, ok, d())),
        );
        assert!(r.is_ok());
        let rules: Vec<Rule> = seen.iter().map(|s| s.0).collect();
        assert_eq!(rules, Rule::ALL);
        assert!(seen.iter().all(|s| s.1));
        assert_eq!(seen[0].2, "ticket T-1: answer fresh");
        assert_eq!(seen[3].2, "sub e-support in assignees [e-support, e-other]");

        seen.clear();
        let r = check(
            &open,
            &facts("e-intruder", "u1", true),
            &mut |rule, ok, d| seen.push((rule, ok, d())),
        );
        let d = r.unwrap_err();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3].0, Rule::Assigned);
        assert!(!seen[3].1);
        assert_eq!(d.detail, seen[3].2);
        assert!(d.detail.contains("not in assignees"), "{}", d.detail);
    }

    #[test]
    fn long_lists_are_cut_in_details() {
        let many: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
        assert_eq!(list(&many), "e0, e1, e2, e3, e4, … (20 in all)");
        assert!(requires_requested_by("support"));
        assert!(!requires_requested_by("abuse"));
    }
}
