//! `policy test`: decision test cases in YAML run against a policy, through
//! the same `decide_pre`/`decide_post` calls the proxy makes (claims are given
//! directly instead of as a signed JWT). The case format is documented in
//! `policies/README.md`; the YAML shapes live in `case_raw`.
//!
//! ```yaml
//! now: "2026-11-29T12:00:00Z"        # optional clock for the file's cases
//! consent: {users: {}, orgs: {}}     # optional CONTRACT §5 registry for the file
//! cases:
//!   - name: support agent reads the conversation of the user who asked
//!     request: {method: GET, path: /v1/users/u1/conversations/c1}
//!     token: {roles: [support], purpose: support, ticket_id: T-1, subjects: [u1],
//!             training_cert_exp: "2027-01-01T00:00:00Z"}
//!     response: {x-content-owner: u1}  # optional: also runs rules 12-16
//!     budget: [{distinct_owners: 20, window_seconds: 86400, used: 19}]  # optional: rule 18
//!     expect: allow                    # or {deny: subject_not_in_scope}
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::case_raw::{suite_cases, RawSuite};
use std::future::Future;

use futures_util::FutureExt;

use super::decide::{AuthState, Check, Outcome, RequestFacts, ResponseMeta};
use super::engine::{self, Facts, Held};
use super::model::Policy;
use super::reason::Reason;
use crate::auth::Claims;
use crate::budget::{self, Counted, Limit};
use crate::config::{parse_yaml, read_file, ConfigError};
use crate::consent::file::ConsentData;
use crate::consent::{OrgConsent, UserConsent};
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

/// Owned response metadata (CONTRACT §4) of a case.
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

/// Runs every case against `policy`; cases without their own consent use
/// `default_consent`.
pub fn run(policy: &Policy, default_consent: &ConsentData, cases: &[Case]) -> Report {
    let mut report = Report::default();
    for case in cases {
        let (got, trace) = evaluate(policy, default_consent, case);
        if got == case.expect {
            report.passed += 1;
            continue;
        }
        report.failed += 1;
        report.failures.push(Failure {
            file: case.file.clone(),
            line: case.line,
            name: case.name.clone(),
            expected: case.expect,
            got,
            trace,
        });
    }
    report
}

/// A test case's inline answers as the shell's fact source.
struct Inline<'c> {
    consent: &'c ConsentData,
    unavailable: Unavailable,
    budget: Option<&'c StatedBudget>,
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

    fn budget(
        &self,
        _sub: &str,
        _purpose: &str,
        _owner: &str,
    ) -> impl Future<Output = Option<budget::Outcome>> + Send {
        std::future::ready(self.budget.map(StatedBudget::outcome))
    }
}

/// Decides one case as the proxy would, with the checks made: through the
/// same shell (`engine`) as `serve` and `explain`. A case without
/// `response:` is judged as a store answering 200 without metadata.
pub fn evaluate(
    policy: &Policy,
    default_consent: &ConsentData,
    case: &Case,
) -> (Outcome, Vec<Check>) {
    let source = Inline {
        consent: case.consent.as_deref().unwrap_or(default_consent),
        unavailable: case.unavailable,
        budget: case.budget.as_ref(),
    };
    let mut trace = Vec::new();
    // Every fact is inline, so the shell's futures are ready at once.
    let decided = decide_case(policy, case, &source, &mut trace).now_or_never();
    let outcome = decided.unwrap_or(Outcome::Deny(Reason::ConsentUnavailable));
    (outcome, trace)
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
    let mut held = Held::default();
    let admitted =
        match engine::admit(policy, &facts, auth, source, case.now, &mut held, trace).await {
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
        // Every reason of rules 1-16 and 18 (17 needs its service).
        for rule in crate::policy::RULES {
            if rule.number.starts_with("17") {
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

    const SUPPORT: &str = "cases:\n  - name: n\n    request: {path: /v1/users/u1/files/f1}\n    token: {sub: e1, roles: [support], purpose: support, ticket_id: T-1, subjects: [u1], training_cert_exp: \"2027-01-01T00:00:00Z\"}\n    budget: BUDGET\n    expect: allow\n";

    #[test]
    fn a_stated_budget_decides_rule_18_and_is_traced() {
        let (policy, consent, _) = shipped();
        let full = "[{distinct_owners: 2, window_seconds: 60, used: 2, resets_in_seconds: 7}]";
        let cases = suite(&SUPPORT.replace("BUDGET", full)).unwrap();
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
        let cases = suite(&SUPPORT.replace("BUDGET", room)).unwrap();
        let (got, trace) = evaluate(&policy, &consent, &cases[0]);
        assert_eq!(got, Outcome::Allow);
        let check = trace.iter().find(|c| c.rule == "18").unwrap();
        assert!(check.passed);
        assert!(
            check.detail.contains("distinct_owners 2/2 per 60 s"),
            "{}",
            check.detail
        );
        let cases = suite(&SUPPORT.replace("BUDGET", "unavailable")).unwrap();
        let (got, _) = evaluate(&policy, &consent, &cases[0]);
        assert_eq!(got, Outcome::Deny(Reason::BudgetUnavailable));
        // Without `budget:`, rule 18 passes: no budgets.
        let cases = suite(&SUPPORT.replace("    budget: BUDGET\n", "")).unwrap();
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
            let e = suite(&SUPPORT.replace("BUDGET", budget)).unwrap_err();
            assert!(e.to_string().starts_with(want), "{budget}: {e}");
        }
        let e = suite(&SUPPORT.replace("BUDGET", "[{requests: 3, window_seconds: 60, usde: 0}]"))
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
