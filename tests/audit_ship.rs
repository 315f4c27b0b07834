//! Shipping the local audit chain to PostgreSQL (docs/reference.md §9), against the
//! machine's real PostgreSQL with a throwaway database per test: local logs
//! are written in the AUDIT_CHAIN.md format (chain_start / file_start
//! headers, rotated files `<path>.<last seq>`) with `chain::encode_body`,
//! shipped by `Shipper`, and checked in the database, with `audit verify
//! --postgres` and `audit report` run as the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use common::pg::{Forwarder, TestDb};
use prometheus_client::registry::Registry;
use purposegate::audit::chain::{encode_body, ChainHead};
use purposegate::audit::ship::local::{Fill, Position, Reader};
use purposegate::audit::ship::store::Store;
use purposegate::audit::ship::{schema, ShipConfig, ShipSummary, Shipper, ShipperHandle};
use serde_json::{json, Value};

/// A local log written the way the writer writes it.
struct Log {
    path: PathBuf,
    head: ChainHead,
    chain: String,
    ms: i64,
}

/// `2026-12-01T10:00:00Z` in Unix milliseconds.
const BASE_MS: i64 = 1_796_119_200_000;

impl Log {
    /// A new log at `dir/audit.jsonl` whose first record starts `chain`.
    fn new(dir: &Path, chain: &str, instance: &str) -> Log {
        let mut log = Log {
            path: dir.join("audit.jsonl"),
            head: ChainHead::genesis(),
            chain: chain.to_string(),
            ms: BASE_MS,
        };
        log.append(
            json!({"event":"chain_start","chain":chain,"instance":instance,"cause":"new_log"}),
        );
        log
    }

    fn append(&mut self, body: Value) -> u64 {
        let line = self.encode(body);
        self.write(&line);
        self.head.seq
    }

    fn encode(&mut self, body: Value) -> Vec<u8> {
        self.ms += 1;
        let ts = purposegate::time::format_rfc3339(self.ms);
        let enc = encode_body(&self.head, &ts, &body).unwrap();
        self.head = enc.head;
        enc.line
    }

    fn write(&self, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// One request: its decision record and, when allowed, its complete one.
    fn access(&mut self, id: &str, owner: &str, subject: &str, justification: &str, allow: bool) {
        let decision = if allow { "allow" } else { "deny" };
        let reason = if allow {
            Value::Null
        } else {
            json!("no_grant")
        };
        let status = if allow { 200 } else { 403 };
        let mut ev = json!({
            "request_id": id, "event": "decision", "decision": decision, "reason": reason,
            "subject": subject, "roles": ["support"], "purpose": "support",
            "justification": justification, "method": "GET",
            "path": format!("/v1/users/{owner}/conversations/c1"), "owner": owner,
            "route": "conversation", "status": status, "bytes": null, "duration_ms": null,
            "client_addr": "10.1.2.3:4444", "token_id": format!("jti-{id}"),
        });
        self.append(ev.clone());
        if allow {
            ev["event"] = json!("complete");
            ev["bytes"] = json!(1234);
            ev["duration_ms"] = json!(2.5);
            self.append(ev);
        }
    }

    /// `n` decision records for owners u0..u4 (one write).
    fn records(&mut self, n: u64) {
        let mut out = Vec::new();
        for _ in 0..n {
            let i = self.head.seq + 1;
            let body = json!({
                "request_id": format!("req-{}-{i}", self.chain), "event": "decision",
                "decision": "deny", "reason": "no_grant", "subject": format!("e{}", i % 3),
                "owner": format!("u{}", i % 5), "status": 403,
            });
            out.extend_from_slice(&self.encode(body));
        }
        self.write(&out);
    }

    /// Rotates: the live file becomes `<path>.<last seq>`, a new live file
    /// starts with `file_start`.
    fn rotate(&mut self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{:020}", self.head.seq));
        let rotated = PathBuf::from(name);
        std::fs::rename(&self.path, &rotated).unwrap();
        let body = json!({"event":"file_start","chain":self.chain,"instance":"x","cause":"rotated","previous_file":rotated.file_name().unwrap().to_string_lossy()});
        self.append(body);
        rotated
    }
}

/// A config for the test database (through `addr` when given).
fn config(db: &TestDb, via: Option<std::net::SocketAddr>, instance: &str) -> ShipConfig {
    let url = match via {
        Some(a) => db.url_via(a),
        None => db.url(),
    };
    let mut cfg = ShipConfig::new(url.parse().unwrap(), instance);
    cfg.interval = Duration::from_millis(20);
    cfg.timeout = Duration::from_secs(2);
    cfg.retry_max = Duration::from_millis(200);
    cfg.batch_records = 500;
    cfg
}

async fn migrated() -> TestDb {
    let db = TestDb::create().await;
    let mut c = db.client().await;
    schema::migrate(&mut c, 1).await.unwrap();
    db
}

fn start(cfg: &ShipConfig, path: &Path, wm: u64) -> (ShipperHandle, Registry) {
    let mut r = Registry::with_prefix("purposegate");
    let h = Shipper::start(cfg, path, move || wm, &mut r).unwrap();
    (h, r)
}

async fn ship_all(cfg: &ShipConfig, path: &Path) -> ShipSummary {
    let (h, _r) = start(cfg, path, u64::MAX);
    let s = h.drain(Instant::now() + Duration::from_secs(60)).await;
    assert!(s.all_shipped, "{s:?}");
    s
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// (count, distinct seqs, min seq, max seq) of one instance's chain.
async fn seqs(db: &TestDb, instance: &str, chain: &str) -> (i64, i64, i64, i64) {
    let r = db
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0)
               FROM audit_records WHERE instance = $1 AND chain = $2",
            &[&instance, &chain],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn verify(db: &TestDb) -> Output {
    bin(&["audit", "verify", "--postgres", &db.url()])
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn metric(r: &Registry, line_prefix: &str) -> f64 {
    let text = purposegate::metrics::encode(r);
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_ship_into_one_database_and_rotated_files_go() {
    let db = migrated().await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::new(da.path(), "chain-a", "pod-a");
    let mut b = Log::new(dbb.path(), "chain-b", "pod-b");
    for log in [&mut a, &mut b] {
        log.records(700);
        log.rotate();
        log.records(600);
        log.rotate();
        log.records(300);
    }
    let (ca, cb) = (config(&db, None, "pod-a"), config(&db, None, "pod-b"));
    let (sa, sb) = tokio::join!(ship_all(&ca, &a.path), ship_all(&cb, &b.path));
    assert_eq!((sa.shipped, sb.shipped), (a.head.seq, b.head.seq));
    assert_eq!((sa.files_deleted, sb.files_deleted), (2, 2));
    for (inst, chain, log) in [("pod-a", "chain-a", &a), ("pod-b", "chain-b", &b)] {
        let n = i64::try_from(log.head.seq).unwrap();
        assert_eq!(seqs(&db, inst, chain).await, (n, n, 1, n));
        // Only the live file is left on the volume.
        let left: Vec<_> = std::fs::read_dir(log.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("audit.jsonl")]);
    }
    let out = verify(&db);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("in 2 chain(s)"), "{t}");
    assert!(
        t.contains("instance pod-a chain chain-a: seq 1..1603"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipper_dropped_mid_batch_then_restarted_leaves_no_gap_and_no_duplicate() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(20_000);
    let cfg = config(&db, None, "pod-0");
    let wm = Arc::new(AtomicU64::new(5000));
    let w = wm.clone();
    let mut reg = Registry::with_prefix("purposegate");
    let h = Shipper::start(&cfg, &log.path, move || w.load(Ordering::SeqCst), &mut reg).unwrap();
    eventually("the first 5000 stored", Duration::from_secs(30), || async {
        count(&db, "SELECT count(*) FROM audit_records").await == 5000
    })
    .await;
    // Block the table, then let more records become durable: the
    // shipper's next batch waits inside its transaction.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE audit_records IN SHARE MODE")
        .await
        .unwrap();
    wm.store(u64::MAX, Ordering::SeqCst);
    let watcher = db.client().await;
    eventually("the shipper waiting mid-batch", Duration::from_secs(10), || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'purposegate-audit-ship' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    drop(h);
    tx.rollback().await.unwrap();
    let before = count(&db, "SELECT count(*) FROM audit_records").await;
    assert_eq!(before, 5000, "the interrupted batch was rolled back");
    let s = ship_all(&cfg, &log.path).await;
    assert_eq!(s.shipped, 20_001 - u64::try_from(before).unwrap());
    assert_eq!(seqs(&db, "pod-0", "c1").await, (20_001, 20_001, 1, 20_001));
    // Shipping again adds nothing.
    let again = ship_all(&cfg, &log.path).await;
    assert_eq!(again.shipped, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM audit_records").await,
        20_001
    );
    let out = verify(&db);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshipped_batch_adds_nothing_and_lost_rows_are_shipped_again() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(99);
    // The same batch twice through the store: COPY meets the rows, the
    // batch goes by INSERT … ON CONFLICT DO NOTHING and adds nothing.
    let mut reader = Reader::new(&log.path, Box::new(|| u64::MAX), 1000, 1 << 24);
    assert!(matches!(reader.fill().unwrap(), Fill::NeedPosition(_)));
    reader.set_position("c1", Position::default());
    let Fill::Batch(batch) = reader.fill().unwrap() else {
        panic!("no batch")
    };
    assert_eq!(batch.rows.len(), 100);
    let mut store = Store::connect(&db.url().parse().unwrap(), "pod-0")
        .await
        .unwrap();
    let first = store.store(&batch).await.unwrap();
    assert_eq!((first.inserted, first.conflicted), (100, false));
    let second = store.store(&batch).await.unwrap();
    assert_eq!((second.inserted, second.conflicted), (0, true));
    assert_eq!(count(&db, "SELECT count(*) FROM audit_records").await, 100);
    // A database restored from an older backup: the rows it lost come back.
    db.client()
        .await
        .batch_execute("DELETE FROM audit_records WHERE seq > 60")
        .await
        .unwrap();
    let cfg = config(&db, None, "pod-0");
    let s = ship_all(&cfg, &log.path).await;
    assert_eq!(s.shipped, 40);
    assert_eq!(seqs(&db, "pod-0", "c1").await, (100, 100, 1, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_cut_then_back_catches_up_with_nothing_lost() {
    let db = migrated().await;
    let fwd = Forwarder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(1000);
    let cfg = config(&db, Some(fwd.addr), "pod-0");
    let wm = Arc::new(AtomicU64::new(log.head.seq));
    let mut reg = Registry::with_prefix("purposegate");
    let w = wm.clone();
    let h = Shipper::start(&cfg, &log.path, move || w.load(Ordering::SeqCst), &mut reg).unwrap();
    eventually(
        "the first records stored",
        Duration::from_secs(30),
        || async { count(&db, "SELECT count(*) FROM audit_records").await == 1001 },
    )
    .await;
    fwd.cut();
    for _ in 0..4 {
        log.records(500);
        log.rotate();
    }
    log.records(500);
    wm.store(log.head.seq, Ordering::SeqCst);
    eventually("the outage seen", Duration::from_secs(10), || async {
        metric(&reg, "purposegate_audit_ship_up") == 0.0
            && metric(&reg, "purposegate_audit_ship_lag_records") > 0.0
    })
    .await;
    assert!(
        metric(
            &reg,
            "purposegate_audit_ship_errors_total{kind=\"database\"}"
        ) >= 1.0
    );
    // Nothing was deleted while the database could not confirm it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    assert_eq!(count(&db, "SELECT count(*) FROM audit_records").await, 1001);
    // A database that hangs instead of refusing: the timeout ends each try.
    fwd.stall();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fwd.restore();
    let s = h.drain(Instant::now() + Duration::from_secs(60)).await;
    assert!(s.all_shipped, "{s:?}");
    assert_eq!((s.lag_records, s.files_deleted), (0, 4));
    let n = i64::try_from(log.head.seq).unwrap();
    assert_eq!(seqs(&db, "pod-0", "c1").await, (n, n, 1, n));
    assert_eq!(metric(&reg, "purposegate_audit_ship_up"), 1.0);
    assert_eq!(metric(&reg, "purposegate_audit_ship_lag_records"), 0.0);
    assert_eq!(
        metric(&reg, "purposegate_audit_shipped_records_total"),
        n as f64
    );
    let out = verify(&db);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_records_up_to_the_watermark_are_shipped() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(49);
    let cfg = config(&db, None, "pod-0");
    let (h, _r) = start(&cfg, &log.path, 10);
    let s = h.drain(Instant::now() + Duration::from_secs(30)).await;
    assert!(s.all_shipped, "{s:?}");
    assert_eq!((s.shipped, s.durable_seq, s.stored_seq), (10, 10, 10));
    assert_eq!(seqs(&db, "pod-0", "c1").await, (10, 10, 1, 10));
    let (h, _r) = start(&cfg, &log.path, 50);
    let s = h.drain(Instant::now() + Duration::from_secs(30)).await;
    assert_eq!(s.shipped, 40);
    assert_eq!(seqs(&db, "pod-0", "c1").await, (50, 50, 1, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_file_is_deleted_only_once_its_records_are_stored_as_written() {
    let db = migrated().await;
    let fwd = Forwarder::start().await;
    fwd.cut();
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(99);
    let first = log.rotate();
    log.records(99);
    let second = log.rotate();
    log.records(10);
    // The database is down from the start: both files stay.
    let cfg = config(&db, Some(fwd.addr), "pod-0");
    let (h, reg) = start(&cfg, &log.path, u64::MAX);
    eventually("a failed attempt", Duration::from_secs(10), || async {
        metric(
            &reg,
            "purposegate_audit_ship_errors_total{kind=\"database\"}",
        ) >= 2.0
    })
    .await;
    assert!(first.exists() && second.exists());
    drop(h);
    // The first file's last record is stored, but not as written: kept.
    fwd.restore();
    let c = db.client().await;
    let lines: Vec<String> = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let seq = v["seq"].as_i64().unwrap();
        let record = if seq == 100 {
            l.replace("u0", "u9")
        } else {
            l.clone()
        };
        c.execute(
            "INSERT INTO audit_records (instance, chain, seq, ts, record) VALUES ('pod-0', 'c1', $1, now(), $2)",
            &[&seq, &record],
        )
        .await
        .unwrap();
    }
    let (h, reg) = start(&cfg, &log.path, u64::MAX);
    let s = h.drain(Instant::now() + Duration::from_secs(30)).await;
    assert!(s.all_shipped, "{s:?}");
    assert_eq!(s.files_deleted, 1);
    assert!(first.exists(), "deleted although the stored record differs");
    assert!(!second.exists(), "stored and confirmed, yet kept");
    assert_eq!(
        metric(
            &reg,
            "purposegate_audit_ship_errors_total{kind=\"readback\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_an_empty_volume_starts_a_second_chain_beside_the_first() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&db, None, "pod-0");
    let mut log = Log::new(dir.path(), "chain-1", "pod-0");
    log.records(30);
    ship_all(&cfg, &log.path).await;
    // The volume is gone; the new process starts a new chain at seq 1.
    std::fs::remove_file(&log.path).unwrap();
    let mut log = Log::new(dir.path(), "chain-2", "pod-0");
    log.records(20);
    ship_all(&cfg, &log.path).await;
    assert_eq!(seqs(&db, "pod-0", "chain-1").await, (31, 31, 1, 31));
    assert_eq!(seqs(&db, "pod-0", "chain-2").await, (21, 21, 1, 21));
    let out = verify(&db);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("chain chain-1: seq 1..31") && t.contains("chain chain-2: seq 1..21"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_and_deleted_rows_are_named_by_verify() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(20);
    ship_all(&config(&db, None, "pod-0"), &log.path).await;
    let c = db.client().await;
    let expect_fault = |out: Output, words: &[&str]| {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let t = text(&out);
        for w in words {
            assert!(t.contains(w), "missing {w:?} in {t}");
        }
    };
    c.batch_execute(
        "UPDATE audit_records SET record = replace(record, '\"u0\"', '\"u7\"') WHERE seq = 5",
    )
    .await
    .unwrap();
    expect_fault(
        verify(&db),
        &["instance pod-0, chain c1, seq 5", "modified"],
    );
    c.batch_execute(
        "UPDATE audit_records SET record = replace(record, '\"u7\"', '\"u0\"') WHERE seq = 5",
    )
    .await
    .unwrap();
    let ok = verify(&db);
    assert!(ok.status.success(), "{}", text(&ok));
    c.batch_execute("UPDATE audit_records SET owner = 'u3' WHERE seq = 9")
        .await
        .unwrap();
    expect_fault(verify(&db), &["seq 9", "column owner"]);
    c.batch_execute("UPDATE audit_records SET owner = 'u4' WHERE seq = 9; DELETE FROM audit_records WHERE seq = 12")
        .await
        .unwrap();
    expect_fault(
        verify(&db),
        &[
            "instance pod-0, chain c1, seq 13",
            "deleted",
            "seq 12 is missing",
        ],
    );
    c.batch_execute("INSERT INTO audit_records SELECT instance, chain, 12, ts + interval '1 second', event, request_id, decision, reason, owner, subject, purpose, justification, route, status, record FROM audit_records WHERE seq = 11")
        .await
        .unwrap();
    expect_fault(verify(&db), &["seq 12", "does not link"]);
    // Only another instance's chains: this one is not looked at.
    let other = bin(&[
        "audit",
        "verify",
        "--postgres",
        &db.url(),
        "--instance",
        "pod-9",
    ]);
    assert!(other.status.success(), "{}", text(&other));
    assert!(text(&other).contains("0 records in 0 chain(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modified_local_line_is_refused_recorded_and_its_file_kept() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(9);
    let rotated = log.rotate();
    log.records(5);
    let text_before = std::fs::read_to_string(&rotated).unwrap();
    std::fs::write(&rotated, text_before.replace("\"u2\"", "\"u8\"")).unwrap();
    let cfg = config(&db, None, "pod-0");
    let (h, reg) = start(&cfg, &log.path, u64::MAX);
    let s = h.drain(Instant::now() + Duration::from_secs(30)).await;
    assert!(s.all_shipped, "{s:?}");
    assert_eq!((s.refused, s.files_deleted), (2, 0));
    assert!(rotated.exists());
    assert_eq!(
        metric(
            &reg,
            "purposegate_audit_ship_errors_total{kind=\"refused\"}"
        ),
        2.0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM audit_records").await, 14);
    let r = db
        .client()
        .await
        .query(
            "SELECT after_seq, seq, reason, line FROM audit_ship_refusals ORDER BY after_seq",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, Option<i64>, String, i64)> = r
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(2), "modified".into(), 2),
            (6, Some(7), "modified".into(), 7)
        ]
    );
    let out = verify(&db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("seq 3") && t.contains("seq 2 is missing"), "{t}");
    assert!(
        t.contains("refused the local line") && t.contains(":2 "),
        "{t}"
    );
}

/// Two replicas' logs with accesses of u1 and others.
async fn report_fixture(db: &TestDb) -> (tempfile::TempDir, tempfile::TempDir) {
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::new(da.path(), "ca", "pod-a");
    let mut b = Log::new(dbb.path(), "cb", "pod-b");
    a.access("r1", "u1", "alice", "T-1", true);
    b.ms = a.ms + 10;
    b.access("r2", "u1", "bob", "T-2", false);
    a.ms = b.ms + 10;
    a.access("r3", "u2", "alice", "T-1", true);
    b.ms = a.ms + 10;
    b.access("r4", "u1", "carol", "L-9", true);
    ship_all(&config(db, None, "pod-a"), &a.path).await;
    ship_all(&config(db, None, "pod-b"), &b.path).await;
    (da, dbb)
}

fn report(db: &TestDb, args: &[&str]) -> Output {
    let url = db.url();
    let mut all = vec!["audit", "report", "--postgres", url.as_str()];
    all.extend_from_slice(args);
    let out = bin(&all);
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn json_rows(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_by_owner_lists_exactly_that_users_accesses_without_employee_ids() {
    let db = migrated().await;
    let _dirs = report_fixture(&db).await;
    let out = report(&db, &["--owner", "u1", "--format", "json"]);
    let rows = json_rows(&out);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r4"]);
    assert_eq!(rows[0]["decision"], "allow");
    assert_eq!(rows[0]["status"], 200);
    assert_eq!(rows[0]["bytes"], 1234);
    assert_eq!(rows[1]["decision"], "deny");
    assert_eq!(rows[1]["reason"], "no_grant");
    assert_eq!(rows[1]["instance"], "pod-b");
    for r in &rows {
        for key in [
            "ts",
            "request_id",
            "owner",
            "purpose",
            "justification",
            "decision",
            "reason",
            "route",
            "status",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        for hidden in [
            "subject",
            "roles",
            "token_id",
            "client_addr",
            "client_cert_subject",
        ] {
            assert!(r.get(hidden).is_none(), "{hidden} shown in {r}");
        }
    }
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(!raw.contains("alice") && !raw.contains("10.1.2.3"), "{raw}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("withheld"));
    let revealed = json_rows(&report(
        &db,
        &["--owner", "u1", "--format", "json", "--reveal-subjects"],
    ));
    let subjects: Vec<&str> = revealed
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["alice", "bob", "carol"]);
    assert_eq!(revealed[0]["token_id"], "jti-r1");
    assert_eq!(revealed[0]["roles"], json!(["support"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_by_subject_and_justification_with_bounds_in_every_format() {
    let db = migrated().await;
    let _dirs = report_fixture(&db).await;
    let by_subject = json_rows(&report(&db, &["--subject", "alice", "--format", "json"]));
    let ids: Vec<&str> = by_subject
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r3"]);
    assert_eq!(by_subject[0]["subject"], "alice");
    let by_just = json_rows(&report(
        &db,
        &["--justification", "T-1", "--format", "json"],
    ));
    assert_eq!(by_just.len(), 2);
    // r1 is at BASE+2 ms, r2 at +14, r3 at +25, r4 at +37.
    let since = purposegate::time::format_rfc3339(BASE_MS + 20);
    let bounded = json_rows(&report(
        &db,
        &["--owner", "u1", "--since", &since, "--format", "json"],
    ));
    assert_eq!(bounded.len(), 1, "{bounded:?}");
    assert_eq!(bounded[0]["request_id"], "r4");
    let until = json_rows(&report(
        &db,
        &["--owner", "u1", "--until", &since, "--format", "json"],
    ));
    assert_eq!(until.len(), 2);
    let csv = String::from_utf8(report(&db, &["--owner", "u1", "--format", "csv"]).stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("ts,request_id,instance,decision,reason,purpose,justification,owner")
    );
    assert!(!lines[0].contains("subject"));
    assert!(
        lines[2].contains(",r2,pod-b,deny,no_grant,support,T-2,u1,"),
        "{csv}"
    );
    let table = String::from_utf8(report(&db, &["--owner", "u1"]).stdout).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().nth(3).unwrap().contains("r4"), "{table}");
    let none = json_rows(&report(&db, &["--owner", "nobody", "--format", "json"]));
    assert!(none.is_empty());
    let bad = bin(&[
        "audit",
        "report",
        "--postgres",
        &db.url(),
        "--owner",
        "u1",
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("RFC 3339"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_only_role_ships_and_can_change_nothing() {
    let db = migrated().await;
    let role = format!("audit_ship_role_{}", std::process::id());
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw';
             GRANT CONNECT ON DATABASE {db} TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT INSERT, SELECT ON audit_records, audit_ship_refusals TO {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    let mut log = Log::new(dir.path(), "c1", "pod-0");
    log.records(2000);
    log.rotate();
    log.records(10);
    let url = format!(
        "postgres://{role}@{}:{}/{}",
        common::pg::server_addr().ip(),
        common::pg::server_addr().port(),
        db.name
    );
    let mut cfg = ShipConfig::new(url.parse().unwrap(), "pod-0");
    cfg.password_file = Some(dir.path().join("pw"));
    cfg.interval = Duration::from_millis(20);
    let s = ship_all(&cfg, &log.path).await;
    assert_eq!((s.shipped, s.files_deleted), (2012, 1));
    let pg = cfg.connect_config().unwrap();
    let (client, conn) = pg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for sql in [
        "UPDATE audit_records SET owner = 'x'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "DROP TABLE audit_records_default",
    ] {
        let e = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {e:?}"
        );
    }
    drop(client);
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON audit_records, audit_ship_refusals FROM {role}; REVOKE ALL ON SCHEMA public FROM {role}; REVOKE ALL ON DATABASE {db} FROM {role};",
            db = db.name
        ))
        .await
        .unwrap();
    drop(admin);
    drop(db);
    let admin = common::pg::connect(&common::pg::admin_url()).await;
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_safe_twice_and_concurrently_and_moves_rows_out_of_the_default_partition() {
    let db = TestDb::create().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(db.client().await);
    }
    let runs = clients.iter_mut().map(|c| schema::migrate(c, 2));
    let reports: Vec<_> = futures_util::future::join_all(runs).await;
    let applied: usize = reports.into_iter().map(|r| r.unwrap().applied.len()).sum();
    assert_eq!(applied, 1, "the migration ran once");
    let c = db.client().await;
    let parts = count(
        &db,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_records'::regclass",
    )
    .await;
    // default + last month + this month + 2 ahead
    assert_eq!(parts, 5);
    // A record of a month without partition lands in the default one, and
    // moves to its month's partition when that is created.
    c.batch_execute(
        "INSERT INTO audit_records (instance, chain, seq, ts, record) VALUES ('i', 'c', 1, '2031-05-04T00:00:00Z', '{}')",
    )
    .await
    .unwrap();
    let r = c
        .query_one("SELECT tableoid::regclass::text FROM audit_records", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "audit_records_default");
    let made = c
        .query("SELECT audit_ensure_partitions('2031-05-01', 1)", &[])
        .await
        .unwrap();
    assert_eq!(made.len(), 1);
    let r = c
        .query_one("SELECT tableoid::regclass::text FROM audit_records", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "audit_records_203105");
    let mut again = db.client().await;
    let second = schema::migrate(&mut again, 2).await.unwrap();
    assert!(
        second.applied.is_empty() && second.partitions.is_empty(),
        "{second:?}"
    );
    // And through the command, with the config's audit.ship section.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_ship_config(dir.path(), &db.url());
    let out = bin(&[
        "audit",
        "migrate",
        "--config",
        cfg.to_str().unwrap(),
        "--months-ahead",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("created partitions"), "{}", text(&out));
}

/// A minimal config file with `audit.ship` pointing at `url`.
fn write_ship_config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("purposegate.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"c.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit/audit.jsonl\"\n  ship:\n    postgres_url: \"{url}\"\n    instance: \"pod-offline\"\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_ship_ships_an_offline_volume_but_not_a_locked_one() {
    let db = migrated().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("audit")).unwrap();
    let mut log = Log::new(&dir.path().join("audit"), "c1", "pod-offline");
    log.records(300);
    log.rotate();
    log.records(3);
    let cfg = write_ship_config(dir.path(), &db.url());
    let cfg = cfg.to_str().unwrap();
    {
        // A running writer holds the live file's lock.
        use std::os::unix::io::AsRawFd;
        let f = std::fs::File::open(&log.path).unwrap();
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out = bin(&["audit", "ship", "--config", cfg]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("locked"), "{}", text(&out));
    }
    let out = bin(&["audit", "ship", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok: 305 records stored"),
        "{}",
        text(&out)
    );
    assert_eq!(seqs(&db, "pod-offline", "c1").await, (305, 305, 1, 305));
    assert_eq!(
        std::fs::read_dir(dir.path().join("audit")).unwrap().count(),
        1
    );
}
