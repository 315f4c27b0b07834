//! Table-driven unit tests of `decide`: every reason code of rules 1-16 can be
//! produced, every purpose has an allowed read, and the consent boundaries
//! (opt-out going forward, closed periods, legal hold, API opt-in windows)
//! fall where docs/reference.md §5-6 put them.

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, Method};

use super::decide::*;
use super::load::load_dir;
use super::model::Policy;
use super::reason::Reason;
use crate::auth::Claims;
use crate::consent::{OrgConsent, Period, UserConsent};
use crate::time::{parse_rfc3339, Millis};

fn t(s: &str) -> Millis {
    parse_rfc3339(s).unwrap()
}

fn now() -> Millis {
    t("2026-11-29T12:00:00Z")
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let consent = dir.join("consent.yaml");
        load_dir(&dir, &[consent.as_path()]).unwrap()
    })
}

fn claims(role: &str, purpose: &str, justification: Option<(&str, &str)>) -> Claims {
    let mut c = Claims {
        sub: "e1".into(),
        roles: vec![role.into()],
        purpose: Some(purpose.into()),
        subjects: vec!["u1".into(), "u7".into()],
        training_cert_exp: Some(t("2027-01-01T00:00:00Z") / 1000),
        ..Claims::default()
    };
    if let Some((k, v)) = justification {
        c.strings.insert(k.into(), v.into());
    }
    c
}

fn support() -> Claims {
    claims("support", "support", Some(("ticket_id", "T-1")))
}

fn training() -> Claims {
    claims("research", "training", None)
}

#[derive(Clone)]
enum Tok {
    Missing,
    Invalid,
    Valid(Box<Claims>),
}

#[derive(Clone)]
struct Pre {
    method: Method,
    path: &'static str,
    method_override: bool,
    tok: Tok,
    /// None: the registry is unavailable.
    user: Option<UserConsent>,
}

fn pre(c: Claims) -> Pre {
    Pre {
        method: Method::GET,
        path: "/v1/users/u1/conversations/c1",
        method_override: false,
        tok: Tok::Valid(Box::new(c)),
        user: Some(UserConsent::default()),
    }
}

fn with(f: impl FnOnce(&mut Claims)) -> Pre {
    let mut c = support();
    f(&mut c);
    pre(c)
}

fn deleted() -> Option<UserConsent> {
    Some(UserConsent {
        deletion_requested_at: Some(t("2026-10-01T00:00:00Z")),
        ..UserConsent::default()
    })
}

fn run_pre(p: &Pre) -> (Outcome, Vec<Check>) {
    let facts = RequestFacts::new(policy(), &p.method, p.path, p.method_override);
    let auth = match &p.tok {
        Tok::Missing => AuthState::Missing,
        Tok::Invalid => AuthState::Invalid("bad signature"),
        Tok::Valid(c) => AuthState::Valid(c),
    };
    let lookup = p.user.as_ref().map_or(Lookup::Unavailable, Lookup::Known);
    let mut trace = Vec::new();
    let out = outcome(decide_pre(policy(), &facts, auth, lookup, now(), &mut trace).map(|_| ()));
    (out, trace)
}

#[test]
fn pre_rules_table() {
    use Reason::*;
    let deny = Outcome::Deny;
    let table: Vec<(&str, Pre, Outcome)> = vec![
        ("support allowed", pre(support()), Outcome::Allow),
        (
            "abuse allowed",
            pre(claims("trust-safety", "abuse", Some(("case_id", "C-1")))),
            Outcome::Allow,
        ),
        (
            "abuse via security",
            pre(claims("security", "abuse", Some(("case_id", "C-1")))),
            Outcome::Allow,
        ),
        (
            "legal allowed",
            pre(claims("legal", "legal", Some(("matter_id", "M-1")))),
            Outcome::Allow,
        ),
        ("training allowed", pre(training()), Outcome::Allow),
        (
            "contractor training",
            pre(claims("annotation-contractor", "training", None)),
            Outcome::Allow,
        ),
        (
            "HEAD",
            Pre {
                method: Method::HEAD,
                ..pre(support())
            },
            Outcome::Allow,
        ),
        (
            "POST",
            Pre {
                method: Method::POST,
                ..pre(support())
            },
            deny(MethodNotAllowed),
        ),
        (
            "override",
            Pre {
                method_override: true,
                ..pre(support())
            },
            deny(MethodNotAllowed),
        ),
        (
            "dot dot",
            Pre {
                path: "/v1/users/u7/../u1/files",
                ..pre(support())
            },
            deny(NonCanonicalPath),
        ),
        (
            "missing token",
            Pre {
                tok: Tok::Missing,
                ..pre(support())
            },
            deny(MissingToken),
        ),
        (
            "invalid token",
            Pre {
                tok: Tok::Invalid,
                ..pre(support())
            },
            deny(InvalidToken),
        ),
        (
            "no route",
            Pre {
                path: "/v1/orgs/o1/files",
                ..pre(support())
            },
            deny(NoRoute),
        ),
        (
            "unknown purpose",
            with(|c| c.purpose = Some("fun".into())),
            deny(UnknownPurpose),
        ),
        (
            "no purpose",
            with(|c| c.purpose = None),
            deny(UnknownPurpose),
        ),
        (
            "prohibited",
            with(|c| c.purpose = Some("marketing".into())),
            deny(ProhibitedPurpose),
        ),
        (
            "role",
            with(|c| c.roles = vec!["research".into()]),
            deny(RoleNotPermitted),
        ),
        (
            "second role permits",
            with(|c| c.roles.insert(0, "research".into())),
            Outcome::Allow,
        ),
        (
            "no cert",
            with(|c| c.training_cert_exp = None),
            deny(TrainingCertificationRequired),
        ),
        (
            "cert expires now",
            with(|c| c.training_cert_exp = Some(now() / 1000)),
            deny(TrainingCertificationRequired),
        ),
        (
            "cert one second left",
            with(|c| c.training_cert_exp = Some(now() / 1000 + 1)),
            Outcome::Allow,
        ),
        (
            "no ticket",
            with(|c| c.strings.clear()),
            deny(MissingJustification),
        ),
        (
            "blank ticket",
            with(|c| {
                c.strings.insert("ticket_id".into(), " ".into());
            }),
            deny(MissingJustification),
        ),
        (
            "out of scope",
            with(|c| c.subjects = vec!["u7".into()]),
            deny(SubjectNotInScope),
        ),
        (
            "training not scoped",
            pre(Claims {
                subjects: vec![],
                ..training()
            }),
            Outcome::Allow,
        ),
        (
            "deleted",
            Pre {
                user: deleted(),
                ..pre(support())
            },
            deny(AccountDeleted),
        ),
        (
            "deleted training",
            Pre {
                user: deleted(),
                ..pre(training())
            },
            deny(AccountDeleted),
        ),
        (
            "legal hold",
            Pre {
                user: deleted(),
                ..pre(claims("legal", "legal", Some(("matter_id", "M-1"))))
            },
            Outcome::Allow,
        ),
        (
            "consent down",
            Pre {
                user: None,
                ..pre(support())
            },
            deny(ConsentUnavailable),
        ),
    ];
    for (name, p, want) in table {
        let (got, trace) = run_pre(&p);
        assert_eq!(got, want, "{name}: {trace:#?}");
        // The trace ends at the deciding rule and only its last check failed.
        let failed: Vec<&Check> = trace.iter().filter(|c| !c.passed).collect();
        assert_eq!(
            failed.len(),
            usize::from(want != Outcome::Allow),
            "{name}: {trace:#?}"
        );
    }
}

#[test]
fn an_allowed_read_records_every_rule_in_order() {
    let (out, trace) = run_pre(&pre(support()));
    assert_eq!(out, Outcome::Allow);
    let rules: Vec<&str> = trace.iter().map(|c| c.rule).collect();
    assert_eq!(
        rules,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    );
    assert_eq!(
        trace[6].detail,
        "purpose `support` permitted by role `support`"
    );
    assert_eq!(trace[9].detail, "owner u1 in subjects [u1, u7]");
}

#[test]
fn invalid_token_reason_goes_to_the_trace_only() {
    let (_, trace) = run_pre(&Pre {
        tok: Tok::Invalid,
        ..pre(support())
    });
    let last = trace.last().unwrap();
    assert_eq!(
        (last.rule, last.name, last.passed),
        ("4", "invalid_token", false)
    );
    assert!(last.detail.contains("bad signature"));
}

#[test]
fn no_trace_gives_the_same_outcome() {
    let p = pre(support());
    let facts = RequestFacts::new(policy(), &p.method, p.path, false);
    let c = support();
    let user = UserConsent::default();
    let out = decide_pre(
        policy(),
        &facts,
        AuthState::Valid(&c),
        Lookup::Known(&user),
        now(),
        &mut NoTrace,
    );
    assert!(out.is_ok());
}

#[test]
fn method_override_headers_are_found_in_any_case() {
    for name in [
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-Method-Override",
    ] {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("GET"),
        );
        assert!(has_method_override(&h), "{name}");
    }
    let mut h = HeaderMap::new();
    h.insert("x-method", HeaderValue::from_static("DELETE"));
    assert!(!has_method_override(&h));
}

/// Response metadata of a good de-identified consumer item created in May.
fn meta() -> ResponseMeta<'static> {
    ResponseMeta {
        status: 200,
        owner: MetaValue::One("u1"),
        created_at: MetaValue::One("2026-05-01T00:00:00Z"),
        source: MetaValue::One("consumer"),
        org: MetaValue::Absent,
        deidentified: MetaValue::One("true"),
    }
}

fn opted_out(from: &str, until: Option<&str>) -> UserConsent {
    UserConsent {
        training_opt_outs: vec![Period {
            from: t(from),
            until: until.map(t),
        }],
        ..UserConsent::default()
    }
}

fn org_9() -> OrgConsent {
    OrgConsent {
        api_training_opt_ins: vec![Period {
            from: t("2026-01-01T00:00:00Z"),
            until: Some(t("2026-06-01T00:00:00Z")),
        }],
    }
}

fn run_post(
    c: &Claims,
    m: ResponseMeta<'_>,
    user: &UserConsent,
    org: Option<Lookup<'_, OrgConsent>>,
) -> Outcome {
    run_post_with(policy(), c, m, user, org).0
}

/// Admits a read of u1's conversation by `c` (rules 1-11), then runs the
/// response rules on `m`.
fn run_post_with(
    p: &Policy,
    c: &Claims,
    m: ResponseMeta<'_>,
    user: &UserConsent,
    org: Option<Lookup<'_, OrgConsent>>,
) -> (Outcome, Vec<Check>) {
    let facts = RequestFacts::new(p, &Method::GET, "/v1/users/u1/conversations/c1", false);
    let admitted = decide_pre(
        p,
        &facts,
        AuthState::Valid(c),
        Lookup::Known(user),
        now(),
        &mut NoTrace,
    )
    .expect("rules 1-11 admit the read");
    let mut trace = Vec::new();
    let out = decide_post(&admitted, &m, org, &mut trace);
    assert!(!trace.is_empty());
    (out, trace)
}

/// name, claims, response metadata, owner consent, org lookup, expected.
type PostRow<'a> = (
    &'static str,
    Claims,
    ResponseMeta<'a>,
    &'a UserConsent,
    Option<Lookup<'a, OrgConsent>>,
    Outcome,
);

#[test]
fn post_rules_table() {
    use Reason::*;
    let none = UserConsent::default();
    let org = org_9();
    let known = Some(Lookup::Known(&org));
    let api = |created: &'static str| ResponseMeta {
        source: MetaValue::One("api"),
        org: MetaValue::One("org-9"),
        created_at: MetaValue::One(created),
        ..meta()
    };
    let u2 = opted_out("2026-03-01T00:00:00Z", None);
    let u4 = opted_out("2026-02-01T00:00:00Z", Some("2026-04-01T00:00:00Z"));
    let deny = Outcome::Deny;
    let table: Vec<PostRow<'_>> = vec![
        (
            "training ok",
            training(),
            meta(),
            &none,
            None,
            Outcome::Allow,
        ),
        (
            "support ok",
            support(),
            ResponseMeta {
                deidentified: MetaValue::Absent,
                source: MetaValue::Absent,
                created_at: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            Outcome::Allow,
        ),
        (
            "owner absent",
            support(),
            ResponseMeta {
                owner: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            Outcome::Allow,
        ),
        (
            "owner mismatch support",
            support(),
            ResponseMeta {
                owner: MetaValue::One("u2"),
                ..meta()
            },
            &none,
            None,
            deny(OwnerMismatch),
        ),
        (
            "owner mismatch training",
            training(),
            ResponseMeta {
                owner: MetaValue::One("u2"),
                ..meta()
            },
            &none,
            None,
            deny(OwnerMismatch),
        ),
        (
            "404 skips",
            training(),
            ResponseMeta {
                status: 404,
                owner: MetaValue::One("u2"),
                deidentified: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            Outcome::Allow,
        ),
        (
            "identifiable",
            training(),
            ResponseMeta {
                deidentified: MetaValue::One("false"),
                ..meta()
            },
            &none,
            None,
            deny(NotDeidentified),
        ),
        (
            "deid absent",
            training(),
            ResponseMeta {
                deidentified: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "deid junk",
            training(),
            ResponseMeta {
                deidentified: MetaValue::One("1"),
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "created absent",
            training(),
            ResponseMeta {
                created_at: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "created junk",
            training(),
            ResponseMeta {
                created_at: MetaValue::One("May"),
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "before opt-out",
            training(),
            ResponseMeta {
                created_at: MetaValue::One("2026-02-28T23:59:59.999Z"),
                ..meta()
            },
            &u2,
            None,
            Outcome::Allow,
        ),
        (
            "at opt-out",
            training(),
            ResponseMeta {
                created_at: MetaValue::One("2026-03-01T00:00:00Z"),
                ..meta()
            },
            &u2,
            None,
            deny(OptedOut),
        ),
        (
            "inside closed",
            training(),
            ResponseMeta {
                created_at: MetaValue::One("2026-03-31T23:59:59Z"),
                ..meta()
            },
            &u4,
            None,
            deny(OptedOut),
        ),
        (
            "at closed until",
            training(),
            ResponseMeta {
                created_at: MetaValue::One("2026-04-01T00:00:00Z"),
                ..meta()
            },
            &u4,
            None,
            Outcome::Allow,
        ),
        (
            "source absent",
            training(),
            ResponseMeta {
                source: MetaValue::Absent,
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "source junk",
            training(),
            ResponseMeta {
                source: MetaValue::One("batch"),
                ..meta()
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "api inside",
            training(),
            api("2026-01-01T00:00:00Z"),
            &none,
            known,
            Outcome::Allow,
        ),
        (
            "api inside late",
            training(),
            api("2026-05-31T23:59:59Z"),
            &none,
            known,
            Outcome::Allow,
        ),
        (
            "api before",
            training(),
            api("2025-12-31T23:59:59Z"),
            &none,
            known,
            deny(ApiContentNotShared),
        ),
        (
            "api at until",
            training(),
            api("2026-06-01T00:00:00Z"),
            &none,
            known,
            deny(ApiContentNotShared),
        ),
        (
            "api no org header",
            training(),
            ResponseMeta {
                org: MetaValue::Absent,
                ..api("2026-03-01T00:00:00Z")
            },
            &none,
            None,
            deny(MetadataMissing),
        ),
        (
            "api org down",
            training(),
            api("2026-03-01T00:00:00Z"),
            &none,
            Some(Lookup::Unavailable),
            deny(ConsentUnavailable),
        ),
        (
            "api org not looked up",
            training(),
            api("2026-03-01T00:00:00Z"),
            &none,
            None,
            deny(ConsentUnavailable),
        ),
    ];
    for (name, c, m, user, org, want) in table {
        assert_eq!(run_post(&c, m, user, org), want, "{name}");
    }
}

#[test]
fn created_at_is_parsed_for_rule_15_when_rule_14_is_off() {
    let mut p = policy().clone();
    if let Some(r) = p.purposes.get_mut("training") {
        r.honour_opt_outs = false;
    }
    let c = training();
    let org = org_9();
    let user = UserConsent::default();
    let m = ResponseMeta {
        source: MetaValue::One("api"),
        org: MetaValue::One("org-9"),
        created_at: MetaValue::Absent,
        ..meta()
    };
    let (out, trace) = run_post_with(&p, &c, m, &user, Some(Lookup::Known(&org)));
    assert_eq!(out, Outcome::Deny(Reason::MetadataMissing));
    assert!(
        trace.last().unwrap().detail.contains("rule 15"),
        "{trace:#?}"
    );
    let m = ResponseMeta {
        created_at: MetaValue::One("2026-02-01T00:00:00Z"),
        ..m
    };
    let (out, _) = run_post_with(&p, &c, m, &user, Some(Lookup::Known(&org)));
    assert_eq!(out, Outcome::Allow);
}
