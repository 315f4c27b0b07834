//! The audit sink: one dedicated OS thread owns the log file (blocking I/O
//! stays off the tokio runtime). Requests queue events on a channel; the
//! thread drains whatever is queued, chains and writes it with one
//! `write_all`, fsyncs once per batch (group commit) and then acknowledges
//! every waiter. A failed write is cut back off the file and the chain head is
//! not advanced, so the log never holds a torn record or a gap.
//!
//! The thread also adds its own records to the chain: the header that starts
//! each file (`chain_start`, `file_start`, see `header`), signed
//! `checkpoint`s (every N records / T seconds, and at every flush), a
//! `resumed` record that documents an outage once writing works again, and
//! `log_reopened` when the live file had to be put back at its path. A
//! ticker thread wakes it so that an outage ends by itself (the `resumed`
//! record is the probe), time-based checkpoints are written even when no
//! requests arrive, and once a second the writer checks that the open file
//! is still the file at the path, keeps disk space reserved past its end,
//! and re-counts the local files against `max_local_bytes`.
//!
//! Forwarding is gated on the writer (`AuditSink::admit`): while the log
//! cannot be written, the reserve cannot be kept or the local files are near
//! their bound, requests are refused before the store is contacted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, ChainHead};
use super::header::{self, ChainCause, Header};
use super::record::AuditEvent;
use super::recover::FoundChain;
use super::sign::SigningKey;
use super::target::{FileTarget, LogTarget, Placement};
use super::{recover, rotate};
use crate::config::{AuditConfig, FsyncPolicy};

/// Most records committed as one group (bounds the batch's memory and latency).
const MAX_BATCH: usize = 1024;
/// Queue length; `record` waits (backpressure) when the disk falls this far behind.
const QUEUE: usize = 16 * 1024;
/// How often the ticker wakes the writer (outage probe, timed checkpoints).
const TICK: Duration = Duration::from_millis(200);
/// How often the writer checks the file's placement, the reserve and the
/// local files' size.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

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
    #[error("audit checkpoint key: {0}")]
    Key(String),
    #[error("audit log refuses new records: {0}")]
    Blocked(Blocked),
}

/// Why the writer lets no request through to the store right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// The last write or fsync failed (and no probe has succeeded since).
    #[error("the audit log cannot be written")]
    Unwritable,
    /// The disk space reserve past the live file cannot be kept.
    #[error("the audit volume is (nearly) full")]
    DiskFull,
    /// The local audit files are at (or a margin before) `max_local_bytes`.
    #[error("the local audit files reached audit.max_local_bytes")]
    LocalBound,
}

impl Blocked {
    /// The readiness problem name (`/readyz`).
    pub fn problem(self) -> &'static str {
        match self {
            Blocked::Unwritable => "audit_unwritable",
            Blocked::DiskFull => "audit_disk_full",
            Blocked::LocalBound => "audit_local_bound",
        }
    }
}

type AckTx<T> = oneshot::Sender<Result<T, AuditError>>;

/// A queued record's acknowledgement: resolves to its `seq` once durable.
pub struct Ack {
    done: oneshot::Receiver<Result<u64, AuditError>>,
    errors: Counter,
}

impl std::future::Future for Ack {
    type Output = Result<u64, AuditError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.done).poll(cx).map(|r| {
            // A dropped sender means the writer thread is gone; it counted nothing.
            r.unwrap_or_else(|_| {
                self.errors.inc();
                Err(AuditError::Closed)
            })
        })
    }
}

/// A message to the writer thread.
enum Msg {
    /// Serialized by the caller, so the writer's critical section only
    /// chains and hashes (the group commit waits on it).
    Record(chain::Body, Option<AckTx<u64>>),
    /// Acknowledged after every earlier message is written and fsync'd.
    Flush(AckTx<()>),
    /// From the ticker: probe after an outage, write a timed checkpoint.
    Tick,
}

/// State shared by the sink handles and the writer thread.
struct Shared {
    healthy: AtomicBool,
    /// fsyncs issued (lets tests observe group commit).
    syncs: AtomicU64,
    /// The highest seq known durable on local disk.
    durable_seq: AtomicU64,
    /// False while the disk space reserve cannot be kept.
    space_ok: AtomicBool,
    /// Bytes of the live file plus the rotated files.
    local_bytes: AtomicU64,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    counters: AuditCounters,
    path: PathBuf,
    chain: String,
    instance: String,
    /// Forwarding stops at this many local bytes (None: no bound).
    soft_bound: Option<u64>,
}

/// How far before `max_local_bytes` forwarding stops, so that the records
/// of requests already forwarded and of the refusals that follow still fit.
pub fn bound_margin(max_local_bytes: u64) -> u64 {
    (max_local_bytes / 64).clamp(64 * 1024, 16 * 1024 * 1024)
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
        let signer = match &cfg.checkpoint {
            Some(cp) => {
                Some(SigningKey::load(&cp.key_file).map_err(|e| AuditError::Key(e.to_string()))?)
            }
            None => None,
        };
        let mut recovered = recover::recover(&cfg.path)?;
        let (chain, first_header) = choose_chain(cfg, &mut recovered)?;
        let target = make(&cfg.path)
            .map_err(|e| AuditError::Io(format!("cannot open {}: {e}", cfg.path.display())))?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            syncs: AtomicU64::new(0),
            durable_seq: AtomicU64::new(recovered.head.seq),
            space_ok: AtomicBool::new(true),
            local_bytes: AtomicU64::new(0),
        });
        let recovered_seq = recovered.head.seq;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut writer = Writer {
            target,
            lock: recovered.lock,
            head: recovered.head,
            fsync: cfg.fsync,
            window: cfg.batch_window,
            counters: counters.clone(),
            shared: shared.clone(),
            reopen: false,
            cut_to: None,
            lost: 0,
            path: cfg.path.clone(),
            rotate_bytes: cfg.rotate_bytes,
            stdout: cfg.stdout.then(Mirror::default),
            checkpoints: signer.map(|key| Checkpoints {
                key,
                every_records: cfg.checkpoint.as_ref().and_then(|c| c.every_records),
                every: cfg.checkpoint.as_ref().and_then(|c| c.every_seconds),
                // After a restart the recovered tail may be unsigned: let the
                // first flush or timed checkpoint cover it.
                since: u64::from(recovered_seq > 0),
                last: Instant::now(),
            }),
            outage: None,
            dirty: false,
            chain: chain.clone(),
            instance: cfg.instance.clone(),
            header: first_header,
            rotate_every: cfg.rotate_every,
            file_started: Instant::now(),
            max_local_bytes: cfg.max_local_bytes,
            reserve_bytes: cfg.reserve_bytes,
            reserve_unsupported: false,
            rotated_bytes: 0,
            last_maintained: Instant::now(),
            misplaced: false,
        };
        writer.start()?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Io(format!("cannot start audit writer thread: {e}")))?;
        let weak = tx.downgrade();
        std::thread::Builder::new()
            .name("audit-ticker".into())
            .spawn(move || tick(&weak))
            .map_err(|e| AuditError::Io(format!("cannot start audit ticker thread: {e}")))?;
        Ok(AuditSink {
            inner: Arc::new(Inner {
                tx,
                shared,
                counters,
                path: cfg.path.clone(),
                chain,
                instance: cfg.instance.clone(),
                soft_bound: cfg
                    .max_local_bytes
                    .map(|max| max.saturating_sub(bound_margin(max))),
            }),
        })
    }

    /// Appends one record; resolves once it is written and durable per the
    /// `fsync` policy. Returns its `seq`.
    pub async fn record(&self, ev: &AuditEvent) -> Result<u64, AuditError> {
        self.submit(ev).await?.await
    }

    /// Queues one record for writing. Once this resolves the record is in
    /// the writer's queue (whatever happens to the caller); the returned
    /// `Ack` resolves when it is durable.
    pub async fn submit(&self, ev: &AuditEvent) -> Result<Ack, AuditError> {
        let body = self.serialize(ev)?;
        let (ack, done) = oneshot::channel();
        if self
            .inner
            .tx
            .send(Msg::Record(body, Some(ack)))
            .await
            .is_err()
        {
            self.inner.counters.errors.inc();
            return Err(AuditError::Closed);
        }
        Ok(Ack {
            done,
            errors: self.inner.counters.errors.clone(),
        })
    }

    /// Appends without waiting. Failures are counted in `errors`.
    pub fn record_nowait(&self, ev: &AuditEvent) {
        let Ok(body) = self.serialize(ev) else {
            return;
        };
        match self.inner.tx.try_send(Msg::Record(body, None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => self.send_later(msg),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inner.counters.errors.inc();
            }
        }
    }

    /// Serializes the event; a failure is counted and refused on its own.
    fn serialize(&self, ev: &AuditEvent) -> Result<chain::Body, AuditError> {
        chain::Body::new(ev).map_err(|e| {
            self.inner.counters.errors.inc();
            tracing::error!(request_id = %ev.request_id, error = %e, "audit record not encodable");
            AuditError::Encode(e.to_string())
        })
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

    /// The forwarding gate: `Ok` when the records of a request let through
    /// now can be written. Checked before the store is contacted.
    pub fn admit(&self) -> Result<(), Blocked> {
        if !self.healthy() {
            return Err(Blocked::Unwritable);
        }
        if !self.inner.shared.space_ok.load(Ordering::Relaxed) {
            return Err(Blocked::DiskFull);
        }
        if self
            .inner
            .soft_bound
            .is_some_and(|b| self.local_bytes() >= b)
        {
            return Err(Blocked::LocalBound);
        }
        Ok(())
    }

    /// Every reason the gate is closed (for `/readyz`).
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.healthy() {
            out.push(Blocked::Unwritable.problem());
        }
        if !self.inner.shared.space_ok.load(Ordering::Relaxed) {
            out.push(Blocked::DiskFull.problem());
        }
        if self
            .inner
            .soft_bound
            .is_some_and(|b| self.local_bytes() >= b)
        {
            out.push(Blocked::LocalBound.problem());
        }
        out
    }

    /// The highest seq durable on local disk (what may be shipped).
    pub fn durable_seq(&self) -> u64 {
        self.inner.shared.durable_seq.load(Ordering::Acquire)
    }

    /// The id of the chain this writer continues.
    pub fn chain_id(&self) -> &str {
        &self.inner.chain
    }

    /// The instance name written into the chain's headers.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Bytes of the local audit files (live and rotated), as of the last
    /// write or the last recount (at most a second old).
    pub fn local_bytes(&self) -> u64 {
        self.inner.shared.local_bytes.load(Ordering::Relaxed)
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

/// The chain to continue and the header the first group must carry.
/// A live file written before chains had ids is rotated away first, so that
/// every local file begins with a record naming its chain.
fn choose_chain(
    cfg: &AuditConfig,
    recovered: &mut recover::Recovered,
) -> Result<(String, Option<Header>), AuditError> {
    Ok(match &recovered.chain {
        FoundChain::Live(id) => (id.clone(), None),
        FoundChain::AfterRotation {
            chain: Some(id),
            newest,
        } => (
            id.clone(),
            Some(Header::FileStart {
                previous_file: file_name(newest),
            }),
        ),
        FoundChain::AfterRotation { chain: None, .. } => (
            header::new_chain_id(),
            Some(Header::ChainStart(ChainCause::UnnamedChain)),
        ),
        FoundChain::LiveUnnamed => {
            let rotated = rotate::rename_live(&cfg.path, recovered.head.seq).map_err(|e| {
                AuditError::Io(format!(
                    "cannot rotate {} (written before chain ids) away: {e}",
                    cfg.path.display()
                ))
            })?;
            recovered.lock = recover::lock_path(&cfg.path)?;
            tracing::info!(rotated = %rotated.display(), "audit log written before chain ids rotated; naming its chain");
            (
                header::new_chain_id(),
                Some(Header::ChainStart(ChainCause::UnnamedChain)),
            )
        }
        FoundChain::Nothing => (
            header::new_chain_id(),
            Some(Header::ChainStart(ChainCause::NewLog)),
        ),
    })
}

/// The file name of `path`, as a header names the previous file.
fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// A record waiting to be committed.
struct Pending {
    body: chain::Body,
    ack: Option<AckTx<u64>>,
}

/// A record placed in the chain (not yet on disk): its waiter and new head.
type Chained = (Option<AckTx<u64>>, ChainHead);

/// Signed checkpoint state.
struct Checkpoints {
    key: SigningKey,
    every_records: Option<u64>,
    every: Option<Duration>,
    /// Records written since the last checkpoint.
    since: u64,
    /// When the last checkpoint was written (or the writer started).
    last: Instant,
}

impl Checkpoints {
    fn due_by_count(&self, since: u64) -> bool {
        self.every_records.is_some_and(|n| since >= n)
    }

    fn due_by_time(&self) -> bool {
        self.since > 0 && self.every.is_some_and(|t| self.last.elapsed() >= t)
    }
}

/// Since when writing fails, and how many records were refused meanwhile.
struct Outage {
    since: String,
    unwritten: u64,
}

/// The body of the record that ends an outage.
#[derive(serde::Serialize)]
struct Resumed<'a> {
    event: &'static str,
    failing_since: &'a str,
    unwritten_records: u64,
}

/// The stdout mirror; a failing stdout is reported once, never fatal (the
/// file is the record, the mirror a copy).
#[derive(Default)]
struct Mirror {
    warned: bool,
}

impl Mirror {
    fn write(&mut self, buf: &[u8]) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(buf).and_then(|()| out.flush()) {
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(error = %e, "audit stdout mirror failed; the file is still written");
            }
        }
    }
}

/// One group chained onto the head, ready to be written.
struct Group {
    buf: Vec<u8>,
    /// The waiters of the proxy's records, in order.
    chained: Vec<Chained>,
    /// Lines in the group, the writer's own records included.
    lines: u64,
    head: ChainHead,
    /// Records since the last checkpoint once the group is written.
    since: u64,
    checkpointed: bool,
    /// The group starts with the pending header record.
    header: bool,
}

impl Group {
    fn push(&mut self, enc: chain::Encoded) {
        self.buf.extend_from_slice(&enc.line);
        self.head = enc.head;
        self.lines += 1;
    }
}

/// The writer thread's state; it alone touches the file.
struct Writer {
    target: Box<dyn LogTarget>,
    /// Holds the single-writer lock for the thread's lifetime.
    lock: std::fs::File,
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
    path: PathBuf,
    rotate_bytes: Option<u64>,
    stdout: Option<Mirror>,
    checkpoints: Option<Checkpoints>,
    outage: Option<Outage>,
    /// `batch`: records written but not yet fsync'd (nobody waits on them).
    dirty: bool,
    chain: String,
    instance: String,
    /// A header the next group must start with (a new file or chain, a
    /// recovered live file).
    header: Option<Header>,
    rotate_every: Option<Duration>,
    /// When the live file was started (or this process began writing it).
    file_started: Instant,
    max_local_bytes: Option<u64>,
    reserve_bytes: u64,
    /// The filesystem cannot preallocate: free space is checked instead.
    reserve_unsupported: bool,
    /// Bytes of the rotated files, as last counted.
    rotated_bytes: u64,
    last_maintained: Instant,
    /// The live file is not at its path and could not be put back yet:
    /// nothing is written until it is (a record must never go where
    /// nobody will find it).
    misplaced: bool,
}

impl Writer {
    /// Writes the pending header (a new chain or file) before serving, so
    /// that an unwritable log stops the start, and takes the first reserve.
    fn start(&mut self) -> Result<(), AuditError> {
        self.recount_local();
        self.keep_reserve();
        if self.header.is_some() {
            self.commit(Vec::new(), false);
            if self.header.is_some() {
                return Err(AuditError::Io(format!(
                    "cannot write the first record of {}",
                    self.path.display()
                )));
            }
        }
        Ok(())
    }

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
        let mut tick = false;
        for msg in batch {
            match msg {
                Msg::Record(body, ack) => {
                    pending.push(Pending { body, ack });
                    if self.fsync == FsyncPolicy::Always {
                        self.commit(std::mem::take(&mut pending), false);
                    }
                }
                Msg::Flush(ack) => {
                    // A flush seals the tail with a checkpoint (e.g. at shutdown).
                    self.commit(std::mem::take(&mut pending), true);
                    let _ = ack.send(self.flush());
                }
                Msg::Tick => tick = true,
            }
        }
        let timed = self
            .checkpoints
            .as_ref()
            .is_some_and(Checkpoints::due_by_time);
        if !pending.is_empty() || timed || (tick && self.outage.is_some()) {
            self.commit(pending, timed);
        }
        if tick && self.dirty {
            // Unwaited records (e.g. `complete`) are durable within a tick.
            if let Err(e) = self.sync() {
                let e = self.failed("fsync", &e, None);
                tracing::error!(error = %e, "audit fsync of unwaited records failed");
            }
        }
        if tick && self.last_maintained.elapsed() >= MAINTAIN_EVERY {
            self.maintain();
        }
    }

    /// Once a second: the file is still at its path (else put it back), the
    /// local files are recounted, the reserve is kept, and an old live file
    /// is rotated.
    fn maintain(&mut self) {
        self.last_maintained = Instant::now();
        match self.target.placement() {
            Ok(Placement::InPlace) => {}
            Ok(p) => {
                self.relocate(p);
                if !self.misplaced {
                    self.commit(Vec::new(), false);
                }
            }
            Err(e) => {
                let e = self.failed("checking the live file", &e, None);
                tracing::error!(error = %e, "audit log: cannot check the live file");
            }
        }
        self.recount_local();
        self.keep_reserve();
        if self.age_rotation_due() && self.rotate().is_ok() {
            self.commit(Vec::new(), false);
        }
    }

    /// Puts the live file back at its path (see `LogTarget::relocate`) and
    /// records what happened; until that works nothing is written.
    fn relocate(&mut self, placement: Placement) {
        tracing::warn!(path = %self.path.display(), ?placement, "audit log: the live file is no longer at its path; recovering it");
        match self.target.relocate(placement) {
            Ok(r) => {
                self.misplaced = false;
                match recover::lock_path(&self.path) {
                    Ok(lock) => self.lock = lock,
                    Err(e) => {
                        tracing::error!(error = %e, "audit log: cannot lock the recovered file")
                    }
                }
                if let Some(rotated) = &r.rotated_to {
                    // Rotated by hand under its rotated name: the chain just
                    // goes on in a new file, as after our own rotation.
                    tracing::info!(rotated = %rotated.display(), "audit log was rotated externally; starting a new live file");
                    self.rotated_bytes += std::fs::metadata(rotated).map_or(0, |m| m.len());
                    self.header = Some(Header::FileStart {
                        previous_file: file_name(rotated),
                    });
                    return;
                }
                tracing::warn!(
                    cause = r.cause.as_str(),
                    copied_bytes = r.copied_bytes,
                    lost_bytes = r.lost_bytes,
                    "audit log recovered at its path"
                );
                self.header = Some(Header::Reopened {
                    cause: r.cause,
                    copied_bytes: r.copied_bytes,
                    lost_bytes: r.lost_bytes,
                    displaced_to: r.displaced_to.as_deref().and_then(file_name),
                });
            }
            Err(e) => {
                self.misplaced = true;
                let e = self.failed("recovering the live file", &e, None);
                tracing::error!(error = %e, "audit log: cannot put the live file back; refusing until it can");
            }
        }
    }

    /// Recounts the rotated files (the shipper deletes them) and publishes
    /// the local total.
    fn recount_local(&mut self) {
        if let Ok(files) = rotate::rotated_files(&self.path) {
            self.rotated_bytes = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
        }
        self.publish_local();
    }

    fn publish_local(&mut self) {
        let live = self.target.len().unwrap_or(0);
        self.shared
            .local_bytes
            .store(live + self.rotated_bytes, Ordering::Relaxed);
    }

    /// Keeps `reserve_bytes` allocated past the end of the live file; the
    /// gate closes while that fails (a full disk), before writes can fail.
    fn keep_reserve(&mut self) {
        if self.reserve_bytes == 0 {
            return;
        }
        let ok = if self.reserve_unsupported {
            free_space(&self.path).is_none_or(|free| free >= self.reserve_bytes)
        } else {
            match self.target.reserve(self.reserve_bytes) {
                Ok(true) => true,
                Ok(false) => {
                    self.reserve_unsupported = true;
                    tracing::info!(
                        "audit log: the filesystem cannot preallocate; checking free space instead"
                    );
                    free_space(&self.path).is_none_or(|free| free >= self.reserve_bytes)
                }
                Err(e) => {
                    if self.shared.space_ok.load(Ordering::Relaxed) {
                        tracing::error!(error = %e, reserve_bytes = self.reserve_bytes, "audit log: cannot reserve disk space; refusing to forward until it can");
                    }
                    false
                }
            }
        };
        let was = self.shared.space_ok.swap(ok, Ordering::Relaxed);
        if ok && !was {
            tracing::warn!("audit log: disk space reserve restored; forwarding again");
        }
    }

    /// The live file holds records beyond its header and is older than
    /// `rotate_every`.
    fn age_rotation_due(&mut self) -> bool {
        self.rotate_every
            .is_some_and(|t| self.file_started.elapsed() >= t)
            && self.header.is_none()
            && self.target.len().is_ok_and(|len| len > 0)
    }

    /// Size rotation: the group of about `incoming` bytes would take the
    /// live file past `rotate_bytes`.
    fn size_rotation_due(&mut self, incoming: u64) -> bool {
        let Some(max) = self.rotate_bytes else {
            return false;
        };
        self.header.is_none()
            && self
                .target
                .len()
                .is_ok_and(|len| len > 0 && len + incoming > max)
    }

    /// Writes `pending` (plus the writer's own records) as one group and
    /// acknowledges each record.
    fn commit(&mut self, pending: Vec<Pending>, seal: bool) {
        // After a failure the file is reopened at its path; if it was moved
        // away meanwhile, reopening would start an empty file there and leave
        // a gap: put the log back first (its header joins this group).
        if self.reopen || self.misplaced {
            if let Ok(p) = self.target.placement().map_err(|e| e.kind()) {
                if p != Placement::InPlace {
                    self.reopen = false;
                    self.cut_to = None;
                    self.relocate(p);
                }
            }
        }
        // Rotation happens before encoding, so that the new file's header
        // is chained into this very group.
        let incoming: u64 = pending.iter().map(|p| p.body.len() as u64 + 160).sum();
        if !self.misplaced && !self.reopen && self.size_rotation_due(incoming) {
            let _ = self.rotate();
        }
        let group = self.encode(pending, seal);
        if group.lines == 0 {
            return;
        }
        // With `batch`, a group nobody waits for (only `complete` records,
        // checkpoints) is written without its own fsync: the next waited
        // group's fsync, a flush or the next tick covers it. A waited group
        // (or one that starts a file) is never acknowledged before its fsync.
        let waited = self.fsync != FsyncPolicy::Batch
            || group.header
            || group.chained.iter().any(|(a, _)| a.is_some());
        match self.write_group(&group.buf, waited) {
            Ok(()) => self.committed(group, waited),
            Err(e) => {
                let n = group.chained.len() as u64;
                self.counters.errors.inc_by(n);
                self.lost += n;
                if let Some(o) = self.outage.as_mut() {
                    o.unwritten += n;
                }
                // The outage probe (no proxy records) fails quietly every tick.
                if n > 0 {
                    tracing::error!(seq = self.head.seq + 1, records = n, error = %e, "audit write failed");
                }
                for (ack, _) in group.chained {
                    reply(ack, Err(e.clone()));
                }
            }
        }
    }

    /// A group is on disk: advance the head, mirror it, wake its waiters.
    fn committed(&mut self, group: Group, synced: bool) {
        self.head = group.head;
        if synced || self.fsync == FsyncPolicy::Never {
            self.shared
                .durable_seq
                .store(self.head.seq, Ordering::Release);
        }
        if group.header {
            if matches!(
                self.header,
                Some(Header::ChainStart(_) | Header::FileStart { .. })
            ) {
                self.file_started = Instant::now();
            }
            self.header = None;
        }
        self.publish_local();
        self.keep_reserve();
        if let Some(cp) = self.checkpoints.as_mut() {
            cp.since = group.since;
            if group.checkpointed {
                cp.last = Instant::now();
            }
        }
        if let Some(o) = self.outage.take() {
            tracing::warn!(failing_since = %o.since, unwritten = o.unwritten, "audit log writable again");
        }
        self.shared.healthy.store(true, Ordering::SeqCst);
        self.counters.records.inc_by(group.lines);
        if let Some(m) = self.stdout.as_mut() {
            m.write(&group.buf);
        }
        for (ack, head) in group.chained {
            reply(ack, Ok(head.seq));
        }
    }

    /// Chains the records onto the current head (not yet committed): first a
    /// `resumed` record after an outage, then the records with a checkpoint
    /// after every `every_records`-th, then (with `seal`) a final checkpoint.
    /// A record that cannot be encoded is refused on its own and takes no `seq`.
    fn encode(&mut self, pending: Vec<Pending>, seal: bool) -> Group {
        let ts = crate::time::format_rfc3339(crate::time::now_millis());
        let mut g = Group {
            buf: Vec::with_capacity(pending.len() * 512),
            chained: Vec::with_capacity(pending.len()),
            lines: 0,
            head: self.head.clone(),
            since: self.checkpoints.as_ref().map_or(0, |c| c.since),
            checkpointed: false,
            header: false,
        };
        if let Some(h) = &self.header {
            match chain::encode_body(&g.head, &ts, &h.body(&self.chain, &self.instance)) {
                Ok(enc) => {
                    g.push(enc);
                    g.since += 1;
                    g.header = true;
                }
                Err(e) => tracing::error!(error = %e, "audit header not encodable"),
            }
        }
        if let Some(o) = &self.outage {
            let body = Resumed {
                event: "resumed",
                failing_since: &o.since,
                unwritten_records: o.unwritten,
            };
            if let Ok(enc) = chain::encode_body(&g.head, &ts, &body) {
                g.push(enc);
                g.since += 1;
            }
        }
        for p in pending {
            match chain::encode_raw(&g.head, &ts, &p.body) {
                Ok(enc) => {
                    g.push(enc);
                    g.chained.push((p.ack, g.head.clone()));
                    g.since += 1;
                    if self
                        .checkpoints
                        .as_ref()
                        .is_some_and(|c| c.due_by_count(g.since))
                    {
                        self.checkpoint(&mut g, &ts);
                    }
                }
                Err(e) => {
                    self.counters.errors.inc();
                    self.lost += 1;
                    tracing::error!(seq = g.head.seq, error = %e, "audit record not encodable");
                    reply(p.ack, Err(AuditError::Encode(e.to_string())));
                }
            }
        }
        if seal && g.since > 0 {
            self.checkpoint(&mut g, &ts);
        }
        g
    }

    /// Appends a signed checkpoint covering the group's current head.
    fn checkpoint(&self, g: &mut Group, ts: &str) {
        let Some(cp) = &self.checkpoints else {
            return;
        };
        match chain::encode_body(&g.head, ts, &cp.key.checkpoint(&g.head)) {
            Ok(enc) => {
                g.push(enc);
                g.since = 0;
                g.checkpointed = true;
            }
            Err(e) => tracing::error!(error = %e, "audit checkpoint not encodable"),
        }
    }

    /// One `write_all` and (per policy) one fsync; on failure the file is cut
    /// back to where the group started and the sink is marked unhealthy.
    fn write_group(&mut self, buf: &[u8], sync: bool) -> Result<(), AuditError> {
        if self.misplaced {
            return Err(AuditError::Blocked(Blocked::Unwritable));
        }
        self.repair()?;
        let start = self
            .target
            .len()
            .map_err(|e| self.failed("stat", &e, None))?;
        if let Some(max) = self.max_local_bytes {
            if start + self.rotated_bytes + buf.len() as u64 > max {
                return Err(self.over_bound(max));
            }
        }
        self.target
            .append(buf)
            .map_err(|e| self.failed("write", &e, Some(start)))?;
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        if sync {
            self.sync()
                .map_err(|e| self.failed("fsync", &e, Some(start)))?;
        } else {
            self.dirty = true;
        }
        Ok(())
    }

    /// The hard bound: nothing more is written until the local files
    /// shrink (the shipper deletes shipped files); the outage probe resumes.
    fn over_bound(&mut self, max: u64) -> AuditError {
        self.shared.healthy.store(false, Ordering::SeqCst);
        if self.outage.is_none() {
            tracing::error!(
                max_local_bytes = max,
                "audit log: local files at audit.max_local_bytes; refusing records until shipping frees space"
            );
        }
        self.outage.get_or_insert_with(|| Outage {
            since: crate::time::format_rfc3339(crate::time::now_millis()),
            unwritten: 0,
        });
        AuditError::Blocked(Blocked::LocalBound)
    }

    /// Renames the full file to `<path>.<last seq>` and starts a new one,
    /// whose first record (`file_start`) links to the last hash of the
    /// rotated file.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.sync().map_err(|e| self.failed("fsync", &e, None))?;
        if let Err(e) = self.target.release_reserve() {
            tracing::warn!(error = %e, "audit log: cannot free the reserve before rotation");
        }
        let rotated = match rotate::rename_live(&self.path, self.head.seq) {
            Ok(p) => p,
            Err(e) => {
                // The current file stays usable: keep writing to it.
                tracing::error!(error = %e, "audit log rotation failed; continuing in the current file");
                return Ok(());
            }
        };
        self.target
            .reopen()
            .map_err(|e| self.failed("open after rotation", &e, None))?;
        match recover::lock_path(&self.path) {
            Ok(lock) => self.lock = lock,
            Err(e) => tracing::error!(error = %e, "audit log: cannot lock the new file"),
        }
        if let Err(e) = rotate::sync_dir(&self.path) {
            tracing::warn!(error = %e, "audit log: cannot fsync the directory after rotation");
        }
        tracing::info!(rotated = %rotated.display(), seq = self.head.seq, "audit log rotated");
        self.rotated_bytes += std::fs::metadata(&rotated).map_or(0, |m| m.len());
        self.header = Some(Header::FileStart {
            previous_file: file_name(&rotated),
        });
        self.keep_reserve();
        Ok(())
    }

    /// Records a failure: marks the sink unhealthy and cuts a partial write
    /// off the file (checked again after reopening, in case that fails too).
    fn failed(&mut self, what: &str, e: &std::io::Error, start: Option<u64>) -> AuditError {
        self.shared.healthy.store(false, Ordering::SeqCst);
        self.reopen = true;
        self.outage.get_or_insert_with(|| Outage {
            since: crate::time::format_rfc3339(crate::time::now_millis()),
            unwritten: 0,
        });
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
        self.target.sync()?;
        self.dirty = false;
        self.shared
            .durable_seq
            .store(self.head.seq, Ordering::Release);
        Ok(())
    }
}

/// Bytes available to unprivileged writers on the filesystem of `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs fills the struct for a NUL-terminated path.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the struct was written.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ by platform
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
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

/// Sends a tick every `TICK` until the sink is gone (the weak handle does not
/// keep the writer alive).
fn tick(weak: &mpsc::WeakSender<Msg>) {
    loop {
        std::thread::sleep(TICK);
        let Some(tx) = weak.upgrade() else {
            return;
        };
        // A full queue wakes the writer anyway.
        let _ = tx.try_send(Msg::Tick);
    }
}

/// Acknowledges a waiter; one that gave up waiting is fine to ignore.
fn reply(ack: Option<AckTx<u64>>, result: Result<u64, AuditError>) {
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
