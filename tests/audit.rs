//! The audit trail as an auditor and an incident responder meet it, through
//! the `purposegate` binary: kill -9 under load and restart, a full disk
//! (RLIMIT_FSIZE) with recovery and no gap, rotation and signed checkpoints
//! across a restart, the stdout mirror, and every tampering case
//! `audit verify` must name.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::serve;
use common::{Tok, Upstream};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use purposegate::audit::{AuditCounters, AuditEvent, AuditSink, DecisionKind};
use purposegate::config::{AuditConfig, CheckpointConfig, FsyncPolicy};

const PATH: &str = "/v1/users/u1/conversations/c1";

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

/// A config dir like the harness's, with `audit_extra` lines added to the
/// `audit:` block (each indented by two spaces).
fn setup(
    upstream: SocketAddr,
    audit_extra: &str,
) -> (tempfile::TempDir, purposegate::auth::mint::DevKey, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "test-1")
        .unwrap();
    let config = common::write_config(dir.path(), &key, upstream, &common::Opts::default());
    let text = std::fs::read_to_string(&config).unwrap();
    let patched = text.replacen(
        "  fsync: \"batch\"\n",
        &format!("  fsync: \"batch\"\n{audit_extra}"),
        1,
    );
    assert!(
        audit_extra.is_empty() || patched != text,
        "audit block found"
    );
    std::fs::write(&config, patched).unwrap();
    (dir, key, config)
}

/// One GET; `None` if the connection failed. Returns status and request id
/// as soon as the response head arrives.
async fn try_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .ok()?
    .ok()?;
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((resp.status().as_u16(), id))
}

/// The parseable records of a log (a torn last line is skipped).
fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn verify(files: &[PathBuf], key: Option<&Path>) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.args(["audit", "verify"]);
    if let Some(k) = key {
        cmd.arg("--public-key").arg(k);
    }
    run(cmd.args(files))
}

async fn readyz(admin: SocketAddr) -> u16 {
    try_get(admin, "/readyz", None).await.map_or(0, |r| r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_keeps_every_acknowledged_decision() {
    let up = Upstream::start().await;
    let (dir, key, config) = setup(up.addr, "");
    let log = dir.path().join("audit/audit.jsonl");
    let token = common::mint_with(&key, &Tok::support("u1"));
    let mut served = serve(&config, None, false);
    let addr = served.addr;

    // 8 clients for at most 3 s; the process is killed after 700 ms.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (acked, token) = (acked.clone(), token.clone());
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(3) {
                    match try_get(addr, PATH, Some(&token)).await {
                        Some((s, id)) if (200..300).contains(&s) => acked.lock().unwrap().push(id),
                        Some(_) => {}
                        None => break,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    served.child.kill().unwrap(); // SIGKILL
    served.child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no request completed before the kill");
    eprintln!("{} requests saw 2xx before kill -9", acked.len());

    let on_disk: std::collections::HashSet<String> = records(&log)
        .iter()
        .filter(|r| r["event"] == "decision" && r["decision"] == "allow")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !on_disk.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "2xx without a decision record: {missing:?}"
    );
    // Before the restart, a torn last line is the only acceptable fault.
    let (code, out, err) = verify(std::slice::from_ref(&log), None);
    assert!(
        code == 0 || err.contains("truncated final line"),
        "{out}{err}"
    );
    let last_seq = records(&log).last().unwrap()["seq"].as_u64().unwrap();

    // Restart on the same log: repaired, and the chain continues.
    let served = serve(&config, None, false);
    let (status, id) = try_get(served.addr, PATH, Some(&token)).await.unwrap();
    assert_eq!(status, 200);
    served.stop();
    let after = records(&log);
    let rec = after
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .expect("the restarted proxy logged its request");
    assert!(rec["seq"].as_u64().unwrap() > last_seq);
    let (code, out, err) = verify(&[log], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_closed_then_recovers_without_a_gap() {
    let up = Upstream::start().await;
    let (dir, key, config) = setup(up.addr, "");
    let log = dir.path().join("audit/audit.jsonl");
    let token = common::mint_with(&key, &Tok::support("u1"));
    // Files may grow to 6 KiB: a handful of records, then EFBIG ("disk full").
    let served = serve(&config, Some(6 * 1024), false);
    let mut saw_503 = false;
    for _ in 0..200 {
        let (status, _) = try_get(served.addr, PATH, Some(&token)).await.unwrap();
        if status == 503 {
            saw_503 = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(saw_503, "the log never filled up");
    // A group that did not fit is cut back off the file, so a smaller one
    // (a single record, or the writer's own `resumed` probe) may still fit in
    // what is left and briefly make the sink healthy again. Once nothing fits
    // any more, requests fail closed and the proxy reports itself unready.
    let (addr, admin) = (served.addr, served.admin);
    let token_ref = &token;
    assert!(
        common::within(Duration::from_secs(10), || async move {
            let (status, _) = try_get(addr, PATH, Some(token_ref)).await.unwrap();
            assert!(status == 200 || status == 503, "{status}");
            status == 503 && readyz(admin).await == 503
        })
        .await
        .is_some(),
        "never unready while failing"
    );
    let (status, _) = try_get(served.addr, PATH, Some(&token)).await.unwrap();
    assert_eq!(status, 503, "still failing closed");

    // The operator makes room: the full file is archived under its rotated
    // name. No restart, no request: the proxy resumes by itself.
    let last_seq = records(&log).last().unwrap()["seq"].as_u64().unwrap();
    let archived = PathBuf::from(format!("{}.{last_seq:020}", log.display()));
    std::fs::rename(&log, &archived).unwrap();
    let admin = served.admin;
    assert!(
        common::within(Duration::from_secs(10), || async move {
            readyz(admin).await == 200
        })
        .await
        .is_some(),
        "/readyz did not come back"
    );
    let (status, _) = try_get(served.addr, PATH, Some(&token)).await.unwrap();
    assert_eq!(status, 200);
    served.stop();

    // The new live file starts with its header (naming the archived file),
    // then the record of the outage.
    let recs = records(&log);
    assert_eq!(recs[0]["event"], "file_start");
    assert_eq!(recs[0]["seq"].as_u64().unwrap(), last_seq + 1, "no gap");
    assert_eq!(
        recs[0]["previous_file"],
        archived.file_name().unwrap().to_str().unwrap()
    );
    let resumed = &recs[1];
    assert_eq!(resumed["event"], "resumed");
    assert!(resumed["unwritten_records"].as_u64().unwrap() >= 1);
    let (code, out, err) = verify(&[archived, log], None);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_signed_checkpoints_across_a_restart() {
    let up = Upstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (code, out, err) = run(bin().args(["audit", "keygen", "--out"]).arg(keys.path()));
    assert_eq!(code, 0, "{out}{err}");
    let private = keys.path().join("audit-signing.pem");
    let public = keys.path().join("audit-signing.pub.pem");
    let extra = format!(
        "  rotate_bytes: 4096\n  checkpoint: {{key_file: \"{}\", every_records: 7}}\n",
        private.display()
    );
    let (dir, key, config) = setup(up.addr, &extra);
    let token = common::mint_with(&key, &Tok::support("u1"));
    for round in 0..2 {
        let served = serve(&config, None, false);
        for _ in 0..15 {
            let (status, _) = try_get(served.addr, PATH, Some(&token)).await.unwrap();
            assert_eq!(status, 200, "round {round}");
        }
        served.stop();
    }
    let audit_dir = dir.path().join("audit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "audit.jsonl")
        .collect();
    files.sort();
    assert!(files.len() >= 2, "rotated: {files:?}");
    files.push(audit_dir.join("audit.jsonl"));
    let (code, out, err) = verify(&files, Some(&public));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every signature verified"), "{out}");
    // SIGTERM flushed, and a flush seals the tail with a checkpoint.
    assert!(out.contains("unsigned tail: 0 records"), "{out}");
    // 2 × 15 requests × (decision + complete) plus checkpoints.
    let total: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(total > 60, "{out}");

    let (code, out, _) = verify(&files, None);
    assert_eq!(code, 0);
    assert!(out.contains("signatures NOT checked"), "{out}");
    // A rotated file left out in between breaks the chain where it was.
    let mut gap = vec![files[0].clone()];
    gap.extend_from_slice(&files[2..]);
    let (code, _, err) = verify(&gap, None);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:1:", files[2].display())), "{err}");
    assert!(err.contains("in a file that was not given"), "{err}");
    // Left out at the start, the rest is a continuation: checked from its
    // first record on, and said so; --from-genesis refuses it.
    let (code, out, err) = verify(&files[1..], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("earlier records not checked"), "{out}");
    let mut strict = bin();
    strict.args(["audit", "verify", "--from-genesis"]);
    let (code, _, err) = run(strict.args(&files[1..]));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:1:", files[1].display())), "{err}");
    assert!(err.contains("earlier (rotated) files"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_mirror_carries_every_record() {
    let up = Upstream::start().await;
    let (dir, key, config) = setup(up.addr, "  stdout: true\n");
    let token = common::mint_with(&key, &Tok::support("u1"));
    let mut served = serve(&config, None, true);
    let mut stdout = served.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    assert_eq!(
        try_get(served.addr, PATH, Some(&token)).await.unwrap().0,
        200
    );
    assert_eq!(try_get(served.addr, PATH, None).await.unwrap().0, 401);
    served.stop();
    let mirrored = reader.join().unwrap();
    let file = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 4, "chain start + 3: {file}");
    assert_eq!(mirrored, file);
}

/// Writes a signed log through the library: `n` records, a checkpoint every 5.
async fn signed_log(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let keys = purposegate::audit::sign::keygen(&dir.join("keys")).unwrap();
    let cfg = AuditConfig {
        path: dir.join("audit.jsonl"),
        fsync: FsyncPolicy::Batch,
        batch_window: Duration::ZERO,
        rotate_bytes: None,
        checkpoint: Some(CheckpointConfig {
            key_file: keys.private,
            every_records: Some(5),
            every_seconds: None,
        }),
        stdout: false,
        instance: "test-0".into(),
        rotate_every: None,
        max_local_bytes: None,
        reserve_bytes: 0,
        ship: None,
    };
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..n {
        sink.record(&AuditEvent {
            request_id: format!("req-{i}"),
            decision: DecisionKind::Allow,
            subject: Some("alice".into()),
            method: "GET".into(),
            path: PATH.into(),
            status: 200,
            ..AuditEvent::default()
        })
        .await
        .unwrap();
    }
    drop(sink);
    (cfg.path, keys.public)
}

/// Re-chains `lines` from index `from` on: what a forger without the key
/// can do after editing a record (recompute every prev_hash and hash; with
/// `repoint`, also make each checkpoint claim to cover the forged head).
fn rehash(lines: &mut [String], from: usize, repoint: bool) {
    for i in from..lines.len() {
        let prev = if i == 0 {
            "0".repeat(64)
        } else {
            let (_, h) = lines[i - 1].rsplit_once(",\"hash\":\"").unwrap();
            h.trim_end_matches("\"}").to_string()
        };
        if let Some((head, rest)) = lines[i]
            .split_once("\"covers_hash\":\"")
            .filter(|_| repoint)
        {
            lines[i] = format!("{head}\"covers_hash\":\"{prev}{}", &rest[64..]);
        }
        let (body, _) = lines[i].rsplit_once(",\"prev_hash\":\"").unwrap();
        let canonical = format!("{body},\"prev_hash\":\"{prev}\"}}");
        let hash = purposegate::audit::chain::hash_hex(canonical.as_bytes());
        lines[i] = format!("{body},\"prev_hash\":\"{prev}\",\"hash\":\"{hash}\"}}");
    }
}

/// Writes `lines` as a log in `dir` and runs `audit verify` on it.
fn verify_lines(dir: &Path, lines: &[String], key: Option<&Path>) -> (i32, String, String) {
    let path = dir.join("tampered.jsonl");
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    verify(&[path], key)
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    // The chain's first record and 12 more: checkpoints at lines 6 and 12,
    // records 13-15 unsigned.
    let (log, public) = signed_log(dir.path(), 12).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 15);
    let key = Some(public.as_path());

    let (code, out, err) = verify(std::slice::from_ref(&log), key);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: 15 records"), "{out}");
    assert!(
        out.contains("2 checkpoint(s), every signature verified"),
        "{out}"
    );
    assert!(out.contains("unsigned tail: 3 records"), "{out}");

    let expect = |(code, _out, err): (i32, String, String), line: u32, words: &[&str]| {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("tampered.jsonl:{line}:")), "{err}");
        for w in words {
            assert!(err.contains(w), "missing {w:?} in {err}");
        }
    };

    let mut modified = lines.clone();
    modified[2] = modified[2].replace("alice", "mallory");
    expect(verify_lines(dir.path(), &modified, key), 3, &["modified"]);

    let mut deleted = lines.clone();
    deleted.remove(2);
    expect(
        verify_lines(dir.path(), &deleted, key),
        3,
        &["deleted", "seq 3"],
    );

    let mut inserted = lines.clone();
    inserted.insert(3, lines[1].clone());
    expect(verify_lines(dir.path(), &inserted, key), 4, &["inserted"]);

    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    expect(verify_lines(dir.path(), &reordered, key), 2, &["reordered"]);

    // Truncated mid-line: a crash artefact, reported as such.
    let path = dir.path().join("tampered.jsonl");
    std::fs::write(&path, &text[..text.len() - 30]).unwrap();
    expect(
        verify(std::slice::from_ref(&path), key),
        15,
        &["truncated final line", "not tampering"],
    );

    // Forged: record 3 edited and the chain re-hashed without the key. The
    // checkpoint at line 6 still covers the original head.
    let mut forged = modified.clone();
    rehash(&mut forged, 2, false);
    expect(
        verify_lines(dir.path(), &forged, key),
        6,
        &["diverges from a signed checkpoint"],
    );
    // ...and pointing the checkpoints at the forged head breaks their signature.
    let mut forged = modified.clone();
    rehash(&mut forged, 2, true);
    assert_ne!(forged[5], lines[5]);
    expect(
        verify_lines(dir.path(), &forged, key),
        6,
        &["bad signature", "without the key"],
    );
    // Without the public key the forgery is invisible, and verify says so.
    let (code, out, err) = verify_lines(dir.path(), &forged, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signatures NOT checked"), "{out}");
}
