//! The audit sink: one dedicated OS thread owns the log file (blocking I/O
//! stays off the tokio runtime). Requests queue events on a channel; the
//! thread drains whatever is queued, chains and writes it with one
//! `write_all`, fsyncs once per batch (group commit) and then acknowledges
//! every waiter. A failed write is cut back off the file and the chain head is
//! not advanced, so the log never holds a torn record or a gap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, ChainHead};
use super::record::AuditEvent;
use super::recover;
use super::target::{FileTarget, LogTarget};
use crate::config::{AuditConfig, FsyncPolicy};

/// Most records committed as one group (bounds the batch's memory and latency).
const MAX_BATCH: usize = 1024;
/// Queue length; `record` waits (backpressure) when the disk falls this far behind.
const QUEUE: usize = 16 * 1024;

/// Metrics the sink updates (CONTRACT §8).
#[derive(Clone, Default)]
pub struct AuditCounters {
    /// `purposegate_audit_records_total`: records written.
    pub records: Counter,
    /// `purposegate_audit_errors_total`: records that could not be written.
    pub errors: Counter,
}

/// Why a record was not (durably) written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O error: {0}")]
    Io(String),
    #[error("audit writer is closed")]
    Closed,
    #[error("audit log is corrupt: {0}")]
    Corrupt(String),
    #[error("audit record cannot be encoded: {0}")]
    Encode(String),
}

type Ack<T> = oneshot::Sender<Result<T, AuditError>>;

/// A message to the writer thread.
enum Msg {
    /// Boxed so the queue's slots stay small (the event is ~300 bytes).
    Record(Box<AuditEvent>, Option<Ack<u64>>),
    /// Acknowledged after every earlier message is written and fsync'd.
    Flush(Ack<()>),
}

/// State shared by the sink handles and the writer thread.
struct Shared {
    healthy: AtomicBool,
    /// fsyncs issued (lets tests observe group commit).
    syncs: AtomicU64,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    counters: AuditCounters,
    path: PathBuf,
}

/// Handle to the audit log. Cheap to clone; the writer thread drains the
/// queue and exits when the last clone is dropped.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<Inner>,
}

impl AuditSink {
    /// Opens/creates the file (creating parent dirs), recovers the chain head
    /// from it, repairs a torn last line and starts the writer thread.
    pub fn open(cfg: &AuditConfig, counters: AuditCounters) -> Result<AuditSink, AuditError> {
        Self::open_with(cfg, counters, |p| {
            FileTarget::open(p).map(|t| Box::new(t) as Box<dyn LogTarget>)
        })
    }

    /// `open` with the writer's file supplied by `make` (tests inject faults).
    pub(crate) fn open_with(
        cfg: &AuditConfig,
        counters: AuditCounters,
        make: impl FnOnce(&Path) -> std::io::Result<Box<dyn LogTarget>>,
    ) -> Result<AuditSink, AuditError> {
        let recovered = recover::recover(&cfg.path)?;
        let target = make(&cfg.path)
            .map_err(|e| AuditError::Io(format!("cannot open {}: {e}", cfg.path.display())))?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            syncs: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            target,
            _lock: recovered.lock,
            head: recovered.head,
            fsync: cfg.fsync,
            window: cfg.batch_window,
            counters: counters.clone(),
            shared: shared.clone(),
            reopen: false,
            cut_to: None,
            lost: 0,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Io(format!("cannot start audit writer thread: {e}")))?;
        Ok(AuditSink {
            inner: Arc::new(Inner {
                tx,
                shared,
                counters,
                path: cfg.path.clone(),
            }),
        })
    }

    /// Appends one record; resolves once it is written and durable per the
    /// `fsync` policy. Returns its `seq`.
    pub async fn record(&self, ev: AuditEvent) -> Result<u64, AuditError> {
        let (ack, done) = oneshot::channel();
        if self
            .inner
            .tx
            .send(Msg::Record(Box::new(ev), Some(ack)))
            .await
            .is_err()
        {
            self.inner.counters.errors.inc();
            return Err(AuditError::Closed);
        }
        // A dropped ack means the writer thread is gone; it counted nothing.
        done.await.unwrap_or_else(|_| {
            self.inner.counters.errors.inc();
            Err(AuditError::Closed)
        })
    }

    /// Appends without waiting. Failures are counted in `errors`.
    pub fn record_nowait(&self, ev: AuditEvent) {
        match self.inner.tx.try_send(Msg::Record(Box::new(ev), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => self.send_later(msg),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inner.counters.errors.inc();
            }
        }
    }

    /// Queue full: wait for room on a task rather than drop the record.
    fn send_later(&self, msg: Msg) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.inner.counters.errors.inc();
            tracing::warn!("audit queue full outside a runtime; record dropped");
            return;
        };
        let inner = self.inner.clone();
        rt.spawn(async move {
            if inner.tx.send(msg).await.is_err() {
                inner.counters.errors.inc();
            }
        });
    }

    /// Waits until everything queued so far is written and fsync'd.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// False after a failed write until a later write succeeds, or once the
    /// writer thread is gone.
    pub fn healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::SeqCst) && !self.inner.tx.is_closed()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// fsyncs issued so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.inner.shared.syncs.load(Ordering::SeqCst)
    }
}

/// A record waiting to be committed.
struct Pending {
    ev: Box<AuditEvent>,
    ack: Option<Ack<u64>>,
}

/// A record placed in the chain (not yet on disk): its waiter and new head.
type Chained = (Option<Ack<u64>>, ChainHead);

/// The writer thread's state; it alone touches the file.
struct Writer {
    target: Box<dyn LogTarget>,
    /// Holds the single-writer lock for the thread's lifetime.
    _lock: std::fs::File,
    /// The last record known to be on disk.
    head: ChainHead,
    fsync: FsyncPolicy,
    window: Duration,
    counters: AuditCounters,
    shared: Arc<Shared>,
    /// Set after a failure: reopen the file before writing again.
    reopen: bool,
    /// Length of the file before a failed write, restored before writing again.
    cut_to: Option<u64>,
    /// Records refused since the last flush (so `flush` can report them).
    lost: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        yield_to_requests_on_wakeup();
        while let Some(first) = rx.blocking_recv() {
            let batch = self.collect(first, &mut rx);
            self.process(batch);
        }
        // Every handle is gone: make `never` records durable on a clean exit.
        if !self.reopen {
            let _ = self.sync();
        }
        tracing::debug!(seq = self.head.seq, "audit writer stopped");
    }

    /// Gathers what is already queued (and, for `batch` with a window, what
    /// arrives within it) into one group.
    fn collect(&self, first: Msg, rx: &mut mpsc::Receiver<Msg>) -> Vec<Msg> {
        let mut batch = vec![first];
        drain(rx, &mut batch);
        if self.fsync == FsyncPolicy::Batch && !self.window.is_zero() && batch.len() < MAX_BATCH {
            std::thread::sleep(self.window);
            drain(rx, &mut batch);
        }
        batch
    }

    /// Commits records in queue order; a flush marker splits the group so it
    /// is acknowledged only after everything before it.
    fn process(&mut self, batch: Vec<Msg>) {
        let mut pending = Vec::with_capacity(batch.len());
        for msg in batch {
            match msg {
                Msg::Record(ev, ack) => {
                    pending.push(Pending { ev, ack });
                    if self.fsync == FsyncPolicy::Always {
                        self.commit(std::mem::take(&mut pending));
                    }
                }
                Msg::Flush(ack) => {
                    self.commit(std::mem::take(&mut pending));
                    let _ = ack.send(self.flush());
                }
            }
        }
        self.commit(pending);
    }

    /// Writes `pending` as one group and acknowledges each record.
    fn commit(&mut self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let (buf, encoded) = self.encode(pending);
        if encoded.is_empty() {
            return;
        }
        match self.write_group(&buf) {
            Ok(()) => {
                if let Some((_, head)) = encoded.last() {
                    self.head = head.clone();
                }
                self.shared.healthy.store(true, Ordering::SeqCst);
                self.counters.records.inc_by(encoded.len() as u64);
                for (ack, head) in encoded {
                    reply(ack, Ok(head.seq));
                }
            }
            Err(e) => {
                self.counters.errors.inc_by(encoded.len() as u64);
                self.lost += encoded.len() as u64;
                let first = encoded.first().map_or(0, |(_, h)| h.seq);
                tracing::error!(seq = first, records = encoded.len(), error = %e, "audit write failed");
                for (ack, _) in encoded {
                    reply(ack, Err(e.clone()));
                }
            }
        }
    }

    /// Chains the records onto the current head (not yet committed). A record
    /// that cannot be encoded is refused on its own and takes no `seq`.
    fn encode(&mut self, pending: Vec<Pending>) -> (Vec<u8>, Vec<Chained>) {
        let ts = crate::time::format_rfc3339(crate::time::now_millis());
        let mut head = self.head.clone();
        let mut buf = Vec::new();
        let mut encoded = Vec::with_capacity(pending.len());
        for p in pending {
            match chain::encode(&head, &ts, &p.ev) {
                Ok(enc) => {
                    buf.extend_from_slice(&enc.line);
                    head = enc.head;
                    encoded.push((p.ack, head.clone()));
                }
                Err(e) => {
                    self.counters.errors.inc();
                    self.lost += 1;
                    tracing::error!(request_id = %p.ev.request_id, error = %e, "audit record not encodable");
                    reply(p.ack, Err(AuditError::Encode(e.to_string())));
                }
            }
        }
        (buf, encoded)
    }

    /// One `write_all` and (per policy) one fsync; on failure the file is cut
    /// back to where the group started and the sink is marked unhealthy.
    fn write_group(&mut self, buf: &[u8]) -> Result<(), AuditError> {
        self.repair()?;
        let start = self
            .target
            .len()
            .map_err(|e| self.failed("stat", &e, None))?;
        self.target
            .append(buf)
            .map_err(|e| self.failed("write", &e, Some(start)))?;
        if self.fsync != FsyncPolicy::Never {
            self.sync()
                .map_err(|e| self.failed("fsync", &e, Some(start)))?;
        }
        Ok(())
    }

    /// Records a failure: marks the sink unhealthy and cuts a partial write
    /// off the file (checked again after reopening, in case that fails too).
    fn failed(&mut self, what: &str, e: &std::io::Error, start: Option<u64>) -> AuditError {
        self.shared.healthy.store(false, Ordering::SeqCst);
        self.reopen = true;
        if let Some(start) = start {
            if let Err(te) = self.target.truncate(start) {
                tracing::error!(error = %te, "audit log: cannot cut back a failed write; will retry");
            }
            self.cut_to = Some(start);
        }
        AuditError::Io(format!("{what} failed: {e}"))
    }

    /// After a failure: reopen the file and make sure nothing past the last
    /// good record remains, before anything new is written.
    fn repair(&mut self) -> Result<(), AuditError> {
        if !self.reopen {
            return Ok(());
        }
        let cut_to = self.cut_to;
        let fix = |t: &mut Box<dyn LogTarget>| -> std::io::Result<()> {
            t.reopen()?;
            if let Some(len) = cut_to {
                if t.len()? > len {
                    t.truncate(len)?;
                }
            }
            Ok(())
        };
        fix(&mut self.target).map_err(|e| {
            self.shared.healthy.store(false, Ordering::SeqCst);
            AuditError::Io(format!("reopening audit log failed: {e}"))
        })?;
        self.reopen = false;
        self.cut_to = None;
        Ok(())
    }

    /// Answers a flush: everything before it is done; make it durable, and
    /// report records that could not be written since the last flush.
    fn flush(&mut self) -> Result<(), AuditError> {
        self.repair()?;
        self.sync().map_err(|e| self.failed("fsync", &e, None))?;
        match std::mem::take(&mut self.lost) {
            0 => Ok(()),
            n => Err(AuditError::Io(format!(
                "{n} audit records could not be written since the last flush"
            ))),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        self.target.sync()
    }
}

/// Moves whatever is already queued into `batch`, up to `MAX_BATCH`.
fn drain(rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Msg>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(msg) => batch.push(msg),
            Err(_) => break,
        }
    }
}

/// Acknowledges a waiter; one that gave up waiting is fine to ignore.
fn reply(ack: Option<Ack<u64>>, result: Result<u64, AuditError>) {
    if let Some(ack) = ack {
        let _ = ack.send(result);
    }
}

/// Puts the writer thread in `SCHED_BATCH`: its wake-ups no longer preempt the
/// runtime threads serving requests. On a busy core the writer then runs when
/// a request thread waits (for this very writer, at the latest), so it finds
/// a whole group of queued records instead of one at a time; on an idle core
/// it runs at once. Best effort: without it the writer is merely chattier.
fn yield_to_requests_on_wakeup() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread with a valid parameter.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!("audit writer: SCHED_BATCH unavailable");
        }
    }
}
