//! The open group: records encoded and chained by the requests themselves.
//! A request serializes its record outside any lock, then, under one short
//! lock, stamps it, hashes it onto the chain head and appends it to the
//! group buffer; the buffer order is the chain order. The writer thread
//! takes the whole buffer at once, writes and syncs it, and publishes one
//! `Progress` that resolves every waiter of the group — one wake per group
//! instead of a hand-off per record. A `complete` record wakes nobody: it
//! rides the next group (or the tick).
//!
//! The writer's own records (a file's header, the `resumed` record after an
//! outage, checkpoints) are chained into the same buffer by whoever holds
//! the lock first, so they sit exactly where they belong in the chain.
//!
//! If a group cannot be written, every record chained after the last
//! durable one (the group and whatever was appended meanwhile) is dropped:
//! the head goes back to the last durable record, the generation moves on,
//! and waiters of the dropped records learn that theirs failed. Records are
//! told apart by (generation, seq), never by seq alone, because seqs are
//! reused after such a rollback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::chain::{self, ChainHead};
use super::header::Header;
use super::sign::SigningKey;
use super::writer::AuditError;

/// Failed generations remembered for late waiters (failures are rare; a
/// waiter older than this is told its record failed, which fails closed).
const FINALS_KEPT: usize = 1024;

/// What the writer has made durable, for waiters to resolve against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub generation: u64,
    /// Durable seq within `generation`.
    pub durable: u64,
    /// For ended generations: the last seq that became durable in each.
    pub finals: Arc<VecDeque<(u64, u64)>>,
    /// Why the last generation ended.
    pub error: Option<Arc<str>>,
}

impl Progress {
    /// `Some(result)` once the record (generation, seq) is resolved.
    pub fn resolve(&self, generation: u64, seq: u64) -> Option<Result<u64, AuditError>> {
        if generation == self.generation {
            return (self.durable >= seq).then_some(Ok(seq));
        }
        let last = self
            .finals
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, s)| *s);
        Some(match last {
            Some(last) if last >= seq => Ok(seq),
            _ => Err(AuditError::Io(
                self.error
                    .as_deref()
                    .unwrap_or("the record's group could not be written")
                    .to_string(),
            )),
        })
    }
}

/// Whether a writer record is waiting to be chained or already in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Pending,
    InFlight,
}

/// Since when writing fails, and how many records were refused meanwhile.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub since: String,
    pub unwritten: u64,
    pub stage: Stage,
    /// What failing means for `admit` (the last failure's kind).
    pub bound: bool,
}

/// The body of the record that ends an outage.
#[derive(serde::Serialize)]
struct Resumed<'a> {
    event: &'static str,
    failing_since: &'a str,
    unwritten_records: u64,
}

/// Count-based checkpoints, signed by whoever crosses the threshold.
pub(crate) struct CountCheckpoints {
    pub key: Arc<SigningKey>,
    pub every_records: Option<u64>,
}

/// The shared, lock-protected part of the log.
pub(crate) struct State {
    /// The head after everything chained so far (the buffer included).
    pub head: ChainHead,
    pub buf: Vec<u8>,
    /// Proxy records in `buf` (for the counters when a group fails).
    pub buf_records: u64,
    /// Lines in `buf`, the writer's own records included.
    pub buf_lines: u64,
    /// `buf` holds a record somebody waits for (the writer must not idle).
    pub waited: bool,
    pub generation: u64,
    pub header: Option<(Header, Stage)>,
    pub outage: Option<Outage>,
    /// Records since the last checkpoint (the buffer included).
    pub since_checkpoint: u64,
    /// Proxy records chained since the live file began (the buffer
    /// included); after a restart 1 when the chain has records. A file
    /// with none (only its header, checkpoints) is not rotated by age.
    pub requests_in_file: u64,
    pub last_checkpoint: Instant,
    pub checkpoints: Option<CountCheckpoints>,
    pub flushes: Vec<oneshot::Sender<Result<(), AuditError>>>,
    /// Records dropped since the last flush (so `flush` can report them).
    pub lost: u64,
    pub writer_parked: bool,
    pub closed: bool,
    chain: String,
    instance: String,
    /// The last timestamp formatted, reused within its millisecond.
    ts: (i64, String),
}

/// What `append` chained.
pub(crate) struct Appended {
    pub generation: u64,
    pub seq: u64,
    /// The writer is parked and should be woken for this record.
    pub wake: bool,
}

impl State {
    pub fn new(
        head: ChainHead,
        chain: String,
        instance: String,
        header: Option<Header>,
        checkpoints: Option<CountCheckpoints>,
    ) -> State {
        // After a restart the recovered tail may be unsigned: let the first
        // flush or timed checkpoint cover it.
        let since = u64::from(head.seq > 0);
        State {
            head,
            buf: Vec::with_capacity(64 * 1024),
            buf_records: 0,
            buf_lines: 0,
            waited: false,
            generation: 0,
            header: header.map(|h| (h, Stage::Pending)),
            outage: None,
            since_checkpoint: since,
            requests_in_file: since,
            last_checkpoint: Instant::now(),
            checkpoints,
            flushes: Vec::new(),
            lost: 0,
            writer_parked: false,
            closed: false,
            chain,
            instance,
            ts: (i64::MIN, String::new()),
        }
    }

    fn timestamp(&mut self) -> &str {
        let now = crate::time::now_millis();
        if self.ts.0 != now {
            self.ts = (now, crate::time::format_rfc3339(now));
        }
        &self.ts.1
    }

    fn push_line(&mut self, enc: chain::Encoded) {
        self.buf.extend_from_slice(&enc.line);
        self.head = enc.head;
        self.buf_lines += 1;
        self.since_checkpoint += 1;
    }

    /// Chains a writer record (any serializable object).
    fn push_body<B: serde::Serialize>(&mut self, body: &B) -> bool {
        let ts = self.timestamp().to_string();
        match chain::encode_body(&self.head, &ts, body) {
            Ok(enc) => {
                self.push_line(enc);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "audit writer record not encodable");
                false
            }
        }
    }

    /// Chains the pending writer records (header, then `resumed`) so that
    /// they come before the next record.
    pub fn chain_prefix(&mut self) {
        if let Some((h, Stage::Pending)) = &self.header {
            let h = h.clone();
            let (chain, instance) = (self.chain.clone(), self.instance.clone());
            if self.push_body(&h.body(&chain, &instance)) {
                if let Some(entry) = self.header.as_mut() {
                    entry.1 = Stage::InFlight;
                }
                self.waited = true;
            }
        }
        if let Some(o) = self.outage.as_ref().filter(|o| o.stage == Stage::Pending) {
            let body = Resumed {
                event: "resumed",
                failing_since: &o.since.clone(),
                unwritten_records: o.unwritten,
            };
            if self.push_body(&body) {
                if let Some(o) = self.outage.as_mut() {
                    o.stage = Stage::InFlight;
                }
            }
        }
    }

    /// Chains one proxy record; with count-based checkpoints, signs one
    /// after every `every_records`-th record.
    pub fn append(&mut self, body: &chain::Body, waited: bool) -> Result<Appended, AuditError> {
        if self.closed {
            return Err(AuditError::Closed);
        }
        self.chain_prefix();
        self.timestamp();
        // Chained straight into the buffer (no line of its own to copy).
        let head = chain::encode_raw_into(&self.head, &self.ts.1, body, &mut self.buf)
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        self.head = head;
        self.buf_lines += 1;
        self.since_checkpoint += 1;
        self.requests_in_file += 1;
        self.buf_records += 1;
        let seq = self.head.seq;
        if self
            .checkpoints
            .as_ref()
            .and_then(|c| c.every_records)
            .is_some_and(|n| self.since_checkpoint >= n)
        {
            self.checkpoint();
        }
        let wake = waited && !self.waited && self.writer_parked;
        self.waited |= waited;
        Ok(Appended {
            generation: self.generation,
            seq,
            wake,
        })
    }

    /// Chains a signed checkpoint covering the current head.
    pub fn checkpoint(&mut self) {
        let Some(key) = self.checkpoints.as_ref().map(|c| c.key.clone()) else {
            return;
        };
        let body = key.checkpoint(&self.head);
        if self.push_body(&body) {
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
        }
    }

    /// A checkpoint is due by time.
    pub fn checkpoint_due(&self, every: Option<Duration>) -> bool {
        self.checkpoints.is_some()
            && self.since_checkpoint > 0
            && every.is_some_and(|t| self.last_checkpoint.elapsed() >= t)
    }

    /// Takes the buffer as a group (swapping in `spare`, so the allocation
    /// is reused).
    pub fn take(&mut self, spare: Vec<u8>) -> Group {
        let group = Group {
            buf: std::mem::replace(&mut self.buf, spare),
            lines: std::mem::take(&mut self.buf_lines),
            records: std::mem::take(&mut self.buf_records),
            head: self.head.clone(),
            generation: self.generation,
            since_after: self.since_checkpoint,
            waited: self.waited,
            header: matches!(self.header, Some((_, Stage::InFlight))),
            resumed: self
                .outage
                .as_ref()
                .is_some_and(|o| o.stage == Stage::InFlight),
        };
        self.waited = false;
        group
    }

    /// A group is durable: the writer records it made it.
    pub fn committed(&mut self, group: &Group) {
        if group.header {
            self.header = None;
        }
        if group.resumed {
            if let Some(o) = self.outage.take() {
                tracing::warn!(failing_since = %o.since, unwritten = o.unwritten, "audit log writable again");
            }
        }
    }

    /// A group could not be written: drop it and everything chained after
    /// it, go back to the last durable head, and start a new generation.
    /// Returns how many proxy records were dropped.
    pub fn roll_back(&mut self, group: &Group, durable: &Durable, bound: bool) -> u64 {
        let dropped = group.records + self.buf_records;
        self.buf.clear();
        self.buf_lines = 0;
        self.buf_records = 0;
        self.waited = false;
        self.head = durable.head.clone();
        self.since_checkpoint = durable.since_checkpoint;
        self.generation += 1;
        if let Some(entry) = self.header.as_mut() {
            entry.1 = Stage::Pending;
        }
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: crate::time::format_rfc3339(crate::time::now_millis()),
            unwritten: 0,
            stage: Stage::Pending,
            bound,
        });
        outage.stage = Stage::Pending;
        outage.unwritten += dropped;
        outage.bound = bound;
        self.lost += dropped;
        dropped
    }
}

/// A group taken from the buffer.
pub(crate) struct Group {
    pub buf: Vec<u8>,
    pub lines: u64,
    /// Proxy records in it.
    pub records: u64,
    /// The head after its last record.
    pub head: ChainHead,
    pub generation: u64,
    pub since_after: u64,
    /// Somebody waits for one of its records.
    pub waited: bool,
    /// It carries the pending header / `resumed` record.
    pub header: bool,
    pub resumed: bool,
}

/// The last durable point of the chain (the writer's own view).
#[derive(Debug, Clone)]
pub(crate) struct Durable {
    pub head: ChainHead,
    pub since_checkpoint: u64,
}

/// Publishes progress to waiters.
pub(crate) struct Publisher {
    tx: watch::Sender<Progress>,
}

impl Publisher {
    pub fn new() -> (Publisher, watch::Receiver<Progress>) {
        let (tx, rx) = watch::channel(Progress::default());
        (Publisher { tx }, rx)
    }

    /// Everything of `generation` up to `seq` is durable.
    pub fn durable(&self, generation: u64, seq: u64) {
        self.tx.send_modify(|p| {
            p.generation = generation;
            p.durable = seq;
        });
    }

    /// `generation` ended (its records after `seq` are dropped).
    pub fn ended(&self, generation: u64, seq: u64, error: &str) {
        self.tx.send_modify(|p| {
            let mut finals = (*p.finals).clone();
            finals.push_back((generation, seq));
            while finals.len() > FINALS_KEPT {
                finals.pop_front();
            }
            p.finals = Arc::new(finals);
            p.generation = generation + 1;
            p.durable = seq;
            p.error = Some(Arc::from(error));
        });
    }
}
