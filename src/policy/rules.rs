//! The rule table: every rule's number, name, reason code(s) and what it
//! checks, in one place. The check functions in `decide` name their rule by
//! its constant here, traces print `number name`, and the reason (hence the
//! HTTP status, see `Reason::status`) comes from the table. A rule's name is
//! its primary reason code, so one word finds the rule, its check, its
//! denial and its tests.
//!
//! Rules are checked in table order; the first failure decides. Rules 1-11,
//! 17 and 18 run before the store is contacted, 12-16 on its response head.

use super::reason::Reason;

/// When a rule is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the store is contacted (a denial never reaches it).
    Request,
    /// On the store's response head, before any content byte is sent.
    Response,
}

/// One rule of the policy.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's number in the reference (`1`..`16`, `17a`..`17e`, `18`).
    pub number: &'static str,
    /// The rule's name: its primary reason's code (a test holds them equal).
    pub name: &'static str,
    /// The reason a failure yields.
    pub reason: Reason,
    /// Further reasons the rule can yield (fail-closed variants).
    pub also: &'static [Reason],
    pub phase: Phase,
    /// What the rule checks, for the reference and `explain`.
    pub checks: &'static str,
}

impl Rule {
    /// The rule's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every reason the rule can yield.
    pub fn reasons(&self) -> impl Iterator<Item = Reason> + '_ {
        std::iter::once(self.reason).chain(self.also.iter().copied())
    }
}

macro_rules! rule {
    ($id:ident, $number:literal, $reason:ident, [$($also:ident),*], $phase:ident, $checks:literal) => {
        pub const $id: Rule = Rule {
            number: $number,
            name: Reason::$reason.code(),
            reason: Reason::$reason,
            also: &[$(Reason::$also),*],
            phase: Phase::$phase,
            checks: $checks,
        };
    };
}

rule!(
    METHOD,
    "1",
    MethodNotAllowed,
    [],
    Request,
    "only GET and HEAD are reads, and a read carries no method-override header"
);
rule!(CANONICAL_PATH, "2", NonCanonicalPath, [], Request,
    "the path is canonical (no dot or empty segment, no encoded / \\ . or control character) and its owner segment uses only the safe characters A-Z a-z 0-9 - . _ ~ @");
rule!(
    TOKEN_PRESENT,
    "3",
    MissingToken,
    [],
    Request,
    "one bearer token in the Authorization header"
);
rule!(TOKEN_VALID, "4", InvalidToken, [], Request,
    "the token verifies: signature with an allowed algorithm, iss, aud, exp, nbf, lifetime, identity claims usable as header values");
rule!(
    ROUTE,
    "5",
    NoRoute,
    [],
    Request,
    "the path matches a policy route"
);
rule!(
    PURPOSE,
    "6",
    UnknownPurpose,
    [ProhibitedPurpose],
    Request,
    "the purpose is defined by the policy; marketing, advertising and sale are named and refused"
);
rule!(
    ROLE,
    "7",
    RoleNotPermitted,
    [],
    Request,
    "one of the holder's roles permits the purpose"
);
rule!(
    TRAINING_CERTIFICATION,
    "8",
    TrainingCertificationRequired,
    [],
    Request,
    "training_cert_exp is present and in the future"
);
rule!(
    JUSTIFICATION,
    "9",
    MissingJustification,
    [],
    Request,
    "the purpose's justification claim is present and non-empty"
);
rule!(
    SUBJECT_SCOPE,
    "10",
    SubjectNotInScope,
    [],
    Request,
    "subject-scoped purposes: the path owner is in `subjects`"
);
rule!(
    ACCOUNT_DELETION,
    "11",
    AccountDeleted,
    [ConsentUnavailable],
    Request,
    "the owner has no deletion request (legal hold is exempt); the consent registry answered"
);
rule!(JUSTIFICATION_EXISTS, "17a", JustificationNotFound, [JustificationUnavailable], Request,
    "the justification exists in the system of record (which answered, or a recent enough answer is cached)");
rule!(
    JUSTIFICATION_OPEN,
    "17b",
    JustificationClosed,
    [],
    Request,
    "the justification's status is open"
);
rule!(
    JUSTIFICATION_ASSIGNED,
    "17c",
    JustificationNotAssigned,
    [],
    Request,
    "the token's sub is one of the justification's assignees"
);
rule!(
    JUSTIFICATION_SUBJECT,
    "17d",
    JustificationSubjectMismatch,
    [],
    Request,
    "the path owner is one of the justification's subjects"
);
rule!(
    SUPPORT_REQUESTED,
    "17e",
    SupportNotRequestedByUser,
    [],
    Request,
    "support: the path owner is the user who reached out (requested_by)"
);
rule!(
    BUDGET,
    "18",
    AccessBudgetExceeded,
    [BudgetUnavailable],
    Request,
    "the employee has budget left for the purpose in the window, over every replica"
);
rule!(
    OWNER_MATCH,
    "12",
    OwnerMismatch,
    [],
    Response,
    "x-content-owner, when present, is one value and equals the path owner"
);
rule!(
    DEIDENTIFIED,
    "13",
    NotDeidentified,
    [],
    Response,
    "training: x-content-deidentified is true"
);
rule!(
    OPTED_OUT,
    "14",
    OptedOut,
    [],
    Response,
    "training: x-content-created-at is outside the owner's opt-out periods"
);
rule!(
    API_CONTENT,
    "15",
    ApiContentNotShared,
    [ConsentUnavailable],
    Response,
    "training: API content only when created inside an opt-in period of its x-content-org"
);
rule!(METADATA, "16", MetadataMissing, [], Response,
    "training: the metadata rules 13-15 need (and x-content-owner) is present, one value each, and parses");

/// Every rule, in the order they are checked.
pub const RULES: [&Rule; 22] = [
    &METHOD,
    &CANONICAL_PATH,
    &TOKEN_PRESENT,
    &TOKEN_VALID,
    &ROUTE,
    &PURPOSE,
    &ROLE,
    &TRAINING_CERTIFICATION,
    &JUSTIFICATION,
    &SUBJECT_SCOPE,
    &ACCOUNT_DELETION,
    &JUSTIFICATION_EXISTS,
    &JUSTIFICATION_OPEN,
    &JUSTIFICATION_ASSIGNED,
    &JUSTIFICATION_SUBJECT,
    &SUPPORT_REQUESTED,
    &BUDGET,
    &OWNER_MATCH,
    &DEIDENTIFIED,
    &OPTED_OUT,
    &API_CONTENT,
    &METADATA,
];

/// Not a rule that can deny: the trace entry saying a non-2xx response
/// carries no content, so rules 12-16 do not apply.
pub const UPSTREAM_STATUS: Rule = Rule {
    number: "-",
    name: "upstream_status",
    reason: Reason::UpstreamUnavailable,
    also: &[],
    phase: Phase::Response,
    checks: "a non-2xx response carries no content metadata; rules 12-16 do not apply",
};

/// The reasons that do not come from a rule: the proxy's own failures.
pub const OUTSIDE_RULES: [Reason; 5] = [
    Reason::AuditUnavailable,
    Reason::UpstreamUnavailable,
    Reason::UpstreamTimeout,
    Reason::UriTooLong,
    Reason::ClientCancelled,
];

/// The rule that yields `reason`, if one does (`consent_unavailable` is
/// yielded by 11 and 15; the first is returned).
pub fn rule_of(reason: Reason) -> Option<&'static Rule> {
    RULES
        .iter()
        .copied()
        .find(|r| r.reasons().any(|x| x == reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_comes_from_a_rule_or_is_named_outside() {
        for r in Reason::ALL {
            let outside = OUTSIDE_RULES.contains(&r);
            assert!(
                rule_of(r).is_some() != outside || r == Reason::UpstreamUnavailable,
                "{r}: rule {:?}, outside {outside}",
                rule_of(r).map(|x| x.number)
            );
        }
    }

    #[test]
    fn numbers_and_names_are_unique() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for r in RULES {
            assert_eq!(r.name, r.reason.code(), "one name per rule");
            assert!(numbers.insert(r.number), "{}", r.number);
            assert!(names.insert(r.name()), "{}", r.name());
        }
        assert_eq!(OPTED_OUT.name(), "opted_out");
        assert_eq!(rule_of(Reason::OptedOut).map(|r| r.number), Some("14"));
        assert_eq!(
            rule_of(Reason::BudgetUnavailable).map(|r| r.number),
            Some("18")
        );
    }
}
