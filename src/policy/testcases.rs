//! `policy test`: decision test cases in YAML run against a policy, through
//! the same `decide_pre`/`decide_post` calls the proxy makes (claims are given
//! directly instead of as a signed JWT). The case format is documented in
//! `policies/README.md`; the YAML shapes live in `case_raw`.
//!
//! ```yaml
//! now: "2026-11-29T12:00:00Z"        # optional clock for the file's cases
//! consent: {users: {}, orgs: {}}     # optional docs/reference.md §5 registry for the file
//! cases:
//!   - name: support agent reads the conversation of the user who asked
//!     request: {method: GET, path: /v1/users/u1/conversations/c1}
//!     token: {roles: [support], purpose: support, ticket_id: T-1, subjects: [u1],
//!             training_cert_exp: "2027-01-01T00:00:00Z"}
//!     justification: {status: open, assignees: [employee], subjects: [u1],
//!                     requested_by: u1}  # the case service's answer (17a-e)
//!     response: {x-content-owner: u1}  # optional: also runs rules 12-16
//!     budget: [{distinct_owners: 20, window_seconds: 86400, used: 19}]  # optional: rule 18
//!     expect: allow                    # or {deny: subject_not_in_scope}
//! ```
//!
//! Cases never call out: the case service's answer is stated inline
//! (`justification:`), as consent is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::case_raw::{suite_cases, RawSuite};
use std::future::Future;

use futures_util::FutureExt;

use std::sync::atomic::{AtomicBool, Ordering};

use super::decide::{AuthState, Check, Outcome, RequestFacts, ResponseMeta};
use super::engine::{self, Facts, Held};
use super::model::{Policy, PurposeRule};
use super::reason::Reason;
use crate::auth::Claims;
use crate::budget::{self, Counted, Limit};
use crate::config::{parse_yaml, read_file, ConfigError};
use crate::consent::file::ConsentData;
use crate::consent::{OrgConsent, UserConsent};
use crate::justification::{Answer, JustificationsConfig, Kind, Looked, Unavailable as NoAnswer};
use crate::time::Millis;

pub use super::case_raw::DEFAULT_NOW;

/// One decision test case, resolved.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub name: String,
    /// The clock of the decision (Unix ms).
    pub now: Millis,
    pub method: http::Method,
    /// The path without query string.
    pub path: String,
    pub method_override: bool,
    pub token: TokenSpec,
    /// When present (and rules 1-11 allow), rules 12-16 run on it too.
    pub response: Option<MetaSpec>,
    /// The case's or file's registry; `None`: the suite's default.
    pub consent: Option<Arc<ConsentData>>,
    pub unavailable: Unavailable,
    /// The case service's answer about the token's justification (rules
    /// 17a–e), stated instead of looked up.
    pub justification: Option<Answer>,
    /// What rule 18 finds, as the case states it; `None`: no budgets.
    pub budget: Option<StatedBudget>,
    pub expect: Outcome,
}

/// The access budget a case states for rule 18: no Redis is involved.
#[derive(Debug, Clone)]
pub enum StatedBudget {
    /// Redis does not answer (fail closed).
    Unavailable,
    /// The purpose's limits, each with what it counted before the request.
    Usage(Vec<(Limit, Counted)>),
}

impl StatedBudget {
    /// What the budget script would decide on the stated usage.
    pub fn outcome(&self) -> budget::Outcome {
        match self {
            // As `serve` sees a Redis that does not answer in time.
            StatedBudget::Unavailable => {
                budget::Outcome::Unavailable(budget::Unavailable::Timeout(
                    std::time::Duration::from_millis(budget::config::DEFAULT_TIMEOUT_MS),
                ))
            }
            StatedBudget::Usage(stated) => {
                let limits: Vec<&Limit> = stated.iter().map(|(l, _)| l).collect();
                let counted: Vec<Counted> = stated.iter().map(|(_, c)| *c).collect();
                budget::evaluate(&limits, &counted)
            }
        }
    }
}

/// What the token of a case is.
#[derive(Debug, Clone)]
pub enum TokenSpec {
    Missing,
    Invalid(String),
    Claims(Claims),
}

/// Owned response metadata (docs/reference.md §4) of a case.
#[derive(Debug, Clone, Default)]
pub struct MetaSpec {
    pub status: u16,
    pub owner: Option<String>,
    pub created_at: Option<String>,
    pub source: Option<String>,
    pub org: Option<String>,
    pub deidentified: Option<String>,
}

/// Which consent lookups fail, to test failing closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    None,
    Users,
    Orgs,
    All,
}

/// A case whose outcome differed from its expectation.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub name: String,
    pub expected: Outcome,
    pub got: Outcome,
    pub trace: Vec<Check>,
    /// Why the case could not be decided as written (it fails whatever it
    /// expects), e.g. a checked justification with no stated answer.
    pub error: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
}

/// Loads every `*.yaml`/`*.yml` case file directly in `dir` (or `dir` itself
/// when it is a file), in name order.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, ConfigError> {
    let files = case_files(dir)?;
    if files.is_empty() {
        return Err(ConfigError::new(
            dir,
            None,
            "no test case files (*.yaml or *.yml)",
        ));
    }
    let mut cases = Vec::new();
    for file in files {
        let text = read_file(&file)?;
        let suite: RawSuite = parse_yaml(&file, &text)?;
        cases.extend(suite_cases(&file, suite)?);
    }
    Ok(cases)
}

fn case_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let read_err = |e: std::io::Error| ConfigError::new(dir, None, format!("cannot read: {e}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What the suite runs against besides its cases: the policy, the registry
/// of cases that state none, and the config's `justifications:` section
/// (which purposes rules 17a–e apply to), when run with `--config`.
#[derive(Clone, Copy)]
pub struct Suite<'s> {
    pub policy: &'s Policy,
    pub consent: &'s ConsentData,
    pub justifications: Option<&'s JustificationsConfig>,
}

/// Runs every case against `policy`; cases without their own consent use
/// `default_consent`; no `justifications:` section is configured.
pub fn run(policy: &Policy, default_consent: &ConsentData, cases: &[Case]) -> Report {
    run_suite(
        Suite {
            policy,
            consent: default_consent,
            justifications: None,
        },
        cases,
    )
}

/// Runs every case of `suite`.
pub fn run_suite(suite: Suite<'_>, cases: &[Case]) -> Report {
    let mut report = Report::default();
    for case in cases {
        let decided = decide(suite, case);
        if decided.error.is_none() && decided.outcome == case.expect {
            report.passed += 1;
            continue;
        }
        report.failed += 1;
        report.failures.push(Failure {
            file: case.file.clone(),
            line: case.line,
            name: case.name.clone(),
            expected: case.expect,
            got: decided.outcome,
            trace: decided.trace,
            error: decided.error,
        });
    }
    report
}

/// A test case's inline answers as the shell's fact source.
struct Inline<'c> {
    consent: &'c ConsentData,
    unavailable: Unavailable,
    /// The configured check, when the suite runs with a config.
    justifications: Option<&'c JustificationsConfig>,
    /// The case's stated answer.
    justification: Option<&'c Answer>,
    /// Set when rule 17 needed an answer the case does not state.
    unstated: AtomicBool,
    budget: Option<&'c StatedBudget>,
}

impl Inline<'_> {
    /// The kind rules 17a–e look `purpose` up as, if they apply: as the
    /// config says when there is one; without, when the case states an
    /// answer, for every purpose with a justification claim of a known kind
    /// (the config's default).
    fn kind(&self, purpose: &PurposeRule) -> Option<Kind> {
        let claim = purpose.justification_claim.as_deref();
        match self.justifications {
            Some(cfg) => cfg.kind_for(&purpose.name, claim),
            None => self
                .justification
                .and_then(|_| claim.and_then(Kind::from_claim)),
        }
    }
}

impl Facts for Inline<'_> {
    fn user(&self, owner: &str) -> impl Future<Output = Option<Arc<UserConsent>>> + Send {
        let down = matches!(self.unavailable, Unavailable::Users | Unavailable::All);
        let found = self.consent.users.get(owner).cloned().unwrap_or_default();
        std::future::ready((!down).then_some(found))
    }

    fn org(&self, org: &str) -> impl Future<Output = Option<Arc<OrgConsent>>> + Send {
        let down = matches!(self.unavailable, Unavailable::Orgs | Unavailable::All);
        let found = self.consent.orgs.get(org).cloned().unwrap_or_default();
        std::future::ready((!down).then_some(found))
    }

    fn justification(
        &self,
        purpose: &PurposeRule,
        _id: &str,
    ) -> impl Future<Output = Option<Looked>> + Send {
        let looked = self.kind(purpose).map(|kind| match self.justification {
            Some(answer) => Looked::stated(kind, answer.clone()),
            None => {
                // Checked, but the case says nothing: decided closed, and
                // the case fails with an error whatever it expects.
                self.unstated.store(true, Ordering::Relaxed);
                Looked::stated(kind, Answer::Unavailable(NoAnswer::NotStated))
            }
        });
        std::future::ready(looked)
    }
    fn budget(
        &self,
        _sub: &str,
        _purpose: &str,
        _owner: &str,
    ) -> impl Future<Output = Option<budget::Outcome>> + Send {
        std::future::ready(self.budget.map(StatedBudget::outcome))
    }
}

/// One case decided: the outcome, the checks made, and why the case could
/// not be decided as written, if so.
pub struct Decided {
    pub outcome: Outcome,
    pub trace: Vec<Check>,
    pub error: Option<String>,
}

/// Decides one case as the proxy would, with the checks made: through the
/// same shell (`engine`) as `serve` and `explain`. A case without
/// `response:` is judged as a store answering 200 without metadata.
pub fn evaluate(
    policy: &Policy,
    default_consent: &ConsentData,
    case: &Case,
) -> (Outcome, Vec<Check>) {
    let suite = Suite {
        policy,
        consent: default_consent,
        justifications: None,
    };
    let d = decide(suite, case);
    (d.outcome, d.trace)
}

/// Decides one case of `suite`.
pub fn decide(suite: Suite<'_>, case: &Case) -> Decided {
    let source = Inline {
        consent: case.consent.as_deref().unwrap_or(suite.consent),
        unavailable: case.unavailable,
        justifications: suite.justifications,
        justification: case.justification.as_ref(),
        unstated: AtomicBool::new(false),
        budget: case.budget.as_ref(),
    };
    let mut trace = Vec::new();
    // Every fact is inline, so the shell's futures are ready at once.
    let decided = decide_case(suite.policy, case, &source, &mut trace).now_or_never();
    let outcome = decided.unwrap_or(Outcome::Deny(Reason::ConsentUnavailable));
    let error = source.unstated.load(Ordering::Relaxed).then(|| {
        let file = suite
            .justifications
            .map(|j| j.file.display().to_string())
            .unwrap_or_default();
        format!(
            "the case reaches rule 17, which the `justifications:` section of {file} applies to its purpose, but states no `justification:` answer (a mapping, `not_found` or `unavailable`)"
        )
    });
    Decided {
        outcome,
        trace,
        error,
    }
}

async fn decide_case(
    policy: &Policy,
    case: &Case,
    source: &Inline<'_>,
    trace: &mut Vec<Check>,
) -> Outcome {
    let facts = RequestFacts::new(policy, &case.method, &case.path, case.method_override);
    let auth = match &case.token {
        TokenSpec::Missing => AuthState::Missing,
        TokenSpec::Invalid(why) => AuthState::Invalid(why),
        TokenSpec::Claims(c) => AuthState::Valid(c),
    };
    let held = Held::default();
    let admitted = match engine::admit(policy, &facts, auth, source, case.now, &held, trace).await {
        Ok(a) => a,
        Err(reason) => return Outcome::Deny(reason),
    };
    if let Err(reason) = engine::charge_budget(&admitted, source, trace)
        .await
        .result()
    {
        return Outcome::Deny(reason);
    }
    let meta = case.response.clone().unwrap_or(MetaSpec {
        status: 200,
        ..MetaSpec::default()
    });
    let raw = ResponseMeta {
        status: meta.status,
        owner: meta.owner.as_deref().into(),
        created_at: meta.created_at.as_deref().into(),
        source: meta.source.as_deref().into(),
        org: meta.org.as_deref().into(),
        deidentified: meta.deidentified.as_deref().into(),
    };
    engine::respond(&admitted, &raw, source, trace).await
}

impl Report {
    /// Whether every case passed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// Each failure with its trace, then a last line `N passed, N failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let at = match f.line {
                Some(l) => format!("{}:{l}", f.file.display()),
                None => f.file.display().to_string(),
            };
            let _ = writeln!(out, "FAIL {at}: {}", f.name);
            let _ = writeln!(out, "  expected: {}", f.expected);
            let _ = writeln!(out, "  got:      {}", f.got);
            if let Some(e) = &f.error {
                let _ = writeln!(out, "  error:    {e}");
            }
            for c in &f.trace {
                let mark = if c.passed { "pass" } else { "FAIL" };
                let _ = writeln!(out, "    {mark} {:>3} {}: {}", c.rule, c.name, c.detail);
            }
        }
        let _ = write!(out, "{} passed, {} failed", self.passed, self.failed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::load_dir;
    use crate::policy::reason::Reason;

    fn shipped() -> (Policy, ConsentData, Vec<Case>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let consent_file = root.join("consent.yaml");
        let policy = load_dir(&root, &[consent_file.as_path()]).unwrap();
        let consent = ConsentData::load(&consent_file).unwrap();
        let cases = load_cases(&root.join("tests")).unwrap();
        (policy, consent, cases)
    }

    #[test]
    fn the_shipped_suite_passes() {
        let (policy, consent, cases) = shipped();
        let report = run(&policy, &consent, &cases);
        assert!(report.ok(), "{}", report.render());
        assert!(report.passed >= 40, "{}", report.passed);
        assert!(report
            .render()
            .ends_with(&format!("{} passed, 0 failed", report.passed)));
    }

    #[test]
    fn the_shipped_suite_covers_every_rule() {
        let (_, _, cases) = shipped();
        let expected: Vec<Reason> = cases.iter().filter_map(|c| c.expect.reason()).collect();
        // Every reason of every rule: 17 and 18 are stated inline.
        for rule in crate::policy::RULES {
            if rule.reasons().next().is_none() {
                continue;
            }
            for r in rule.reasons() {
                assert!(
                    expected.contains(&r),
                    "no case expects {r} (rule {})",
                    rule.number
                );
            }
        }
    }

    fn suite(text: &str) -> Result<Vec<Case>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.yaml"), text).unwrap();
        load_cases(dir.path()).map_err(|mut e| {
            e.file = PathBuf::from(e.file.file_name().unwrap());
            e
        })
    }

    const ONE: &str = "cases:\n  - name: n\n    request: {path: /v1/users/u1/files}\n    token: missing\n    expect: {deny: missing_token}\n";

    #[test]
    fn a_case_records_its_line() {
        let cases = suite(&format!("# comment\n{ONE}")).unwrap();
        assert_eq!(cases[0].line, Some(3));
        assert_eq!(
            cases[0].now,
            crate::time::parse_rfc3339(DEFAULT_NOW).unwrap()
        );
    }

    #[test]
    fn unknown_reason_codes_are_errors_with_a_line() {
        let e = suite(&ONE.replace("missing_token", "missing_tokn")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.yaml:5: expect: unknown reason code `missing_tokn`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_tokens_are_errors() {
        let e = suite(&ONE.replace("token: missing", "tokn: missing")).unwrap_err();
        assert!(e.message.contains("tokn"), "{e}");
        assert!(e.line.is_some(), "{e}");
        let e = suite(&ONE.replace("token: missing", "token: absent")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    /// A `justifications:` section as `--config` would give it.
    fn checked(purposes: &str) -> JustificationsConfig {
        let text = format!("listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\njustifications:\n  url: \"http://127.0.0.1:1/{{kind}}/{{id}}\"\n{purposes}");
        crate::config::Config::parse(Path::new("cfg.yaml"), &text)
            .unwrap()
            .justifications
            .unwrap()
    }

    const SUPPORT: &str = "cases:\n  - name: s\n    request: {path: /v1/users/u1/files/f}\n    token: {sub: e1, roles: [support], purpose: support, ticket_id: T-1, subjects: [u1], training_cert_exp: \"2027-01-01T00:00:00Z\"}\n";

    #[test]
    fn stated_answers_decide_rules_17a_to_17e() {
        let (policy, consent, _) = shipped();
        let case = |answer: &str, expect: &str| {
            let text = format!("{SUPPORT}    justification: {answer}\n    expect: {expect}\n");
            suite(&text).unwrap()
        };
        let open = "{status: open, assignees: [e1], subjects: [u1], requested_by: u1}";
        for (answer, expect) in [
            (open, "allow"),
            ("not_found", "{deny: justification_not_found}"),
            ("unavailable", "{deny: justification_unavailable}"),
            (
                "{status: closed, assignees: [e1], subjects: [u1], requested_by: u1}",
                "{deny: justification_closed}",
            ),
        ] {
            let report = run(&policy, &consent, &case(answer, expect));
            assert!(report.ok(), "{answer}: {}", report.render());
        }
        // The trace shows 17a-e.
        let (got, trace) = evaluate(&policy, &consent, &case(open, "allow")[0]);
        assert_eq!(got, Outcome::Allow);
        let numbers: Vec<&str> = trace.iter().map(|c| c.rule).collect();
        assert!(
            numbers.ends_with(&["11", "17a", "17b", "17c", "17d", "17e", "18", "12"]),
            "{numbers:?}"
        );
    }

    #[test]
    fn a_checked_purpose_without_a_stated_answer_is_an_error() {
        let (policy, consent, _) = shipped();
        let cases = suite(&format!("{SUPPORT}    expect: allow\n")).unwrap();
        // Without a config and without an answer, rule 17 is not configured.
        assert!(run(&policy, &consent, &cases).ok());
        let cfg = checked("");
        let with = Suite {
            policy: &policy,
            consent: &consent,
            justifications: Some(&cfg),
        };
        let report = run_suite(with, &cases);
        assert_eq!((report.passed, report.failed), (0, 1));
        let text = report.render();
        assert!(
            text.contains("error:    the case reaches rule 17"),
            "{text}"
        );
        assert!(text.contains("cfg.yaml"), "{text}");
        // Even a case that expects the fail-closed denial is an error.
        let cases = suite(&format!(
            "{SUPPORT}    expect: {{deny: justification_unavailable}}\n"
        ))
        .unwrap();
        assert_eq!(run_suite(with, &cases).failed, 1);
        // A purpose the config does not list needs no answer.
        let abuse_only = checked("  purposes: [abuse]\n");
        let only = Suite {
            justifications: Some(&abuse_only),
            ..with
        };
        let cases = suite(&format!("{SUPPORT}    expect: allow\n")).unwrap();
        assert!(run_suite(only, &cases).ok());
    }

    #[test]
    fn bad_stated_answers_are_errors_with_a_line() {
        let e = suite(&format!(
            "{SUPPORT}    justification: gone\n    expect: allow\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("not `not_found`, `unavailable`"), "{e}");
        let e = suite(&format!(
            "{SUPPORT}    justification: {{status: open, assignees: [], subjects: [], title: x}}\n    expect: allow\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("title"), "{e}");
        let e = suite(&format!(
            "{SUPPORT}    justification: {{status: pending, assignees: [], subjects: []}}\n    expect: allow\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("pending"), "{e}");
    }

    const SUPPORT_BUDGET: &str = "cases:\n  - name: n\n    request: {path: /v1/users/u1/files/f1}\n    token: {sub: e1, roles: [support], purpose: support, ticket_id: T-1, subjects: [u1], training_cert_exp: \"2027-01-01T00:00:00Z\"}\n    budget: BUDGET\n    expect: allow\n";

    #[test]
    fn a_stated_budget_decides_rule_18_and_is_traced() {
        let (policy, consent, _) = shipped();
        let full = "[{distinct_owners: 2, window_seconds: 60, used: 2, resets_in_seconds: 7}]";
        let cases = suite(&SUPPORT_BUDGET.replace("BUDGET", full)).unwrap();
        let report = run(&policy, &consent, &cases);
        let text = report.render();
        assert!(
            text.contains("got:      deny access_budget_exceeded"),
            "{text}"
        );
        assert!(
            text.contains("FAIL  18 access_budget_exceeded: support: distinct_owners budget of 2 per 60 s exhausted, frees in 7 s"),
            "{text}"
        );
        let room = "[{distinct_owners: 2, window_seconds: 60, used: 1}]";
        let cases = suite(&SUPPORT_BUDGET.replace("BUDGET", room)).unwrap();
        let (got, trace) = evaluate(&policy, &consent, &cases[0]);
        assert_eq!(got, Outcome::Allow);
        let check = trace.iter().find(|c| c.rule == "18").unwrap();
        assert!(check.passed);
        assert!(
            check.detail.contains("distinct_owners 2/2 per 60 s"),
            "{}",
            check.detail
        );
        let cases = suite(&SUPPORT_BUDGET.replace("BUDGET", "unavailable")).unwrap();
        let (got, _) = evaluate(&policy, &consent, &cases[0]);
        assert_eq!(got, Outcome::Deny(Reason::BudgetUnavailable));
        // Without `budget:`, rule 18 passes: no budgets.
        let cases = suite(&SUPPORT_BUDGET.replace("    budget: BUDGET\n", "")).unwrap();
        let (got, trace) = evaluate(&policy, &consent, &cases[0]);
        assert_eq!(got, Outcome::Allow);
        assert!(trace.iter().any(|c| c.rule == "18" && c.passed));
    }

    #[test]
    fn stated_budgets_are_parsed_strictly() {
        let bad = [
            (
                "[{distinct_owners: 2, requests: 3, window_seconds: 60, used: 0}]",
                "t.yaml:5: budget: set exactly one of distinct_owners and requests",
            ),
            (
                "[{requests: 3, window_seconds: 60, used: 0, owner_counted: true}]",
                "t.yaml:5: budget: owner_counted applies to distinct_owners only",
            ),
            (
                "[{requests: 3, window_seconds: 60, used: 0, resets_in_seconds: 61}]",
                "t.yaml:5: budget: resets_in_seconds is longer than the window",
            ),
            (
                "[{requests: 0, window_seconds: 60, used: 0}]",
                "t.yaml:5: budget: requests must be between 1",
            ),
            (
                "[{requests: 3, window_seconds: 0, used: 0}]",
                "t.yaml:5: budget: window_seconds must be between 1",
            ),
            ("[]", "t.yaml:5: budget: list at least one limit"),
            ("down", "t.yaml:5: budget: `down` is not `unavailable`"),
        ];
        for (budget, want) in bad {
            let e = suite(&SUPPORT_BUDGET.replace("BUDGET", budget)).unwrap_err();
            assert!(e.to_string().starts_with(want), "{budget}: {e}");
        }
        let e = suite(
            &SUPPORT_BUDGET.replace("BUDGET", "[{requests: 3, window_seconds: 60, usde: 0}]"),
        )
        .unwrap_err();
        assert!(e.message.contains("usde") && e.line == Some(5), "{e}");
    }

    #[test]
    fn failures_render_with_their_trace() {
        let (policy, consent, _) = shipped();
        let cases = suite(&ONE.replace("{deny: missing_token}", "allow")).unwrap();
        let report = run(&policy, &consent, &cases);
        assert_eq!((report.passed, report.failed), (0, 1));
        let text = report.render();
        assert!(text.contains("t.yaml:2: n"), "{text}");
        assert!(text.contains("got:      deny missing_token"), "{text}");
        assert!(text.contains("FAIL   3 missing_token"), "{text}");
        assert!(text.ends_with("0 passed, 1 failed"), "{text}");
    }
}
