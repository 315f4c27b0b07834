//! The writer thread: it alone touches the file (blocking I/O stays off the
//! tokio runtime). It takes the open group (`group::State`) whenever a
//! waited record is in it (or at the tick), writes it with one `write_all`,
//! syncs per the `fsync` policy, and publishes the progress that resolves
//! the group's waiters. A failed write is cut back off the file and the
//! chain rolled back to the last durable record, so the log never holds a
//! torn record or a gap.
//!
//! Once a second it also checks that the open file is still the file at
//! the path (and puts it back if not), keeps disk space reserved past its
//! end, recounts the local files against `max_local_bytes` and rotates an
//! old live file. Anything that switches files does so with the group lock
//! held, after writing what the group holds to the old file, so the new
//! file's header is chained right after the old file's last record.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::group::{Durable, Group, State};
use super::header::Header;
use super::target::{LogTarget, Placement};
use super::writer::{AuditCounters, AuditError, Blocked, Shared};
use super::{recover, rotate};
use crate::config::FsyncPolicy;

/// How often the writer wakes without work (outage probe, timed
/// checkpoints, durability of unwaited records).
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// How often the writer checks the file's placement, the reserve and the
/// local files' size.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// The stdout mirror; a failing stdout is reported once, never fatal (the
/// file is the record, the mirror a copy).
#[derive(Default)]
pub(crate) struct Mirror {
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

/// Why a group was not written.
struct Failed {
    error: AuditError,
    /// The local bound refused it (nothing was written).
    bound: bool,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub target: Box<dyn LogTarget>,
    /// Holds the single-writer lock for the thread's lifetime.
    pub lock: std::fs::File,
    /// The last record written to the file (what a failed group rolls back
    /// to; written records are never dropped, synced or not).
    pub last_written: Durable,
    /// Written but not yet synced (generation, seq), published as durable
    /// once a sync covers it.
    pub unsynced: Option<(u64, u64)>,
    pub fsync: FsyncPolicy,
    pub window: Duration,
    pub counters: AuditCounters,
    pub shared: Arc<Shared>,
    /// Set after a failure: reopen the file before writing again.
    pub reopen: bool,
    /// Length of the file before a failed write, restored before writing again.
    pub cut_to: Option<u64>,
    pub path: PathBuf,
    pub rotate_bytes: Option<u64>,
    pub rotate_every: Option<Duration>,
    pub stdout: Option<Mirror>,
    /// Timed checkpoints (count-based ones are chained by the appenders).
    pub checkpoint_every: Option<Duration>,
    /// `batch`: written but not yet synced (nobody waits on it).
    pub dirty: bool,
    pub file_started: Instant,
    pub max_local_bytes: Option<u64>,
    pub reserve_bytes: u64,
    pub reserve_unsupported: bool,
    pub rotated_bytes: u64,
    pub last_tick: Instant,
    pub last_maintained: Instant,
    /// The live file is not at its path and could not be put back yet:
    /// nothing is written until it is.
    pub misplaced: bool,
    /// A flush has been answered (a shutdown has begun, or a caller sealed
    /// the tail): closing seals what came after it.
    pub flushed: bool,
    /// The buffer handed back after a group, reused for the next.
    pub spare: Vec<u8>,
}

impl Writer {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Writes the pending header (a new chain or file) before serving, so
    /// that an unwritable log stops the start, and takes the first reserve.
    pub fn start(&mut self) -> Result<(), AuditError> {
        self.recount_local();
        self.keep_reserve();
        let group = {
            let mut st = self.state();
            st.chain_prefix();
            st.take(Vec::new())
        };
        if group.lines == 0 {
            return Ok(());
        }
        let header = group.header;
        self.settle(group, None);
        if header && self.state().header.is_some() {
            return Err(AuditError::Io(format!(
                "cannot write the first record of {}",
                self.path.display()
            )));
        }
        Ok(())
    }

    pub fn run(mut self) {
        yield_to_requests_on_wakeup();
        let shared = self.shared.clone();
        loop {
            let mut st = wait_for_work(&shared, self.fsync, self.last_tick);
            let tick = self.last_tick.elapsed() >= TICK;
            if tick {
                self.last_tick = Instant::now();
                if st.checkpoint_due(self.checkpoint_every) {
                    st.checkpoint();
                }
                // The outage probe: the `resumed` record is what tries.
                if st.outage.is_some() && st.buf.is_empty() {
                    st.chain_prefix();
                }
            }
            if self.fsync == FsyncPolicy::Batch && !self.window.is_zero() && st.waited {
                drop(st);
                std::thread::sleep(self.window);
                st = lock(&shared);
            }
            let closing = st.closed;
            let flushes = std::mem::take(&mut st.flushes);
            if !flushes.is_empty() && st.since_checkpoint > 0 {
                // A flush seals everything chained before it (e.g. at
                // shutdown) with a checkpoint, chained as the group is taken.
                st.chain_prefix();
                st.checkpoint();
            }
            let group = st.take(std::mem::take(&mut self.spare));
            drop(st);
            if group.lines > 0 {
                self.settle(group, None);
            } else {
                self.spare = group.buf;
            }
            if !flushes.is_empty() {
                // A rotation that the write made due happens before the
                // flush is answered, and the new file's `file_start` is
                // sealed too: the flush's checkpoint stays the tail's last
                // record (a shutdown leaves no unsigned tail).
                self.after_write();
                self.seal();
            }
            if (tick || !flushes.is_empty() || closing) && self.dirty {
                self.sync_now("fsync of unwaited records");
            }
            if !flushes.is_empty() {
                self.flushed = true;
                self.answer(flushes);
            }
            if closing {
                if self.state().buf.is_empty() {
                    if self.flushed {
                        // After a shutdown's flush, what came since (a timed
                        // rotation's `file_start` during the shipping drain)
                        // is sealed too. Without a flush (the sink merely
                        // dropped) nothing is added.
                        self.seal();
                    }
                    break;
                }
                continue;
            }
            self.after_write();
            if tick && self.last_maintained.elapsed() >= MAINTAIN_EVERY {
                self.maintain();
            }
        }
        if !self.reopen {
            let _ = self.sync();
        }
        tracing::debug!(seq = self.last_written.head.seq, "audit writer stopped");
    }

    /// Writes a taken group and settles it: progress published on success,
    /// the chain rolled back on failure. `held` is the group lock when the
    /// caller holds it (rotation, relocation).
    fn settle(&mut self, group: Group, held: Option<&mut State>) {
        match self.write(&group) {
            Ok(synced) => {
                match held {
                    Some(st) => st.committed(&group),
                    None => self.state().committed(&group),
                }
                self.committed(&group, synced);
            }
            Err(f) => {
                let dropped = match held {
                    Some(st) => st.roll_back(&group, &self.last_written, f.bound),
                    None => self.state().roll_back(&group, &self.last_written, f.bound),
                };
                self.counters.errors.inc_by(dropped);
                if dropped > 0 {
                    tracing::error!(records = dropped, error = %f.error, "audit write failed; records refused");
                }
                // Everything of the generation that was written is kept;
                // its waited records were synced (and resolved) before.
                self.shared.publisher.ended(
                    group.generation,
                    self.last_written.head.seq,
                    &f.error.to_string(),
                );
            }
        }
        self.spare = Vec::new();
    }

    /// A group is on disk: advance the durable head (when synced), mirror
    /// it, wake its waiters.
    fn committed(&mut self, group: &Group, synced: bool) {
        self.shared.healthy.store(true, Ordering::SeqCst);
        self.counters.records.inc_by(group.lines);
        if let Some(m) = self.stdout.as_mut() {
            m.write(&group.buf);
        }
        if group.header {
            self.file_started = Instant::now();
        }
        self.last_written = Durable {
            head: group.head.clone(),
            since_checkpoint: group.since_after,
        };
        let written = (group.generation, group.head.seq);
        if synced || self.fsync == FsyncPolicy::Never {
            self.publish_durable(written);
        } else {
            self.dirty = true;
            self.unsynced = Some(written);
        }
        self.publish_local();
        self.keep_reserve();
    }

    /// Everything up to `(generation, seq)` is durable: wake its waiters.
    fn publish_durable(&mut self, (generation, seq): (u64, u64)) {
        self.unsynced = None;
        self.shared.durable_seq.store(seq, Ordering::Release);
        self.shared.publisher.durable(generation, seq);
    }

    /// One `write_all` and (per policy) one sync; on failure the file is cut
    /// back to where the group started and the writer marked unhealthy.
    /// `Ok(true)`: the group is synced.
    fn write(&mut self, group: &Group) -> Result<bool, Failed> {
        let fail = |error| Failed {
            error,
            bound: false,
        };
        if self.misplaced {
            return Err(fail(AuditError::Blocked(Blocked::Unwritable)));
        }
        self.repair().map_err(fail)?;
        let start = self
            .target
            .len()
            .map_err(|e| fail(self.failed("stat", &e, None)))?;
        if let Some(max) = self.max_local_bytes {
            if start + self.rotated_bytes + group.buf.len() as u64 > max {
                return Err(Failed {
                    error: self.over_bound(max),
                    bound: true,
                });
            }
        }
        if self.fsync == FsyncPolicy::Always {
            // One sync per record: each line is durable on its own.
            for line in group.buf.split_inclusive(|b| *b == b'\n') {
                self.target
                    .append(line)
                    .map_err(|e| fail(self.failed("write", &e, Some(start))))?;
                self.sync()
                    .map_err(|e| fail(self.failed("fsync", &e, Some(start))))?;
            }
            return Ok(true);
        }
        self.target
            .append(&group.buf)
            .map_err(|e| fail(self.failed("write", &e, Some(start))))?;
        match self.fsync {
            FsyncPolicy::Never => Ok(false),
            // With `batch`, a group nobody waits for (only `complete`
            // records, checkpoints) is synced by the next waited group, a
            // flush or the tick. A waited group is never acknowledged before
            // its sync.
            _ if !group.waited && !group.header => Ok(false),
            _ => {
                self.sync()
                    .map_err(|e| fail(self.failed("fsync", &e, Some(start))))?;
                Ok(true)
            }
        }
    }

    /// Syncs unwaited records written earlier and makes them durable.
    fn sync_now(&mut self, what: &str) {
        match self.sync() {
            Ok(()) => {
                if let Some(w) = self.unsynced {
                    self.publish_durable(w);
                }
            }
            Err(e) => {
                // Written but not durable: they stay written (a later sync
                // may still succeed); the writer is marked failing.
                let e = self.failed(what, &e, None);
                tracing::error!(error = %e, "audit {what} failed");
            }
        }
    }

    /// Answers flushes: everything before them is written; make it durable,
    /// and report records that could not be written since the last flush.
    fn answer(&mut self, flushes: Vec<tokio::sync::oneshot::Sender<Result<(), AuditError>>>) {
        let synced = if self.reopen {
            Err(AuditError::Io("the audit log is failing".into()))
        } else {
            self.sync().map_err(|e| self.failed("fsync", &e, None))
        };
        if let (Ok(()), Some(w)) = (&synced, self.unsynced) {
            self.publish_durable(w);
        }
        let lost = std::mem::take(&mut self.state().lost);
        let result = synced.and(match lost {
            0 => Ok(()),
            n => Err(AuditError::Io(format!(
                "{n} audit records could not be written since the last flush"
            ))),
        });
        for f in flushes {
            let _ = f.send(result.clone());
        }
    }

    /// Chains and writes a checkpoint over records not yet covered by one
    /// (none without a signing key).
    fn seal(&mut self) {
        let shared = self.shared.clone();
        let mut st = lock(&shared);
        if st.checkpoints.is_none() || st.since_checkpoint == 0 {
            return;
        }
        st.chain_prefix();
        st.checkpoint();
        let group = st.take(Vec::new());
        if group.lines > 0 {
            self.settle(group, Some(&mut st));
        }
    }

    /// After a group: rotate a file that reached `rotate_bytes`.
    fn after_write(&mut self) {
        let Some(max) = self.rotate_bytes else {
            return;
        };
        if !self.misplaced && !self.reopen && self.target.len().is_ok_and(|len| len >= max) {
            self.switch_file(|w| w.rotate());
        }
    }

    /// Once a second: the file is still at its path (else put it back), the
    /// local files are recounted, the reserve is kept, and an old live file
    /// is rotated.
    fn maintain(&mut self) {
        self.last_maintained = Instant::now();
        match self.target.placement() {
            Ok(Placement::InPlace) => {}
            Ok(p) => self.switch_file(move |w| w.relocate(p)),
            Err(e) => {
                let e = self.failed("checking the live file", &e, None);
                tracing::error!(error = %e, "audit log: cannot check the live file");
            }
        }
        self.recount_local();
        self.keep_reserve();
        // A file holding no request record (only its header, or
        // checkpoints) is not rotated by age: an idle proxy would otherwise
        // leave a file of one header behind every `rotate_every`.
        let aged = self
            .rotate_every
            .is_some_and(|t| self.file_started.elapsed() >= t)
            && self.state().requests_in_file > 0;
        if aged && !self.misplaced && self.target.len().is_ok_and(|l| l > 0) {
            self.switch_file(|w| w.rotate());
        }
    }

    /// Switches files with the group lock held: what the group holds goes to
    /// the current file first, then `switch` runs (returning the header the
    /// next file starts with), and the header is chained and written at once.
    fn switch_file(&mut self, switch: impl FnOnce(&mut Writer) -> Option<Header>) {
        let shared = self.shared.clone();
        let mut st = lock(&shared);
        if !st.buf.is_empty() {
            let group = st.take(Vec::new());
            self.settle(group, Some(&mut st));
        }
        if self.dirty {
            self.sync_now("fsync before switching files");
        }
        let Some(header) = switch(self) else {
            return;
        };
        st.requests_in_file = 0;
        st.header = Some((header, super::group::Stage::Pending));
        st.chain_prefix();
        let group = st.take(Vec::new());
        self.settle(group, Some(&mut st));
    }

    /// Puts the live file back at its path (see `LogTarget::relocate`);
    /// returns the record saying what happened. Until it works nothing is
    /// written.
    fn relocate(&mut self, placement: Placement) -> Option<Header> {
        tracing::warn!(path = %self.path.display(), ?placement, "audit log: the live file is no longer at its path; recovering it");
        match self.target.relocate(placement) {
            Ok(r) => {
                self.misplaced = false;
                self.reopen = false;
                self.cut_to = None;
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
                    return Some(Header::FileStart {
                        previous_file: file_name(rotated),
                    });
                }
                tracing::warn!(
                    cause = r.cause.as_str(),
                    copied_bytes = r.copied_bytes,
                    lost_bytes = r.lost_bytes,
                    "audit log recovered at its path"
                );
                Some(Header::Reopened {
                    cause: r.cause,
                    copied_bytes: r.copied_bytes,
                    lost_bytes: r.lost_bytes,
                    displaced_to: r.displaced_to.as_deref().and_then(file_name),
                })
            }
            Err(e) => {
                self.misplaced = true;
                let e = self.failed("recovering the live file", &e, None);
                tracing::error!(error = %e, "audit log: cannot put the live file back; refusing until it can");
                None
            }
        }
    }

    /// Renames the full file to `<path>.<last seq>` and starts a new one;
    /// returns the `file_start` header that links it to the rotated file.
    fn rotate(&mut self) -> Option<Header> {
        if let Err(e) = self.sync() {
            let e = self.failed("fsync", &e, None);
            tracing::error!(error = %e, "audit log: cannot sync before rotation");
            return None;
        }
        if let Err(e) = self.target.release_reserve() {
            tracing::warn!(error = %e, "audit log: cannot free the reserve before rotation");
        }
        let rotated = match rotate::rename_live(&self.path, self.last_written.head.seq) {
            Ok(p) => p,
            Err(e) => {
                // The current file stays usable: keep writing to it.
                tracing::error!(error = %e, "audit log rotation failed; continuing in the current file");
                return None;
            }
        };
        if let Err(e) = self.target.reopen() {
            let e = self.failed("open after rotation", &e, None);
            tracing::error!(error = %e, "audit log: cannot open the new file");
        }
        match recover::lock_path(&self.path) {
            Ok(lock) => self.lock = lock,
            Err(e) => tracing::error!(error = %e, "audit log: cannot lock the new file"),
        }
        if let Err(e) = rotate::sync_dir(&self.path) {
            tracing::warn!(error = %e, "audit log: cannot fsync the directory after rotation");
        }
        tracing::info!(rotated = %rotated.display(), seq = self.last_written.head.seq, "audit log rotated");
        self.rotated_bytes += std::fs::metadata(&rotated).map_or(0, |m| m.len());
        self.keep_reserve();
        Some(Header::FileStart {
            previous_file: file_name(&rotated),
        })
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

    /// The hard bound: nothing more is written until the local files
    /// shrink (the shipper deletes shipped files); the outage probe resumes.
    fn over_bound(&mut self, max: u64) -> AuditError {
        if self.shared.healthy.swap(false, Ordering::SeqCst) {
            tracing::error!(
                max_local_bytes = max,
                "audit log: local files at audit.max_local_bytes; refusing records until shipping frees space"
            );
        }
        AuditError::Blocked(Blocked::LocalBound)
    }

    /// Records a failure: marks the writer unhealthy and cuts a partial
    /// write off the file (checked again after reopening, in case that fails
    /// too).
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
    /// good record remains, before anything new is written. If the file was
    /// moved away meanwhile, it is put back first (reopening the path would
    /// start an empty file there and leave a gap).
    fn repair(&mut self) -> Result<(), AuditError> {
        if !self.reopen {
            return Ok(());
        }
        if let Ok(p) = self.target.placement() {
            if p != Placement::InPlace {
                // `maintain` relocates under the lock; until then, refuse.
                self.misplaced = true;
                return Err(AuditError::Blocked(Blocked::Unwritable));
            }
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

    fn sync(&mut self) -> std::io::Result<()> {
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        self.target.sync()?;
        self.dirty = false;
        Ok(())
    }
}

/// The group lock. A panic while holding it would poison it; the state is
/// still consistent (every mutation completes before unlocking).
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parks until a waited record, a flush, the tick or the end.
fn wait_for_work(shared: &Shared, fsync: FsyncPolicy, last_tick: Instant) -> MutexGuard<'_, State> {
    let mut st = lock(shared);
    loop {
        let urgent = st.waited
            || !st.flushes.is_empty()
            || st.closed
            || (fsync != FsyncPolicy::Batch && !st.buf.is_empty());
        let left = TICK.saturating_sub(last_tick.elapsed());
        if urgent || left.is_zero() {
            return st;
        }
        st.writer_parked = true;
        st = match shared.wake.wait_timeout(st, left) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        st.writer_parked = false;
    }
}

/// The file name of `path`, as a header names the previous file.
pub(crate) fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
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
