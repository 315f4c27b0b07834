//! The request pipeline end to end: HEAD, header hygiene, the audit trail,
//! metrics, HTTP/2 (h2c), hot reload and graceful shutdown.

mod common;

use std::time::Duration;

use common::{Harness, Reply, Tok};
use http::Method;

#[tokio::test]
async fn head_is_a_read() {
    let h = Harness::start().await;
    let resp = h
        .send(
            Method::HEAD,
            "/v1/users/u1/conversations/c1",
            Some(&h.token(&Tok::support("u1"))),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(h.upstream.requests().last().unwrap().method, Method::HEAD);
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced_and_the_token_never_leaves() {
    let h = Harness::start().await;
    let token = h.token(&Tok::support("u1"));
    let resp = h
        .send(
            Method::GET,
            "/v1/users/u1/conversations/c1?page=2",
            Some(&token),
            &[
                ("x-purposegate-subject", "ceo"),
                ("x-purposegate-purpose", "legal"),
                ("x-purposegate-request-id", "forged"),
                ("x-purposegate-anything", "1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "x-secret-hop"),
                ("x-secret-hop", "1"),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    let seen = h.upstream.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path_and_query, "/v1/users/u1/conversations/c1?page=2");
    assert_eq!(last.headers["x-purposegate-subject"], "e-1");
    assert_eq!(last.headers["x-purposegate-purpose"], "support");
    assert_eq!(
        last.headers["x-purposegate-request-id"],
        resp.request_id().as_str()
    );
    assert!(last.headers.get("x-purposegate-anything").is_none());
    assert!(last.headers.get("x-secret-hop").is_none());
    assert_eq!(last.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(last.headers["accept"], "application/json");
    for s in &seen {
        for (name, value) in &s.headers {
            assert!(
                !value
                    .as_bytes()
                    .windows(token.len())
                    .any(|w| w == token.as_bytes()),
                "token leaked in {name}"
            );
        }
        assert!(s.headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn every_request_has_a_decision_record_and_allowed_ones_complete() {
    let mut h = Harness::start().await;
    let mut ids = Vec::new();
    let support = h.token(&Tok::support("u1"));
    for path in [
        "/v1/users/u1/conversations/c1",
        "/v1/users/u1/files/f1",
        "/v1/users/u9/conversations/c1",
        "/nope",
    ] {
        ids.push((h.get(path, Some(&support)).await, path));
    }
    ids.push((
        h.get("/v1/users/u1/conversations/c1", None).await,
        "no token",
    ));
    ids.push((
        h.get("/v1/users/u1/conversations/c1", Some("garbage"))
            .await,
        "bad token",
    ));
    h.stop().await;
    let records = h.audit_records();
    for (resp, what) in &ids {
        let rid = resp.request_id();
        let decisions: Vec<_> = records
            .iter()
            .filter(|r| r["request_id"] == rid.as_str() && r["event"] == "decision")
            .collect();
        assert_eq!(decisions.len(), 1, "{what}: one decision record");
        let d = decisions[0];
        assert_eq!(d["status"], resp.status, "{what}");
        assert_eq!(d["method"], "GET");
        let completes = records
            .iter()
            .filter(|r| r["request_id"] == rid.as_str() && r["event"] == "complete")
            .count();
        if resp.status == 200 {
            assert_eq!(d["decision"], "allow");
            assert!(d["reason"].is_null());
            assert_eq!(d["subject"], "e-1");
            assert_eq!(d["purpose"], "support");
            assert_eq!(d["justification"], "T-1");
            assert_eq!(d["roles"], serde_json::json!(["support"]));
            assert_eq!(d["owner"], "u1");
            assert_eq!(completes, 1, "{what}: complete record");
            let c = records
                .iter()
                .find(|r| r["request_id"] == rid.as_str() && r["event"] == "complete")
                .unwrap();
            assert_eq!(c["bytes"], 12);
        } else {
            assert_eq!(d["decision"], "deny");
            assert_eq!(d["reason"], resp.reason().unwrap().as_str());
            assert_eq!(completes, 0);
        }
    }
    // Never a token in the log.
    let text = std::fs::read_to_string(h.audit_path()).unwrap();
    assert!(!text.contains(&support));
    // Every §7 field is present on every request record (the writer's own
    // records, such as the chain's first, carry chain fields instead), and
    // the chain verifies.
    let all = common::read_audit(&h.audit_path());
    assert_eq!(all[0]["event"], "chain_start");
    for r in records
        .iter()
        .filter(|r| r["event"] == "decision" || r["event"] == "complete")
    {
        for f in [
            "ts",
            "seq",
            "request_id",
            "event",
            "decision",
            "reason",
            "subject",
            "roles",
            "purpose",
            "justification",
            "method",
            "path",
            "owner",
            "route",
            "status",
            "bytes",
            "duration_ms",
            "client_addr",
            "token_id",
            "prev_hash",
            "hash",
        ] {
            assert!(r.get(f).is_some(), "field {f} missing in {r}");
        }
        // The client's own address and port (worked out once per connection).
        let client: std::net::SocketAddr = r["client_addr"].as_str().unwrap().parse().unwrap();
        assert!(client.ip().is_loopback() && client.port() != 0, "{r}");
    }
    for w in all.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1
        );
    }
    let report = purposegate::audit::verify::verify_files(&[h.audit_path()]).unwrap();
    assert_eq!(report.records as usize, all.len());
}

#[tokio::test]
async fn metrics_follow_the_contract_without_personal_labels() {
    let h = Harness::start().await;
    let _ = h
        .get(
            "/v1/users/u1/conversations/c1",
            Some(&h.token(&Tok::support("u1"))),
        )
        .await;
    let _ = h.get("/v1/users/u1/conversations/c1", None).await;
    let _ = h
        .get(
            "/v1/users/u1/conversations/c1",
            Some(&h.token(&Tok::new("support", "x-weird-purpose").subject("u1"))),
        )
        .await;
    let m = h.admin_get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    for needle in [
        "purposegate_requests_total{decision=\"allow\",purpose=\"support\",reason=\"none\"} 1",
        "purposegate_requests_total{decision=\"deny\",purpose=\"none\",reason=\"missing_token\"} 1",
        "purposegate_requests_total{decision=\"deny\",purpose=\"unknown\",reason=\"unknown_purpose\"} 1",
        "purposegate_request_duration_seconds_bucket",
        "purposegate_upstream_duration_seconds_count 1",
        "purposegate_audit_records_total",
        "purposegate_audit_errors_total 0",
        "purposegate_policy_reloads_total",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    assert!(!text.contains("e-1") && !text.contains("u1") && !text.contains("x-weird-purpose"));
    assert_eq!(h.admin_get("/healthz").await.status, 200);
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    common::promtool_check_metrics(&text);
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let h = Harness::start().await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::get(format!("http://{}/v1/users/u1/conversations/c1", h.addr))
        .header(
            "authorization",
            format!("Bearer {}", h.token(&Tok::support("u1"))),
        )
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(h.upstream.count(), 1);
}

#[tokio::test]
async fn consent_and_policy_reload_without_restart_and_bad_reload_keeps_the_old() {
    let h = Harness::start().await;
    let support = h.token(&Tok::support("u1"));
    let p = "/v1/users/u1/conversations/c1";
    assert_eq!(h.get(p, Some(&support)).await.status, 200);
    // u1 requests deletion: the consent file changes and is picked up.
    let consent = h.dir.path().join("consent.yaml");
    let rewritten = common::CONSENT.replace(
        "users:\n",
        "users:\n  u1:\n    deletion_requested_at: \"2026-01-01T00:00:00Z\"\n",
    );
    std::fs::write(&consent, rewritten).unwrap();
    common::eventually("the reload", Duration::from_secs(5), || async {
        h.get(p, Some(&support)).await.reason().as_deref() == Some("account_deleted")
    })
    .await;
    // A broken policy keeps the old one and counts an error.
    let policy_file = std::fs::read_dir(h.dir.path().join("policies"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&policy_file, "roles: [this is: not valid").unwrap();
    common::eventually("the reload", Duration::from_secs(5), || async {
        let m = String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap();
        m.contains("purposegate_policy_reloads_total{result=\"error\"}")
    })
    .await;
    assert_eq!(
        h.get(p, Some(&support)).await.reason().as_deref(),
        Some("account_deleted"),
        "old policy still enforced"
    );
    assert_eq!(
        h.get("/v1/users/u7/files/f1", Some(&h.token(&Tok::support("u7"))))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut h = Harness::start().await;
    let mut slow = Reply::ok(&[("x-content-owner", "u1")]);
    slow.delay = Some(Duration::from_millis(400));
    h.upstream.reply("/v1/users/u1/conversations/slow", slow);
    let token = h.token(&Tok::support("u1"));
    let addr = h.addr;
    let inflight = tokio::spawn(async move {
        common::send(
            addr,
            Method::GET,
            "/v1/users/u1/conversations/slow",
            Some(&token),
            &[],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.stop().await;
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"user content");
    let records = h.audit_records();
    assert!(records
        .iter()
        .any(|r| r["event"] == "complete" && r["request_id"] == resp.request_id().as_str()));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}
