//! The faults of issue 12, each as a test that failed before the hardening:
//! clients that hang up, a full audit volume, the live file unlinked or
//! renamed, oversized paths, slowloris, idle and excess connections,
//! duplicated or encoded values, GET bodies, identities that cannot be
//! headers, a store that cuts its body or speaks HTTP/1.0.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, Opts, Reply, Tok};
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATH: &str = "/v1/users/u1/conversations/c1";

/// A slow store: the test can hang up while it is answering.
fn slow(h: &Harness, path: &str) {
    h.upstream.reply(
        path,
        Reply {
            delay: Some(Duration::from_millis(1500)),
            ..Reply::ok(&[("x-content-owner", "u1")])
        },
    );
}

/// Waits until the store has seen `n` requests.
async fn store_saw(h: &Harness, n: usize) {
    let up = h.upstream.clone();
    common::eventually(
        "the store to see the requests",
        Duration::from_secs(10),
        || {
            let up = up.clone();
            async move { up.count() >= n }
        },
    )
    .await;
}

/// The request ids the store received (x-purposegate-request-id).
fn ids_the_store_saw(h: &Harness) -> Vec<String> {
    h.upstream
        .requests()
        .iter()
        .map(|s| {
            s.headers["x-purposegate-request-id"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every request the store saw has a decision record that says it was
/// cancelled after the store was contacted.
fn each_has_a_cancelled_record(h: &Harness, ids: &[String]) {
    let records = h.audit_records();
    for id in ids {
        let d = records
            .iter()
            .find(|r| r["request_id"] == id.as_str() && r["event"] == "decision")
            .unwrap_or_else(|| panic!("no decision record for {id}"));
        assert_eq!(d["cancelled"], true, "{d}");
        assert_eq!(d["upstream_contacted"], true, "{d}");
        assert_eq!(d["reason"], "client_cancelled", "{d}");
    }
}

/// An allowed support read of `PATH` through `h`, its body left streaming
/// for the caller to read.
async fn streamed_get(
    h: &Harness,
) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    let token = h.token(&Tok::support("u1"));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let req = http::Request::get(format!("http://{}{PATH}", h.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    client.request(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_that_hang_up_still_get_their_decision_record() {
    let mut h = Harness::start().await;
    slow(&h, PATH);
    let token = h.token(&Tok::support("u1"));
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let req =
            format!("GET {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        sockets.push(s);
    }
    store_saw(&h, 5).await;
    drop(sockets); // the clients go away while the store is answering
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop().await;
    let ids = ids_the_store_saw(&h);
    assert_eq!(ids.len(), 5);
    each_has_a_cancelled_record(&h, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_resets_still_get_their_decision_record() {
    let mut h = Harness::start().await;
    slow(&h, PATH);
    let token = h.token(&Tok::support("u1"));
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut pending = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get(format!("http://{}{PATH}", h.addr))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        send.ready().await.unwrap();
        pending.push(tokio::spawn(send.send_request(req)));
    }
    store_saw(&h, 4).await;
    // Dropping the response futures resets the streams (RST_STREAM).
    for p in pending {
        p.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop().await;
    let ids = ids_the_store_saw(&h);
    assert_eq!(ids.len(), 4);
    each_has_a_cancelled_record(&h, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_file_unlinked_under_the_proxy_keeps_every_record_at_its_path() {
    let mut h = Harness::start().await;
    let token = h.token(&Tok::support("u1"));
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    std::fs::remove_file(h.audit_path()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = h.get(PATH, Some(&token)).await;
        assert_eq!(r.status, 200);
        ids.push(r.request_id());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.stop().await;
    let all = common::read_audit(&h.audit_path());
    assert_eq!(all[0]["event"], "chain_start");
    assert!(all
        .iter()
        .any(|r| r["event"] == "log_reopened" && r["cause"] == "unlinked"));
    for id in &ids {
        assert!(
            all.iter().any(|r| r["request_id"] == id.as_str()),
            "{id} missing from the file at the path"
        );
    }
    let report = purposegate::audit::verify::verify_files(&[h.audit_path()]).unwrap();
    assert_eq!(report.records as usize, all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_live_file_is_continued_at_its_path() {
    let mut h = Harness::start().await;
    let token = h.token(&Tok::support("u1"));
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    let moved = h.dir.path().join("audit/moved-away.jsonl");
    std::fs::rename(h.audit_path(), &moved).unwrap();
    let path = h.audit_path();
    common::eventually("the log back at its path", Duration::from_secs(5), || {
        let path = path.clone();
        async move { path.exists() }
    })
    .await;
    let r = h.get(PATH, Some(&token)).await;
    assert_eq!(r.status, 200);
    h.stop().await;
    let all = common::read_audit(&h.audit_path());
    assert!(all
        .iter()
        .any(|r| r["event"] == "log_reopened" && r["cause"] == "renamed"));
    assert!(all
        .iter()
        .any(|x| x["request_id"] == r.request_id().as_str()));
    purposegate::audit::verify::verify_files(&[h.audit_path()]).unwrap();
}

/// Mounts a tmpfs of `bytes` at `dir` (root only); false when not allowed.
fn mount_tmpfs(dir: &std::path::Path, bytes: u64) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
        .arg("tmpfs")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn umount(dir: &std::path::Path) {
    let _ = std::process::Command::new("umount").arg(dir).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_volume_refuses_before_the_store_and_recovers_by_itself() {
    let base = tempfile::tempdir().unwrap();
    let vol = base.path().join("vol");
    if !mount_tmpfs(&vol, 4 * 1024 * 1024) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); the RLIMIT variant in tests/audit.rs covers write failures");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            umount(&self.0);
        }
    }
    let _unmount = Unmount(vol.clone());
    let mut h = Harness::start_with(Opts {
        audit_path: Some(format!("{}/audit.jsonl", vol.display())),
        audit_extra: "  reserve_bytes: 262144\n".into(),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::support("u1"));
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    // Something else fills the volume.
    let filler = vol.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    }
    let (addr, t) = (h.addr, token.clone());
    common::eventually("503 audit_unavailable", Duration::from_secs(10), || {
        let t = t.clone();
        async move {
            common::send(addr, Method::GET, PATH, Some(&t), &[])
                .await
                .status
                == 503
        }
    })
    .await;
    let seen = h.upstream.count();
    for _ in 0..20 {
        let r = h.get(PATH, Some(&token)).await;
        assert_eq!(
            (r.status, r.reason().as_deref()),
            (503, Some("audit_unavailable"))
        );
    }
    assert_eq!(
        h.upstream.count(),
        seen,
        "the store was contacted while the volume was full"
    );
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("audit_disk_full"));
    // Every request the store saw has its decision record.
    let ids = ids_the_store_saw(&h);
    // Room again: no restart, no request needed.
    std::fs::remove_file(&filler).unwrap();
    let admin = h.admin;
    common::eventually("/readyz back", Duration::from_secs(10), || async move {
        common::send(admin, Method::GET, "/readyz", None, &[])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    h.stop().await;
    let records = common::request_records(&vol.join("audit.jsonl"));
    for id in ids {
        assert!(
            records
                .iter()
                .any(|r| r["request_id"] == id.as_str() && r["event"] == "decision"),
            "{id}: reached the store without a decision record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_paths_are_refused_and_records_stay_small() {
    let mut h = Harness::start().await;
    let long = format!("/v1/users/u1/files/{}", "a".repeat(60_000));
    let before = std::fs::metadata(h.audit_path()).unwrap().len();
    for _ in 0..20 {
        let r = h.get(&long, None).await;
        assert_eq!(
            (r.status, r.reason().as_deref()),
            (414, Some("uri_too_long"))
        );
    }
    h.stop().await;
    let grown = std::fs::metadata(h.audit_path()).unwrap().len() - before;
    assert!(grown < 20 * 2048, "{grown} bytes for 20 records");
    let records = h.audit_records();
    let r = records.last().unwrap();
    assert!(r["path"].as_str().unwrap().len() <= 512);
    assert_eq!(
        r["path_sha256"],
        purposegate::audit::chain::hash_hex(long.as_bytes())
    );
    assert_eq!(h.upstream.count(), 0);
}

/// Reads until the peer closes; the time it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn limits(yaml: &str) -> Opts {
    Opts {
        extra_yaml: format!("limits:\n{yaml}"),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_after_the_header_read_timeout() {
    let h = Harness::start_with(limits("  header_read_timeout_ms: 800\n")).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let start = Instant::now();
    let mut closed = false;
    for _ in 0..30 {
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a byte every 100 ms kept the connection open");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let m = h.admin_get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("purposegate_http_errors_total{kind=\"header_timeout\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let h = Harness::start_with(limits(
        "  idle_timeout_ms: 300\n  header_read_timeout_ms: 5000\n",
    ))
    .await;
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(took.is_some(), "a silent connection stayed open");
    // A keep-alive connection that served a request is closed once idle too.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(took.is_some(), "an idle keep-alive connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_streaming_longer_than_the_idle_timeout_is_not_cut() {
    let mut opts = limits("  idle_timeout_ms: 300\n");
    opts.upstream_override = Some(
        raw_store_dripping(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nx-content-owner: u1\r\n\r\n",
            b"0123456789",
            Some(Duration::from_millis(100)),
        )
        .await,
    );
    let h = Harness::start_with(opts).await;
    let resp = streamed_get(&h).await.unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let body = resp.into_body().collect().await.expect("the whole body");
    assert_eq!(&body.to_bytes()[..], b"0123456789");
    // The body took about three idle timeouts; the connection stayed.
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_cap_new_connections_are_closed_and_the_rest_served() {
    let h = Harness::start_with(limits("  max_connections: 4\n  idle_timeout_ms: 30000\n")).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(h.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(h.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2))
            .await
            .is_some(),
        "the fifth connection was not refused"
    );
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("connections_exhausted"));
    let m = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).to_string();
    assert!(m.contains("purposegate_connections_refused_total 1"), "{m}");
    // A held connection is still served.
    let req = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    held[0].write_all(req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = held[0].read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text:?}");
    drop(held);
    let admin = h.admin;
    common::eventually("/readyz back", Duration::from_secs(5), || async move {
        common::send(admin, Method::GET, "/readyz", None, &[])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(
        h.get(PATH, Some(&h.token(&Tok::support("u1"))))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_metadata_headers_fail_closed() {
    let h = Harness::start().await;
    let support = h.token(&Tok::support("u1"));
    let training = h.token(&Tok::training());
    let good: [(&str, &str); 4] = [
        ("x-content-owner", "u1"),
        ("x-content-created-at", "2026-05-01T00:00:00Z"),
        ("x-content-source", "consumer"),
        ("x-content-deidentified", "true"),
    ];
    let cases: [(&str, &str, &str, &str); 5] = [
        ("x-content-owner", "u2", "support", "owner_mismatch"),
        ("x-content-owner", "u1", "training", "owner_mismatch"),
        (
            "x-content-deidentified",
            "false",
            "training",
            "metadata_missing",
        ),
        (
            "x-content-created-at",
            "2026-04-01T00:00:00Z",
            "training",
            "metadata_missing",
        ),
        ("x-content-source", "api", "training", "metadata_missing"),
    ];
    for (i, (name, second, who, reason)) in cases.iter().enumerate() {
        let path = format!("/v1/users/u1/files/dup{i}");
        let mut headers: Vec<(&str, &str)> = good.to_vec();
        headers.push((name, second));
        h.upstream.reply(&path, Reply::ok(&headers));
        let token = if *who == "support" {
            &support
        } else {
            &training
        };
        let r = h.get(&path, Some(token)).await;
        assert_eq!(
            (r.status, r.reason().as_deref()),
            (403, Some(*reason)),
            "{name} twice for {who}"
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("user content"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_owners_never_reach_the_consent_check_or_the_store() {
    let h = Harness::start().await;
    let training = h.token(&Tok::training());
    for path in [
        "/v1/users/%75%32/conversations/c1",
        "/v1/users/u2;v=1/conversations/c1",
        "/v1/users/u2%20/files/f1",
    ] {
        let r = h.get(path, Some(&training)).await;
        assert_eq!(
            (r.status, r.reason().as_deref()),
            (400, Some("non_canonical_path")),
            "{path}"
        );
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_and_client_request_ids_are_not_forwarded() {
    let mut h = Harness::start().await;
    let token = h.token(&Tok::support("u1"));
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 5\r\nX-Request-Id: chosen-by-client\r\n\r\nhello"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("chosen-by-client"));
    let seen = &h.upstream.requests()[0];
    assert!(seen.headers.get("content-length").is_none());
    assert!(seen.headers.get("transfer-encoding").is_none());
    assert!(seen.headers.get("x-request-id").is_none());
    h.stop().await;
    let d = &h.audit_records()[0];
    assert_eq!(d["client_request_id"], "chosen-by-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_that_cannot_be_headers_are_invalid_tokens() {
    let mut h = Harness::start().await;
    for sub in ["e\n1", "e\"1", " e1"] {
        let token = h.token(&Tok {
            sub: sub.into(),
            ..Tok::support("u1")
        });
        let r = h.get(PATH, Some(&token)).await;
        assert_eq!(
            (r.status, r.reason().as_deref()),
            (401, Some("invalid_token")),
            "{sub:?}"
        );
    }
    assert_eq!(h.upstream.count(), 0);
    h.stop().await;
    assert!(h
        .audit_records()
        .iter()
        .all(|r| r["token_error"] == "unsafe_identity"));
}

/// A store that answers with `head` and then `body`, then closes.
async fn raw_store(head: &'static str, body: &'static [u8]) -> SocketAddr {
    raw_store_dripping(head, body, None).await
}

/// As `raw_store`; with `drip`, the body goes one byte per `drip`.
async fn raw_store_dripping(
    head: &'static str,
    body: &'static [u8],
    drip: Option<Duration>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head.as_bytes()).await;
                match drip {
                    None => {
                        let _ = s.write_all(body).await;
                    }
                    Some(every) => {
                        for b in body {
                            tokio::time::sleep(every).await;
                            let _ = s.write_all(&[*b]).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_by_the_store_is_recorded_as_such() {
    let store = raw_store(
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nx-content-owner: u1\r\n\r\n",
        b"0123456789",
    )
    .await;
    let mut h = Harness::start_with(Opts {
        upstream_override: Some(store),
        ..Opts::default()
    })
    .await;
    // hyper may not have flushed the head before the body broke off: the
    // client sees the cut either as a broken body or as no response.
    if let Ok(resp) = streamed_get(&h).await {
        assert_eq!(resp.status(), 200);
        assert!(
            resp.into_body().collect().await.is_err(),
            "the client sees the cut"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop().await;
    let complete = h
        .audit_records()
        .into_iter()
        .find(|r| r["event"] == "complete")
        .unwrap();
    assert_eq!(complete["ended"], "upstream_error", "{complete}");
    assert_eq!(complete["bytes"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_store_does_not_make_the_proxy_speak_http10() {
    let store = raw_store(
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nx-content-owner: u1\r\n\r\n",
        b"ok",
    )
    .await;
    let h = Harness::start_with(Opts {
        upstream_override: Some(store),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::support("u1"));
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    for _ in 0..2 {
        let req =
            format!("GET {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_parser_refuses_are_counted() {
    let h = Harness::start_with(limits("  max_header_bytes: 8192\n")).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    s.write_all(big.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"));
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let _ = s.read(&mut buf).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).to_string();
    assert!(
        text.contains("purposegate_http_errors_total{kind=\"head_too_large\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("purposegate_http_errors_total{kind=\"bad_request\"} 1"),
        "{text}"
    );
}
