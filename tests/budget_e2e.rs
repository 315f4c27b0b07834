//! Rule 18 end to end: real proxies (`Harness`) in front of recording
//! stores, sharing the local Redis (127.0.0.1:6379, override with
//! PURPOSEGATE_TEST_REDIS=host:port). Two proxies with one Redis stand for
//! two replicas. Each test that touches Redis owns a database index (flushed
//! first); the indices differ from one another here, and `cargo test` runs
//! this binary and tests/budget.rs one after the other.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Harness, Opts, Resp, Tok};
use serde_json::Value;

fn redis_addr() -> SocketAddr {
    std::env::var("PURPOSEGATE_TEST_REDIS")
        .unwrap_or_else(|_| "127.0.0.1:6379".to_string())
        .parse()
        .unwrap()
}

/// Database `db` of the local Redis, flushed.
async fn flushed(db: u8) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/{db}", redis_addr())).unwrap();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("local Redis at {} not answering: {e}", redis_addr()));
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    c
}

/// A `budgets:` section for Redis at `addr`, database `db`. The check bound
/// is generous: this machine is shared, and a slow answer is not what these
/// tests are about.
fn budgets(addr: SocketAddr, db: u8, limits: &[&str]) -> String {
    let mut yaml =
        format!("budgets:\n  redis_url: \"redis://{addr}/{db}\"\n  timeout_ms: 2000\n  limits:\n");
    for l in limits {
        yaml.push_str(&format!("    - {l}\n"));
    }
    yaml
}

async fn proxy(budgets: &str) -> Harness {
    Harness::start_with(Opts {
        extra_yaml: budgets.to_string(),
        ..Opts::default()
    })
    .await
}

/// A support token of employee `sub` scoped to `owners`.
fn support(h: &Harness, sub: &str, owners: &[&str]) -> String {
    let mut t = Tok::support(owners[0]);
    t.sub = sub.to_string();
    for o in &owners[1..] {
        t = t.subject(o);
    }
    h.token(&t)
}

fn path(owner: &str) -> String {
    format!("/v1/users/{owner}/conversations/c1")
}

fn retry_after(r: &Resp) -> u64 {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After seconds in {:?}", r.headers))
}

/// The decision record of the request that got `resp`.
fn decision(h: &Harness, resp: &Resp) -> Value {
    let id = resp.request_id();
    h.audit_records()
        .into_iter()
        .find(|r| r["request_id"] == id.as_str() && r["event"] == "decision")
        .unwrap_or_else(|| panic!("no decision record for {id}"))
}

async fn metrics(h: &Harness) -> String {
    String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap()
}

fn checks(purpose: &str, result: &str, n: u64) -> String {
    format!("purposegate_budget_checks_total{{purpose=\"{purpose}\",result=\"{result}\"}} {n}")
}

/// A TCP port on loopback where nothing listens.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn distinct_owners_are_shared_by_two_replicas_rereads_are_free_and_recorded() {
    let _db = flushed(13).await;
    let section = budgets(
        redis_addr(),
        13,
        &["{purpose: support, distinct_owners: 3, window_seconds: 3600}"],
    );
    let (a, b) = (proxy(&section).await, proxy(&section).await);
    let owners = ["u1", "u2", "u4", "u7"];
    let (alice_a, alice_b) = (support(&a, "alice", &owners), support(&b, "alice", &owners));

    let first = a.get(&path("u1"), Some(&alice_a)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(b.get(&path("u2"), Some(&alice_b)).await.status, 200);
    // A re-read through the other replica costs nothing.
    let reread = b.get(&path("u1"), Some(&alice_b)).await;
    assert_eq!(reread.status, 200);
    assert_eq!(a.get(&path("u4"), Some(&alice_a)).await.status, 200);

    // The fourth owner is refused by either replica, before the store.
    let refused = b.get(&path("u7"), Some(&alice_b)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.reason().as_deref(), Some("access_budget_exceeded"));
    assert_eq!(refused.json()["error"], "too_many_requests");
    assert!((1..=3600).contains(&retry_after(&refused)));
    assert_eq!(a.get(&path("u7"), Some(&alice_a)).await.status, 429);
    // Owners already counted stay readable at the limit.
    let at_limit = a.get(&path("u2"), Some(&alice_a)).await;
    assert_eq!(at_limit.status, 200);
    let seen: Vec<String> = a
        .upstream
        .requests()
        .into_iter()
        .chain(b.upstream.requests())
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(!seen.contains(&path("u7")), "{seen:?}");

    // Another employee has a budget of their own.
    let bob = support(&a, "bob", &owners);
    assert_eq!(a.get(&path("u7"), Some(&bob)).await.status, 200);

    // The records carry usage and limit at decision time.
    let rec = decision(&b, &refused);
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["reason"], "access_budget_exceeded");
    assert_eq!(rec["status"], 429);
    assert_eq!(
        rec["budget"],
        serde_json::json!([{"limit": "distinct_owners", "used": 3, "max": 3, "window_seconds": 3600, "refused": true}])
    );
    let rec = decision(&a, &first);
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["budget"][0]["used"], 1);
    assert_eq!(rec["budget"][0]["max"], 3);
    let rec = decision(&b, &reread);
    assert_eq!(rec["budget"][0]["used"], 2);
    assert_eq!(rec["budget"][0]["owner_counted"], true);
    assert_eq!(decision(&a, &at_limit)["budget"][0]["used"], 3);

    // Metrics: a checked u1, u4, u7 (refused), u2 (free) and bob's u7.
    let m = metrics(&a).await;
    for want in [
        checks("support", "allowed", 4),
        checks("support", "exceeded", 1),
        checks("support", "unavailable", 0),
        "purposegate_budget_check_duration_seconds_count 5".to_string(),
        "purposegate_requests_total{decision=\"deny\",purpose=\"support\",reason=\"access_budget_exceeded\"} 1".to_string(),
    ] {
        assert!(m.contains(&want), "missing {want} in\n{m}");
    }
    assert!(!m.contains("alice") && !m.contains("bob"));
    common::promtool_check_metrics(&m);
    let m = metrics(&b).await;
    assert!(m.contains(&checks("support", "allowed", 2)), "{m}");
    assert!(m.contains(&checks("support", "exceeded", 1)), "{m}");
}

/// Waits until the current `window`-second window (epoch-aligned, as the
/// budget script counts; Redis runs on this machine's clock) is at most
/// 0.3 s old, so that a short sequence of requests falls in one window.
async fn start_of_window(window: u64) {
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let into = now.as_millis() % u128::from(window * 1000);
        if into < 300 {
            return;
        }
        let wait = u128::from(window * 1000) - into;
        tokio::time::sleep(Duration::from_millis(wait as u64 + 5)).await;
    }
}

#[tokio::test]
async fn a_request_budget_refuses_with_retry_after_until_its_short_window_ends() {
    let _db = flushed(14).await;
    let section = budgets(
        redis_addr(),
        14,
        &["{purpose: support, requests: 2, window_seconds: 3}"],
    );
    let (a, b) = (proxy(&section).await, proxy(&section).await);
    let (ta, tb) = (support(&a, "carol", &["u1"]), support(&b, "carol", &["u1"]));
    start_of_window(3).await;
    // Every request counts, re-reads of one owner too.
    assert_eq!(a.get(&path("u1"), Some(&ta)).await.status, 200);
    assert_eq!(b.get(&path("u1"), Some(&tb)).await.status, 200);
    let refused = a.get(&path("u1"), Some(&ta)).await;
    assert_eq!(refused.status, 429);
    let wait = retry_after(&refused);
    assert!(
        (1..=3).contains(&wait),
        "Retry-After {wait} outside the 3 s window"
    );
    let rec = decision(&a, &refused);
    assert_eq!(rec["budget"][0]["limit"], "requests");
    assert_eq!(rec["budget"][0]["used"], 2);
    assert_eq!(rec["budget"][0]["window_seconds"], 3);
    assert_eq!(a.upstream.count() + b.upstream.count(), 2);

    // After Retry-After the next window has the budget back.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let again = b.get(&path("u1"), Some(&tb)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(decision(&b, &again)["budget"][0]["used"], 1);
    assert_eq!(a.upstream.count() + b.upstream.count(), 3);
}

#[tokio::test]
async fn fifty_concurrent_requests_for_new_owners_on_a_budget_of_ten_allow_exactly_ten() {
    let _db = flushed(15).await;
    let section = budgets(
        redis_addr(),
        15,
        &["{purpose: support, distinct_owners: 10, window_seconds: 3600}"],
    );
    let (a, b) = (proxy(&section).await, proxy(&section).await);
    let owners: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = owners.iter().map(String::as_str).collect();
    let (ta, tb) = (support(&a, "dave", &refs), support(&b, "dave", &refs));
    let sends = owners.iter().enumerate().map(|(i, o)| {
        let (h, t) = if i % 2 == 0 { (&a, &ta) } else { (&b, &tb) };
        let p = path(o);
        async move { h.get(&p, Some(t)).await.status }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, refused), (10, 40), "{statuses:?}");
    assert_eq!(a.upstream.count() + b.upstream.count(), 10);
}

#[tokio::test]
async fn a_request_refused_by_an_earlier_rule_consumes_nothing() {
    let _db = flushed(11).await;
    let section = budgets(
        redis_addr(),
        11,
        &["{purpose: support, requests: 1, window_seconds: 3600}"],
    );
    let h = proxy(&section).await;
    let token = support(&h, "erin", &["u1", "u3"]);
    // Subject out of scope (10), deleted account (11), a write (1), a
    // missing justification (9): each refused by its own rule.
    assert_eq!(
        h.get(&path("u9"), Some(&token)).await.reason().as_deref(),
        Some("subject_not_in_scope")
    );
    assert_eq!(
        h.get(&path("u3"), Some(&token)).await.reason().as_deref(),
        Some("account_deleted")
    );
    let post = h
        .send(http::Method::POST, &path("u1"), Some(&token), &[])
        .await;
    assert_eq!(post.reason().as_deref(), Some("method_not_allowed"));
    let mut no_ticket = Tok::new("support", "support").subject("u1");
    no_ticket.sub = "erin".into();
    let no_ticket = h.token(&no_ticket);
    assert_eq!(
        h.get(&path("u1"), Some(&no_ticket))
            .await
            .reason()
            .as_deref(),
        Some("missing_justification")
    );
    // None of them was checked against the budget; its one request is left.
    let m = metrics(&h).await;
    assert!(m.contains(&checks("support", "allowed", 0)), "{m}");
    assert!(m.contains(&checks("support", "exceeded", 0)), "{m}");
    assert_eq!(h.get(&path("u1"), Some(&token)).await.status, 200);
    assert_eq!(h.get(&path("u1"), Some(&token)).await.status, 429);
    assert_eq!(h.upstream.count(), 1);
    // The records of denials by other rules carry no budget.
    let denied: Vec<Value> = h
        .audit_records()
        .into_iter()
        .filter(|r| r["decision"] == "deny" && r["reason"] != "access_budget_exceeded")
        .collect();
    assert_eq!(denied.len(), 4);
    assert!(
        denied.iter().all(|r| r.get("budget").is_none()),
        "{denied:?}"
    );
}

#[tokio::test]
async fn unreachable_redis_fails_closed_before_the_store_while_the_proxy_stays_ready() {
    let section = budgets(
        closed_port(),
        0,
        &["{purpose: support, distinct_owners: 20, window_seconds: 86400}"],
    );
    // The proxy starts without Redis, and is live and ready.
    let h = proxy(&section).await;
    assert_eq!(h.admin_get("/healthz").await.status, 200);
    let token = support(&h, "frank", &["u1"]);
    for _ in 0..3 {
        let r = h.get(&path("u1"), Some(&token)).await;
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.reason().as_deref(), Some("budget_unavailable"));
        assert_eq!(r.headers["retry-after"], "1");
        let rec = decision(&h, &r);
        assert_eq!(rec["reason"], "budget_unavailable");
        assert!(rec.get("budget").is_none(), "{rec}");
    }
    assert_eq!(h.upstream.count(), 0, "the store was contacted");
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    // Purposes without limits are not affected.
    let legal = h.token(&Tok::legal("u1"));
    assert_eq!(h.get(&path("u1"), Some(&legal)).await.status, 200);
    assert_eq!(h.upstream.count(), 1);
    let m = metrics(&h).await;
    assert!(m.contains(&checks("support", "unavailable", 3)), "{m}");
    assert!(m.contains("purposegate_requests_total{decision=\"deny\",purpose=\"support\",reason=\"budget_unavailable\"} 3"), "{m}");
}

#[tokio::test]
async fn limits_must_name_policy_purposes_at_start_and_on_reload() {
    // At start: the error names the limit's line.
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    let opts = Opts {
        extra_yaml: budgets(
            closed_port(),
            0,
            &["{purpose: shopping, requests: 5, window_seconds: 60}"],
        ),
        ..Opts::default()
    };
    let file = common::write_config(dir.path(), &key, closed_port(), &opts);
    let config = purposegate::config::Config::load(&file).unwrap();
    let e = purposegate::server::start(config).await.err().unwrap();
    let text = e.to_string();
    assert!(
        text.contains("config.yaml:")
            && text.contains("budgets.limits: purpose `shopping` is not a purpose of the policy"),
        "{text}"
    );

    // On reload: a policy that drops a budgeted purpose is refused and the
    // old one stays (abuse still reaches rule 18, not unknown_purpose).
    let h = proxy(&budgets(
        closed_port(),
        0,
        &["{purpose: abuse, requests: 5, window_seconds: 60}"],
    ))
    .await;
    let policy = h.dir.path().join("policies/policy.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let without_abuse: String = text
        .lines()
        .filter(|l| !l.contains("[abuse]") && !l.trim_start().starts_with("abuse:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without_abuse);
    // Replaced in one step, so that no reload sees half a file.
    let tmp = h.dir.path().join("policies/.policy.tmp");
    std::fs::write(&tmp, without_abuse).unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    let config = purposegate::config::Config::load(&h.config_path).unwrap();
    let e = purposegate::state::load_policy_and_consent(&config).unwrap_err();
    assert!(
        e.to_string()
            .contains("budgets.limits: purpose `abuse` is not a purpose of the policy"),
        "{e}"
    );
    common::eventually("the refused reload", Duration::from_secs(10), || async {
        metrics(&h)
            .await
            .contains("purposegate_policy_reloads_total{result=\"error\"} 1")
    })
    .await;
    let abuse = h.token(&Tok::abuse("u1"));
    assert_eq!(
        h.get(&path("u1"), Some(&abuse)).await.reason().as_deref(),
        Some("budget_unavailable")
    );
}

/// Runs the purposegate binary with `args` (off the runtime's thread).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_purposegate"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn explain(h: &Harness, token: &str, owner: &str) -> (i32, String) {
    let args = ["explain", "--config"]
        .into_iter()
        .map(String::from)
        .chain([h.config_path.display().to_string()])
        .chain(["--token".into(), token.into(), "GET".into(), path(owner)])
        .collect();
    let (code, out, err) = cli(args).await;
    assert!(err.is_empty(), "{err}");
    (code, out)
}

#[tokio::test]
async fn explain_shows_current_usage_without_consuming_it() {
    let _db = flushed(12).await;
    let section = budgets(
        redis_addr(),
        12,
        &["{purpose: support, distinct_owners: 2, window_seconds: 3600}"],
    );
    let h = proxy(&section).await;
    let token = support(&h, "grace", &["u1", "u2", "u4"]);
    assert_eq!(h.get(&path("u1"), Some(&token)).await.status, 200);

    let now = "budget: support counted now, before this request (explain consumes nothing; rule 18 above shows the count with it): distinct_owners 1/2 per 3600 s";
    for _ in 0..2 {
        let (code, out) = explain(&h, &token, "u2").await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("decision: allow"), "{out}");
        assert!(out.contains(now), "{out}");
        assert!(
            out.contains("[pass]  18 access_budget_exceeded")
                && out.contains("support: distinct_owners 2/2 per 3600 s"),
            "{out}"
        );
    }
    // Neither explain consumed anything: the proxy counts u2 as the second.
    let second = h.get(&path("u2"), Some(&token)).await;
    assert_eq!(second.status, 200);
    assert_eq!(decision(&h, &second)["budget"][0]["used"], 2);

    let (code, out) = explain(&h, &token, "u4").await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reason: access_budget_exceeded (429)"),
        "{out}"
    );
    assert!(out.contains("[FAIL]  18 access_budget_exceeded"), "{out}");
    assert!(out.contains("distinct_owners 2/2 per 3600 s"), "{out}");
    let (code, out) = explain(&h, &token, "u1").await;
    assert_eq!(code, 0, "an owner already counted is free: {out}");
    assert!(out.contains("owner already counted"), "{out}");
    assert!(!out.contains(&token), "explain never prints the token");
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test]
async fn policy_check_loads_the_budgets_section_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    let check = |extra: &str, limit: &str| {
        let yaml = budgets(closed_port(), 0, &[limit])
            .replace("  limits:\n", &format!("{extra}  limits:\n"));
        let opts = Opts {
            extra_yaml: yaml,
            ..Opts::default()
        };
        let config = common::write_config(dir.path(), &key, closed_port(), &opts);
        cli(vec![
            "policy".into(),
            "check".into(),
            "--config".into(),
            config.display().to_string(),
        ])
    };
    let support = "{purpose: support, distinct_owners: 20, window_seconds: 86400}";
    std::fs::write(dir.path().join("redis-pw"), "s3cret\n").unwrap();
    let (code, out, err) = check("  password_file: redis-pw\n", support).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 access budget limits for support (Redis not contacted)"),
        "{out}"
    );
    // A secret serve could not read fails the check too.
    let (code, _, err) = check("  password_file: no-such-file\n", support).await;
    assert_eq!(code, 1);
    assert!(err.contains("budgets.password_file"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // A limit of a purpose the policy does not have names its line.
    let (code, _, err) = check("", "{purpose: shopping, requests: 5, window_seconds: 60}").await;
    assert_eq!(code, 1);
    assert!(
        err.contains("config.yaml:")
            && err.contains("purpose `shopping` is not a purpose of the policy"),
        "{err}"
    );
}
