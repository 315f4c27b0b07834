//! The PostgreSQL consent backend against the machine's real PostgreSQL (one
//! throwaway database per test): every consent rule of docs/reference.md §6 through
//! the proxy, NOTIFY-driven invalidation while running, the connection cut
//! mid-run (stale answers up to the limit, then 503 `consent_unavailable`,
//! then recovery), and the `consent migrate|import` and `policy check`
//! commands.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::{Forwarder, TestDb};
use common::within;
use common::{Harness, Opts, Reply, Tok};
use purposegate::consent::file::ConsentData;
use purposegate::consent::migrate;

/// A `consent:` section for `url`.
fn section(url: &str, ttl: u64, staleness: u64) -> String {
    format!(
        "consent:\n  postgres_url: \"{url}\"\n  cache_ttl_seconds: {ttl}\n  max_staleness_seconds: {staleness}\n  lookup_timeout_ms: 300\n  pool_size: 4\n"
    )
}

/// Applies the migrations and imports the harness's consent registry.
async fn prepare(db: &TestDb) {
    let mut c = db.client().await;
    migrate::migrate(&mut c).await.unwrap();
    let data = ConsentData::parse(Path::new("consent.yaml"), common::CONSENT).unwrap();
    let report = migrate::import(&mut c, &data).await.unwrap();
    assert_eq!((report.users, report.orgs), (3, 1));
}

/// Waits until the proxy's listener has issued LISTEN (it connects in the
/// background at start and clears the cache when it does).
async fn wait_listening(db: &TestDb) {
    let sql = db.client().await;
    let listening = within(Duration::from_secs(5), || async {
        sql.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    })
    .await;
    assert!(listening.is_some(), "the listener never issued LISTEN");
}

async fn start(url: &str, ttl: u64, staleness: u64) -> Harness {
    Harness::start_with(Opts {
        consent_section: Some(section(url, ttl, staleness)),
        ..Opts::default()
    })
    .await
}

/// A training-ready reply: de-identified content of `owner` created at `created`.
fn training(owner: &str, created: &str, api_org: Option<&str>) -> Reply {
    let mut meta = vec![
        ("x-content-owner", owner),
        ("x-content-created-at", created),
        ("x-content-deidentified", "true"),
    ];
    match api_org {
        Some(org) => {
            meta.push(("x-content-source", "api"));
            meta.push(("x-content-org", org));
        }
        None => meta.push(("x-content-source", "consumer")),
    }
    Reply::ok(&meta)
}

/// GET `path` with `tok`; returns (status, reason, whether the upstream was reached).
async fn probe(h: &Harness, tok: &Tok, path: &str) -> (u16, Option<String>, bool) {
    let before = h.upstream.count();
    let resp = h.get(path, Some(&h.token(tok))).await;
    if resp.status != 200 {
        assert!(
            !resp.body.windows(12).any(|w| w == b"user content"),
            "{path}: content leaked in a denial"
        );
    }
    (resp.status, resp.reason(), h.upstream.count() > before)
}

/// (token, path, upstream reply, status, reason, upstream reached).
type Case<'a> = (Tok, &'a str, Reply, u16, Option<&'a str>, bool);

#[tokio::test]
async fn every_consent_rule_through_the_proxy() {
    let db = TestDb::create().await;
    prepare(&db).await;
    let h = start(&db.url(), 30, 300).await;
    let cases: Vec<Case> = vec![
        // opted_out: the opt-out of u2 applies going forward only.
        (
            Tok::training(),
            "/v1/users/u2/conversations/before",
            training("u2", "2026-02-28T23:59:59Z", None),
            200,
            None,
            true,
        ),
        (
            Tok::training(),
            "/v1/users/u2/conversations/at",
            training("u2", "2026-03-01T00:00:00Z", None),
            403,
            Some("opted_out"),
            true,
        ),
        (
            Tok::training(),
            "/v1/users/u2/conversations/after",
            training("u2", "2026-09-01T00:00:00Z", None),
            403,
            Some("opted_out"),
            true,
        ),
        // a closed period [2026-01-01, 2026-02-01) of u6
        (
            Tok::training(),
            "/v1/users/u6/conversations/inside",
            training("u6", "2026-01-15T00:00:00Z", None),
            403,
            Some("opted_out"),
            true,
        ),
        (
            Tok::training(),
            "/v1/users/u6/conversations/end",
            training("u6", "2026-02-01T00:00:00Z", None),
            200,
            None,
            true,
        ),
        // a user without any record (negative answer)
        (
            Tok::training(),
            "/v1/users/u7/conversations/c1",
            training("u7", "2026-05-01T00:00:00Z", None),
            200,
            None,
            true,
        ),
        // api_content_not_shared: org-9 shared [2026-01-01, 2026-06-01)
        (
            Tok::training(),
            "/v1/users/u4/conversations/api-in",
            training("u4", "2026-03-01T00:00:00Z", Some("org-9")),
            200,
            None,
            true,
        ),
        (
            Tok::training(),
            "/v1/users/u4/conversations/api-late",
            training("u4", "2026-06-01T00:00:00Z", Some("org-9")),
            403,
            Some("api_content_not_shared"),
            true,
        ),
        (
            Tok::training(),
            "/v1/users/u4/conversations/api-other",
            training("u4", "2026-03-01T00:00:00Z", Some("org-1")),
            403,
            Some("api_content_not_shared"),
            true,
        ),
        // account_deleted, before the upstream; legal hold exempts legal
        (
            Tok::support("u3"),
            "/v1/users/u3/conversations/c1",
            Reply::default(),
            403,
            Some("account_deleted"),
            false,
        ),
        (
            Tok::abuse("u3"),
            "/v1/users/u3/files/f1",
            Reply::default(),
            403,
            Some("account_deleted"),
            false,
        ),
        (
            Tok::training(),
            "/v1/users/u3/conversations/c1",
            Reply::default(),
            403,
            Some("account_deleted"),
            false,
        ),
        (
            Tok::legal("u3"),
            "/v1/users/u3/conversations/held",
            Reply::default(),
            200,
            None,
            true,
        ),
        (
            Tok::support("u1"),
            "/v1/users/u1/conversations/c1",
            Reply::default(),
            200,
            None,
            true,
        ),
    ];
    for (tok, path, reply, status, reason, reached) in cases {
        if reply.status != 0 {
            h.upstream.reply(path, reply);
        }
        // Twice: the first answer comes from the database, the second from the cache.
        for round in ["miss", "hit"] {
            let got = probe(&h, &tok, path).await;
            assert_eq!(
                got,
                (status, reason.map(str::to_string), reached),
                "{path} ({round})"
            );
        }
    }
    let metrics = String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap();
    let count = |result: &str| -> f64 {
        let prefix = format!("purposegate_consent_lookups_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(count("miss") >= 7.0 && count("hit") >= 14.0, "{metrics}");
    assert_eq!(count("error"), 0.0, "{metrics}");
    assert!(metrics.contains("purposegate_consent_lookup_duration_seconds_count"));
    assert_eq!(h.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn changes_made_while_running_apply_within_two_seconds() {
    let db = TestDb::create().await;
    prepare(&db).await;
    // A TTL of a minute: only the NOTIFY can make the change visible in time.
    let h = start(&db.url(), 60, 300).await;
    let sql = db.client().await;
    wait_listening(&db).await;
    let tok = Tok::training();
    let path = "/v1/users/u9/conversations/c1";
    h.upstream
        .reply(path, training("u9", "2026-05-01T00:00:00Z", None));
    assert_eq!(probe(&h, &tok, path).await.0, 200);
    assert_eq!(probe(&h, &tok, path).await.0, 200); // cached now

    sql.execute(
        "INSERT INTO consent_user_opt_outs (user_id, valid_from) VALUES ('u9', '2026-04-01T00:00:00Z')",
        &[],
    )
    .await
    .unwrap();
    let took = within(Duration::from_secs(2), || async {
        probe(&h, &tok, path).await.1.as_deref() == Some("opted_out")
    })
    .await;
    assert!(took.is_some(), "opt-out not enforced within 2 s");

    // Deleting it (the user opts back in) is seen as fast.
    sql.execute(
        "DELETE FROM consent_user_opt_outs WHERE user_id = 'u9'",
        &[],
    )
    .await
    .unwrap();
    let took = within(Duration::from_secs(2), || async {
        probe(&h, &tok, path).await.0 == 200
    })
    .await;
    assert!(took.is_some(), "removed opt-out still enforced after 2 s");

    // An org opt-in and a deletion request too.
    let api = "/v1/users/u9/conversations/api";
    h.upstream
        .reply(api, training("u9", "2026-05-01T00:00:00Z", Some("org-5")));
    assert_eq!(
        probe(&h, &tok, api).await.1.as_deref(),
        Some("api_content_not_shared")
    );
    sql.execute(
        "INSERT INTO consent_org_opt_ins (org_id, valid_from) VALUES ('org-5', '2026-01-01T00:00:00Z')",
        &[],
    )
    .await
    .unwrap();
    let took = within(Duration::from_secs(2), || async {
        probe(&h, &tok, api).await.0 == 200
    })
    .await;
    assert!(took.is_some(), "org opt-in not seen within 2 s");

    let support = Tok::support("u9");
    assert_eq!(probe(&h, &support, path).await.0, 200);
    sql.execute(
        "INSERT INTO consent_deletion_requests (user_id, requested_at) VALUES ('u9', now())",
        &[],
    )
    .await
    .unwrap();
    let took = within(Duration::from_secs(2), || async {
        probe(&h, &support, path).await == (403, Some("account_deleted".to_string()), false)
    })
    .await;
    assert!(took.is_some(), "deletion request not enforced within 2 s");
}

#[tokio::test]
async fn a_cut_connection_serves_the_cache_until_the_staleness_limit_then_fails_closed() {
    let db = TestDb::create().await;
    prepare(&db).await;
    let fwd = Forwarder::start().await;
    let (ttl, staleness) = (1, 3);
    let h = start(&db.url_via(fwd.addr), ttl, staleness).await;
    wait_listening(&db).await;
    let cached = Tok::support("u1");
    let cached_path = "/v1/users/u1/conversations/c1";
    let opted = "/v1/users/u2/conversations/after";
    h.upstream
        .reply(opted, training("u2", "2026-09-01T00:00:00Z", None));
    let warm = within(Duration::from_secs(5), || async {
        probe(&h, &cached, cached_path).await.0 == 200
    })
    .await;
    assert!(
        warm.is_some(),
        "no answer from the database through the forwarder"
    );
    let fetched = Instant::now();
    assert_eq!(
        probe(&h, &Tok::training(), opted).await.1.as_deref(),
        Some("opted_out")
    );

    fwd.cut();
    // Past the TTL but within the staleness limit: cached answers still count,
    // including the opt-out; an uncached user fails closed before the upstream.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(probe(&h, &cached, cached_path).await, (200, None, true));
    assert_eq!(
        probe(&h, &Tok::training(), opted).await.1.as_deref(),
        Some("opted_out")
    );
    let unknown = probe(&h, &Tok::support("u8"), "/v1/users/u8/conversations/c1").await;
    assert_eq!(
        unknown,
        (503, Some("consent_unavailable".to_string()), false)
    );
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["problems"]
            .to_string()
            .contains("consent_unavailable"),
        "{:?}",
        ready.body
    );

    // Past the staleness limit: nothing is known any more, everything fails closed.
    let left = Duration::from_secs(staleness).saturating_sub(fetched.elapsed());
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    for _ in 0..3 {
        let got = probe(&h, &cached, cached_path).await;
        assert_eq!(got, (503, Some("consent_unavailable".to_string()), false));
        let got = probe(&h, &Tok::training(), opted).await;
        assert_eq!(got, (503, Some("consent_unavailable".to_string()), false));
    }

    fwd.restore();
    let back = within(Duration::from_secs(20), || async {
        probe(&h, &cached, cached_path).await.0 == 200
    })
    .await;
    assert!(back.is_some(), "no recovery after the database came back");
    assert_eq!(
        probe(&h, &Tok::training(), opted).await.1.as_deref(),
        Some("opted_out")
    );
    let ready = within(Duration::from_secs(10), || async {
        h.admin_get("/readyz").await.status == 200
    })
    .await;
    assert!(ready.is_some(), "/readyz stayed unready after recovery");

    // No allowed read of anyone whose consent was unknown: every allow in the
    // audit log is for u1 or u2 (their answers were known or cached).
    for r in h.audit_records() {
        if r["event"] == "decision" && r["decision"] == "allow" {
            assert!(
                r["owner"] == "u1",
                "allowed read of {:?} during the outage",
                r["owner"]
            );
        }
    }
    let metrics = String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap();
    for result in ["stale", "error"] {
        let line = format!("purposegate_consent_lookups_total{{result=\"{result}\"}} 0\n");
        assert!(
            !metrics.contains(&line),
            "no {result} lookups counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_database_that_is_down_at_start_fails_closed_and_recovers() {
    let db = TestDb::create().await;
    prepare(&db).await;
    let fwd = Forwarder::start().await;
    fwd.cut();
    let h = start(&db.url_via(fwd.addr), 1, 3).await;
    let got = probe(&h, &Tok::support("u1"), "/v1/users/u1/conversations/c1").await;
    assert_eq!(got, (503, Some("consent_unavailable".to_string()), false));
    let unready = within(Duration::from_secs(5), || async {
        h.admin_get("/readyz").await.status == 503
    })
    .await;
    assert!(
        unready.is_some(),
        "/readyz ready while the database is unreachable"
    );
    fwd.restore();
    let back = within(Duration::from_secs(20), || async {
        probe(&h, &Tok::support("u1"), "/v1/users/u1/conversations/c1")
            .await
            .0
            == 200
    })
    .await;
    assert!(back.is_some(), "no recovery");
}

#[tokio::test]
async fn a_database_that_stops_answering_is_bounded_by_the_lookup_timeout() {
    let db = TestDb::create().await;
    prepare(&db).await;
    let fwd = Forwarder::start().await;
    let h = start(&db.url_via(fwd.addr), 1, 3).await;
    wait_listening(&db).await;
    let cached = Tok::support("u1");
    let path = "/v1/users/u1/conversations/c1";
    assert_eq!(probe(&h, &cached, path).await.0, 200);
    fwd.stall();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The stale answer is used once the lookup gives up; the unknown user fails closed.
    assert_eq!(probe(&h, &cached, path).await, (200, None, true));
    let unknown = probe(&h, &Tok::support("u8"), "/v1/users/u8/conversations/c1").await;
    assert_eq!(
        unknown,
        (503, Some("consent_unavailable".to_string()), false)
    );
    fwd.restore();
    let back = within(Duration::from_secs(20), || async {
        probe(&h, &Tok::support("u8"), "/v1/users/u8/conversations/c1")
            .await
            .0
            == 200
    })
    .await;
    assert!(
        back.is_some(),
        "no recovery after the database answered again"
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
}

#[tokio::test]
async fn migrate_import_and_policy_check_commands() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    let opts = Opts {
        consent_section: Some(section(&db.url(), 30, 300)),
        ..Opts::default()
    };
    let config = common::write_config(dir.path(), &key, "127.0.0.1:9".parse().unwrap(), &opts);
    let run = |args: &[&str]| {
        let out = bin().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let cfg = config.to_str().unwrap();
    let (ok, text) = run(&["consent", "migrate", "--config", cfg]);
    assert!(
        ok && text.contains("applied 0001_consent_tables, 0002_consent_notify"),
        "{text}"
    );
    let (ok, text) = run(&["consent", "migrate", "--config", cfg]);
    assert!(ok && text.contains("up to date"), "{text}");
    let consent = dir.path().join("consent.yaml");
    let (ok, text) = run(&[
        "consent",
        "import",
        "--config",
        cfg,
        consent.to_str().unwrap(),
    ]);
    assert!(
        ok && text.contains("imported 3 users and 1 orgs (3 periods)"),
        "{text}"
    );
    // Importing again replaces rather than duplicates.
    let (ok, _) = run(&[
        "consent",
        "import",
        "--config",
        cfg,
        consent.to_str().unwrap(),
    ]);
    assert!(ok);
    let c = db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM consent_user_opt_outs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let versions: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 2);

    // explain answers from the database, like serve: a deletion that exists
    // only there (not in the consent file beside the config) is enforced.
    c.execute(
        "INSERT INTO consent_deletion_requests (user_id, requested_at) VALUES ('u7', '2026-01-01T00:00:00Z')",
        &[],
    )
    .await
    .unwrap();
    let support = common::mint_with(&key, &Tok::support("u7"));
    let (ok, text) = run(&[
        "explain",
        "--config",
        cfg,
        "--token",
        &support,
        "GET",
        "/v1/users/u7/files/f1",
    ]);
    assert!(
        !ok && text.contains("reason: account_deleted (403)"),
        "{text}"
    );
    let training = common::mint_with(&key, &Tok::training());
    let (ok, text) = run(&[
        "explain",
        "--config",
        cfg,
        "--token",
        &training,
        "GET",
        "/v1/users/u2/conversations/c1",
        "--meta",
        "x-content-owner:u2",
        "--meta",
        "x-content-created-at:2026-04-01T00:00:00Z",
        "--meta",
        "x-content-source:consumer",
        "--meta",
        "x-content-deidentified:true",
    ]);
    assert!(!ok && text.contains("reason: opted_out (403)"), "{text}");

    // A bad consent file is refused with its line, and nothing is written.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "users:\n  u5:\n    deletion_requested_at: \"soon\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml");
    let (ok, text) = run(&["consent", "import", "--config", cfg, bad.to_str().unwrap()]);
    assert!(!ok && text.contains("bad.yaml:3:"), "{text}");

    // policy check validates the section without contacting the database.
    let offline = section("postgres://postgres@127.0.0.1:9/nowhere", 30, 300);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&section(&db.url(), 30, 300), &offline);
    std::fs::write(&config, text).unwrap();
    let (ok, text) = run(&["policy", "check", "--config", cfg]);
    assert!(ok && text.contains("consent in PostgreSQL"), "{text}");
    // migrate against an unreachable database fails with a message, exit 1.
    let (ok, text) = run(&["consent", "migrate", "--config", cfg]);
    assert!(!ok && text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn config_errors_point_at_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    let check = |section: String| {
        let opts = Opts {
            consent_section: Some(section),
            ..Opts::default()
        };
        let config = common::write_config(dir.path(), &key, "127.0.0.1:9".parse().unwrap(), &opts);
        let out = bin()
            .args(["policy", "check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = check(section("postgres://postgres:hunter2@127.0.0.1/db", 30, 300));
    assert!(
        !ok && err.contains("config.yaml:12: consent.postgres_url embeds a password"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password must not be echoed: {err}"
    );
    let (ok, err) = check(section("postgres://postgres@127.0.0.1/db", 30, 10));
    assert!(
        !ok && err.contains("config.yaml:14: consent.max_staleness_seconds"),
        "{err}"
    );
    let both = format!(
        "consent_file: \"consent.yaml\"\n{}",
        section("postgres://postgres@127.0.0.1/db", 30, 300)
    );
    let (ok, err) = check(both);
    assert!(
        !ok && err.contains("either consent_file or consent"),
        "{err}"
    );
    let (ok, err) = check(String::new());
    assert!(!ok && err.contains("missing consent_file"), "{err}");
    let env_and_file = format!(
        "{}  password_env: \"PG_PW\"\n  password_file: \"pw\"\n",
        section("postgres://postgres@127.0.0.1/db", 30, 300)
    );
    let (ok, err) = check(env_and_file);
    assert!(
        !ok && err.contains("at most one of password_env and password_file"),
        "{err}"
    );
}
