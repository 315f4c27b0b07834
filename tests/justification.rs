//! The live justification check (docs/reference.md §10, issue 15) against a real
//! case service on 127.0.0.1:0 (`justification::sample::CaseService`, which
//! records what it is asked): rules 17a–e allowed and denied through real
//! lookups, the credential sent, percent-encoding, TTL, coalescing, stale
//! answers, fail-fast, redirects, body bounds and strict parsing, and the
//! config's `file:line` errors. Time is a `ManualClock`, so nothing waits for
//! a TTL; the only real waits are the short lookup timeouts of the hang tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use purposegate::config::Config;
use purposegate::justification::metrics::LookupResult;
use purposegate::justification::rules::{self, check_quiet};
use purposegate::justification::sample::{demo_records, CaseService, Fault};
use purposegate::justification::{
    Answer, Facts, Justification, JustificationMetrics, Justifications, Kind, Looked, LookupError,
    ManualClock, Source, Status, Unavailable,
};
use purposegate::policy::{Check, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BASE: &str = "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {url: \"http://127.0.0.1:9090\"}\naudit:\n  path: \"audit.jsonl\"\n";

/// A config whose `justifications:` section has `url` and `extra` lines.
fn config_text(url: &str, extra: &str) -> String {
    format!("{BASE}justifications:\n  url: \"{url}\"\n{extra}")
}

struct Setup {
    j: Justifications,
    clock: Arc<ManualClock>,
    metrics: JustificationMetrics,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

/// The check against `url`, with `extra` section lines (paths relative to
/// a fresh directory holding the config).
fn setup_at(url: &str, extra: &str, files: &[(&str, &str)]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let cfg = Config::parse(&dir.join("config.yaml"), &config_text(url, extra))
        .unwrap()
        .justifications
        .unwrap();
    let clock = Arc::new(ManualClock::default());
    let metrics = JustificationMetrics::default();
    let j = Justifications::with_clock(&cfg, metrics.clone(), clock.clone()).unwrap();
    Setup {
        j,
        clock,
        metrics,
        _dir: tmp,
        dir,
    }
}

fn setup(svc: &CaseService, extra: &str) -> Setup {
    setup_at(&svc.url(), extra, &[])
}

async fn demo_service() -> CaseService {
    CaseService::demo("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn facts<'a>(id: &'a str, sub: &'a str, owner: &'a str, support: bool) -> Facts<'a> {
    Facts {
        id,
        sub,
        owner,
        requested_by_required: support,
    }
}

fn found(looked: &Looked) -> &Justification {
    match &looked.answer {
        Answer::Found(j) => j,
        other => panic!("expected a justification, got {other:?}"),
    }
}

fn open_ticket(subjects: &[&str], by: &str) -> Justification {
    Justification {
        status: Status::Open,
        assignees: vec!["employee-support".into()],
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        requested_by: Some(by.to_string()),
    }
}

/// kind, id, sub, owner, support?, expected denial.
type Case = (
    Kind,
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<Reason>,
);
#[tokio::test]
async fn rules_17a_to_17e_allow_and_deny_on_real_answers() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    let ts = "employee-trust-safety";
    let sup = "employee-support";
    // (kind, id, sub, owner, support?, expected denial)
    let cases: [Case; 12] = [
        (Kind::Case, "CASE-1042", ts, "u1", false, None),
        (Kind::Ticket, "TICKET-77", sup, "u1", true, None),
        (
            Kind::Matter,
            "MATTER-9",
            "employee-legal",
            "u3",
            false,
            None,
        ),
        // 17a
        (
            Kind::Case,
            "CASE-404",
            ts,
            "u1",
            false,
            Some(Reason::JustificationNotFound),
        ),
        // kinds do not share ids: a ticket id is no case
        (
            Kind::Case,
            "TICKET-77",
            ts,
            "u1",
            false,
            Some(Reason::JustificationNotFound),
        ),
        // 17b
        (
            Kind::Ticket,
            "TICKET-70",
            sup,
            "u1",
            true,
            Some(Reason::JustificationClosed),
        ),
        // 17c
        (
            Kind::Case,
            "CASE-1043",
            ts,
            "u1",
            false,
            Some(Reason::JustificationNotAssigned),
        ),
        (
            Kind::Ticket,
            "TICKET-77",
            ts,
            "u1",
            true,
            Some(Reason::JustificationNotAssigned),
        ),
        // 17d
        (
            Kind::Case,
            "CASE-1042",
            ts,
            "u2",
            false,
            Some(Reason::JustificationSubjectMismatch),
        ),
        // 17e: u1 is a subject of TICKET-80 but u2 opened it
        (
            Kind::Ticket,
            "TICKET-80",
            sup,
            "u1",
            true,
            Some(Reason::SupportNotRequestedByUser),
        ),
        (Kind::Ticket, "TICKET-80", sup, "u2", true, None),
        // 17e applies to support only
        (Kind::Ticket, "TICKET-80", sup, "u1", false, None),
    ];
    for (kind, id, sub, owner, support, want) in cases {
        let looked = s.j.lookup(kind, id).await;
        let got = check_quiet(&looked, &facts(id, sub, owner, support));
        assert_eq!(got.err(), want, "{kind} {id} sub {sub} owner {owner}");
        if let Err(r) = got {
            assert_eq!(r.status(), 403);
        }
    }
    // Each distinct (kind, id) was asked once; repeats came from the cache.
    assert_eq!(svc.asked_count(), 8);
    assert_eq!(
        svc.asked()[0].path,
        "/v1/justifications/case/CASE-1042",
        "{:?}",
        svc.asked()
    );
    assert!(svc.asked().iter().all(|a| a.method == "GET"));
    assert_eq!(s.metrics.count(LookupResult::NotFound), 2);
    assert_eq!(s.metrics.count(LookupResult::Hit), 4);
    assert_eq!(s.metrics.count(LookupResult::Miss), 6);
}

#[tokio::test]
async fn the_bearer_credential_is_sent_reloaded_and_never_printed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let records = demo_records()
        .into_iter()
        .map(|(k, id, j)| (k, id.to_string(), j));
    let svc = CaseService::start(listener, records, Some("s3cret-one")).unwrap();
    let s = setup_at(
        &svc.url(),
        "  bearer_token_file: \"cases-token\"\n",
        &[("cases-token", "s3cret-one\n")],
    );
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(found(&looked).status, Status::Open);
    assert_eq!(
        svc.asked()[0].authorization.as_deref(),
        Some("Bearer s3cret-one")
    );
    assert!(!format!("{:?}", s.j).contains("s3cret"), "{:?}", s.j);
    assert_eq!(s.j.watched_files(), vec![s.dir.join("cases-token")]);

    // A rotated credential is used after reload; the service still wants
    // the old one, so the answer is a refusal, not a justification.
    std::fs::write(s.dir.join("cases-token"), "s3cret-two\n").unwrap();
    s.j.reload().unwrap();
    let looked = s.j.lookup(Kind::Ticket, "TICKET-78").await;
    assert_eq!(
        looked.answer,
        Answer::Unavailable(Unavailable::Failed(LookupError::Status(401)))
    );
    assert_eq!(
        svc.asked()[1].authorization.as_deref(),
        Some("Bearer s3cret-two")
    );
    // A broken file keeps the credential in use.
    std::fs::write(s.dir.join("cases-token"), "").unwrap();
    let e = s.j.reload().unwrap_err();
    assert!(e.to_string().contains("cases-token"), "{e}");
    s.j.lookup(Kind::Ticket, "TICKET-70").await;
    assert_eq!(
        svc.asked()[2].authorization.as_deref(),
        Some("Bearer s3cret-two")
    );

    // Without bearer_token_file no Authorization header is sent.
    let plain = setup(&svc, "");
    plain.j.lookup(Kind::Case, "CASE-1042").await;
    assert_eq!(svc.asked()[3].authorization, None);
}

#[tokio::test]
async fn ids_are_percent_encoded() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    let odd = "T 1/../x?y#z%&ü";
    svc.insert(Kind::Ticket, odd, open_ticket(&["u1"], "u1"));
    let looked = s.j.lookup(Kind::Ticket, odd).await;
    assert_eq!(found(&looked).subjects, ["u1"]);
    let asked = &svc.asked()[0];
    assert_eq!(
        asked.path,
        "/v1/justifications/ticket/T%201%2F..%2Fx%3Fy%23z%25%26%C3%BC"
    );
    assert_eq!(asked.id.as_deref(), Some(odd));
    // A dots-only id cannot climb out of the path.
    let looked = s.j.lookup(Kind::Case, "..").await;
    assert_eq!(looked.answer, Answer::NotFound);
    assert_eq!(svc.asked()[1].path, "/v1/justifications/case/%2E%2E");
}

#[tokio::test]
async fn a_ticket_closed_after_the_ttl_is_denied() {
    let svc = demo_service().await;
    let s = setup(&svc, "  cache_ttl_seconds: 30\n");
    let f = facts("TICKET-77", "employee-support", "u1", true);
    assert!(check_quiet(&s.j.lookup(Kind::Ticket, "TICKET-77").await, &f).is_ok());
    assert!(svc.set_status(Kind::Ticket, "TICKET-77", Status::Closed));
    // Within the TTL the cached (open) answer stands.
    s.clock.advance(Duration::from_secs(29));
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(looked.source, Some(Source::Cached));
    assert!(check_quiet(&looked, &f).is_ok());
    assert_eq!(svc.asked_count(), 1);
    // After it, the service is asked again and says closed.
    s.clock.advance(Duration::from_secs(1));
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(looked.source, Some(Source::Fresh));
    assert_eq!(
        check_quiet(&looked, &f).unwrap_err(),
        Reason::JustificationClosed
    );
    assert_eq!(svc.asked_count(), 2);
    assert_eq!(
        serde_json::to_value(looked.audit_facts()).unwrap(),
        serde_json::json!({"justification_state": "closed", "justification_source": "fresh"})
    );
}

#[tokio::test]
async fn concurrent_lookups_of_a_new_ticket_make_one_call() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    svc.insert(Kind::Ticket, "TICKET-NEW", open_ticket(&["u5"], "u5"));
    let lookups = (0..32).map(|_| s.j.lookup(Kind::Ticket, "TICKET-NEW"));
    let all = futures_util::future::join_all(lookups).await;
    assert_eq!(svc.asked_count(), 1);
    // All shared the one call: none was answered from the cache.
    assert!(all
        .iter()
        .all(|l| l.source == Some(Source::Fresh) && found(l).subjects == ["u5"]));
    assert_eq!(s.metrics.count(LookupResult::Miss), 32);
}

#[tokio::test]
async fn a_stale_answer_is_used_within_max_staleness_and_unavailable_after() {
    let svc = demo_service().await;
    let s = setup(
        &svc,
        "  cache_ttl_seconds: 30\n  max_staleness_seconds: 300\n",
    );
    let f = facts("CASE-1042", "employee-trust-safety", "u1", false);
    assert!(check_quiet(&s.j.lookup(Kind::Case, "CASE-1042").await, &f).is_ok());
    svc.set_fault(Some(Fault::Status(503)));
    s.clock.advance(Duration::from_secs(299));
    let looked = s.j.lookup(Kind::Case, "CASE-1042").await;
    assert_eq!(looked.source, Some(Source::Stale));
    assert!(check_quiet(&looked, &f).is_ok());
    assert_eq!(svc.asked_count(), 2);
    assert_eq!(s.metrics.count(LookupResult::Stale), 1);

    s.clock.advance(Duration::from_secs(1));
    let looked = s.j.lookup(Kind::Case, "CASE-1042").await;
    assert_eq!(looked.source, None);
    let mut trace: Vec<Check> = Vec::new();
    let d = rules::check(&looked, &f, &mut trace).unwrap_err();
    assert_eq!(
        (d, d.status().as_u16()),
        (Reason::JustificationUnavailable, 503)
    );
    assert_eq!(d.code(), "justification_unavailable");
    let detail = &trace.last().unwrap().detail;
    assert!(detail.contains("503"), "{detail}");
    assert_eq!(svc.asked_count(), 3);
    assert_eq!(s.metrics.count(LookupResult::Error), 1);

    // Once the service answers again, so does the check.
    svc.set_fault(None);
    s.clock.advance(Duration::from_secs(1));
    let looked = s.j.lookup(Kind::Case, "CASE-1042").await;
    assert!(check_quiet(&looked, &f).is_ok());
}

#[tokio::test]
async fn a_hanging_service_fails_fast_after_the_first_timeout() {
    let svc = demo_service().await;
    let s = setup(&svc, "  timeout_ms: 200\n  fail_fast_ms: 1000\n");
    svc.set_fault(Some(Fault::Hang));
    let first = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(
        first.answer,
        Answer::Unavailable(Unavailable::Failed(LookupError::Timeout))
    );
    let asked = svc.asked_count();
    // The second does not ask (so cannot wait for the timeout).
    let second = s.j.lookup(Kind::Matter, "MATTER-9").await;
    assert_eq!(second.answer, Answer::Unavailable(Unavailable::FailingFast));
    assert_eq!(svc.asked_count(), asked);
    let d = check_quiet(&second, &facts("MATTER-9", "e", "u3", false)).unwrap_err();
    assert_eq!(d, Reason::JustificationUnavailable);
    // After the window the service is tried again.
    svc.set_fault(None);
    s.clock.advance(Duration::from_millis(1000));
    let third = s.j.lookup(Kind::Matter, "MATTER-9").await;
    assert_eq!(found(&third).status, Status::Open);
    assert_eq!(svc.asked_count(), asked + 1);
}

#[tokio::test]
async fn an_unreachable_service_fails_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = setup_at(
        &format!("http://127.0.0.1:{port}/v1/justifications/{{kind}}/{{id}}"),
        "",
        &[],
    );
    let first = s.j.lookup(Kind::Case, "CASE-1042").await;
    assert!(
        matches!(
            first.answer,
            Answer::Unavailable(Unavailable::Failed(LookupError::Transport(_)))
        ),
        "{first:?}"
    );
    let second = s.j.lookup(Kind::Case, "CASE-1042").await;
    assert_eq!(second.answer, Answer::Unavailable(Unavailable::FailingFast));
    assert_eq!(s.metrics.count(LookupResult::Error), 2);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    svc.set_fault(Some(Fault::Redirect(format!(
        "http://{}/v1/justifications/ticket/TICKET-77",
        svc.addr()
    ))));
    let looked = s.j.lookup(Kind::Ticket, "TICKET-70").await;
    assert_eq!(
        looked.answer,
        Answer::Unavailable(Unavailable::Failed(LookupError::Redirect(302)))
    );
    assert_eq!(svc.asked_count(), 1);
    assert_eq!(svc.asked()[0].id.as_deref(), Some("TICKET-70"));
    // A bad answer is no outage: the next lookup asks (no fail-fast).
    svc.set_fault(None);
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(found(&looked).status, Status::Open);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    let big = format!(
        r#"{{"status":"open","assignees":["employee-support"],"subjects":["u1"],"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    svc.set_fault(Some(Fault::Body {
        status: 200,
        body: Bytes::from(big.clone()),
    }));
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(
        looked.answer,
        Answer::Unavailable(Unavailable::Failed(LookupError::TooLarge))
    );

    // Chunked, without a Content-Length to refuse up front.
    let raw = raw_server(big.into_bytes()).await;
    let s = setup_at(
        &format!("http://{raw}/v1/justifications/{{kind}}/{{id}}"),
        "",
        &[],
    );
    let looked = s.j.lookup(Kind::Ticket, "TICKET-77").await;
    assert_eq!(
        looked.answer,
        Answer::Unavailable(Unavailable::Failed(LookupError::TooLarge))
    );
}

/// A server answering one request with a chunked 200 of `body`.
async fn raw_server(body: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(8192) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn bad_answers_are_refused() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    let bodies: [(u16, &str); 6] = [
        (200, "not json"),
        (200, r#"{"status":"pending","assignees":[],"subjects":[]}"#),
        (
            200,
            r#"{"status":"open","assignees":"employee-support","subjects":[]}"#,
        ),
        (
            200,
            r#"{"status":"closed","status":"open","assignees":[],"subjects":[]}"#,
        ),
        (200, r#"[{"status":"open","assignees":[],"subjects":[]}]"#),
        (500, r#"{"status":"open","assignees":[],"subjects":[]}"#),
    ];
    for (i, (status, body)) in bodies.into_iter().enumerate() {
        svc.set_fault(Some(Fault::Body {
            status,
            body: Bytes::from(body),
        }));
        // A fresh id each time, so nothing cached can stand in.
        let id = format!("TICKET-BAD-{i}");
        let looked = s.j.lookup(Kind::Ticket, &id).await;
        let ok = matches!(
            (&looked.answer, status),
            (
                Answer::Unavailable(Unavailable::Failed(LookupError::BadAnswer(_))),
                200
            ) | (
                Answer::Unavailable(Unavailable::Failed(LookupError::Status(500))),
                500
            )
        );
        assert!(ok, "{body}: {looked:?}");
        let d = check_quiet(&looked, &facts(&id, "employee-support", "u1", true)).unwrap_err();
        assert_eq!(d, Reason::JustificationUnavailable);
    }
}

#[tokio::test]
async fn the_trace_lists_each_rule_of_the_table() {
    let svc = demo_service().await;
    let s = setup(&svc, "");
    let looked = s.j.lookup(Kind::Ticket, "TICKET-80").await;
    let mut trace: Vec<Check> = Vec::new();
    let r = rules::check(
        &looked,
        &facts("TICKET-80", "employee-support", "u1", true),
        &mut trace,
    );
    assert_eq!(r.unwrap_err(), Reason::SupportNotRequestedByUser);
    let lines: Vec<String> = trace
        .iter()
        .map(|c| format!("{} {} {}: {}", c.rule, c.name, c.passed, c.detail))
        .collect();
    assert_eq!(
        lines,
        [
            "17a justification_not_found true: ticket TICKET-80 exists (answer fresh)",
            "17b justification_closed true: ticket TICKET-80 is open",
            "17c justification_not_assigned true: sub employee-support in assignees [employee-support]",
            "17d justification_subject_mismatch true: owner u1 in subjects [u1, u2]",
            "17e support_not_requested_by_user false: owner u1 did not reach out (requested_by u2)",
        ]
    );
}

#[test]
fn config_errors_name_file_and_line() {
    let file = Path::new("/etc/purposegate/config.yaml");
    // The section's `url` is on line 15.
    let cases = [
        (
            config_text("https://cases.internal/v1/{kind}", ""),
            15,
            "{id}",
        ),
        (
            config_text("http://cases.internal/v1/{kind}/{id}", ""),
            15,
            "loopback",
        ),
        (
            config_text(
                "https://cases.internal/{kind}/{id}",
                "  purposes: [abuse]\n  cache_ttl_seconds: 30\n  max_staleness_seconds: 10\n",
            ),
            18,
            "max_staleness_seconds",
        ),
        (
            config_text(
                "https://cases.internal/{kind}/{id}",
                "  timeout_ms: 70000\n",
            ),
            16,
            "timeout_ms",
        ),
        (
            config_text("https://cases.internal/{kind}/{id}", "  bearer_token: x\n"),
            16,
            "bearer_token",
        ),
    ];
    for (text, line, needle) in cases {
        let e = Config::parse(file, &text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/purposegate/config.yaml:{line}: ")),
            "{e}"
        );
        assert!(e.message.contains(needle), "{e}");
    }
    // A missing credential file stops the start, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(
        &dir.path().join("config.yaml"),
        &config_text(
            "https://cases.internal/{kind}/{id}",
            "  bearer_token_file: \"nope\"\n",
        ),
    )
    .unwrap()
    .justifications
    .unwrap();
    let e = Justifications::new(&cfg, JustificationMetrics::default()).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}
