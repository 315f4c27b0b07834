//! The audit sink, the handle requests hold. A request serializes its
//! record, chains it into the open group itself (`group`: one short lock,
//! the buffer order is the chain order) and, for a decision record, waits
//! until the writer thread (`thread`) has written and synced that group —
//! one wake per group, not a thread hand-off per record. A `complete`
//! record waits for nothing and rides the next group.
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
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{oneshot, watch};

use super::chain;
use super::group::{CountCheckpoints, Durable, Progress, Publisher, State};
use super::header::{self, ChainCause, Header};
use super::record::AuditEvent;
use super::recover::FoundChain;
use super::sign::SigningKey;
use super::target::{FileTarget, LogTarget};
use super::thread::{file_name, Mirror, Writer};
use super::{recover, rotate};
use crate::config::AuditConfig;

/// A group larger than this makes `submit` wait for the writer
/// (backpressure when the disk falls behind).
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// Metrics the sink updates (docs/reference.md §8).
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

/// A queued record's acknowledgement: `wait` resolves to its `seq` once the
/// record is durable (per the `fsync` policy), or to the error that kept its
/// group from being written.
pub struct Ack {
    generation: u64,
    seq: u64,
    progress: watch::Receiver<Progress>,
    errors: Counter,
}

impl Ack {
    pub async fn wait(mut self) -> Result<u64, AuditError> {
        let (generation, seq) = (self.generation, self.seq);
        let mut result = None;
        let waited = self
            .progress
            .wait_for(|p| {
                result = p.resolve(generation, seq);
                result.is_some()
            })
            .await;
        match (waited, result) {
            (Ok(_), Some(r)) => r,
            // The writer is gone; it counted nothing.
            _ => {
                self.errors.inc();
                Err(AuditError::Closed)
            }
        }
    }
}

/// State shared by the sink handles and the writer thread.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The writer parks here between groups.
    pub wake: Condvar,
    pub publisher: Publisher,
    pub healthy: AtomicBool,
    /// fsyncs issued (lets tests observe group commit).
    pub syncs: AtomicU64,
    /// The highest seq known durable on local disk.
    pub durable_seq: AtomicU64,
    /// False while the disk space reserve cannot be kept.
    pub space_ok: AtomicBool,
    /// Bytes of the live file plus the rotated files.
    pub local_bytes: AtomicU64,
}

struct Inner {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    counters: AuditCounters,
    path: PathBuf,
    chain: String,
    instance: String,
    /// Forwarding stops at this many local bytes (None: no bound).
    soft_bound: Option<u64>,
    /// Disconnected once the writer thread has stopped.
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// How long the last handle's drop waits for the writer to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for Inner {
    /// The last handle is gone: the writer writes what is left and stops,
    /// and the drop waits for that (bounded by `STOP_WAIT`), so that the
    /// files are final and unlocked once it returns: a rotation the last
    /// write made due is done, and a sink opened next on the same path
    /// (a restart) finds no writer still at work. At shutdown everything is
    /// flushed already, so the wait is the thread's exit.
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closed = true;
        }
        self.shared.wake.notify_one();
        if let Ok(stopped) = self.stopped.lock() {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(STOP_WAIT)
            {
                tracing::error!(
                    "audit writer did not stop within {STOP_WAIT:?} of its last handle"
                );
            }
        }
    }
}

/// How far before `max_local_bytes` forwarding stops, so that the records
/// of requests already forwarded and of the refusals that follow still fit.
pub fn bound_margin(max_local_bytes: u64) -> u64 {
    (max_local_bytes / 64).clamp(64 * 1024, 16 * 1024 * 1024)
}

/// Handle to the audit log. Cheap to clone; the writer thread writes what is
/// left and exits when the last clone is dropped.
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
            Some(cp) => Some(Arc::new(
                SigningKey::load(&cp.key_file).map_err(|e| AuditError::Key(e.to_string()))?,
            )),
            None => None,
        };
        let mut recovered = recover::recover(&cfg.path)?;
        let (chain, first_header) = choose_chain(cfg, &mut recovered)?;
        let target = make(&cfg.path)
            .map_err(|e| AuditError::Io(format!("cannot open {}: {e}", cfg.path.display())))?;
        let head = recovered.head.clone();
        let checkpoints = signer.map(|key| CountCheckpoints {
            key,
            every_records: cfg.checkpoint.as_ref().and_then(|c| c.every_records),
        });
        let state = State::new(
            head.clone(),
            chain.clone(),
            cfg.instance.clone(),
            first_header,
            checkpoints,
        );
        let since = state.since_checkpoint;
        let (publisher, progress) = Publisher::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            publisher,
            healthy: AtomicBool::new(true),
            syncs: AtomicU64::new(0),
            durable_seq: AtomicU64::new(head.seq),
            space_ok: AtomicBool::new(true),
            local_bytes: AtomicU64::new(0),
        });
        let mut writer = Writer {
            target,
            lock: recovered.lock,
            last_written: Durable {
                head,
                since_checkpoint: since,
            },
            unsynced: None,
            fsync: cfg.fsync,
            window: cfg.batch_window,
            counters: counters.clone(),
            shared: shared.clone(),
            reopen: false,
            cut_to: None,
            path: cfg.path.clone(),
            rotate_bytes: cfg.rotate_bytes,
            rotate_every: cfg.rotate_every,
            stdout: cfg.stdout.then(Mirror::default),
            checkpoint_every: cfg.checkpoint.as_ref().and_then(|c| c.every_seconds),
            dirty: false,
            file_started: Instant::now(),
            max_local_bytes: cfg.max_local_bytes,
            reserve_bytes: cfg.reserve_bytes,
            reserve_unsupported: false,
            rotated_bytes: 0,
            last_tick: Instant::now(),
            last_maintained: Instant::now(),
            misplaced: false,
            flushed: false,
            spare: Vec::with_capacity(64 * 1024),
        };
        writer.start()?;
        // Disconnects when the thread ends (its files closed, its lock
        // released): what the last handle's drop waits for.
        let (stopped_tx, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                writer.run();
                drop(stopped_tx);
            })
            .map_err(|e| AuditError::Io(format!("cannot start audit writer thread: {e}")))?;
        Ok(AuditSink {
            inner: Arc::new(Inner {
                shared,
                progress,
                counters,
                path: cfg.path.clone(),
                chain,
                instance: cfg.instance.clone(),
                soft_bound: cfg
                    .max_local_bytes
                    .map(|max| max.saturating_sub(bound_margin(max))),
                stopped: Mutex::new(stopped),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one record; resolves once it is written and durable per the
    /// `fsync` policy. Returns its `seq`.
    pub async fn record(&self, ev: &AuditEvent) -> Result<u64, AuditError> {
        self.submit(ev).await?.wait().await
    }

    /// Chains one record into the open group. Once this resolves the record
    /// is in the log's group (whatever happens to the caller); the returned
    /// `Ack` resolves when it is durable.
    pub async fn submit(&self, ev: &AuditEvent) -> Result<Ack, AuditError> {
        let body = self.serialize(ev)?;
        loop {
            let mut progress = self.inner.progress.clone();
            let appended = {
                let mut st = self.state();
                if st.buf.len() < MAX_BUFFERED || st.closed {
                    Some(st.append(&body, true))
                } else {
                    // The disk is behind: wait for the writer to take a group.
                    progress.borrow_and_update();
                    None
                }
            };
            match appended {
                Some(Ok(a)) => {
                    if a.wake {
                        self.inner.shared.wake.notify_one();
                    }
                    return Ok(Ack {
                        generation: a.generation,
                        seq: a.seq,
                        progress,
                        errors: self.inner.counters.errors.clone(),
                    });
                }
                Some(Err(e)) => {
                    self.inner.counters.errors.inc();
                    return Err(e);
                }
                None => {
                    self.inner.shared.wake.notify_one();
                    if progress.changed().await.is_err() {
                        return Err(AuditError::Closed);
                    }
                }
            }
        }
    }

    /// Appends without waiting and without waking the writer: the record
    /// rides the next group (or the tick). Failures are counted in `errors`.
    pub fn record_nowait(&self, ev: &AuditEvent) {
        let Ok(body) = self.serialize(ev) else {
            return;
        };
        let appended = self.state().append(&body, false);
        if appended.is_err() {
            self.inner.counters.errors.inc();
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

    /// Waits until everything appended so far is written and fsync'd, and
    /// seals the tail with a checkpoint (e.g. at shutdown). Reports records
    /// that could not be written since the last flush.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        {
            let mut st = self.state();
            if st.closed {
                return Err(AuditError::Closed);
            }
            st.flushes.push(ack);
        }
        self.inner.shared.wake.notify_one();
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// False after a failed write until a later write succeeds, or once the
    /// writer thread is gone.
    pub fn healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::SeqCst)
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

    /// `durable_seq` as a function that does not keep the sink open (the
    /// writer stops when the last sink is dropped; the shipper outlives it
    /// at shutdown).
    pub fn watermark(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = self.inner.shared.clone();
        move || shared.durable_seq.load(Ordering::Acquire)
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
