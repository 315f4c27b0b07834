//! The audit trail beyond the pod (docs/reference.md §9): the shipper copies every
//! durable record of the local chain into the central PostgreSQL table
//! `audit_records` — at least once, stored exactly once — and deletes a
//! rotated file once all its records are stored. Auditors then verify and
//! query every replica's records there (`verify`, `report`).
//!
//! Parts: `config` (the `audit.ship` section), `schema` (`audit migrate`),
//! `row` (a record as a row), `local` (reading the local files, on a thread
//! of its own), `store` (the database side), `verify` and `report` (the
//! auditor's commands). This file runs the shipper: `Shipper::start` spawns
//! the reader thread and the task that stores its batches, and
//! `ShipperHandle::drain` ships what is left at shutdown.

pub mod config;
pub mod local;
pub mod report;
pub mod row;
pub mod schema;
pub mod store;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{mpsc, watch};

pub use config::{resolve_instance, ShipConfig};
use local::{Batch, FileDone, Fill, Idle, Position, Reader};
use store::Store;

/// Labels of `purposegate_audit_ship_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShipErrorLabels {
    /// `database` (connect or store failed), `refused` (a local line not
    /// shipped), `chain` (a break in the local chain, shipped as it is),
    /// `conflict` (a local record differs from the stored one), `io`
    /// (reading the local files), `readback` / `delete` (a rotated file
    /// could not be confirmed or deleted).
    pub kind: &'static str,
}

const ERROR_KINDS: [&str; 7] = [
    "database", "refused", "chain", "conflict", "io", "readback", "delete",
];

/// The shipper's metrics (docs/reference.md §9). Cheap to clone.
#[derive(Clone, Default)]
pub struct ShipMetrics {
    /// `purposegate_audit_ship_lag_records`: durable local records not yet
    /// confirmed stored centrally.
    pub lag_records: Gauge,
    /// `purposegate_audit_ship_lag_seconds`: age of the oldest such record.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// `purposegate_audit_shipped_records_total`: rows stored.
    pub shipped: Counter,
    pub errors: Family<ShipErrorLabels, Counter>,
    /// `purposegate_audit_ship_up`: 1 while the database answers.
    pub up: Gauge,
    /// `purposegate_audit_ship_deleted_files_total`.
    pub deleted_files: Counter,
}

impl ShipMetrics {
    /// Registers every series (`registry` has the `purposegate` prefix).
    pub fn register(&self, r: &mut Registry) {
        for kind in ERROR_KINDS {
            let _ = self.errors.get_or_create(&ShipErrorLabels { kind });
        }
        r.register(
            "audit_ship_lag_records",
            "Durable local audit records not yet confirmed stored in the central database",
            self.lag_records.clone(),
        );
        r.register_with_unit(
            "audit_ship_lag",
            "Age of the oldest durable local audit record not yet stored centrally (0 when caught up)",
            Unit::Seconds,
            self.lag_seconds.clone(),
        );
        r.register(
            "audit_shipped_records",
            "Audit records stored in the central database by this process",
            self.shipped.clone(),
        );
        r.register(
            "audit_ship_errors",
            "Audit shipping problems by kind (database, refused, chain, conflict, io, readback, delete)",
            self.errors.clone(),
        );
        r.register(
            "audit_ship_up",
            "1 while the central audit database answers the shipper, else 0",
            self.up.clone(),
        );
        r.register(
            "audit_ship_deleted_files",
            "Rotated local audit files deleted after all their records were stored centrally",
            self.deleted_files.clone(),
        );
    }

    fn error(&self, kind: &'static str, n: u64) {
        self.errors
            .get_or_create(&ShipErrorLabels { kind })
            .inc_by(n);
    }
}

/// What shipping achieved, at shutdown (`drain`) or at any time (`status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipSummary {
    /// Every durable local record is stored centrally (and nothing refused
    /// blocks that statement: refused lines are counted in `refused`).
    pub all_shipped: bool,
    /// Rows stored by this process.
    pub shipped: u64,
    /// Durable records not confirmed stored.
    pub lag_records: u64,
    /// The live file's chain, when known.
    pub chain: Option<String>,
    /// The last seq of `chain` confirmed stored.
    pub stored_seq: u64,
    /// The writer's watermark at the end.
    pub durable_seq: u64,
    /// Local lines refused by this process.
    pub refused: u64,
    pub files_deleted: u64,
    /// Why not everything was shipped, if so.
    pub reason: Option<String>,
}

/// Why the shipper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipStartError {
    #[error("the audit shipper needs a tokio runtime")]
    NoRuntime,
    #[error("cannot start the audit shipper's reader thread: {0}")]
    Thread(std::io::Error),
}

/// The writer's durable watermark (AUDIT_CHAIN.md point 4).
pub type Watermark = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Starts shipping.
pub struct Shipper;

impl Shipper {
    /// Starts the reader thread and the shipping task for the local log at
    /// `audit_path`, shipping only records with `seq <= watermark()`, and
    /// registers the metrics in `registry`. Must be called inside a tokio
    /// runtime. Does not wait for the database: while it is down records
    /// stay local and the task reconnects with backoff.
    pub fn start(
        cfg: &ShipConfig,
        audit_path: &Path,
        watermark: impl Fn() -> u64 + Send + Sync + 'static,
        registry: &mut Registry,
    ) -> Result<ShipperHandle, ShipStartError> {
        let metrics = ShipMetrics::default();
        metrics.register(registry);
        Self::start_with(cfg, audit_path, Arc::new(watermark), metrics)
    }

    /// `start` with metrics the caller registered (or did not).
    pub fn start_with(
        cfg: &ShipConfig,
        audit_path: &Path,
        watermark: Watermark,
        metrics: ShipMetrics,
    ) -> Result<ShipperHandle, ShipStartError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ShipStartError::NoRuntime)?;
        let (batch_tx, batch_rx) = mpsc::channel(1);
        let (ctl_tx, ctl_rx) = std_mpsc::channel();
        let wm = watermark.clone();
        let reader = Reader::new(
            audit_path,
            Box::new(move || wm()),
            cfg.batch_records,
            cfg.batch_bytes,
        );
        let interval = cfg.interval;
        std::thread::Builder::new()
            .name("audit-ship-reader".into())
            .spawn(move || read_loop(reader, &batch_tx, &ctl_rx, interval))
            .map_err(ShipStartError::Thread)?;
        let (drain_tx, drain_rx) = watch::channel(None);
        let status = Arc::new(Mutex::new(ShipSummary::default()));
        let task = Task {
            cfg: cfg.clone(),
            path: audit_path.to_path_buf(),
            metrics,
            watermark,
            rx: batch_rx,
            ctl: ctl_tx,
            store: None,
            down_since: None,
            failures: 0,
            stored: HashMap::new(),
            live_chain: None,
            deletes: Vec::new(),
            drain: drain_rx,
            status: status.clone(),
            last_progress: Instant::now(),
            oldest_pending_ts: None,
            caught_up: false,
            local_head: 0,
        };
        let join = rt.spawn(task.run());
        Ok(ShipperHandle {
            join: Some(join),
            drain: drain_tx,
            status,
        })
    }
}

/// The running shipper. Dropping it stops shipping at once (what is not
/// stored stays local and is shipped by the next start); `drain` ships what
/// is left first.
pub struct ShipperHandle {
    join: Option<tokio::task::JoinHandle<ShipSummary>>,
    drain: watch::Sender<Option<Instant>>,
    status: Arc<Mutex<ShipSummary>>,
}

impl ShipperHandle {
    /// Where shipping stands now.
    pub fn status(&self) -> ShipSummary {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Ships every durable record not yet stored (call after the audit
    /// writer has flushed its last record), deleting the rotated files that
    /// are then stored, and stops; gives up at `deadline`.
    pub async fn drain(mut self, deadline: Instant) -> ShipSummary {
        self.drain.send_replace(Some(deadline));
        let Some(join) = self.join.take() else {
            return self.status();
        };
        // The task itself stops at the deadline; the grace covers a
        // database call that does not return when it is cancelled.
        let grace = tokio::time::Instant::from_std(deadline) + Duration::from_millis(500);
        let abort = join.abort_handle();
        match tokio::time::timeout_at(grace, join).await {
            Ok(Ok(summary)) => summary,
            _ => {
                abort.abort();
                let mut s = self.status();
                s.all_shipped = false;
                s.reason.get_or_insert_with(|| "deadline reached".into());
                s
            }
        }
    }
}

impl Drop for ShipperHandle {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

/// From the reader thread to the task.
enum FromReader {
    Batch(Batch),
    NeedPosition(String),
    Idle(Idle, u64),
    Io(String),
}

/// From the task to the reader thread.
enum ToReader {
    Position(String, Position),
    /// Look at the files now; the number is the drain generation.
    Wake(u64),
}

/// The reader thread: fills batches and hands them over (the bounded
/// channel lets it read one batch ahead while the previous is stored).
fn read_loop(
    mut reader: Reader,
    tx: &mpsc::Sender<FromReader>,
    ctl: &std_mpsc::Receiver<ToReader>,
    interval: Duration,
) {
    let mut generation = 0;
    let mut last_io: Option<(String, Instant)> = None;
    let handle = |msg: ToReader, reader: &mut Reader, generation: &mut u64| match msg {
        ToReader::Position(chain, pos) => reader.set_position(&chain, pos),
        ToReader::Wake(g) => *generation = (*generation).max(g),
    };
    loop {
        // Answers that arrived meanwhile (positions, wake-ups) first.
        while let Ok(msg) = ctl.try_recv() {
            handle(msg, &mut reader, &mut generation);
        }
        let (msg, wait) = match reader.fill() {
            Ok(Fill::Batch(b)) => (FromReader::Batch(b), false),
            Ok(Fill::NeedPosition(c)) => (FromReader::NeedPosition(c), true),
            Ok(Fill::Idle(i)) => (FromReader::Idle(i, generation), true),
            Err(e) => {
                let text = e.to_string();
                // The same error over and over is logged once a minute.
                let quiet = last_io
                    .as_ref()
                    .is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(60));
                if !quiet {
                    tracing::error!(error = %text, "audit shipping: cannot read the local audit files");
                    last_io = Some((text.clone(), Instant::now()));
                }
                (FromReader::Io(text), true)
            }
        };
        if tx.blocking_send(msg).is_err() {
            return; // the task is gone
        }
        if wait {
            match ctl.recv_timeout(interval) {
                Ok(msg) => handle(msg, &mut reader, &mut generation),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// First wait after a failed database call; doubled up to `retry_max`.
const BACKOFF_START: Duration = Duration::from_millis(100);

/// How the task stopped early.
enum Stop {
    /// The drain deadline passed.
    Deadline,
    /// The reader thread is gone.
    ReaderGone,
    /// Draining, but the local log cannot be shipped (why).
    Blocked(String),
}

/// The shipping task's state.
struct Task {
    cfg: ShipConfig,
    path: PathBuf,
    metrics: ShipMetrics,
    watermark: Watermark,
    rx: mpsc::Receiver<FromReader>,
    ctl: std_mpsc::Sender<ToReader>,
    store: Option<Store>,
    /// When the database stopped answering (for logging once per outage).
    down_since: Option<Instant>,
    failures: u32,
    /// Per chain: the last seq confirmed stored.
    stored: HashMap<String, u64>,
    live_chain: Option<String>,
    /// Rotated files waiting for their read-back check.
    deletes: Vec<FileDone>,
    drain: watch::Receiver<Option<Instant>>,
    status: Arc<Mutex<ShipSummary>>,
    last_progress: Instant,
    /// ts (µs) of the first record of the batch being stored.
    oldest_pending_ts: Option<i64>,
    caught_up: bool,
    /// The highest seq of the live chain known to exist locally (read by
    /// the reader); bounds an unbounded watermark (`audit ship` offline).
    local_head: u64,
}

impl Task {
    async fn run(mut self) -> ShipSummary {
        let mut handle_gone = false;
        let stop = loop {
            let passed = deadline_passed(self.drain.clone());
            let msg = tokio::select! {
                msg = self.rx.recv() => msg,
                changed = self.drain.changed(), if !handle_gone => {
                    match changed {
                        // Look at the files now rather than at the next tick.
                        Ok(()) => { let _ = self.ctl.send(ToReader::Wake(1)); }
                        Err(_) => handle_gone = true,
                    }
                    continue;
                }
                () = passed => break Stop::Deadline,
            };
            let Some(msg) = msg else {
                break Stop::ReaderGone;
            };
            match self.handle(msg).await {
                Ok(true) => return self.finish(true, None),
                Ok(false) => {}
                Err(stop) => break stop,
            }
        };
        let reason = match stop {
            Stop::Deadline => {
                "the shutdown deadline passed before everything was shipped".to_string()
            }
            Stop::ReaderGone => "the reader thread stopped".to_string(),
            Stop::Blocked(why) => why,
        };
        self.finish(false, Some(reason))
    }

    /// The drain deadline, once draining.
    fn deadline(&self) -> Option<Instant> {
        *self.drain.borrow()
    }

    fn draining(&self) -> bool {
        self.deadline().is_some()
    }

    /// Handles one message; `Ok(true)` when a drain is complete.
    async fn handle(&mut self, msg: FromReader) -> Result<bool, Stop> {
        match msg {
            FromReader::Batch(batch) => {
                self.caught_up = false;
                if batch.live_chain.is_some() {
                    self.live_chain.clone_from(&batch.live_chain);
                }
                self.ship(batch).await?;
            }
            FromReader::NeedPosition(chain) => {
                let pos = self.position(&chain).await?;
                self.stored.insert(chain.clone(), pos.seq);
                let _ = self.ctl.send(ToReader::Position(chain, pos));
            }
            FromReader::Idle(idle, generation) => {
                self.oldest_pending_ts = None;
                self.local_head = self.local_head.max(idle.head_seq);
                if idle.live_chain.is_some() {
                    self.live_chain.clone_from(&idle.live_chain);
                }
                self.confirm_files().await?;
                self.caught_up = idle.blocked.is_none();
                self.update_status(idle.blocked.clone());
                if self.draining() && generation >= 1 && self.deletes.is_empty() {
                    return match idle.blocked {
                        None => Ok(true),
                        Some(why) => Err(Stop::Blocked(why)),
                    };
                }
            }
            FromReader::Io(e) => {
                self.metrics.error("io", 1);
                self.update_status(Some(format!("cannot read the local audit files: {e}")));
            }
        }
        Ok(false)
    }

    /// Runs a database call until it succeeds, reconnecting with backoff;
    /// gives up only at the drain deadline.
    async fn with_db<T>(
        &mut self,
        what: &'static str,
        mut call: impl AsyncFnMut(&mut Store) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Stop> {
        loop {
            if let Some(v) = self.attempt(what, &mut call).await? {
                return Ok(v);
            }
        }
    }

    /// One database call (connecting first if needed), bounded by the
    /// timeout; after a failure it waits out the backoff and gives `None`.
    async fn attempt<T>(
        &mut self,
        what: &'static str,
        call: impl AsyncFnOnce(&mut Store) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Option<T>, Stop> {
        let timeout = self.cfg.timeout;
        let passed = deadline_passed(self.drain.clone());
        tokio::pin!(passed);
        let attempt = async {
            if self.store.is_none() {
                self.store = Some(self.connect().await?);
            }
            let store = self
                .store
                .as_mut()
                .ok_or_else(|| "not connected".to_string())?;
            match tokio::time::timeout(timeout, call(store)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(describe(&e)),
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        };
        let result = tokio::select! {
            r = attempt => r,
            () = &mut passed => return Err(Stop::Deadline),
        };
        match result {
            Ok(v) => {
                self.db_ok();
                return Ok(Some(v));
            }
            Err(e) => self.db_failed(what, &e),
        }
        let wait = self.backoff();
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(None),
            () = passed => Err(Stop::Deadline),
        }
    }

    async fn connect(&self) -> Result<Store, String> {
        let cfg = self.cfg.clone();
        // The password file is read on a blocking thread (and anew at each
        // connection, so a rotated secret is picked up).
        let pg = tokio::task::spawn_blocking(move || cfg.connect_config())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let connect = Store::connect(&pg, &self.cfg.instance);
        match tokio::time::timeout(self.cfg.timeout, connect).await {
            Ok(r) => r.map_err(|e| describe(&e)),
            Err(_) => Err(format!(
                "no connection within {} ms",
                self.cfg.timeout.as_millis()
            )),
        }
    }

    fn db_ok(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(
                down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "audit shipping: the central database answers again"
            );
        }
        self.failures = 0;
        self.metrics.up.set(1);
    }

    fn db_failed(&mut self, what: &str, error: &str) {
        // A failed connection is useless; the next attempt makes a new one.
        self.store = None;
        self.metrics.up.set(0);
        self.metrics.error("database", 1);
        self.failures = self.failures.saturating_add(1);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(during = what, error = %error, "audit shipping: the central database is unavailable; records stay local and shipping retries");
        } else {
            tracing::debug!(during = what, error = %error, "audit shipping: retry failed");
        }
        self.update_status(Some(format!("central database unavailable: {error}")));
    }

    /// The next wait: doubling from 100 ms to `retry_max`, with jitter so
    /// that replicas do not reconnect in step.
    fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(16);
        let base = BACKOFF_START
            .saturating_mul(1u32 << exp)
            .min(self.cfg.retry_max);
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 - jitter)
    }

    async fn position(&mut self, chain: &str) -> Result<Position, Stop> {
        let chain = chain.to_string();
        self.with_db("reading the stored position", async move |s| {
            s.position(&chain).await
        })
        .await
    }

    /// Stores one batch, whatever it takes (until the drain deadline).
    async fn ship(&mut self, mut batch: Batch) -> Result<(), Stop> {
        self.oldest_pending_ts = batch.rows.first().map(|r| r.ts_micros);
        self.update_lag();
        self.count_local_faults(&batch);
        let mut retried = false;
        loop {
            if retried && !batch.rows.is_empty() {
                // The failed attempt may have committed: store only what the
                // database does not have (the rest would be no-ops anyway).
                let pos = self.position(&batch.chain).await?;
                batch.rows.retain(|r| r.seq > pos.seq);
                batch.bytes = batch.rows.iter().map(|r| r.record.len()).sum();
            }
            let b = &batch;
            match self
                .attempt("storing a batch", async move |s| s.store(b).await)
                .await?
            {
                Some(stored) => {
                    self.stored_batch(&batch, stored);
                    break;
                }
                None => retried = true,
            }
        }
        self.deletes.extend(batch.files_done);
        self.confirm_files().await
    }

    fn count_local_faults(&self, batch: &Batch) {
        let refused = u64::try_from(batch.refused.len()).unwrap_or(u64::MAX);
        if refused > 0 {
            self.metrics.error("refused", refused);
            if let Ok(mut s) = self.status.lock() {
                s.refused += refused;
            }
        }
        if batch.breaks > 0 {
            self.metrics.error("chain", batch.breaks);
        }
        if batch.conflicts > 0 {
            self.metrics.error("conflict", batch.conflicts);
        }
    }

    fn stored_batch(&mut self, batch: &Batch, stored: store::Stored) {
        self.metrics.shipped.inc_by(stored.inserted);
        if stored.conflicted {
            tracing::info!(
                chain = %batch.chain,
                "audit shipping: some records of a batch were stored already; the rest were added"
            );
        }
        if let Some(last) = batch.rows.last() {
            let e = self.stored.entry(batch.chain.clone()).or_default();
            *e = (*e).max(last.seq);
            if self.live_chain.as_deref() == Some(batch.chain.as_str()) {
                self.local_head = self.local_head.max(last.seq);
            }
        }
        if let Ok(mut s) = self.status.lock() {
            s.shipped += stored.inserted;
        }
        self.last_progress = Instant::now();
        self.oldest_pending_ts = None;
        self.update_status(None);
    }

    /// Read-back check and deletion of rotated files whose records are all
    /// handed out: deleted once the database has their last record exactly.
    async fn confirm_files(&mut self) -> Result<(), Stop> {
        if !self.cfg.delete_shipped {
            self.deletes.clear();
            return Ok(());
        }
        while let Some(done) = self.deletes.first().cloned() {
            let d = done.clone();
            let (stored, refusals) = self
                .with_db("confirming a rotated file", async move |s| {
                    let stored = s.record_at(&d.chain, d.last_seq).await?;
                    let refusals = s
                        .refusals_between(&d.chain, d.prev_last, d.last_seq)
                        .await?;
                    Ok((stored, refusals))
                })
                .await?;
            self.deletes.remove(0);
            if refusals > 0 {
                tracing::warn!(file = %done.path.display(), refused = refusals, "audit shipping: keeping a rotated file with refused lines for investigation");
                continue;
            }
            if stored.is_none() || stored != done.last_record {
                tracing::error!(file = %done.path.display(), seq = done.last_seq, "audit shipping: the database does not hold this file's last record as written; the file is kept");
                self.metrics.error("readback", 1);
                continue;
            }
            let path = done.path.clone();
            let live = self.path.clone();
            let deleted = tokio::task::spawn_blocking(move || delete_rotated(&path, &live))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
            match deleted {
                Ok(true) => {
                    self.metrics.deleted_files.inc();
                    if let Ok(mut s) = self.status.lock() {
                        s.files_deleted += 1;
                    }
                    tracing::info!(file = %done.path.display(), last_seq = done.last_seq, "audit shipping: rotated file stored centrally and deleted");
                }
                Ok(false) => {}
                Err(e) => {
                    self.metrics.error("delete", 1);
                    tracing::error!(file = %done.path.display(), error = %e, "audit shipping: cannot delete a shipped rotated file");
                }
            }
        }
        Ok(())
    }

    /// The durable end of the live chain: the watermark, unless that is
    /// unbounded (every line is durable), then what is known to exist.
    fn durable(&self) -> u64 {
        match (self.watermark)() {
            u64::MAX => self.local_head,
            wm => wm,
        }
    }

    /// Updates the lag gauges and the status.
    fn update_lag(&self) -> (u64, u64) {
        let durable = self.durable();
        let stored = self
            .live_chain
            .as_ref()
            .and_then(|c| self.stored.get(c))
            .copied();
        let lag = match stored {
            Some(s) => durable.saturating_sub(s),
            // Not known yet (the database has not answered): everything
            // durable counts as not confirmed.
            None => durable,
        };
        self.metrics
            .lag_records
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let age = if let Some(ts) = self.oldest_pending_ts {
            let now = crate::time::now_millis().saturating_mul(1000);
            (now.saturating_sub(ts)) as f64 / 1e6
        } else if lag == 0 || self.caught_up {
            0.0
        } else {
            self.last_progress.elapsed().as_secs_f64()
        };
        self.metrics.lag_seconds.set(age.max(0.0));
        (lag, stored.unwrap_or(0))
    }

    fn update_status(&self, reason: Option<String>) {
        let (lag, stored) = self.update_lag();
        if let Ok(mut s) = self.status.lock() {
            s.lag_records = lag;
            s.stored_seq = stored;
            s.durable_seq = self.durable();
            s.chain.clone_from(&self.live_chain);
            s.reason = reason;
            s.all_shipped = lag == 0 && self.caught_up;
        }
    }

    fn finish(&self, complete: bool, reason: Option<String>) -> ShipSummary {
        self.update_status(reason.clone());
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.all_shipped = complete && s.lag_records == 0;
        if !s.all_shipped {
            s.reason = s
                .reason
                .or(reason)
                .or_else(|| Some("records remain".into()));
        }
        s
    }
}

/// Deletes a shipped rotated file, unless it is the newest file with
/// content: after a crash between a rotation's rename and the new live
/// file's first record, it is what the writer continues the chain from.
fn delete_rotated(path: &Path, live: &Path) -> std::io::Result<bool> {
    let own = local::rotated_seq_of(path);
    let newer_rotated = crate::audit::rotate::rotated_files(live)?
        .iter()
        .any(|p| local::rotated_seq_of(p) > own);
    let live_has_content = std::fs::metadata(live).is_ok_and(|m| m.len() > 0);
    if !newer_rotated && !live_has_content {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    crate::audit::rotate::sync_dir(path)?;
    Ok(true)
}

/// A database error with the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Resolves once a drain deadline is set and has passed.
async fn deadline_passed(mut drain: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
            return;
        }
        if drain.changed().await.is_err() {
            // The handle is gone without a drain: never.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_rotated_file_stays_while_the_live_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let old = crate::audit::rotate::rotated_path(&live, 10);
        let newest = crate::audit::rotate::rotated_path(&live, 20);
        for p in [&old, &newest] {
            std::fs::write(p, b"x\n").unwrap();
        }
        std::fs::write(&live, b"").unwrap();
        // A newer rotated file exists: the older one may go.
        assert!(delete_rotated(&old, &live).unwrap());
        assert!(!old.exists());
        // The newest one with an empty live file is what a restart continues from.
        assert!(!delete_rotated(&newest, &live).unwrap());
        assert!(newest.exists());
        std::fs::write(&live, b"{}\n").unwrap();
        assert!(delete_rotated(&newest, &live).unwrap());
        assert!(!delete_rotated(&newest, &live).unwrap(), "already gone");
    }

    #[test]
    fn metrics_are_registered_under_their_contract_names() {
        let mut r = Registry::with_prefix("purposegate");
        let m = ShipMetrics::default();
        m.register(&mut r);
        m.error("refused", 2);
        let text = crate::metrics::encode_classic(&r);
        for name in [
            "purposegate_audit_ship_lag_records 0",
            "purposegate_audit_ship_lag_seconds 0",
            "purposegate_audit_shipped_records_total 0",
            "purposegate_audit_ship_errors_total{kind=\"refused\"} 2",
            "purposegate_audit_ship_errors_total{kind=\"database\"} 0",
            "purposegate_audit_ship_up 0",
            "purposegate_audit_ship_deleted_files_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
