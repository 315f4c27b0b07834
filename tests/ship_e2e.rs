//! The audit trail beyond the pod, through the real binary: `purposegate
//! serve` with `audit.ship` against a real PostgreSQL — SIGTERM ships
//! everything (so the volume may go), a restart on an empty volume starts a
//! second chain, two replicas with an append-only role share one database,
//! kill -9 mid-shipping leaves no gap and no duplicate, a database stopped
//! under load is caught up with, and the local bound refuses reads while
//! the database is away and recovers by itself.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pg::{Forwarder, OwnPg, TestDb};
use common::process::{serve, Served};
use common::{Opts, Tok, Upstream};
use http::Method;
use jsonwebtoken::Algorithm;
use purposegate::auth::mint::{generate_dev_key, DevKey};

const PATH: &str = "/v1/users/u1/conversations/c1";

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A proxy config shipping to `url` as `instance`, with `extra` audit keys.
struct Setup {
    dir: tempfile::TempDir,
    key: DevKey,
    config: PathBuf,
    _up: Upstream,
}

async fn setup(url: &str, instance: &str, extra: &str) -> Setup {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_dev_key(Algorithm::ES256, "ship-1").unwrap();
    let opts = Opts {
        audit_extra: format!(
            "{extra}  ship: {{postgres_url: \"{url}\", instance: \"{instance}\", interval_ms: 50, retry_max_ms: 300, timeout_ms: 3000, drain_seconds: 20}}\n"
        ),
        ..Opts::default()
    };
    let config = common::write_config(dir.path(), &key, up.addr, &opts);
    Setup {
        dir,
        key,
        config,
        _up: up,
    }
}

impl Setup {
    fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }
    fn token(&self) -> String {
        common::mint_with(&self.key, &Tok::support("u1"))
    }
    fn migrate(&self) {
        let out = bin(&[
            "audit",
            "migrate",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// SIGTERM and the exit code.
fn sigterm(mut s: Served) -> i32 {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(mut s: Served) {
    s.child.kill().unwrap();
    s.child.wait().unwrap();
}

async fn get(addr: SocketAddr, token: Option<&str>) -> (u16, String) {
    let r = common::send(addr, Method::GET, PATH, token, &[]).await;
    (r.status, r.request_id())
}

async fn rows(url: &str, sql: &str) -> i64 {
    let c = common::pg::connect(url).await;
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every line of every local audit file (rotated and live).
fn local_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n == "audit.jsonl"
                || n.strip_prefix("audit.jsonl.")
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    files.sort();
    files.iter().flat_map(|f| common::read_audit(f)).collect()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ships_everything_and_an_empty_volume_starts_a_second_chain() {
    let db = TestDb::create().await;
    let s = setup(&db.url(), "pod-a", "").await;
    s.migrate();
    let token = s.token();
    let served = serve(&s.config, None, false);
    let mut ids = Vec::new();
    for i in 0..40 {
        let t = (i % 4 != 0).then_some(token.as_str());
        ids.push(get(served.addr, t).await.1);
    }
    assert_eq!(sigterm(served), 0, "a complete shipment exits 0");
    // The pod is deleted: its volume with it.
    std::fs::remove_dir_all(s.audit_dir()).unwrap();
    for id in &ids {
        let n = rows(
            &db.url(),
            &format!("SELECT count(*) FROM audit_records WHERE request_id = '{id}' AND event = 'decision'"),
        )
        .await;
        assert_eq!(n, 1, "{id} is not in the database");
    }
    // The same instance on an empty volume: a new chain beside the first.
    let served = serve(&s.config, None, false);
    assert_eq!(get(served.addr, Some(&token)).await.0, 200);
    assert_eq!(sigterm(served), 0);
    let chains = rows(
        &db.url(),
        "SELECT count(DISTINCT chain) FROM audit_records WHERE instance = 'pod-a'",
    )
    .await;
    assert_eq!(chains, 2);
    let causes = rows(
        &db.url(),
        "SELECT count(*) FROM audit_records WHERE event = 'chain_start' AND record LIKE '%\"cause\":\"new_log\"%'",
    )
    .await;
    assert_eq!(causes, 2, "each chain's first record says why it started");
    let out = bin(&["audit", "verify", "--postgres", &db.url()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_ship_into_one_database_with_an_append_only_role() {
    let db = TestDb::create().await;
    let role = format!("audit_shipper_{}", std::process::id());
    // The tables come from `audit migrate` run as the owner.
    let owner = setup(&db.url(), "owner", "").await;
    owner.migrate();
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
             GRANT CONNECT ON DATABASE {db} TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT INSERT, SELECT ON audit_records, audit_ship_refusals TO {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let addr = common::pg::server_addr();
    let url = format!(
        "postgres://{role}@{}:{}/{}",
        addr.ip(),
        addr.port(),
        db.name
    );
    let a = setup(&url, "pod-a", "").await;
    let b = setup(&url, "pod-b", "").await;
    let (sa, sb) = (serve(&a.config, None, false), serve(&b.config, None, false));
    for _ in 0..10 {
        assert_eq!(get(sa.addr, Some(&a.token())).await.0, 200);
        assert_eq!(get(sb.addr, Some(&b.token())).await.0, 200);
    }
    assert_eq!(sigterm(sa), 0);
    assert_eq!(sigterm(sb), 0);
    for (inst, s) in [("pod-a", &a), ("pod-b", &b)] {
        let local = local_lines(&s.audit_dir()).len() as i64;
        let stored = rows(
            &db.url(),
            &format!("SELECT count(*) FROM audit_records WHERE instance = '{inst}'"),
        )
        .await;
        assert_eq!(stored, local, "{inst}");
    }
    let out = bin(&[
        "audit",
        "report",
        "--postgres",
        &db.url(),
        "--owner",
        "u1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 20, "every access of u1 from both replicas");
    assert!(
        rows.iter().all(|r| r.get("subject").is_none()),
        "employee ids withheld"
    );
    let out = bin(&["audit", "verify", "--postgres", &db.url()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_shipping_then_a_restart_leaves_no_gap_and_no_duplicate() {
    let db = TestDb::create().await;
    let s = setup(&db.url(), "pod-k", "  rotate_bytes: 65536\n").await;
    s.migrate();
    let token = s.token();
    for round in 0..2 {
        let served = serve(&s.config, None, false);
        for i in 0..150 {
            let (status, _) = get(served.addr, Some(&token)).await;
            assert_eq!(status, 200, "round {round} request {i}");
        }
        kill9(served); // whatever was in flight to the database
    }
    let served = serve(&s.config, None, false);
    assert_eq!(sigterm(served), 0);
    let local = local_lines(&s.audit_dir());
    let total = rows(&db.url(), "SELECT count(*) FROM audit_records").await;
    let distinct = rows(
        &db.url(),
        "SELECT count(DISTINCT (chain, seq)) FROM audit_records",
    )
    .await;
    assert_eq!(total, distinct, "no duplicate");
    let max = rows(&db.url(), "SELECT max(seq) FROM audit_records").await;
    assert_eq!(total, max, "no gap: seqs 1..{max}");
    assert!(
        total >= local.len() as i64,
        "{total} stored, {} local",
        local.len()
    );
    let out = bin(&["audit", "verify", "--postgres", &db.url()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_under_load_is_caught_up_with_nothing_lost() {
    let pg = OwnPg::start();
    let admin = common::pg::connect(&pg.url("postgres")).await;
    admin.batch_execute("CREATE DATABASE audit").await.unwrap();
    let url = pg.url("audit");
    let s = setup(&url, "pod-d", "").await;
    s.migrate();
    let token = s.token();
    let served = serve(&s.config, None, false);
    let load = |secs: u64| {
        let (addr, token) = (served.addr, token.clone());
        async move {
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = 0;
            while Instant::now() < end {
                assert_eq!(get(addr, Some(&token)).await.0, 200, "serving stopped");
                n += 1;
            }
            n
        }
    };
    load(2).await;
    pg.halt();
    let during = load(10).await;
    assert!(during > 10, "{during} requests while the database was down");
    pg.resume();
    let dir = s.audit_dir();
    let url2 = url.clone();
    wait_for(
        "the shipper to catch up",
        Duration::from_secs(60),
        async || {
            let local = local_lines(&dir).len() as i64;
            let stored = match tokio_postgres::connect(&url2, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    c.query_one("SELECT count(*) FROM audit_records", &[])
                        .await
                        .map(|r| r.get::<_, i64>(0))
                        .unwrap_or(0)
                }
                Err(_) => 0,
            };
            stored == local
        },
    )
    .await;
    assert_eq!(sigterm(served), 0);
    let out = bin(&["audit", "verify", "--postgres", &url]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_bound_refuses_while_the_database_is_away_and_recovers() {
    let db = TestDb::create().await;
    let fwd = Forwarder::start().await;
    let via = db.url_via(fwd.addr);
    let s = setup(
        &via,
        "pod-l",
        "  rotate_bytes: 65536\n  max_local_bytes: 1048576\n  reserve_bytes: 0\n",
    )
    .await;
    s.migrate();
    fwd.cut(); // the database goes away before any traffic
    let token = s.token();
    let served = serve(&s.config, None, false);
    let long = format!("/v1/users/u1/files/{}", "a".repeat(400));
    let mut refused = false;
    for _ in 0..20_000 {
        let r = common::send(served.addr, Method::GET, &long, Some(&token), &[]).await;
        if r.status == 503 {
            assert_eq!(r.reason().as_deref(), Some("audit_unavailable"));
            refused = true;
            break;
        }
        assert_eq!(r.status, 200);
    }
    assert!(refused, "the bound was never reached");
    let ready = common::send(served.admin, Method::GET, "/readyz", None, &[]).await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("audit_local_bound"));
    let on_disk: u64 = std::fs::read_dir(s.audit_dir())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 1_048_576 + 4096, "{on_disk} bytes on the volume");
    // The database is back: shipping frees the volume, serving resumes.
    fwd.restore();
    let admin = served.admin;
    wait_for("/readyz back", Duration::from_secs(60), async || {
        common::send(admin, Method::GET, "/readyz", None, &[])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(get(served.addr, Some(&token)).await.0, 200);
    assert_eq!(sigterm(served), 0);
    let out = bin(&["audit", "verify", "--postgres", &db.url()]);
    assert!(out.status.success(), "{}", text(&out));
}
