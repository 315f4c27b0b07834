//! Every docs/reference.md §6 rule through the real proxy in front of a recording
//! upstream: status, reason code, and whether the upstream was reached.

mod common;

use common::{Harness, Opts, Reply, Tok};
use http::Method;

/// Asserts a denial and whether the upstream saw the request.
async fn expect_deny(
    h: &Harness,
    resp: common::Resp,
    status: u16,
    reason: &str,
    before: usize,
    reached: bool,
) {
    assert_eq!(resp.status, status, "{reason}: body {:?}", resp.body);
    assert_eq!(resp.reason().as_deref(), Some(reason));
    let v = resp.json();
    assert_eq!(
        v["request_id"],
        resp.request_id(),
        "request id in body and header"
    );
    assert!(v["error"].is_string());
    assert_eq!(
        h.upstream.count() > before,
        reached,
        "{reason}: upstream reached = {}",
        h.upstream.count() > before
    );
    assert!(
        !resp.body.windows(12).any(|w| w == b"user content"),
        "{reason}: content leaked"
    );
}

#[tokio::test]
async fn one_allowed_read_per_purpose() {
    let h = Harness::start().await;
    h.upstream.reply(
        "/v1/users/u7/conversations/c1",
        Reply::ok(&[
            ("x-content-owner", "u7"),
            ("x-content-created-at", "2026-05-01T00:00:00Z"),
            ("x-content-source", "consumer"),
            ("x-content-deidentified", "true"),
        ]),
    );
    let cases = [
        ("abuse", Tok::abuse("u1"), "/v1/users/u1/conversations/c1"),
        ("support", Tok::support("u1"), "/v1/users/u1/files/f1"),
        ("legal", Tok::legal("u3"), "/v1/users/u3/conversations/c1"),
        ("training", Tok::training(), "/v1/users/u7/conversations/c1"),
    ];
    for (purpose, tok, path) in cases {
        let before = h.upstream.count();
        let resp = h.get(path, Some(&h.token(&tok))).await;
        assert_eq!(resp.status, 200, "{purpose}: {:?}", resp.body);
        assert_eq!(&resp.body[..], b"user content");
        assert!(!resp.request_id().is_empty());
        let seen = h.upstream.requests();
        assert_eq!(seen.len(), before + 1);
        let last = seen.last().unwrap();
        assert_eq!(last.path_and_query, path);
        assert_eq!(last.headers["x-purposegate-purpose"], purpose);
        assert_eq!(last.headers["x-purposegate-subject"], "e-1");
        assert_eq!(
            last.headers["x-purposegate-request-id"],
            resp.request_id().as_str()
        );
        assert!(last.headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn pre_upstream_rules_never_reach_the_upstream() {
    let h = Harness::start().await;
    let support = h.token(&Tok::support("u1"));
    let p = "/v1/users/u1/conversations/c1";
    type Case<'a> = (
        Method,
        &'a str,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::DELETE,
            p,
            Some(support.clone()),
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            Method::POST,
            p,
            Some(support.clone()),
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            p,
            Some(support.clone()),
            vec![("X-HTTP-Method-Override", "DELETE")],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            p,
            Some(support.clone()),
            vec![("X-Method-Override", "PUT")],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            p,
            Some(support.clone()),
            vec![("X-HTTP-Method", "PATCH")],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/users/u1/conversations/../files/f1",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u1/conversations/./c1",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u1//conversations/c1",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u1/conversations/%2e%2e/x",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u2%2fconversations/c1",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u1/conversations/c1%00",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (
            Method::GET,
            "/v1/users/u1/conversations/a%5cb",
            Some(support.clone()),
            vec![],
            400,
            "non_canonical_path",
        ),
        (Method::GET, p, None, vec![], 401, "missing_token"),
        (
            Method::GET,
            p,
            None,
            vec![("authorization", "Basic dXNlcjpwdw==")],
            401,
            "missing_token",
        ),
        (
            Method::GET,
            p,
            Some("not.a.jwt".into()),
            vec![],
            401,
            "invalid_token",
        ),
        (
            Method::GET,
            "/v1/admin/users",
            Some(support.clone()),
            vec![],
            404,
            "no_route",
        ),
        (
            Method::GET,
            "/v1/users/u1",
            Some(support.clone()),
            vec![],
            404,
            "no_route",
        ),
    ];
    for (method, path, token, headers, status, reason) in cases {
        let before = h.upstream.count();
        let resp = h
            .send(method.clone(), path, token.as_deref(), &headers)
            .await;
        if status == 405 {
            assert_eq!(resp.headers["allow"], "GET, HEAD", "{method} {path}");
        }
        expect_deny(&h, resp, status, reason, before, false).await;
    }
}

#[tokio::test]
async fn claim_rules_deny_before_the_upstream() {
    let h = Harness::start().await;
    let p = "/v1/users/u1/conversations/c1";
    let mut no_cert = Tok::support("u1");
    no_cert.cert_days = None;
    let mut expired_cert = Tok::support("u1");
    expired_cert.cert_days = Some(-1);
    let mut no_purpose = Tok::support("u1");
    no_purpose.purpose = None;
    let cases: Vec<(Tok, &str, &str)> = vec![
        (
            Tok::new("support", "curiosity").subject("u1"),
            p,
            "unknown_purpose",
        ),
        (no_purpose, p, "unknown_purpose"),
        (
            Tok::new("support", "marketing").subject("u1"),
            p,
            "prohibited_purpose",
        ),
        (
            Tok::new("support", "advertising").subject("u1"),
            p,
            "prohibited_purpose",
        ),
        (
            Tok::new("support", "sale").subject("u1"),
            p,
            "prohibited_purpose",
        ),
        (
            Tok::new("support", "abuse")
                .just("case_id", "C-1")
                .subject("u1"),
            p,
            "role_not_permitted",
        ),
        (
            Tok::new("annotation-contractor", "support")
                .just("ticket_id", "T")
                .subject("u1"),
            p,
            "role_not_permitted",
        ),
        (no_cert, p, "training_certification_required"),
        (expired_cert, p, "training_certification_required"),
        (
            Tok::new("support", "support").subject("u1"),
            p,
            "missing_justification",
        ),
        (
            Tok::new("support", "support")
                .just("ticket_id", "  ")
                .subject("u1"),
            p,
            "missing_justification",
        ),
        (
            Tok::new("legal", "legal")
                .just("ticket_id", "T-1")
                .subject("u1"),
            p,
            "missing_justification",
        ),
        (Tok::support("u9"), p, "subject_not_in_scope"),
        (Tok::abuse("u9"), p, "subject_not_in_scope"),
        (
            Tok::support("u3"),
            "/v1/users/u3/conversations/c1",
            "account_deleted",
        ),
        (Tok::abuse("u3"), "/v1/users/u3/files/f1", "account_deleted"),
        (
            Tok::training(),
            "/v1/users/u3/conversations/c1",
            "account_deleted",
        ),
    ];
    for (tok, path, reason) in cases {
        let before = h.upstream.count();
        let resp = h.get(path, Some(&h.token(&tok))).await;
        expect_deny(&h, resp, 403, reason, before, false).await;
    }
}

#[tokio::test]
async fn response_rules_deny_after_the_upstream_without_content() {
    let h = Harness::start().await;
    let meta = |owner: &str, created: &str, source: &str, org: Option<&str>, deid: &str| {
        let mut m = vec![
            ("x-content-owner".to_string(), owner.to_string()),
            ("x-content-created-at".to_string(), created.to_string()),
            ("x-content-source".to_string(), source.to_string()),
            ("x-content-deidentified".to_string(), deid.to_string()),
        ];
        if let Some(o) = org {
            m.push(("x-content-org".into(), o.into()));
        }
        Reply {
            status: 200,
            headers: m,
            body: b"user content".to_vec(),
            ..Reply::default()
        }
    };
    let set = |path: &str, r: Reply| h.upstream.reply(path, r);
    set(
        "/v1/users/u1/conversations/other",
        meta("u8", "2026-05-01T00:00:00Z", "consumer", None, "true"),
    );
    set(
        "/v1/users/u1/conversations/raw",
        meta("u1", "2026-05-01T00:00:00Z", "consumer", None, "false"),
    );
    set(
        "/v1/users/u2/conversations/after",
        meta("u2", "2026-03-01T00:00:00Z", "consumer", None, "true"),
    );
    set(
        "/v1/users/u2/conversations/before",
        meta("u2", "2026-02-28T23:59:59Z", "consumer", None, "true"),
    );
    set(
        "/v1/users/u6/conversations/closed",
        meta("u6", "2026-02-01T00:00:00Z", "consumer", None, "true"),
    );
    set(
        "/v1/users/u4/conversations/api-in",
        meta("u4", "2026-02-15T00:00:00Z", "api", Some("org-9"), "true"),
    );
    set(
        "/v1/users/u4/conversations/api-late",
        meta("u4", "2026-06-01T00:00:00Z", "api", Some("org-9"), "true"),
    );
    set(
        "/v1/users/u4/conversations/api-other",
        meta("u4", "2026-02-15T00:00:00Z", "api", Some("org-7"), "true"),
    );
    set(
        "/v1/users/u4/conversations/api-noorg",
        meta("u4", "2026-02-15T00:00:00Z", "api", None, "true"),
    );
    let mut bare = Reply::ok(&[("x-content-owner", "u1")]);
    bare.status = 200;
    set("/v1/users/u1/conversations/bare", bare);
    set(
        "/v1/users/u1/conversations/baddate",
        meta("u1", "last tuesday", "consumer", None, "true"),
    );
    let training = h.token(&Tok::training());
    let cases = [
        (
            h.token(&Tok::support("u1")),
            "/v1/users/u1/conversations/other",
            Some("owner_mismatch"),
        ),
        (
            training.clone(),
            "/v1/users/u1/conversations/other",
            Some("owner_mismatch"),
        ),
        (
            training.clone(),
            "/v1/users/u1/conversations/raw",
            Some("not_deidentified"),
        ),
        (
            training.clone(),
            "/v1/users/u2/conversations/after",
            Some("opted_out"),
        ),
        (training.clone(), "/v1/users/u2/conversations/before", None),
        (training.clone(), "/v1/users/u6/conversations/closed", None),
        (training.clone(), "/v1/users/u4/conversations/api-in", None),
        (
            training.clone(),
            "/v1/users/u4/conversations/api-late",
            Some("api_content_not_shared"),
        ),
        (
            training.clone(),
            "/v1/users/u4/conversations/api-other",
            Some("api_content_not_shared"),
        ),
        (
            training.clone(),
            "/v1/users/u4/conversations/api-noorg",
            Some("metadata_missing"),
        ),
        (
            training.clone(),
            "/v1/users/u1/conversations/bare",
            Some("metadata_missing"),
        ),
        (
            training.clone(),
            "/v1/users/u1/conversations/baddate",
            Some("metadata_missing"),
        ),
    ];
    for (token, path, reason) in cases {
        let before = h.upstream.count();
        let resp = h.get(path, Some(&token)).await;
        match reason {
            Some(reason) => expect_deny(&h, resp, 403, reason, before, true).await,
            None => {
                assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
                assert_eq!(&resp.body[..], b"user content");
            }
        }
    }
}

#[tokio::test]
async fn non_success_upstream_answers_pass_through_audited() {
    let h = Harness::start().await;
    let mut missing = Reply::ok(&[]);
    missing.status = 404;
    missing.body = b"{\"error\":\"no such conversation\"}".to_vec();
    h.upstream.reply("/v1/users/u1/conversations/gone", missing);
    let resp = h
        .get(
            "/v1/users/u1/conversations/gone",
            Some(&h.token(&Tok::support("u1"))),
        )
        .await;
    assert_eq!(resp.status, 404);
    assert!(resp.reason().is_none());
    let records = h.audit_records();
    let rec = records
        .iter()
        .find(|r| r["request_id"] == resp.request_id().as_str() && r["event"] == "decision")
        .unwrap();
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["status"], 404);
}

#[tokio::test]
async fn upstream_unreachable_is_502() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(Opts {
        upstream_override: Some(closed),
        ..Opts::default()
    })
    .await;
    let resp = h
        .get(
            "/v1/users/u1/conversations/c1",
            Some(&h.token(&Tok::support("u1"))),
        )
        .await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.reason().as_deref(), Some("upstream_unavailable"));
}

#[tokio::test]
async fn upstream_too_slow_is_504() {
    let h = Harness::start_with(Opts {
        response_timeout_ms: 200,
        ..Opts::default()
    })
    .await;
    let mut slow = Reply::ok(&[("x-content-owner", "u1")]);
    slow.delay = Some(std::time::Duration::from_millis(1500));
    h.upstream.reply("/v1/users/u1/conversations/slow", slow);
    let started = std::time::Instant::now();
    let resp = h
        .get(
            "/v1/users/u1/conversations/slow",
            Some(&h.token(&Tok::support("u1"))),
        )
        .await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.reason().as_deref(), Some("upstream_timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1400),
        "timed out at the bound, not after the upstream"
    );
}

#[tokio::test]
async fn invalid_tokens_are_401() {
    let h = Harness::start().await;
    let p = "/v1/users/u1/conversations/c1";
    let good = h.token(&Tok::support("u1"));
    let mut expired = Tok::support("u1");
    expired.iat_offset = -1000;
    expired.ttl = 600;
    let mut too_long = Tok::support("u1");
    too_long.ttl = 7200;
    let mut future = Tok::support("u1");
    future.iat_offset = 600;
    // Signed by a key the proxy does not know (same kid).
    let stranger =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "test-1")
            .unwrap();
    let forged = common::mint_with(&stranger, &Tok::support("u1"));
    // alg none, with the good token's claims.
    let claims = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    let mut tampered = good.clone();
    tampered.insert(good.find('.').unwrap() + 5, 'A');
    for (token, what) in [
        (h.token(&expired), "expired"),
        (h.token(&too_long), "lifetime above max"),
        (h.token(&future), "issued in the future"),
        (forged, "unknown signer"),
        (none, "alg none"),
        (tampered, "tampered"),
    ] {
        let before = h.upstream.count();
        let resp = h.get(p, Some(&token)).await;
        assert_eq!(resp.status, 401, "{what}");
        assert_eq!(resp.reason().as_deref(), Some("invalid_token"), "{what}");
        assert_eq!(h.upstream.count(), before, "{what}");
    }
    // Two Authorization headers are ambiguous.
    let resp = h
        .send(
            Method::GET,
            p,
            Some(&good),
            &[("authorization", "Bearer other")],
        )
        .await;
    assert_eq!(resp.reason().as_deref(), Some("invalid_token"));
}
