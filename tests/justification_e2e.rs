//! Rule 17 end to end (issue 15): the real proxy in front of a recording
//! store, checking justifications against the sample case service on
//! 127.0.0.1:0 (which records what it is asked). Each of 17a–e allowed and
//! denied; every denial leaves the store untouched and is audited with its
//! reason and what was verified; an unreachable service is a 503 with
//! `Retry-After` while `/readyz` stays ready; the credential is re-read with
//! the other files; a reload that would leave a purpose unchecked is refused;
//! `explain` shows 17a–e; `policy test` states answers inline and never
//! calls out.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Harness, Opts, Tok};
use purposegate::justification::sample::{CaseService, Fault};
use purposegate::justification::{Justification, Kind, Status};
use serde_json::Value;
use tokio::net::TcpListener;

async fn cases() -> CaseService {
    CaseService::demo("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The proxy checking justifications at `url` (`extra`: more section lines).
async fn proxy(url: &str, extra: &str) -> Harness {
    Harness::start_with(Opts {
        extra_yaml: format!("justifications:\n  url: \"{url}\"\n{extra}"),
        ..Opts::default()
    })
    .await
}

/// A token of the demo employee `employee-<role>`.
fn tok(role: &str, purpose: &str, claim: &str, id: &str, subjects: &[&str]) -> Tok {
    let mut t = Tok::new(role, purpose).just(claim, id);
    t.sub = format!("employee-{role}");
    for s in subjects {
        t = t.subject(s);
    }
    t
}

/// The decision record of a request.
fn decision(h: &Harness, request_id: &str) -> Value {
    h.audit_records()
        .into_iter()
        .find(|r| r["event"] == "decision" && r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision record for {request_id}"))
}

/// A de-identified conversation a training read is allowed to get.
const TRAINING_PATH: &str = "/v1/users/u1/conversations/c-train";

fn serve_training_content(h: &Harness) {
    h.upstream.reply(
        TRAINING_PATH,
        common::Reply::ok(&[
            ("x-content-owner", "u1"),
            ("x-content-created-at", "2026-01-01T00:00:00Z"),
            ("x-content-source", "consumer"),
            ("x-content-deidentified", "true"),
        ]),
    );
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

struct Expect {
    title: &'static str,
    tok: Tok,
    path: &'static str,
    status: u16,
    reason: Option<&'static str>,
    state: &'static str,
}

fn expect(
    title: &'static str,
    tok: Tok,
    path: &'static str,
    reason: Option<&'static str>,
    state: &'static str,
) -> Expect {
    Expect {
        title,
        tok,
        path,
        status: if reason.is_some() { 403 } else { 200 },
        reason,
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_17a_to_17e_allow_and_deny_through_the_proxy() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "").await;
    let ts = |id, subjects| tok("trust-safety", "abuse", "case_id", id, subjects);
    let sup = |id, subjects| tok("support", "support", "ticket_id", id, subjects);
    let cases = [
        expect(
            "abuse under an open case assigned to the investigator",
            ts("CASE-1042", &["u1"]),
            "/v1/users/u1/conversations/c1",
            None,
            "open",
        ),
        expect(
            "support for the user who opened the ticket",
            sup("TICKET-77", &["u1"]),
            "/v1/users/u1/files/f1",
            None,
            "open",
        ),
        expect(
            "legal under an open matter (legal hold on u3)",
            tok("legal", "legal", "matter_id", "MATTER-9", &["u3"]),
            "/v1/users/u3/conversations/c1",
            None,
            "open",
        ),
        expect(
            "support for u2, who opened TICKET-80",
            sup("TICKET-80", &["u2"]),
            "/v1/users/u2/conversations/c1",
            None,
            "open",
        ),
        expect(
            "17a: no such case",
            ts("CASE-404", &["u1"]),
            "/v1/users/u1/conversations/c1",
            Some("justification_not_found"),
            "not_found",
        ),
        expect(
            "17b: a closed ticket",
            sup("TICKET-70", &["u1"]),
            "/v1/users/u1/conversations/c1",
            Some("justification_closed"),
            "closed",
        ),
        expect(
            "17c: a case assigned to another investigator",
            ts("CASE-1043", &["u1"]),
            "/v1/users/u1/conversations/c1",
            Some("justification_not_assigned"),
            "open",
        ),
        expect(
            "17d: the token names u2, the case does not",
            ts("CASE-1042", &["u1", "u2"]),
            "/v1/users/u2/conversations/c1",
            Some("justification_subject_mismatch"),
            "open",
        ),
        expect(
            "17e: u1 is a subject of TICKET-80 but u2 opened it",
            sup("TICKET-80", &["u1", "u2"]),
            "/v1/users/u1/conversations/c1",
            Some("support_not_requested_by_user"),
            "open",
        ),
    ];
    let mut asked_before = std::collections::HashSet::new();
    for c in &cases {
        let fresh = asked_before.insert(c.tok.justification[0].1.clone());
        let source = if fresh { "fresh" } else { "cached" };
        let before = h.upstream.count();
        let resp = h.get(c.path, Some(&h.token(&c.tok))).await;
        assert_eq!(resp.status, c.status, "{}: {:?}", c.title, resp.body);
        assert_eq!(resp.reason().as_deref(), c.reason, "{}", c.title);
        let contacted = h.upstream.count() - before;
        assert_eq!(contacted, usize::from(c.reason.is_none()), "{}", c.title);
        let rec = decision(&h, &resp.request_id());
        assert_eq!(rec["reason"].as_str(), c.reason, "{}: {rec}", c.title);
        assert_eq!(rec["justification_state"], c.state, "{}: {rec}", c.title);
        assert_eq!(rec["justification_source"], source, "{}: {rec}", c.title);
        assert_eq!(
            rec["justification"], c.tok.justification[0].1,
            "{}",
            c.title
        );
    }
    // Each distinct (kind, id) was asked once, with its kind.
    let asked: Vec<String> = svc.asked().iter().map(|a| a.path.clone()).collect();
    assert_eq!(asked.len(), 7, "{asked:?}");
    assert!(asked.contains(&"/v1/justifications/ticket/TICKET-70".to_string()));
    assert!(asked.contains(&"/v1/justifications/matter/MATTER-9".to_string()));
    // A repeat comes from the cache and says so.
    let resp = h
        .get(
            "/v1/users/u1/files/f2",
            Some(&h.token(&sup("TICKET-77", &["u1"]))),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        decision(&h, &resp.request_id())["justification_source"],
        "cached"
    );
    assert_eq!(svc.asked_count(), 7);
    let m = h.admin_get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    let series = "purposegate_justification_lookups_total{result=";
    assert_eq!(metric(&text, &format!("{series}\"miss\"}}")), 6.0);
    assert_eq!(metric(&text, &format!("{series}\"not_found\"}}")), 1.0);
    assert!(metric(&text, &format!("{series}\"hit\"}}")) >= 3.0);
    common::promtool_check_metrics(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_reads_and_earlier_denials_never_ask_the_case_service() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "  purposes: [abuse]\n").await;
    // Training has no justification: untouched, no fields in the record.
    serve_training_content(&h);
    let resp = h.get(TRAINING_PATH, Some(&h.token(&Tok::training()))).await;
    assert_eq!(resp.status, 200);
    let rec = decision(&h, &resp.request_id());
    assert!(rec.get("justification_state").is_none(), "{rec}");
    assert!(rec.get("justification_source").is_none(), "{rec}");
    // Support is not listed in `purposes`: any ticket id passes rule 17.
    let t = tok("support", "support", "ticket_id", "TICKET-404", &["u1"]);
    let resp = h
        .get("/v1/users/u1/conversations/c1", Some(&h.token(&t)))
        .await;
    assert_eq!(resp.status, 200);
    assert!(decision(&h, &resp.request_id())
        .get("justification_state")
        .is_none());
    // Abuse denied by rule 10 is refused before the service is asked.
    let t = tok("trust-safety", "abuse", "case_id", "CASE-1042", &["u1"]);
    let resp = h
        .get("/v1/users/u2/conversations/c1", Some(&h.token(&t)))
        .await;
    assert_eq!(resp.reason().as_deref(), Some("subject_not_in_scope"));
    let rec = decision(&h, &resp.request_id());
    assert!(rec.get("justification_state").is_none(), "{rec}");
    assert_eq!(svc.asked_count(), 0, "{:?}", svc.asked());
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_503_with_the_store_untouched_and_readyz_ready() {
    // A port nobody listens on: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/justifications/{{kind}}/{{id}}");
    let h = proxy(&url, "  timeout_ms: 300\n").await;
    let t = tok("support", "support", "ticket_id", "TICKET-77", &["u1"]);
    for _ in 0..3 {
        let resp = h
            .get("/v1/users/u1/conversations/c1", Some(&h.token(&t)))
            .await;
        assert_eq!(resp.status, 503);
        assert_eq!(resp.reason().as_deref(), Some("justification_unavailable"));
        assert_eq!(resp.json()["error"], "service_unavailable");
        assert_eq!(resp.headers["retry-after"], "1");
        let rec = decision(&h, &resp.request_id());
        assert_eq!(rec["status"], 503);
        assert_eq!(rec["reason"], "justification_unavailable");
        assert_eq!(rec["justification_state"], "unavailable");
        assert!(rec.get("justification_source").is_none(), "{rec}");
    }
    assert_eq!(h.upstream.count(), 0);
    // Readiness does not depend on the case service; reads that do not
    // need it are served.
    assert_eq!(h.admin_get("/readyz").await.status, 200);
    serve_training_content(&h);
    let resp = h.get(TRAINING_PATH, Some(&h.token(&Tok::training()))).await;
    assert_eq!(resp.status, 200);
    let m = h.admin_get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert_eq!(
        metric(
            &text,
            "purposegate_justification_lookups_total{result=\"error\"}"
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answering_5xx_after_an_answer_is_503_once_stale() {
    let svc = cases().await;
    // TTL 0: every request asks; staleness 1 s.
    let h = proxy(
        &svc.url(),
        "  cache_ttl_seconds: 0\n  max_staleness_seconds: 1\n  fail_fast_ms: 0\n",
    )
    .await;
    let t = h.token(&tok(
        "trust-safety",
        "abuse",
        "case_id",
        "CASE-1042",
        &["u1"],
    ));
    let path = "/v1/users/u1/conversations/c1";
    assert_eq!(h.get(path, Some(&t)).await.status, 200);
    svc.set_fault(Some(Fault::Status(500)));
    let resp = h.get(path, Some(&t)).await;
    assert_eq!(resp.status, 200, "a stale answer within max_staleness");
    assert_eq!(
        decision(&h, &resp.request_id())["justification_source"],
        "stale"
    );
    common::eventually(
        "the cached answer to pass max_staleness",
        Duration::from_secs(5),
        || async { h.get(path, Some(&t)).await.status == 503 },
    )
    .await;
    let before = h.upstream.count();
    let resp = h.get(path, Some(&t)).await;
    assert_eq!(resp.reason().as_deref(), Some("justification_unavailable"));
    assert_eq!(h.upstream.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_credential_is_reread_with_the_other_files() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let records = [(
        Kind::Ticket,
        "T-1".to_string(),
        Justification {
            status: Status::Open,
            assignees: vec!["e-1".into()],
            subjects: vec!["u1".into()],
            requested_by: Some("u1".into()),
        },
    )];
    let svc = CaseService::start(listener, records, Some("second-token")).unwrap();
    // The credential lives outside the config directory (absolute path).
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("cases-token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let h = proxy(
        &svc.url(),
        &format!(
            "  bearer_token_file: \"{}\"\n  cache_ttl_seconds: 0\n  max_staleness_seconds: 0\n",
            token_file.display()
        ),
    )
    .await;
    let t = h.token(&Tok::support("u1"));
    let path = "/v1/users/u1/conversations/c1";
    let resp = h.get(path, Some(&t)).await;
    assert_eq!(resp.reason().as_deref(), Some("justification_unavailable"));
    assert_eq!(
        svc.asked().last().unwrap().authorization.as_deref(),
        Some("Bearer first-token")
    );
    std::fs::write(&token_file, "second-token\n").unwrap();
    common::eventually("the new credential", Duration::from_secs(5), || async {
        h.get(path, Some(&t)).await.status == 200
    })
    .await;
    assert_eq!(
        svc.asked().last().unwrap().authorization.as_deref(),
        Some("Bearer second-token")
    );
    let log = std::fs::read_to_string(h.audit_path()).unwrap();
    assert!(!log.contains("first-token") && !log.contains("second-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_that_would_leave_a_purpose_unchecked_is_refused() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "").await;
    let policy = h.dir.path().join("policies/policy.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let edited = text.replace(
        "purposes:\n",
        "purposes:\n  incident: {justification_claim: incident_id, subject_scoped: true}\n",
    );
    assert_ne!(edited, text, "the policy has a purposes: section");
    std::fs::write(&policy, edited).unwrap();
    common::eventually("a refused reload", Duration::from_secs(5), || async {
        let m = h.admin_get("/metrics").await;
        String::from_utf8_lossy(&m.body).lines().any(|l| {
            l.starts_with("purposegate_policy_reloads_total{result=\"error\"} ")
                && !l.ends_with(" 0")
        })
    })
    .await;
    // The previous policy (and its check) is still in force.
    let t = tok("support", "support", "ticket_id", "TICKET-70", &["u1"]);
    let resp = h
        .get("/v1/users/u1/conversations/c1", Some(&h.token(&t)))
        .await;
    assert_eq!(resp.reason().as_deref(), Some("justification_closed"));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
}

/// Runs a command off the runtime (the case service must keep answering).
async fn run(mut cmd: Command) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_looks_the_justification_up_and_shows_17a_to_17e() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "").await;
    let explain = |t: &Tok, path: &str| {
        let mut cmd = bin();
        cmd.arg("explain")
            .arg("--config")
            .arg(&h.config_path)
            .arg("--token")
            .arg(h.token(t))
            .args(["GET", path]);
        run(cmd)
    };
    let allowed = tok("support", "support", "ticket_id", "TICKET-77", &["u1"]);
    let (code, out) = explain(&allowed, "/v1/users/u1/conversations/c1").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("decision: allow"), "{out}");
    for line in [
        "[pass] 17a justification_not_found",
        "[pass] 17b justification_closed",
        "[pass] 17c justification_not_assigned",
        "[pass] 17d justification_subject_mismatch",
        "[pass] 17e support_not_requested_by_user",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
    assert!(
        out.contains("ticket TICKET-77 exists (answer fresh)"),
        "{out}"
    );
    let denied = tok("support", "support", "ticket_id", "TICKET-80", &["u1"]);
    let (code, out) = explain(&denied, "/v1/users/u1/conversations/c1").await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reason: support_not_requested_by_user (403)"),
        "{out}"
    );
    assert!(
        out.contains("[FAIL] 17e support_not_requested_by_user"),
        "{out}"
    );
    assert!(out.contains("requested_by u2"), "{out}");
    // explain asked the service itself (a read); the store was never asked.
    assert_eq!(svc.asked_count(), 2);
    assert_eq!(h.upstream.count(), 0);
}

const CASE_TOKEN: &str = "{sub: e1, roles: [support], purpose: support, ticket_id: T-1, subjects: [u1], training_cert_exp: \"2027-01-01T00:00:00Z\"}";

fn case(name: &str, answer: Option<&str>, expect: &str) -> String {
    let answer = answer
        .map(|a| format!("    justification: {a}\n"))
        .unwrap_or_default();
    format!("  - name: {name}\n    request: {{path: /v1/users/u1/conversations/c1}}\n    token: {CASE_TOKEN}\n{answer}    expect: {expect}\n")
}

fn write_cases(dir: &Path, cases: &[String]) -> std::path::PathBuf {
    let tests = dir.join("cases");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(tests.join("t.yaml"), format!("cases:\n{}", cases.concat())).unwrap();
    tests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_states_the_answers_inline_and_never_calls_out() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "").await;
    let open = "{status: open, assignees: [e1], subjects: [u1], requested_by: u1}";
    let cases = [
        case("allowed", Some(open), "allow"),
        case("17a", Some("not_found"), "{deny: justification_not_found}"),
        case(
            "17b",
            Some("{status: closed, assignees: [e1], subjects: [u1], requested_by: u1}"),
            "{deny: justification_closed}",
        ),
        case(
            "17c",
            Some("{status: open, assignees: [e2], subjects: [u1], requested_by: u1}"),
            "{deny: justification_not_assigned}",
        ),
        case(
            "17d",
            Some("{status: open, assignees: [e1], subjects: [u2], requested_by: u1}"),
            "{deny: justification_subject_mismatch}",
        ),
        case(
            "17e",
            Some("{status: open, assignees: [e1], subjects: [u1], requested_by: u2}"),
            "{deny: support_not_requested_by_user}",
        ),
        case(
            "unavailable",
            Some("unavailable"),
            "{deny: justification_unavailable}",
        ),
    ];
    let dir = write_cases(h.dir.path(), &cases);
    let mut cmd = bin();
    cmd.args(["policy", "test"])
        .arg(&dir)
        .arg("--config")
        .arg(&h.config_path);
    let (code, out) = run(cmd).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with("7 passed, 0 failed"), "{out}");

    // With the check configured, a case that reaches rule 17 must state
    // the service's answer.
    let dir = write_cases(h.dir.path(), &[case("no answer", None, "allow")]);
    let mut cmd = bin();
    cmd.args(["policy", "test"])
        .arg(&dir)
        .arg("--config")
        .arg(&h.config_path);
    let (code, out) = run(cmd).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("states no `justification:` answer"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    assert_eq!(svc.asked_count(), 0, "policy test never calls out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_loads_the_section_as_serve_does() {
    let svc = cases().await;
    let h = proxy(&svc.url(), "").await;
    let mut cmd = bin();
    cmd.args(["policy", "check", "--config"])
        .arg(&h.config_path);
    let (code, out) = run(cmd).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("justifications checked for abuse, legal, support"),
        "{out}"
    );
    // A credential file that cannot be read is an error with file:line.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let broken = h.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        text.replace(
            "justifications:\n",
            "justifications:\n  bearer_token_file: \"missing-token\"\n",
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["policy", "check", "--config"]).arg(&broken);
    let (code, out) = run(cmd).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing-token"), "{out}");
    // A purpose listed that the policy lacks is an error.
    std::fs::write(
        &broken,
        text.replace(
            "justifications:\n",
            "justifications:\n  purposes: [abuse, incident]\n",
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["policy", "check", "--config"]).arg(&broken);
    let (code, out) = run(cmd).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.yaml:"), "{out}");
    assert!(out.contains("`incident` is not a purpose"), "{out}");
    assert_eq!(svc.asked_count(), 0);
}
