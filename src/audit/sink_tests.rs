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
        instance: "test-0".into(),
        rotate_every: None,
        max_local_bytes: None,
        reserve_bytes: 0,
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
    // seq 1 is the chain's first record, written at open.
    for want in 2..=4 {
        assert_eq!(sink.record(&event(format!("r{want}"))).await.unwrap(), want);
    }
    assert_eq!(counters.records.get(), 4);
    let recs = lines(sink.path());
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["event"], "chain_start");
    assert_eq!(recs[0]["cause"], "new_log");
    assert_eq!(recs[0]["instance"], "test-0");
    assert_eq!(recs[0]["chain"], sink.chain_id());
    assert_eq!(recs[0]["prev_hash"], super::chain::GENESIS_HASH);
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    assert_eq!(recs[3]["request_id"], "r4");
    assert_eq!(recs[3]["reason"], "purpose_missing");
    let ts = recs[1]["ts"].as_str().unwrap();
    assert!(
        crate::time::parse_rfc3339(ts).is_some() && ts.ends_with('Z'),
        "{ts}"
    );
    assert_eq!(verify(sink.path()), 4);
    assert_eq!(sink.durable_seq(), 4);
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
    let chain = sink.chain_id().to_string();
    drop(sink);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.chain_id(), chain, "a restart continues the chain");
    assert_eq!(sink.record(&event("b0")).await.unwrap(), 5);
    assert_eq!(sink.record(&event("b1")).await.unwrap(), 6);
    assert_eq!(verify(&cfg.path), 6);
    assert_eq!(
        lines(&cfg.path)
            .iter()
            .filter(|r| r["event"] == "chain_start")
            .count(),
        1
    );
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
    let fragment = "{\"ts\":\"2026-03-01T00:00:00.000Z\",\"seq\":5,\"request_";
    let mut bytes = std::fs::read(&cfg.path).unwrap();
    bytes.extend_from_slice(fragment.as_bytes());
    std::fs::write(&cfg.path, &bytes).unwrap();
    assert!(matches!(
        verify_files(std::slice::from_ref(&cfg.path)),
        Err(super::verify::VerifyError::TornLine { line: 5, .. })
    ));

    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.record(&event("after")).await.unwrap(), 5);
    assert_eq!(verify(&cfg.path), 5);
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
    assert_eq!(seqs, (2..=201).collect::<Vec<u64>>());
    assert_eq!(counters.records.get(), 201);
    assert_eq!(verify(sink.path()), 201);
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
    assert!((2..=41).contains(&syncs), "{syncs} fsyncs for 200 records");
    assert_eq!(verify(sink.path()), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_window_collects_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.batch_window = Duration::from_millis(50);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    burst(&sink, 100).await;
    assert!(
        sink.syncs() <= 11,
        "{} fsyncs for 100 records",
        sink.syncs()
    );
    assert_eq!(verify(sink.path()), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_fsyncs_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let sink =
        AuditSink::open(&config(dir.path(), FsyncPolicy::Always), Default::default()).unwrap();
    burst(&sink, 50).await;
    assert_eq!(
        sink.syncs(),
        51,
        "one for the chain's first record, one per record"
    );
    assert_eq!(verify(sink.path()), 51);
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
    assert_eq!(verify(sink.path()), 6);
    assert_eq!(
        sink.durable_seq(),
        6,
        "with `never`, written counts as durable"
    );
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
    assert_eq!(counters.records.get(), 11);
    let recs = lines(sink.path());
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10]["event"], "complete");
    assert_eq!(verify(sink.path()), 11);
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
    // seq 4 is the writer's `resumed` record documenting the outage.
    assert_eq!(sink.record(&event("ok3")).await.unwrap(), 5);
    assert!(sink.healthy());
    assert_eq!(counters.records.get(), 5);
    assert_eq!(verify(&cfg.path), 5);
    let recs = lines(&cfg.path);
    assert_eq!(recs[3]["event"], "resumed");
    assert_eq!(recs[3]["unwritten_records"], 1);
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
        2,
        "failed records must not stay on disk"
    );

    faults.fail_sync.store(false, Ordering::SeqCst);
    assert_eq!(sink.record(&event("ok2")).await.unwrap(), 4);
    assert!(sink.healthy());
    assert_eq!(verify(&cfg.path), 4);
    assert_eq!(lines(&cfg.path)[2]["unwritten_records"], 20);
}

#[tokio::test]
async fn clones_share_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let sink =
        AuditSink::open(&config(dir.path(), FsyncPolicy::Batch), Default::default()).unwrap();
    let other = sink.clone();
    assert_eq!(other.record(&event("x")).await.unwrap(), 2);
    drop(other);
    assert_eq!(sink.record(&event("y")).await.unwrap(), 3);
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
    let mut seq = 1;
    for i in 1..=40 {
        let got = sink.record(&event(format!("r{i}"))).await.unwrap();
        // Each new file starts with a `file_start` record of its own.
        assert!(got == seq + 1 || got == seq + 2, "{got} after {seq}");
        seq = got;
    }
    let chain = sink.chain_id().to_string();
    drop(sink);
    let rotated = super::rotate::rotated_files(&cfg.path).unwrap();
    assert!(rotated.len() >= 2, "{rotated:?}");
    // A file is rotated once it has reached rotate_bytes: by then it holds
    // at most one group (here: one record) more.
    for f in &rotated {
        let len = std::fs::metadata(f).unwrap().len();
        assert!((4096..4096 + 1024).contains(&len), "{len}");
    }
    // The rotated name carries the last seq in it; the next file starts after it.
    let first = lines(&rotated[0]);
    assert_eq!(first[0]["event"], "chain_start");
    let last_seq = first.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(rotated[0], super::rotate::rotated_path(&cfg.path, last_seq));
    let second = lines(&rotated[1]);
    assert_eq!(second[0]["prev_hash"], first.last().unwrap()["hash"]);
    // Every file names its chain in its first line.
    assert_eq!(second[0]["event"], "file_start");
    assert_eq!(second[0]["chain"], chain.as_str());
    assert_eq!(
        second[0]["previous_file"],
        rotated[0].file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(lines(&cfg.path)[0]["chain"], chain.as_str());
    let mut all = rotated.clone();
    all.push(cfg.path.clone());
    // The last record may have filled a file: then a new one was started.
    let total = verify_files(&all).unwrap().records;
    assert!(total == seq || total == seq + 1, "{total} after {seq}");
    let seq = total;
    // Out of order, the link check names the file that does not follow.
    all.swap(0, 1);
    assert!(verify_files(&all).is_err());

    // A crash right after a rotation's rename: no live file. The chain goes on.
    let live_last = lines(&cfg.path).last().unwrap()["seq"].as_u64().unwrap();
    std::fs::rename(&cfg.path, super::rotate::rotated_path(&cfg.path, live_last)).unwrap();
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_eq!(sink.chain_id(), chain);
    // The new live file starts with its header, then the record.
    assert_eq!(sink.record(&event("after")).await.unwrap(), seq + 2);
    drop(sink);
    assert_eq!(lines(&cfg.path)[0]["event"], "file_start");
    let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
    all.push(cfg.path.clone());
    assert_eq!(verify_files(&all).unwrap().records, seq + 2);
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
    assert_eq!(recs.len(), 15, "chain start + 12 records + 2 checkpoints");
    assert_eq!(recs[5]["event"], "checkpoint");
    assert_eq!(recs[5]["covers_seq"], 5);
    assert_eq!(recs[5]["covers_hash"], recs[4]["hash"]);
    assert_eq!(recs[11]["event"], "checkpoint");
    let key = public_key(dir.path());
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (15, 2, 3));
    // A flush (as at shutdown) seals the tail.
    sink.flush().await.unwrap();
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (16, 3, 0));
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

#[tokio::test]
async fn a_flush_leaves_no_unsigned_tail_even_when_its_write_fills_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = checkpoint_config(dir.path(), None, None);
    cfg.rotate_bytes = Some(4096);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    let key = public_key(dir.path());
    let mut sealed_by_flush = 0;
    // Each round adds a record and the flush's checkpoint, so the file
    // fills up at every position; where the checkpoint's own write fills
    // it, the rotation's `file_start` must be sealed before the flush
    // returns.
    for i in 0..40 {
        sink.record(&event(format!("r{i}"))).await.unwrap();
        sink.flush().await.unwrap();
        let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
        all.push(cfg.path.clone());
        let r = super::verify::verify_files_with(&all, Some(&key)).unwrap();
        assert_eq!(r.unsigned_tail, 0, "round {i}");
        let live = lines(&cfg.path);
        let filled_by_checkpoint =
            all.len() >= 2 && lines(&all[all.len() - 2]).last().unwrap()["event"] == "checkpoint";
        if live.len() == 2 && live[0]["event"] == "file_start" && filled_by_checkpoint {
            sealed_by_flush += 1;
        }
    }
    assert!(sealed_by_flush >= 1, "no flush filled a file");
}

#[tokio::test]
async fn after_a_flush_closing_seals_a_timed_rotation_that_came_between() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = checkpoint_config(dir.path(), None, None);
    cfg.rotate_every = Some(Duration::from_millis(200));
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    let key = public_key(dir.path());
    sink.record(&event("r")).await.unwrap();
    // As at shutdown: a flush, then (while the shipper drains) time passes.
    sink.flush().await.unwrap();
    let rotated = eventually(|| {
        super::rotate::rotated_files(&cfg.path).is_ok_and(|f| !f.is_empty())
            && lines(&cfg.path)
                .first()
                .is_some_and(|l| l["event"] == "file_start")
    })
    .await;
    assert!(rotated, "no timed rotation after the flush");
    drop(sink);
    let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
    all.push(cfg.path.clone());
    let r = super::verify::verify_files_with(&all, Some(&key)).unwrap();
    assert_eq!(
        r.unsigned_tail, 0,
        "the rotation's file_start is sealed at close"
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
        eventually(|| lines(&path).len() == 3).await,
        "a checkpoint follows within the interval"
    );
    assert_eq!(lines(&path)[2]["event"], "checkpoint");
    // With nothing new, no further checkpoints.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lines(&path).len(), 3);
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
    assert_eq!(sink.admit(), Err(super::Blocked::Unwritable));
    assert_eq!(lines(&cfg.path).len(), 2);

    // The disk works again; no request arrives, yet the sink recovers.
    faults.fail_write.store(false, Ordering::SeqCst);
    assert!(eventually(|| sink.healthy()).await, "no self-recovery");
    assert_eq!(sink.admit(), Ok(()));
    let recs = lines(&cfg.path);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[2]["event"], "resumed");
    assert_eq!(recs[2]["unwritten_records"], 2);
    assert!(recs[2]["failing_since"].is_string());
    assert_eq!(sink.record(&event("ok2")).await.unwrap(), 4);
    assert_eq!(verify(&cfg.path), 4);
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
    assert_eq!((r.checkpoints, r.unsigned_tail), (0, 4));
    // (open waits for the old writer thread to let go of the lock)
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.flush().await.unwrap();
    let r = super::verify::verify_files_with(std::slice::from_ref(&cfg.path), Some(&key)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (5, 1, 0));
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
    assert!(eventually(|| lines(&path).len() == 7).await);
    // No flush, no further request: the ticker's fsync covers them.
    assert!(eventually(|| sink.syncs() > after_waited).await);
    assert!(eventually(|| sink.durable_seq() == 7).await);
    assert_eq!(verify(&cfg.path), 7);
}

/// The records of `path` that parse (for polling while the file changes).
fn try_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until the writer has put the log back at its path and returns the
/// new file's records.
async fn recovered_after(path: &Path, sink: &AuditSink) -> Vec<serde_json::Value> {
    let p = path.to_path_buf();
    assert!(
        eventually(|| try_lines(&p).iter().any(|r| r["event"] == "log_reopened")).await,
        "the writer did not put the log back at its path"
    );
    assert!(sink.healthy());
    lines(path)
}

#[tokio::test]
async fn unlinked_live_file_is_rebuilt_at_its_path_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("before")).await.unwrap();
    std::fs::remove_file(&cfg.path).unwrap();
    // Written into the deleted inode before the writer notices: not lost.
    sink.record(&event("into-the-void")).await.unwrap();
    let recs = recovered_after(&cfg.path, &sink).await;
    assert_eq!(
        recs[0]["event"], "chain_start",
        "the file begins with its header again"
    );
    assert!(recs.iter().any(|r| r["request_id"] == "into-the-void"));
    let note = recs.iter().find(|r| r["event"] == "log_reopened").unwrap();
    assert_eq!(note["cause"], "unlinked");
    assert_eq!(note["chain"], sink.chain_id());
    assert!(note["copied_bytes"].as_u64().unwrap() > 0);
    let seq = sink.record(&event("after")).await.unwrap();
    assert_eq!(verify(&cfg.path), seq, "one unbroken chain at the path");
}

#[tokio::test]
async fn renamed_live_file_is_copied_back_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("before")).await.unwrap();
    let moved = dir.path().join("audit/moved.jsonl");
    std::fs::rename(&cfg.path, &moved).unwrap();
    let recs = recovered_after(&cfg.path, &sink).await;
    let note = recs.iter().find(|r| r["event"] == "log_reopened").unwrap();
    assert_eq!(note["cause"], "renamed");
    let seq = sink.record(&event("after")).await.unwrap();
    assert_eq!(verify(&cfg.path), seq);
    // The moved file is left alone: what it held is also at the path now.
    assert_eq!(lines(&moved).len(), 2);
}

#[tokio::test]
async fn a_foreign_file_at_the_path_is_moved_aside_not_written_into() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("before")).await.unwrap();
    std::fs::remove_file(&cfg.path).unwrap();
    std::fs::write(&cfg.path, b"someone else's file\n").unwrap();
    let recs = recovered_after(&cfg.path, &sink).await;
    let note = recs.iter().find(|r| r["event"] == "log_reopened").unwrap();
    assert_eq!(note["cause"], "replaced");
    let aside = dir
        .path()
        .join("audit")
        .join(note["displaced_to"].as_str().unwrap());
    assert_eq!(std::fs::read(aside).unwrap(), b"someone else's file\n");
    let seq = sink.record(&event("after")).await.unwrap();
    assert_eq!(verify(&cfg.path), seq);
}

#[tokio::test]
async fn truncation_under_the_writer_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    for i in 0..3 {
        sink.record(&event(format!("r{i}"))).await.unwrap();
    }
    let len = std::fs::metadata(&cfg.path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cfg.path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let recs = recovered_after(&cfg.path, &sink).await;
    let note = recs.iter().find(|r| r["event"] == "log_reopened").unwrap();
    assert_eq!(note["cause"], "truncated");
    assert!(note["lost_bytes"].as_u64().unwrap() >= len / 2);
    // Every line left is a whole record (the cut line was dropped).
    assert!(std::fs::read(&cfg.path).unwrap().ends_with(b"\n"));
}

#[tokio::test]
async fn a_full_disk_closes_the_gate_before_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.reserve_bytes = 1024 * 1024;
    let (sink, faults) = open_faulty(&cfg, AuditCounters::default());
    assert_eq!(sink.admit(), Ok(()));
    faults.fail_reserve.store(true, Ordering::SeqCst);
    assert!(eventually(|| sink.admit() == Err(super::Blocked::DiskFull)).await);
    assert!(sink.problems().contains(&"audit_disk_full"));
    // Records of requests already let through still land (they use the reserve).
    sink.record(&event("in-flight")).await.unwrap();
    faults.fail_reserve.store(false, Ordering::SeqCst);
    assert!(eventually(|| sink.admit().is_ok()).await, "no recovery");
}

#[tokio::test]
async fn the_local_bound_stops_forwarding_then_writing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.max_local_bytes = Some(1024 * 1024);
    cfg.rotate_bytes = Some(128 * 1024);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    let big = |i: usize| AuditEvent {
        justification: Some("j".repeat(900)),
        ..event(format!("b{i}"))
    };
    // Fill to the soft bound: the gate closes while records still fit.
    let mut n = 0;
    while sink.admit().is_ok() && n < 5000 {
        sink.record(&big(n)).await.unwrap();
        n += 1;
    }
    assert_eq!(sink.admit(), Err(super::Blocked::LocalBound));
    let soft = 1024 * 1024 - super::writer::bound_margin(1024 * 1024);
    assert!(sink.local_bytes() >= soft);
    // Past the margin, the writer refuses records: never beyond the bound.
    let mut refused = false;
    for i in 0..5000 {
        if sink.record(&big(n + i)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the hard bound never refused a record");
    let total: u64 = std::fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 1024 * 1024, "{total} bytes on disk");
    // Shipping frees space (here: the rotated files go away).
    for f in super::rotate::rotated_files(&cfg.path).unwrap() {
        std::fs::remove_file(f).unwrap();
    }
    assert!(eventually(|| sink.admit().is_ok()).await, "no recovery");
    sink.record(&event("after")).await.unwrap();
    assert!(lines(&cfg.path).iter().any(|r| r["event"] == "resumed"));
}

#[tokio::test]
async fn an_old_live_file_is_rotated_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Batch);
    cfg.rotate_every = Some(Duration::from_secs(1));
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("old")).await.unwrap();
    let path = cfg.path.clone();
    assert!(
        eventually(|| super::rotate::rotated_files(&path).unwrap().len() == 1).await,
        "not rotated by age"
    );
    assert!(eventually(|| !try_lines(&path).is_empty()).await);
    assert_eq!(lines(&cfg.path)[0]["event"], "file_start");
    // Idle, the new file (its header only) is not rotated again by age.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(super::rotate::rotated_files(&path).unwrap().len(), 1);
    assert_eq!(lines(&cfg.path).len(), 1);
    let seq = sink.record(&event("new")).await.unwrap();
    let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
    all.push(cfg.path.clone());
    assert_eq!(verify_files(&all).unwrap().records, seq);
}

#[tokio::test]
async fn a_log_without_chain_ids_is_rotated_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    std::fs::create_dir_all(cfg.path.parent().unwrap()).unwrap();
    // Two records as an older version wrote them: no chain header.
    let mut head = super::chain::ChainHead::genesis();
    let mut bytes = Vec::new();
    for i in 0..2 {
        let enc =
            super::chain::encode(&head, "2026-01-01T00:00:00.000Z", &event(format!("old{i}")))
                .unwrap();
        bytes.extend_from_slice(&enc.line);
        head = enc.head;
    }
    std::fs::write(&cfg.path, &bytes).unwrap();
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    let recs = lines(&cfg.path);
    assert_eq!(recs[0]["event"], "chain_start");
    assert_eq!(recs[0]["cause"], "unnamed_chain");
    assert_eq!(recs[0]["seq"], 3);
    assert_eq!(super::rotate::rotated_files(&cfg.path).unwrap().len(), 1);
    let seq = sink.record(&event("new")).await.unwrap();
    assert_eq!(seq, 4);
    let mut all = super::rotate::rotated_files(&cfg.path).unwrap();
    all.push(cfg.path.clone());
    assert_eq!(verify_files(&all).unwrap().records, 4);
}

#[tokio::test]
async fn an_empty_volume_starts_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Batch);
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    sink.record(&event("a")).await.unwrap();
    let first = sink.chain_id().to_string();
    drop(sink);
    std::fs::remove_dir_all(dir.path().join("audit")).unwrap();
    let sink = AuditSink::open(&cfg, AuditCounters::default()).unwrap();
    assert_ne!(sink.chain_id(), first);
    let recs = lines(&cfg.path);
    assert_eq!(
        (recs[0]["event"].as_str(), recs[0]["seq"].as_u64()),
        (Some("chain_start"), Some(1))
    );
    assert_eq!(recs[0]["cause"], "new_log");
}
