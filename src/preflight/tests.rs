//! `preflight` refuses each file `serve` would refuse, naming it, and
//! accepts a complete config without touching the network or the audit log.

use std::path::{Path, PathBuf};

use super::*;

/// A config directory with keys, the repository's policy and consent file.
struct Setup {
    dir: tempfile::TempDir,
}

const BASE: &str = r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
jwt:
  issuer: "https://idp.example.test"
  audiences: ["purposegate"]
  algorithms: ["ES256"]
  jwks_file: "jwks.json"
policy_dir: "policies"
consent_file: "policies/consent.yaml"
upstreams:
  content: {url: "http://127.0.0.1:9"}
audit:
  path: "audit/audit.jsonl"
"#;

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        for f in ["policy.yaml", "consent.yaml"] {
            std::fs::copy(
                repo.join("policies").join(f),
                dir.path().join("policies").join(f),
            )
            .unwrap();
        }
        let key =
            crate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k1").unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            crate::auth::mint::jwks_json(&[&key]),
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the check on `BASE` with `edit` applied.
    fn check(&self, edit: impl Fn(&str) -> String) -> Result<Checked, ConfigError> {
        let file = self.path("config.yaml");
        std::fs::write(&file, edit(BASE)).unwrap();
        preflight_file(&file).map(|(_, checked)| checked)
    }
}

fn with(extra: &str) -> impl Fn(&str) -> String + '_ {
    move |base: &str| format!("{base}{extra}")
}

#[test]
fn a_complete_config_passes_without_creating_the_audit_log() {
    let s = Setup::new();
    let checked = s.check(|b| b.to_string()).unwrap();
    assert!(checked.policy.purposes.contains_key("support"));
    assert!(
        !s.path("audit").exists(),
        "the audit log is serve's to create"
    );
}

#[test]
fn a_missing_checkpoint_key_names_the_key_file() {
    let s = Setup::new();
    let cp = "  checkpoint: {key_file: \"keys/audit-signing.pem\", every_records: 100}\n";
    let e = s.check(with(cp)).unwrap_err();
    assert_eq!(e.file, s.path("keys/audit-signing.pem"), "{e}");
    assert!(e.message.contains("audit.checkpoint.key_file"), "{e}");
    assert!(e.message.contains("audit keygen"), "{e}");

    // Not a key at all.
    std::fs::create_dir_all(s.path("keys")).unwrap();
    std::fs::write(s.path("keys/audit-signing.pem"), "hello\n").unwrap();
    let e = s.check(with(cp)).unwrap_err();
    assert!(e.to_string().contains("PRIVATE KEY"), "{e}");

    // A real one passes.
    std::fs::remove_file(s.path("keys/audit-signing.pem")).unwrap();
    crate::audit::sign::keygen(&s.path("keys")).unwrap();
    s.check(with(cp)).unwrap();
}

#[test]
fn an_unreadable_jwks_file_is_refused() {
    let s = Setup::new();
    std::fs::write(s.path("jwks.json"), "{\"keys\": [").unwrap();
    let e = s.check(|b| b.to_string()).unwrap_err();
    assert_eq!(e.file, s.path("jwks.json"), "{e}");
    std::fs::remove_file(s.path("jwks.json")).unwrap();
    let e = s.check(|b| b.to_string()).unwrap_err();
    assert_eq!(e.file, s.path("jwks.json"), "{e}");
}

#[test]
fn tls_files_that_do_not_load_are_refused() {
    let s = Setup::new();
    std::fs::write(s.path("server.pem"), "not a certificate\n").unwrap();
    std::fs::write(s.path("server.key"), "not a key\n").unwrap();
    let e = s
        .check(with("tls: {cert_file: server.pem, key_file: server.key}\n"))
        .unwrap_err();
    assert!(
        e.file == s.path("server.pem") || e.file == s.path("server.key"),
        "{e}"
    );

    let https = |b: &str| {
        b.replace(
            "{url: \"http://127.0.0.1:9\"}",
            "{url: \"https://127.0.0.1:9\", ca_file: store-ca.pem}",
        )
    };
    let e = s.check(https).unwrap_err();
    assert_eq!(e.file, s.path("store-ca.pem"), "{e}");
}

#[test]
fn justification_files_and_purposes_are_checked() {
    let s = Setup::new();
    let section = "justifications:\n  url: \"https://cases.example.test/{kind}/{id}\"\n  bearer_token_file: cases-token\n";
    let e = s.check(with(section)).unwrap_err();
    assert_eq!(e.file, s.path("cases-token"), "{e}");
    std::fs::write(s.path("cases-token"), "s3cret\n").unwrap();
    s.check(with(section)).unwrap();

    let unknown = "justifications:\n  url: \"https://cases.example.test/{kind}/{id}\"\n  purposes: [nosuch]\n";
    let e = s.check(with(unknown)).unwrap_err();
    assert!(e.message.contains("nosuch"), "{e}");
    assert_eq!(e.line, Some(16), "{e}");

    let ca = "justifications:\n  url: \"https://cases.example.test/{kind}/{id}\"\n  ca_file: cases-ca.pem\n";
    let e = s.check(with(ca)).unwrap_err();
    assert_eq!(e.file, s.path("cases-ca.pem"), "{e}");
}

#[test]
fn budget_files_and_purposes_are_checked() {
    let s = Setup::new();
    let section = |extra: &str| {
        format!(
            "budgets:\n  redis_url: \"redis://127.0.0.1:6379/0\"\n{extra}  limits:\n    - {{purpose: support, requests: 10, window_seconds: 60}}\n"
        )
    };
    let pw = section("  password_file: redis-pw\n");
    let e = s.check(with(&pw)).unwrap_err();
    assert_eq!(e.file, s.path("redis-pw"), "{e}");
    assert!(e.message.contains("budgets.password_file"), "{e}");

    let hk = section("  hash_key_file: hash-key\n");
    std::fs::write(s.path("hash-key"), "\n").unwrap();
    let e = s.check(with(&hk)).unwrap_err();
    assert!(e.message.contains("empty"), "{e}");
    std::fs::write(s.path("hash-key"), "k\n").unwrap();
    s.check(with(&hk)).unwrap();

    let unknown = section("").replace("support", "nosuch");
    let e = s.check(with(&unknown)).unwrap_err();
    assert!(e.message.contains("nosuch"), "{e}");
    assert_eq!(e.line, Some(17), "{e}");
}

#[test]
fn the_consent_database_password_source_is_checked_without_connecting() {
    let s = Setup::new();
    let db = |b: &str| {
        b.replace(
            "consent_file: \"policies/consent.yaml\"\n",
            "consent:\n  postgres_url: \"postgres://pg@192.0.2.1:5432/consent\"\n  password_file: pg-pw\n",
        )
    };
    let e = s.check(db).unwrap_err();
    assert_eq!(e.file, s.path("pg-pw"), "{e}");
    std::fs::write(s.path("pg-pw"), "pw\n").unwrap();
    // 192.0.2.1 (TEST-NET) never answers: passing shows nothing was asked.
    s.check(db).unwrap();
}

#[test]
fn an_audit_path_that_is_a_directory_is_refused() {
    let s = Setup::new();
    std::fs::create_dir_all(s.path("audit/audit.jsonl")).unwrap();
    let e = s.check(|b| b.to_string()).unwrap_err();
    assert!(e.message.contains("is a directory"), "{e}");
}
