//! The command line as users run it: `policy check`, `policy test`,
//! `explain`, `token mint`, `audit verify`, and `serve` as a separate process
//! (streaming a 50 MiB body with bounded memory; failing closed when the
//! audit log cannot be written).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Served;
use common::{Reply, Tok, Upstream};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A config directory like the harness's, for commands run as processes.
fn setup(
    upstream: SocketAddr,
) -> (
    tempfile::TempDir,
    purposegate::auth::mint::DevKey,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "test-1")
        .unwrap();
    let config = common::write_config(dir.path(), &key, upstream, &common::Opts::default());
    (dir, key, config)
}

#[test]
fn policy_check_accepts_the_default_and_points_at_broken_lines() {
    let (dir, _key, config) = setup("127.0.0.1:9".parse().unwrap());
    let (code, out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");

    // Break a role so that it names an undefined purpose.
    let policy = std::fs::read_dir(dir.path().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml"))
        .unwrap();
    let text = std::fs::read_to_string(&policy).unwrap();
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with("support:") && l.contains('['))
        .map(|i| i + 1);
    let broken = text.replacen("support: [support]", "support: [suport]", 1);
    assert_ne!(
        broken, text,
        "default policy has a `support: [support]` role line"
    );
    std::fs::write(&policy, broken).unwrap();
    let (code, _out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1);
    let expected = format!("{}:{}:", policy.display(), line.unwrap());
    assert!(err.contains(&expected), "expected {expected} in {err}");
    assert!(err.contains("suport"), "{err}");

    // A YAML syntax error also names its line.
    std::fs::write(&policy, "roles:\n  support: [support\n").unwrap();
    let (code, _out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:", policy.display())), "{err}");

    // Consent file errors too.
    std::fs::write(
        dir.path().join("consent.yaml"),
        "users:\n  u1:\n    deletion_requested_at: soon\n",
    )
    .unwrap();
    let (code, _out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1);
    assert!(err.contains("consent.yaml:3:"), "{err}");
}

#[test]
fn policy_test_runs_the_shipped_cases() {
    let (code, out, err) = run(bin()
        .args(["policy", "test"])
        .arg(common::repo().join("policies/tests")));
    assert_eq!(code, 0, "{out}{err}");
    let last = out.lines().last().unwrap();
    let passed: u32 = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 20, "{last}");
    assert!(last.ends_with("passed, 0 failed"), "{last}");
}

#[test]
fn policy_test_reports_a_failing_case() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_policy(dir.path());
    std::fs::copy(
        common::repo().join("policies/consent.yaml"),
        dir.path().join("policies/consent.yaml"),
    )
    .unwrap();
    let tests = dir.path().join("policies/tests");
    std::fs::create_dir_all(&tests).unwrap();
    for e in std::fs::read_dir(common::repo().join("policies/tests")).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        // Flip the first expected allow of one file into a denial: the
        // suite must notice.
        if p.file_name().unwrap() == "default.yaml" {
            text = text.replacen("expect: allow", "expect: {deny: opted_out}", 1);
        }
        std::fs::write(tests.join(p.file_name().unwrap()), text).unwrap();
    }
    let (code, out, _) = run(bin().args(["policy", "test"]).arg(&tests));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().last().unwrap().ends_with("passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn explain_shows_the_decision_and_every_check() {
    let (_dir, key, config) = setup("127.0.0.1:9".parse().unwrap());
    let good = common::mint_with(&key, &Tok::support("u1"));
    let (code, out, err) = run(bin().args(["explain", "--config"]).arg(&config).args([
        "--token",
        &good,
        "GET",
        "/v1/users/u1/conversations/c1",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision: allow"), "{out}");
    assert!(out.matches("[pass]").count() >= 10, "{out}");

    let (code, out, _) = run(bin().args(["explain", "--config"]).arg(&config).args([
        "--token",
        &good,
        "GET",
        "/v1/users/u2/conversations/c1",
    ]));
    assert_eq!(code, 1);
    assert!(out.contains("decision: deny"), "{out}");
    assert!(out.contains("reason: subject_not_in_scope (403)"), "{out}");
    assert!(out.contains("[FAIL]"), "{out}");

    let training = common::mint_with(&key, &Tok::training());
    let (code, out, _) = run(bin().args(["explain", "--config"]).arg(&config).args([
        "--token",
        &training,
        "GET",
        "/v1/users/u2/conversations/c9",
        "--meta",
        "x-content-owner:u2",
        "--meta",
        "x-content-created-at:2026-04-01T00:00:00Z",
        "--meta",
        "x-content-source:consumer",
        "--meta",
        "x-content-deidentified:true",
    ]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reason: opted_out (403)"), "{out}");
    assert!(!out.contains(&training), "explain never prints the token");
}

#[test]
fn token_mint_produces_a_token_the_proxy_accepts() {
    let (dir, _key, config) = setup("127.0.0.1:9".parse().unwrap());
    let keys = dir.path().join("keys");
    let (code, out, err) = run(bin()
        .args([
            "token", "keygen", "--alg", "ES256", "--kid", "test-1", "--out",
        ])
        .arg(&keys));
    assert_eq!(code, 0, "{out}{err}");
    std::fs::copy(keys.join("jwks.json"), dir.path().join("jwks.json")).unwrap();
    let (code, token, err) = run(bin()
        .args([
            "token",
            "mint",
            "--alg",
            "ES256",
            "--kid",
            "test-1",
            "--iss",
            common::ISSUER,
            "--aud",
            common::AUDIENCE,
            "--role",
            "legal",
            "--purpose",
            "legal",
            "--matter-id",
            "M-7",
            "--subject",
            "u3",
            "--key",
        ])
        .arg(keys.join("test-1.pem")));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(bin().args(["explain", "--config"]).arg(&config).args([
        "--token",
        token.trim(),
        "GET",
        "/v1/users/u3/files/f1",
    ]));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn audit_verify_passes_a_good_log_and_names_the_first_bad_line() {
    let (code, _, err) = run(bin().args(["audit", "verify", "/nonexistent/audit.jsonl"]));
    assert_eq!(code, 1, "{err}");
}

fn serve(config: &Path, fsize_limit: Option<u64>) -> Served {
    common::process::serve(config, fsize_limit, false)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_body_streams_through_with_bounded_memory() {
    const MIB: u64 = 1024 * 1024;
    let up = Upstream::start().await;
    for (path, size) in [
        ("/v1/users/u1/files/big", 50 * MIB),
        ("/v1/users/u1/files/huge", 200 * MIB),
    ] {
        let mut reply = Reply::ok(&[("x-content-owner", "u1")]);
        reply.stream_bytes = Some(size);
        up.reply(path, reply);
    }
    let (_dir, key, config) = setup(up.addr);
    let served = serve(&config, None);
    let token = common::mint_with(&key, &Tok::support("u1"));
    let baseline = peak_rss_kib(served.child.id());
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    // A proxy that buffers grows with the body; one that streams stays flat
    // (the allocator keeps some freed memory, the same for both sizes).
    let mut growth = Vec::new();
    for (path, size) in [
        ("/v1/users/u1/files/big", 50 * MIB),
        ("/v1/users/u1/files/huge", 200 * MIB),
    ] {
        let req = http::Request::get(format!("http://{}{path}", served.addr))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut received = 0u64;
        let started = Instant::now();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len() as u64;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "bounded in time"
            );
        }
        assert_eq!(received, size);
        let peak = peak_rss_kib(served.child.id());
        let grown_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
        eprintln!(
            "proxy peak RSS {peak} KiB, {grown_mib:.1} MiB above idle after a {} MiB body",
            size / MIB
        );
        growth.push(grown_mib);
    }
    assert!(
        growth[0] < 25.0,
        "grew {:.1} MiB for a 50 MiB body: it buffers",
        growth[0]
    );
    assert!(
        growth[1] < growth[0] + 8.0,
        "peak grew from {:.1} to {:.1} MiB with a 4x larger body",
        growth[0],
        growth[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_reads_with_503() {
    let up = Upstream::start().await;
    let (dir, key, config) = setup(up.addr);
    // The audit file may grow to 6 KiB: a handful of records, then EFBIG.
    let served = serve(&config, Some(6 * 1024));
    let token = common::mint_with(&key, &Tok::support("u1"));
    let mut saw_503 = false;
    let mut last_ok = 0;
    for i in 0..200 {
        let resp = common::send(
            served.addr,
            http::Method::GET,
            "/v1/users/u1/conversations/c1",
            Some(&token),
            &[],
        )
        .await;
        match resp.status {
            200 => {
                assert!(
                    !saw_503,
                    "a read succeeded after the log filled up at request {i}"
                );
                last_ok = i;
            }
            503 => {
                assert_eq!(resp.reason().as_deref(), Some("audit_unavailable"));
                assert!(
                    !resp.body.windows(12).any(|w| w == b"user content"),
                    "no content without an audit record"
                );
                saw_503 = true;
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(saw_503, "the log never filled up");
    assert!(last_ok > 0, "some reads were allowed before the limit");
    // Every 200 the client saw has its decision record, and the chain is intact.
    let log = dir.path().join("audit/audit.jsonl");
    let records = common::read_audit(&log);
    let allows = records
        .iter()
        .filter(|r| r["event"] == "decision" && r["decision"] == "allow")
        .count();
    assert!(
        allows > last_ok,
        "{allows} allow records for {} successful reads",
        last_ok + 1
    );
    let (code, out, err) = run(bin().args(["audit", "verify"]).arg(&log));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn demo_walks_through_every_purpose_and_several_denials() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "demo",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("got ") && l.ends_with("[ok]"))
            .count(),
        17,
        "{text}"
    );
    assert!(
        text.contains("[ok] means"),
        "the walkthrough says what [ok] means"
    );
    assert!(!text.contains("UNEXPECTED"), "{text}");
    for purpose in ["abuse:", "support:", "legal:", "training:"] {
        assert!(text.contains(purpose), "{purpose} in {text}");
    }
    let denials: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("got 4"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(denials.len() >= 5, "{denials:?}");
    // The live justification check, against the embedded case service.
    for reason in [
        "justification_closed",
        "support_not_requested_by_user",
        "justification_not_assigned",
    ] {
        assert!(
            text.contains(&format!("got 403 {reason} [ok]")),
            "{reason} in {text}"
        );
    }
    assert_eq!(text.matches("curl -si").count(), 17);
    // Tokens are exported as shell variables, and the curl lines use them.
    assert!(text.contains("export T1='ey"), "{text}");
    assert!(text.contains("-H \"Authorization: Bearer $T1\""), "{text}");
    assert!(
        text.contains(&format!("files kept in {}", dir.path().display())),
        "{text}"
    );
    // The demo's own audit log verifies.
    let (code, out, err) = run(bin()
        .args(["audit", "verify"])
        .arg(dir.path().join("audit/audit.jsonl")));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_demo_removes_its_temporary_directory_at_exit() {
    let out = bin()
        .args([
            "demo",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("files:"))
        .map(|d| std::path::PathBuf::from(d.trim()))
        .expect("the demo names its directory");
    assert!(
        text.contains(&format!("removed {}", dir.display())),
        "{text}"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_consent_without_waiting_for_the_poll() {
    let up = Upstream::start().await;
    let (dir, key, config) = setup(up.addr);
    // Polling effectively off: only SIGHUP can make the change visible.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("reload_interval_ms: 100", "reload_interval_ms: 600000"),
    )
    .unwrap();
    let served = serve(&config, None);
    let token = common::mint_with(&key, &Tok::support("u1"));
    let path = "/v1/users/u1/conversations/c1";
    let get = || common::send(served.addr, http::Method::GET, path, Some(&token), &[]);
    assert_eq!(get().await.status, 200);
    let consent = dir.path().join("consent.yaml");
    let with_u1 = common::CONSENT.replace(
        "users:\n",
        "users:\n  u1:\n    deletion_requested_at: \"2026-01-01T00:00:00Z\"\n",
    );
    std::fs::write(&consent, with_u1).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get().await.status, 200, "no reload before the signal");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(served.child.id() as libc::pid_t, libc::SIGHUP) };
    let started = Instant::now();
    loop {
        let resp = get().await;
        if resp.reason().as_deref() == Some("account_deleted") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_closed_pipe_ends_a_report_quietly() {
    // `purposegate audit verify big.jsonl | head -1`: no panic when the
    // reader goes away.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.jsonl");
    let mut head = purposegate::audit::chain::ChainHead::genesis();
    let mut text = Vec::new();
    for i in 0..2000 {
        let ev = purposegate::audit::AuditEvent {
            request_id: format!("r{i}"),
            ..Default::default()
        };
        let enc =
            purposegate::audit::chain::encode(&head, "2026-01-01T00:00:00.000Z", &ev).unwrap();
        text.extend_from_slice(&enc.line);
        head = enc.head;
    }
    std::fs::write(&log, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_purposegate"))
        .args(["audit", "verify"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
