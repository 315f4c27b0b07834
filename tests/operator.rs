//! An operator's first hour, through the binary: `policy check` refuses what
//! `serve` would refuse (and `serve` refuses it before binding a port),
//! `token mint` says when its `--ttl` will not do what one expects, `policy
//! test` takes a single case file, and `audit verify` on the live file after
//! a rotation reports a continuation instead of deleted records.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use purposegate::audit::{AuditCounters, AuditEvent, AuditSink, DecisionKind};
use purposegate::config::{AuditConfig, FsyncPolicy};

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

/// A config directory like the harness's, with `audit_extra` appended to
/// the `audit:` block.
fn setup(audit_extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "test-1")
        .unwrap();
    let opts = common::Opts {
        audit_extra: audit_extra.to_string(),
        ..common::Opts::default()
    };
    let config = common::write_config(dir.path(), &key, "127.0.0.1:9".parse().unwrap(), &opts);
    (dir, config)
}

#[test]
fn policy_check_and_serve_refuse_a_missing_checkpoint_key() {
    let (dir, config) =
        setup("  checkpoint: {key_file: \"keys/audit-signing.pem\", every_records: 10}\n");
    let key_file = dir.path().join("keys/audit-signing.pem");
    let (code, out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with(&format!(
            "{}: audit.checkpoint.key_file",
            key_file.display()
        )),
        "{err}"
    );

    // serve says the same, and never got as far as the audit log.
    let (code, _, err) = run(bin().args(["serve", "--config"]).arg(&config));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    assert!(!dir.path().join("audit").exists());

    // With the key, both are satisfied (policy check at least: serve would run).
    let (code, _, err) = run(bin()
        .args(["audit", "keygen", "--out"])
        .arg(dir.path().join("keys")));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
}

#[test]
fn policy_check_refuses_unloadable_keys_and_tls_files() {
    let (dir, config) = setup("");
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\": [{\"kty\": ").unwrap();
    let (code, _, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("jwks.json"), "{err}");

    let (dir, config) = setup("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}tls: {{cert_file: missing.pem, key_file: missing.key}}\n"),
    )
    .unwrap();
    let (code, _, err) = run(bin().args(["policy", "check", "--config"]).arg(&config));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&dir.path().join("missing.").display().to_string()),
        "{err}"
    );
}

fn mint(ttl: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "test-1")
        .unwrap();
    let pem = dir.path().join("k.pem");
    std::fs::write(&pem, key.private_pem.as_bytes()).unwrap();
    run(bin()
        .args(["token", "mint", "--kid", "test-1", "--ttl", ttl, "--key"])
        .arg(&pem))
}

/// The claims of a JWT (not verified: the proxy's tests do that).
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn token_mint_warns_about_a_ttl_the_proxy_refuses_and_takes_negative_ones() {
    let (code, token, err) = mint("86400");
    assert_eq!(code, 0, "{err}");
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    assert!(err.starts_with("warning:"), "{err}");
    assert!(err.contains("jwt.max_lifetime_seconds"), "{err}");

    let (code, token, err) = mint("-100");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("expired 100 s ago"), "{err}");
    let claims = payload(token.trim());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat, "an ordinary lifetime, in the past: {claims}");
    assert!(
        exp < purposegate::time::now_millis() / 1000 - 90,
        "{claims}"
    );

    let (code, _, err) = mint("900");
    assert_eq!(code, 0);
    assert!(err.is_empty(), "{err}");
}

#[test]
fn policy_test_takes_a_single_case_file() {
    let cases = common::repo().join("policies/tests");
    let file = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .min()
        .unwrap();
    let (code, out, err) = run(bin().args(["policy", "test"]).arg(&file));
    assert_eq!(code, 0, "{out}{err}");
    let last = out.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed"), "{last}");
    assert!(!last.starts_with("0 passed"), "{last}");
    // From inside the folder, with a relative name.
    let (code, out, err) = run(bin()
        .current_dir(&cases)
        .args(["policy", "test"])
        .arg(file.file_name().unwrap()));
    assert_eq!(code, 0, "{out}{err}");
}

/// A log rotated at 4 KiB by the real writer: the rotated files (oldest
/// first) and the live file.
async fn rotated_log(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let cfg = AuditConfig {
        path: dir.join("audit.jsonl"),
        fsync: FsyncPolicy::Batch,
        batch_window: Duration::ZERO,
        rotate_bytes: Some(4096),
        checkpoint: None,
        stdout: false,
        instance: "test-0".into(),
        rotate_every: None,
        max_local_bytes: None,
        reserve_bytes: 0,
        ship: None,
    };
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..40 {
        sink.record(&AuditEvent {
            request_id: format!("req-{i}"),
            decision: DecisionKind::Allow,
            subject: Some("alice".into()),
            method: "GET".into(),
            path: "/v1/users/u1/conversations/c1".into(),
            status: 200,
            ..AuditEvent::default()
        })
        .await
        .unwrap();
    }
    drop(sink);
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &cfg.path)
        .collect();
    rotated.sort();
    (rotated, cfg.path)
}

#[tokio::test]
async fn audit_verify_on_the_live_file_after_a_rotation_is_a_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let (rotated, live) = rotated_log(dir.path()).await;
    assert!(!rotated.is_empty(), "no rotation");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&live)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["event"], "file_start");
    let start = first["seq"].as_u64().unwrap();

    let (code, out, err) = run(bin().args(["audit", "verify"]).arg(&live));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "(continues from seq {}, earlier records not checked)",
            start - 1
        )),
        "{out}"
    );
    let newest = rotated
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        out.contains(&format!("its file_start names {newest}")),
        "{out}"
    );
    assert!(out.contains(".[0-9]*"), "{out}");
    assert!(!out.contains("deleted"), "{out}");

    let (code, _, err) = run(bin().args(["audit", "verify", "--from-genesis"]).arg(&live));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("starts at seq {start}")), "{err}");

    // All of them, as the hint says: the whole chain from seq 1.
    let mut all = rotated.clone();
    all.push(live.clone());
    let (code, out, err) = run(bin().args(["audit", "verify", "--from-genesis"]).args(&all));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(seq 1.."), "{out}");
    assert!(
        out.contains("chain ") && out.contains("starts here (instance test-0)"),
        "{out}"
    );
    assert!(out.contains("no checkpoints: only the hash chain"), "{out}");
}

/// The top-level folders a build of the crate reads: `src`, the benches
/// Cargo.toml declares (cargo refuses a manifest whose targets are
/// missing) and whatever `include_str!`/`include_bytes!` reach outside `src`.
fn folders_the_build_reads() -> std::collections::BTreeSet<String> {
    let repo = common::repo();
    let mut needed = std::collections::BTreeSet::from(["src".to_string()]);
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    if manifest.contains("[[bench]]") {
        needed.insert("benches".into());
    }
    let mut dirs = vec![repo.join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for quoted in text
                .split("include_str!(\"")
                .chain(text.split("include_bytes!(\""))
                .skip(1)
            {
                let rel = quoted.split('"').next().unwrap();
                let target = p.parent().unwrap().join(rel);
                let Ok(target) = target.canonicalize() else {
                    continue;
                };
                let Ok(inside) = target.strip_prefix(repo.canonicalize().unwrap()) else {
                    continue;
                };
                if let Some(top) = inside.components().next() {
                    needed.insert(top.as_os_str().to_string_lossy().into_owned());
                }
            }
        }
    }
    needed
}

#[test]
fn the_dockerfile_copies_everything_the_build_reads() {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| l.split_whitespace().rev().skip(1))
        .collect();
    let needed = folders_the_build_reads();
    assert!(needed.contains("migrations"), "{needed:?}");
    for folder in &needed {
        assert!(
            copied.contains(&folder.as_str()),
            "the Dockerfile does not COPY {folder}/ (copies {copied:?})"
        );
    }
    assert!(copied.contains(&"Cargo.lock"), "{copied:?}");
}
