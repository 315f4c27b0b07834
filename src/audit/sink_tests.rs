//! End-to-end tests of the sink: chain on disk, restart, torn-tail repair,
//! concurrency, group commit and failure injection (via `FaultyTarget`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::recover::torn_path;
use super::target::fault::{Faults, FaultyTarget};
use super::target::{FileTarget, LogTarget};
use super::verify::verify_files;
use super::{AuditCounters, AuditError, AuditEvent, AuditSink, DecisionKind, EventKind};
use crate::config::{AuditConfig, FsyncPolicy};

fn config(dir: &Path, fsync: FsyncPolicy) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit/audit.jsonl"),
        fsync,
        batch_window: Duration::ZERO,
        rotate_bytes: None,
        checkpoint: None,
        stdout: false,
        ship: None,
    }
}

fn event(id: impl Into<String>) -> AuditEvent {
    AuditEvent {
        request_id: id.into(),
        event: EventKind::Decision,
        decision: DecisionKind::Deny,
        reason: Some("purpose_missing"),
        subject: Some("alice".into()),
        roles: vec!["support".into()],
        method: "GET".into(),
        path: "/users/u1/files/f1".into(),
        status: 403,
        client_addr: "127.0.0.1:4000".into(),
        token_id: Some("jti-1".into()),
        ..AuditEvent::default()
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn open_faulty(cfg: &AuditConfig, counters: AuditCounters) -> (AuditSink, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let sink = AuditSink::open_with(cfg, counters, move |p| {
        let inner = FileTarget::open(p)?;
        Ok(Box::new(FaultyTarget { inner, faults: f }) as Box<dyn LogTarget>)
    })
    .unwrap();
    (sink, faults)
}

fn verify(path: &Path) -> u64 {
    verify_files(&[PathBuf::from(path)]).unwrap().records
}

#[tokio::test]
async fn records_get_consecutive_seqs_and_all_fields() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let sink = AuditSink::open(&config(dir.path(), FsyncPolicy::Always), counters.clone()).unwrap();
    for want in 1..=3 {
        assert_eq!(sink.record(&event(format!("r{want}"))).await.unwrap(), want);
    }
    assert_eq!(counters.records.get(), 3);
    let recs = lines(sink.path());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["prev_hash"], super::chain::GENESIS_HASH);
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    assert_eq!(recs[2]["request_id"], "r3");
    assert_eq!(recs[2]["reason"], "purpose_missing");
    let ts = recs[0]["ts"].as_str().unwrap();
    assert!(
        crate::time::parse_rfc3339(ts).is_some() && ts.ends_with('Z'),
        "{ts}"
    );
    assert_eq!(verify(sink.path()), 3);
    assert!(sink.healthy());
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..3 {
        sink.record(&event(format!("a{i}"))).await.unwrap();
    }
    drop(sink);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.record(&event("b0")).await.unwrap(), 4);
    assert_eq!(sink.record(&event("b1")).await.unwrap(), 5);
    assert_eq!(verify(&cfg.path), 5);
}

#[tokio::test]
async fn torn_last_line_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..3 {
        sink.record(&event(format!("a{i}"))).await.unwrap();
    }
    drop(sink);
    let fragment = "{\"ts\":\"2026-03-01T00:00:00.000Z\",\"seq\":4,\"request_";
    let mut bytes = std::fs::read(&cfg.path).unwrap();
    bytes.extend_from_slice(fragment.as_bytes());
    std::fs::write(&cfg.path, &bytes).unwrap();
    assert!(matches!(
        verify_files(std::slice::from_ref(&cfg.path)),
        Err(super::verify::VerifyError::TornLine { line: 4, .. })
    ));

    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.record(&event("after")).await.unwrap(), 4);
    assert_eq!(verify(&cfg.path), 4);
    let torn = std::fs::read_to_string(torn_path(&cfg.path)).unwrap();
    assert_eq!(torn, format!("{fragment}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let sink = AuditSink::open(&config(dir.path(), FsyncPolicy::Batch), counters.clone()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.record(&event(format!("c{i}"))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert_eq!(counters.records.get(), 200);
    assert_eq!(verify(sink.path()), 200);
}

/// Fires `n` concurrent records and waits for all of them.
async fn burst(sink: &AuditSink, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.record(&event(format!("g{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, faults) = open_faulty(&config(dir.path(), FsyncPolicy::Batch), Default::default());
    // A slow disk: records queue up behind each fsync and share the next one.
    faults.sync_delay_ms.store(5, Ordering::SeqCst);
    burst(&sink, 200).await;
    let syncs = sink.syncs();
    assert!((1..=40).contains(&syncs), "{syncs} fsyncs for 200 records");
    assert_eq!(verify(sink.path()), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_window_collects_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.batch_window = Duration::from_millis(50);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    burst(&sink, 100).await;
    assert!(
        sink.syncs() <= 10,
        "{} fsyncs for 100 records",
        sink.syncs()
    );
    assert_eq!(verify(sink.path()), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_fsyncs_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let sink =
        AuditSink::open(&config(dir.path(), FsyncPolicy::Always), Default::default()).unwrap();
    burst(&sink, 50).await;
    assert_eq!(sink.syncs(), 50);
    assert_eq!(verify(sink.path()), 50);
}

#[tokio::test]
async fn never_writes_without_fsync_until_flush() {
    let dir = tempfile::tempdir().unwrap();
    let sink =
        AuditSink::open(&config(dir.path(), FsyncPolicy::Never), Default::default()).unwrap();
    for i in 0..5 {
        sink.record(&event(format!("n{i}"))).await.unwrap();
    }
    assert_eq!(sink.syncs(), 0);
    assert_eq!(verify(sink.path()), 5);
    sink.flush().await.unwrap();
    assert_eq!(sink.syncs(), 1);
}

#[tokio::test]
async fn record_nowait_lands_and_flush_waits() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let (sink, faults) = open_faulty(&config(dir.path(), FsyncPolicy::Batch), counters.clone());
    faults.sync_delay_ms.store(20, Ordering::SeqCst);
    for i in 0..10 {
        sink.record_nowait(&AuditEvent {
            event: EventKind::Complete,
            decision: DecisionKind::Allow,
            ..event(format!("w{i}"))
        });
    }
    sink.flush().await.unwrap();
    // flush returned only after all ten were written (despite the slow fsync).
    assert_eq!(counters.records.get(), 10);
    let recs = lines(sink.path());
    assert_eq!(recs.len(), 10);
    assert_eq!(recs[9]["event"], "complete");
    assert_eq!(verify(sink.path()), 10);
}

#[tokio::test]
async fn write_failure_fails_closed_then_recovers_without_gap() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let (sink, faults) = open_faulty(&cfg, counters.clone());
    sink.record(&event("ok1")).await.unwrap();
    sink.record(&event("ok2")).await.unwrap();
    let good_len = std::fs::metadata(&cfg.path).unwrap().len();

    faults.fail_write.store(true, Ordering::SeqCst);
    let err = sink.record(&event("lost")).await.unwrap_err();
    assert!(matches!(err, AuditError::Io(_)), "{err}");
    assert!(!sink.healthy());
    assert_eq!(counters.errors.get(), 1);
    // The half-written record was cut off again: no torn line on disk.
    assert_eq!(std::fs::metadata(&cfg.path).unwrap().len(), good_len);
    assert!(
        sink.flush().await.is_err(),
        "flush must report the lost record"
    );

    faults.fail_write.store(false, Ordering::SeqCst);
    // seq 3 is the writer's `resumed` record documenting the outage.
    assert_eq!(sink.record(&event("ok3")).await.unwrap(), 4);
    assert!(sink.healthy());
    assert_eq!(counters.records.get(), 4);
    assert_eq!(verify(&cfg.path), 4);
    let recs = lines(&cfg.path);
    assert_eq!(recs[2]["event"], "resumed");
    assert_eq!(recs[2]["unwritten_records"], 1);
    sink.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_failure_fails_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let (sink, faults) = open_faulty(&cfg, counters.clone());
    sink.record(&event("ok1")).await.unwrap();

    faults.fail_sync.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.record(&event(format!("f{i}"))).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert!(!sink.healthy());
    assert_eq!(counters.errors.get(), 20);
    assert_eq!(
        lines(&cfg.path).len(),
        1,
        "failed records must not stay on disk"
    );

    faults.fail_sync.store(false, Ordering::SeqCst);
    assert_eq!(sink.record(&event("ok2")).await.unwrap(), 3);
    assert!(sink.healthy());
    assert_eq!(verify(&cfg.path), 3);
    assert_eq!(lines(&cfg.path)[1]["unwritten_records"], 20);
}

#[tokio::test]
async fn clones_share_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let sink =
        AuditSink::open(&config(dir.path(), FsyncPolicy::Batch), Default::default()).unwrap();
    let other = sink.clone();
    assert_eq!(other.record(&event("x")).await.unwrap(), 1);
    drop(other);
    assert_eq!(sink.record(&event("y")).await.unwrap(), 2);
    assert!(sink.healthy());
}

fn checkpoint_config(
    dir: &Path,
    every_records: Option<u64>,
    every: Option<Duration>,
) -> AuditConfig {
    let keys = super::sign::keygen(&dir.join("keys")).unwrap();
    AuditConfig {
        checkpoint: Some(crate::config::CheckpointConfig {
            key_file: keys.private,
            every_records,
            every_seconds: every,
        }),
        ..config(dir, FsyncPolicy::Batch)
    }
}

fn public_key(dir: &Path) -> super::sign::PublicKey {
    super::sign::PublicKey::load(&dir.join("keys/audit-signing.pub.pem")).unwrap()
}

#[tokio::test]
async fn rotation_links_files_and_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.rotate_bytes = Some(4096);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 1..=40 {
        assert_eq!(sink.record(&event(format!("r{i}"))).await.unwrap(), i);
    }
    drop(sink);
    let rotated = super::rotate::rotated_files(&cfg.path).unwrap();
    assert!(rotated.len() >= 2, "{rotated:?}");
    for f in &rotated {
        assert!(std::fs::metadata(f).unwrap().len() <= 4096);
    }
    // The rotated name carries the last seq in it; the next file starts after it.
    let first = lines(&rotated[0]);
    let last_seq = first.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(rotated[0], super::rotate::rotated_path(&cfg.path, last_seq));
    assert_eq!(
        lines(&rotated[1])[0]["prev_hash"],
        first.last().unwrap()["hash"]
    );
    let mut all = rotated.clone();
    all.push(cfg.path.clone());
    assert_eq!(verify_files(&all).unwrap().records, 40);
    // Out of order, the link check names the file that does not follow.
    all.swap(0, 1);
    assert!(verify_files(&all).is_err());

    // A crash right after a rotation's rename: no live file. The chain goes on.
    let live_last = lines(&cfg.path).last().unwrap()["seq"].as_u64().unwrap();
    std::fs::rename(&cfg.path, super::rotate::rotated_path(&cfg.path, live_last)).unwrap();
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.record(&event("after")).await.unwrap(), 41);
    drop(sink);
    let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
    all.push(cfg.path.clone());
    assert_eq!(verify_files(&all).unwrap().records, 41);
}

#[tokio::test]
async fn checkpoints_every_n_records_and_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), Some(5), None);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..12 {
        sink.record(&event(format!("r{i}"))).await.unwrap();
    }
    let recs = lines(&cfg.path);
    assert_eq!(recs.len(), 14, "12 records + 2 checkpoints");
    assert_eq!(recs[5]["event"], "checkpoint");
    assert_eq!(recs[5]["covers_seq"], 5);
    assert_eq!(recs[5]["covers_hash"], recs[4]["hash"]);
    assert_eq!(recs[11]["event"], "checkpoint");
    let key = public_key(dir.path());
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (14, 2, 2));
    // A flush (as at shutdown) seals the tail.
    sink.flush().await.unwrap();
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (15, 3, 0));
    // Another key does not verify them.
    let other = tempfile::tempdir().unwrap();
    let g = super::sign::keygen(other.path()).unwrap();
    let wrong = super::sign::PublicKey::load(&g.public).unwrap();
    let err = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&wrong))
        .unwrap_err();
    assert!(
        matches!(
            err,
            super::verify::VerifyError::BadSignature { line: 6, .. }
        ),
        "{err}"
    );
}

/// Polls `f` every 50 ms for up to 5 s.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn timed_checkpoint_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), None, Some(Duration::from_millis(300)));
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("only")).await.unwrap();
    let path = cfg.path.clone();
    assert!(
        eventually(|| lines(&path).len() == 2).await,
        "a checkpoint follows within the interval"
    );
    assert_eq!(lines(&path)[1]["event"], "checkpoint");
    // With nothing new, no further checkpoints.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lines(&path).len(), 2);
    let r = super::verify::verify_files_with(&[path], Some(&public_key(dir.path()))).unwrap();
    assert_eq!(r.unsigned_tail, 0);
}

#[tokio::test]
async fn writing_resumes_by_itself_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let counters = AuditCounters::default();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let (sink, faults) = open_faulty(&cfg, counters.clone());
    sink.record(&event("ok1")).await.unwrap();
    faults.fail_write.store(true, Ordering::SeqCst);
    assert!(sink.record(&event("lost1")).await.is_err());
    assert!(sink.record(&event("lost2")).await.is_err());
    assert!(!sink.healthy());
    // Still failing: the probe keeps it unhealthy and writes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sink.healthy());
    assert_eq!(lines(&cfg.path).len(), 1);

    // The disk works again; no request arrives, yet the sink recovers.
    faults.fail_write.store(false, Ordering::SeqCst);
    assert!(eventually(|| sink.healthy()).await, "no self-recovery");
    let recs = lines(&cfg.path);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["event"], "resumed");
    assert_eq!(recs[1]["unwritten_records"], 2);
    assert!(recs[1]["failing_since"].is_string());
    assert_eq!(sink.record(&event("ok2")).await.unwrap(), 3);
    assert_eq!(verify(&cfg.path), 3);
    assert_eq!(counters.errors.get(), 2);
}

#[tokio::test]
async fn restart_seals_the_recovered_unsigned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), Some(100), None);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..3 {
        sink.record(&event(format!("r{i}"))).await.unwrap();
    }
    drop(sink); // a crash: no flush, no checkpoint
    let key = public_key(dir.path());
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.checkpoints, r.unsigned_tail), (0, 3));
    // (open waits for the old writer thread to let go of the lock)
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.flush().await.unwrap();
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (4, 1, 0));
}

#[tokio::test]
async fn unwaited_records_become_durable_within_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("waited")).await.unwrap();
    let after_waited = sink.syncs();
    assert!(
        after_waited >= 1,
        "a waited record is fsync'd before its ack"
    );
    for i in 0..5 {
        sink.record_nowait(&event(format!("c{i}")));
    }
    let path = cfg.path.clone();
    assert!(eventually(|| lines(&path).len() == 6).await);
    // No flush, no further request: the ticker's fsync covers them.
    assert!(eventually(|| sink.syncs() > after_waited).await);
    assert_eq!(verify(&cfg.path), 6);
}
