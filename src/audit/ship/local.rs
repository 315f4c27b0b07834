//! Reading the local chain for shipping (blocking I/O: runs on the
//! shipper's own reader thread). Files are read in the writer's order —
//! rotated files (`<path>.<last seq>`, oldest first), then the live file —
//! and each belongs to the chain named by its first line (a file without one
//! belongs to the next file that names one, AUDIT_CHAIN.md point 1).
//!
//! Where reading starts is not kept in a local cursor file: it is the
//! central table itself. For each chain the reader asks (through the
//! shipper) for the highest `seq` stored for this instance, and skips lines
//! up to it; so nothing local can ever claim a record is stored when it is
//! not (a database restored from a backup gets the missing records again).
//!
//! In the live file only records with `seq <= durable_seq()` are read (a
//! record not yet durable could vanish in a crash and its seq be reused).
//! Every line's own hash is checked; a line that fails is refused — never
//! shipped, reported with its place so the shipper records it centrally —
//! and reading goes on, so one bad line never stalls the pipeline.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::row::{self, Refusal, Row};
use crate::audit::chain;
use crate::audit::rotate::rotated_files;

/// Longest line the reader accepts (a record is well under 64 KiB; a longer
/// "line" is not a record and is refused in pieces of this size).
const MAX_LINE: usize = 1024 * 1024;
/// How much of a refused line is kept as evidence.
const MAX_EVIDENCE: usize = 64 * 1024;

/// Where shipping stands in one chain: the last seq stored centrally or
/// handed out in a batch, and that record's hash when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub hash: Option<String>,
}

/// A line that was refused, with enough to find it again.
#[derive(Debug, Clone)]
pub struct RefusedLine {
    /// The last good seq before it in the chain.
    pub after_seq: u64,
    /// Its own `seq`, when that much is readable (not to be trusted).
    pub seq: Option<u64>,
    pub file: PathBuf,
    /// 1-based line number in `file` at the time it was read.
    pub line: u64,
    pub reason: Refusal,
    /// SHA-256 hex of the whole line.
    pub sha256: String,
    /// The line (at most 64 KiB of it).
    pub content: Vec<u8>,
}

/// A rotated file whose records are all handed out (or were stored before).
#[derive(Debug, Clone)]
pub struct FileDone {
    pub path: PathBuf,
    pub chain: String,
    /// The file's last seq (from its name).
    pub last_seq: u64,
    /// The last seq of the rotated file before it in the chain (0 if none):
    /// refusals of this file have `after_seq` in `[prev_last, last_seq)`.
    pub prev_last: u64,
    /// Its last line, for the read-back check (None if unreadable).
    pub last_record: Option<String>,
}

/// Records of one chain to store, and what the batch completes.
#[derive(Debug, Default)]
pub struct Batch {
    pub chain: String,
    pub rows: Vec<Row>,
    pub refused: Vec<RefusedLine>,
    pub files_done: Vec<FileDone>,
    /// Bytes of the records in `rows`.
    pub bytes: usize,
    /// Local chain faults noticed (a gap or a broken link between two good
    /// lines): shipped as they are, `audit verify --postgres` names them.
    pub breaks: u64,
    /// A line with the stored last seq differed from the stored record.
    pub conflicts: u64,
    /// The live file's chain at the last listing.
    pub live_chain: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.refused.is_empty() && self.files_done.is_empty()
    }
}

/// What one call of `Reader::fill` produced.
#[derive(Debug)]
pub enum Fill {
    Batch(Batch),
    /// The stored position of this chain is needed before reading on.
    NeedPosition(String),
    /// Nothing to read now.
    Idle(Idle),
}

/// The state of the local log when there is nothing to read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Idle {
    /// The live file's chain, when it names one yet.
    pub live_chain: Option<String>,
    /// The watermark of the live file.
    pub durable_seq: u64,
    /// The last seq of the live chain read so far (handed out or stored).
    pub head_seq: u64,
    /// Why nothing can be shipped although files exist, if so.
    pub blocked: Option<String>,
}

/// The first line of a file: its chain and seq.
#[derive(Debug, Clone, Default)]
struct Head {
    chain: Option<String>,
    complete: bool,
}

/// One file of the local log, as listed.
#[derive(Debug, Clone)]
struct Listed {
    path: PathBuf,
    live: bool,
    /// Last seq of a rotated file (from its name).
    last_seq: u64,
    id: (u64, u64),
    /// The chain it belongs to (resolved).
    chain: Option<String>,
}

/// The file being read.
struct Open {
    path: PathBuf,
    live: bool,
    id: (u64, u64),
    chain: String,
    last_seq: u64,
    prev_last: u64,
    reader: BufReader<File>,
    /// Offset of the next unread line.
    offset: u64,
    line_no: u64,
    /// seq of the last good line read from this chain's stream (shipped or
    /// skipped as stored); refusals are placed after it.
    prev_seq: u64,
    last_record: Option<String>,
}

/// Reads batches from the local log at `path`.
pub struct Reader {
    path: PathBuf,
    watermark: Box<dyn Fn() -> u64 + Send>,
    batch_records: usize,
    batch_bytes: usize,
    positions: HashMap<String, Position>,
    heads: HashMap<(u64, u64), Head>,
    open: Option<Open>,
    /// Rotated files already reported done (reported once per process).
    reported: HashSet<PathBuf>,
    /// The live file's chain at the last listing.
    live_chain: Option<String>,
}

/// `(dev, inode)` of a file.
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The last seq in a rotated file's name.
pub fn rotated_seq_of(path: &Path) -> u64 {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

impl Reader {
    pub fn new(
        path: &Path,
        watermark: Box<dyn Fn() -> u64 + Send>,
        batch_records: usize,
        batch_bytes: usize,
    ) -> Reader {
        Reader {
            path: path.to_path_buf(),
            watermark,
            batch_records: batch_records.max(1),
            batch_bytes: batch_bytes.max(1),
            positions: HashMap::new(),
            heads: HashMap::new(),
            open: None,
            reported: HashSet::new(),
            live_chain: None,
        }
    }

    /// Sets where a chain stands centrally (the answer to `NeedPosition`).
    /// A position is only ever moved forward.
    pub fn set_position(&mut self, chain: &str, pos: Position) {
        let entry = self.positions.entry(chain.to_string()).or_default();
        if pos.seq >= entry.seq {
            *entry = pos;
        }
    }

    /// Reads the next batch (at most `batch_records` records / about
    /// `batch_bytes` bytes, all of one chain).
    pub fn fill(&mut self) -> io::Result<Fill> {
        let mut fill = self.fill_batch()?;
        if let Fill::Batch(b) = &mut fill {
            b.live_chain.clone_from(&self.live_chain);
        }
        Ok(fill)
    }

    fn fill_batch(&mut self) -> io::Result<Fill> {
        let mut batch = Batch::default();
        loop {
            if self.open.is_none() {
                match self.next_file(&mut batch)? {
                    Next::Opened => {}
                    Next::NeedPosition(chain) if batch.is_empty() => {
                        return Ok(Fill::NeedPosition(chain))
                    }
                    Next::Idle(idle) if batch.is_empty() => return Ok(Fill::Idle(idle)),
                    Next::NeedPosition(_) | Next::Idle(_) => return Ok(Fill::Batch(batch)),
                }
            }
            let Some(open) = self.open.as_ref() else {
                continue;
            };
            if !batch.is_empty() && batch.chain != open.chain {
                return Ok(Fill::Batch(batch));
            }
            batch.chain.clone_from(&open.chain);
            match self.read_open(&mut batch)? {
                Progress::Full => return Ok(Fill::Batch(batch)),
                Progress::FileEnded => {}
                Progress::Waiting if batch.is_empty() => {
                    return Ok(Fill::Idle(self.idle(None)));
                }
                Progress::Waiting => return Ok(Fill::Batch(batch)),
            }
        }
    }

    fn idle(&self, blocked: Option<String>) -> Idle {
        let live_chain = self
            .open
            .as_ref()
            .filter(|o| o.live)
            .map(|o| o.chain.clone());
        let head_seq = live_chain
            .as_ref()
            .and_then(|c| self.positions.get(c))
            .map_or(0, |p| p.seq);
        Idle {
            live_chain,
            durable_seq: (self.watermark)(),
            head_seq,
            blocked,
        }
    }

    /// Lists the files with their chains.
    fn list(&mut self) -> io::Result<Vec<Listed>> {
        let mut paths: Vec<(PathBuf, bool)> = rotated_files(&self.path)?
            .into_iter()
            .map(|p| (p, false))
            .collect();
        if self.path.exists() {
            paths.push((self.path.clone(), true));
        }
        let mut listed = Vec::with_capacity(paths.len());
        for (path, live) in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                // Deleted or renamed between listing and here: the next
                // listing sees it under its new name.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let id = file_id(&meta);
            let head = match self.heads.get(&id) {
                Some(h) => h.clone(),
                None => {
                    let h = read_head(&path)?;
                    if h.complete {
                        self.heads.insert(id, h.clone());
                    }
                    h
                }
            };
            listed.push(Listed {
                last_seq: if live {
                    u64::MAX
                } else {
                    rotated_seq_of(&path)
                },
                path,
                live,
                id,
                chain: head.chain,
            });
        }
        // A file without a chain header belongs to the next one naming it.
        let mut next_named: Option<String> = None;
        for f in listed.iter_mut().rev() {
            match &f.chain {
                Some(c) => next_named = Some(c.clone()),
                None => f.chain.clone_from(&next_named),
            }
        }
        if let Some(live) = listed.iter().find(|f| f.live) {
            self.live_chain.clone_from(&live.chain);
        }
        Ok(listed)
    }

    /// Opens the first file that holds records not yet handed out.
    fn next_file(&mut self, batch: &mut Batch) -> io::Result<Next> {
        let listed = self.list()?;
        let mut prev_last: HashMap<String, u64> = HashMap::new();
        for f in &listed {
            let Some(chain) = f.chain.clone() else {
                let why = if f.live {
                    "the live file does not name its chain yet".to_string()
                } else {
                    format!("{} names no chain and no later file does", f.path.display())
                };
                return Ok(Next::Idle(self.idle(Some(why))));
            };
            let Some(pos) = self.positions.get(&chain).cloned() else {
                return Ok(Next::NeedPosition(chain));
            };
            let before = prev_last.insert(chain.clone(), f.last_seq).unwrap_or(0);
            if !f.live && self.reported.contains(&f.path) {
                // Read to its end in this process already (a refused line
                // may keep its last seq above the position: not again).
                continue;
            }
            if !f.live && f.last_seq <= pos.seq {
                if !batch.is_empty() && batch.chain != chain {
                    return Ok(Next::Idle(self.idle(None)));
                }
                if self.reported.insert(f.path.clone()) {
                    batch.chain.clone_from(&chain);
                    batch.files_done.push(FileDone {
                        path: f.path.clone(),
                        chain,
                        last_seq: f.last_seq,
                        prev_last: before,
                        last_record: last_line(&f.path).ok().flatten(),
                    });
                }
                continue;
            }
            let file = match File::open(&f.path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Next::Idle(self.idle(None)))
                }
                Err(e) => return Err(e),
            };
            self.open = Some(Open {
                path: f.path.clone(),
                live: f.live,
                id: f.id,
                chain,
                last_seq: f.last_seq,
                prev_last: before,
                reader: BufReader::with_capacity(256 * 1024, file),
                offset: 0,
                line_no: 0,
                prev_seq: before,
                last_record: None,
            });
            return Ok(Next::Opened);
        }
        Ok(Next::Idle(self.idle(None)))
    }

    /// Reads lines of the open file into `batch`.
    fn read_open(&mut self, batch: &mut Batch) -> io::Result<Progress> {
        let mut buf = Vec::with_capacity(1024);
        loop {
            if batch.rows.len() >= self.batch_records || batch.bytes >= self.batch_bytes {
                return Ok(Progress::Full);
            }
            let Some(open) = self.open.as_mut() else {
                return Ok(Progress::FileEnded);
            };
            let pos = self.positions.entry(open.chain.clone()).or_default();
            // In the live file nothing is examined (not even garbage)
            // unless a record after the last one handed out is durable: it
            // lies at or after this line, so this line is durable too.
            let durable = if open.live {
                (self.watermark)()
            } else {
                u64::MAX
            };
            if open.live && durable <= pos.seq && open.prev_seq >= pos.seq {
                return self.at_end(batch);
            }
            buf.clear();
            let n = (&mut open.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)?;
            if n == 0 {
                return self.at_end(batch);
            }
            let Some(line) = buf.strip_suffix(b"\n") else {
                if open.live && n < MAX_LINE {
                    // Being written: read it again once it is complete.
                    open.reader.seek(SeekFrom::Start(open.offset))?;
                    return self.at_end(batch);
                }
                open.offset += n as u64;
                open.line_no += 1;
                let reason = if n < MAX_LINE {
                    Refusal::Torn
                } else {
                    Refusal::Unreadable("line longer than 1 MiB".into())
                };
                refuse(open, pos, &buf, reason, batch);
                continue;
            };
            let parsed = row::parse(line);
            if let Ok(r) = &parsed {
                if open.live && r.seq > durable && r.seq > pos.seq {
                    // Not durable yet: leave it for the next round.
                    open.reader.seek(SeekFrom::Start(open.offset))?;
                    return self.at_end(batch);
                }
            }
            open.offset += n as u64;
            open.line_no += 1;
            match parsed {
                Ok(r) => take_row(open, pos, r, batch),
                Err(reason) => refuse(open, pos, line, reason, batch),
            }
        }
    }

    /// The open file has nothing more now: a rotated file is done; the live
    /// file is either still live (wait) or was renamed/replaced (move on).
    fn at_end(&mut self, batch: &mut Batch) -> io::Result<Progress> {
        let Some(open) = self.open.as_mut() else {
            return Ok(Progress::FileEnded);
        };
        if open.live {
            let replaced = match std::fs::metadata(&self.path) {
                Ok(m) => file_id(&m) != open.id || m.len() < open.offset,
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            if !replaced {
                return Ok(Progress::Waiting);
            }
            // Renamed by a rotation (its content is final and durable) or
            // replaced by the writer: the next listing finds both anew.
            self.open = None;
            return Ok(Progress::FileEnded);
        }
        let done = FileDone {
            path: open.path.clone(),
            chain: open.chain.clone(),
            last_seq: open.last_seq,
            prev_last: open.prev_last,
            last_record: open.last_record.take(),
        };
        self.reported.insert(done.path.clone());
        batch.files_done.push(done);
        self.open = None;
        Ok(Progress::FileEnded)
    }
}

enum Next {
    Opened,
    NeedPosition(String),
    Idle(Idle),
}

enum Progress {
    Full,
    FileEnded,
    Waiting,
}

/// A good line: skipped when already stored, else added to the batch.
fn take_row(open: &mut Open, pos: &mut Position, r: Row, batch: &mut Batch) {
    open.last_record = Some(r.record.clone());
    let shipping = open.prev_seq >= pos.seq;
    if r.seq <= pos.seq && !shipping {
        if r.seq == pos.seq && pos.hash.as_ref().is_some_and(|h| *h != r.hash) {
            tracing::error!(
                chain = %open.chain,
                seq = r.seq,
                file = %open.path.display(),
                "audit shipping: the local record differs from the one stored under the same seq (a forked chain); the rest is shipped, `audit verify --postgres` will name the break"
            );
            batch.conflicts += 1;
        }
        open.prev_seq = r.seq;
        return;
    }
    if r.seq <= open.prev_seq {
        let reason = Refusal::NotIncreasing {
            found: r.seq,
            after: open.prev_seq,
        };
        let record = r.record.into_bytes();
        refuse(open, pos, &record, reason, batch);
        return;
    }
    let linked = pos.hash.as_ref().is_none_or(|h| *h == r.prev_hash);
    if r.seq != pos.seq + 1 || !linked {
        tracing::warn!(
            chain = %open.chain,
            seq = r.seq,
            after = pos.seq,
            file = %open.path.display(),
            line = open.line_no,
            "audit shipping: the local chain is broken here (a record missing or replaced); shipping on"
        );
        batch.breaks += 1;
    }
    open.prev_seq = r.seq;
    *pos = Position {
        seq: r.seq,
        hash: Some(r.hash.clone()),
    };
    batch.bytes += r.record.len();
    batch.rows.push(r);
}

/// A line that is not shipped. In the part of a file already stored (read
/// again after a restart) it was handled before and is passed over quietly.
fn refuse(open: &mut Open, pos: &Position, line: &[u8], reason: Refusal, batch: &mut Batch) {
    if open.prev_seq < pos.seq {
        return;
    }
    let seq = chain::parse_line(line).ok().map(|p| p.seq);
    tracing::error!(
        chain = %open.chain,
        file = %open.path.display(),
        line = open.line_no,
        after_seq = open.prev_seq,
        reason = %reason,
        "audit shipping: refusing a local line (not shipped; recorded in audit_ship_refusals; the file is kept)"
    );
    batch.refused.push(RefusedLine {
        after_seq: open.prev_seq,
        seq,
        file: open.path.clone(),
        line: open.line_no,
        reason,
        sha256: hex::encode(Sha256::digest(line)),
        content: line
            .get(..line.len().min(MAX_EVIDENCE))
            .unwrap_or_default()
            .to_vec(),
    });
}

/// The chain named by a file's first line (and whether that line is complete).
fn read_head(path: &Path) -> io::Result<Head> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Head::default()),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    BufReader::new(file)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    let Some(text) = line.strip_suffix(b"\n") else {
        return Ok(Head::default());
    };
    let chain = std::str::from_utf8(text)
        .ok()
        .and_then(|t| row::columns_of(t).ok())
        .and_then(|(_, cols)| cols.chain);
    Ok(Head {
        chain,
        complete: true,
    })
}

/// The last complete line of a file (without its `\n`), reading from the end.
pub fn last_line(path: &Path) -> io::Result<Option<String>> {
    const BLOCK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; usize::try_from(start - from).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
        // The last line ends with the final `\n`; it starts after the one before.
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            let line = body.get(i + 1..).unwrap_or_default();
            return Ok(String::from_utf8(line.to_vec()).ok());
        }
        if from == 0 || tail.len() > MAX_LINE {
            return Ok(String::from_utf8(body.to_vec())
                .ok()
                .filter(|s| !s.is_empty()));
        }
        start = from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{encode_body, ChainHead};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Writes `n` records of chain `c` (a chain_start first) into `path`.
    fn write(path: &Path, head: &mut ChainHead, n: u64, header: Option<&str>) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..n {
            let body = match (i, header) {
                (0, Some(c)) if head.seq == 0 => {
                    serde_json::json!({"event":"chain_start","chain":c,"instance":"i-0","cause":"new_log"})
                }
                (0, Some(c)) => {
                    serde_json::json!({"event":"file_start","chain":c,"instance":"i-0","cause":"rotated"})
                }
                _ => {
                    serde_json::json!({"event":"decision","request_id":format!("r{}", head.seq + 1),"owner":"u1"})
                }
            };
            let enc = encode_body(head, "2026-12-01T10:00:00.000Z", &body).unwrap();
            *head = enc.head;
            lines.push(String::from_utf8(enc.line).unwrap());
        }
        let mut text = std::fs::read_to_string(path).unwrap_or_default();
        text.push_str(&lines.concat());
        std::fs::write(path, text).unwrap();
        lines
    }

    fn reader(path: &Path, wm: Arc<AtomicU64>) -> Reader {
        Reader::new(
            path,
            Box::new(move || wm.load(Ordering::SeqCst)),
            4,
            1 << 20,
        )
    }

    fn all_rows(r: &mut Reader) -> (Vec<u64>, Vec<FileDone>, Vec<RefusedLine>) {
        let (mut seqs, mut done, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..100 {
            match r.fill().unwrap() {
                Fill::Batch(b) => {
                    seqs.extend(b.rows.iter().map(|r| r.seq));
                    done.extend(b.files_done);
                    refused.extend(b.refused);
                }
                Fill::NeedPosition(c) => r.set_position(&c, Position::default()),
                Fill::Idle(_) => break,
            }
        }
        (seqs, done, refused)
    }

    #[test]
    fn rotated_files_then_the_live_file_up_to_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let mut head = ChainHead::genesis();
        write(
            &crate::audit::rotate::rotated_path(&live, 5),
            &mut head,
            5,
            Some("c1"),
        );
        write(&live, &mut head, 5, Some("c1"));
        let wm = Arc::new(AtomicU64::new(8));
        let mut r = reader(&live, wm.clone());
        let (seqs, done, _) = all_rows(&mut r);
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].last_seq, 5);
        assert_eq!(done[0].chain, "c1");
        assert!(done[0]
            .last_record
            .as_deref()
            .unwrap()
            .contains("\"seq\":5,"));
        wm.store(10, Ordering::SeqCst);
        let (seqs, done, _) = all_rows(&mut r);
        assert_eq!(seqs, vec![9, 10]);
        assert!(done.is_empty());
    }

    #[test]
    fn a_stored_position_is_skipped_and_a_rotation_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let mut head = ChainHead::genesis();
        write(&live, &mut head, 6, Some("c1"));
        let wm = Arc::new(AtomicU64::new(u64::MAX));
        let mut r = reader(&live, wm);
        assert!(matches!(r.fill().unwrap(), Fill::NeedPosition(c) if c == "c1"));
        r.set_position("c1", Position { seq: 3, hash: None });
        let (seqs, _, _) = all_rows(&mut r);
        assert_eq!(seqs, vec![4, 5, 6]);
        // The writer rotates: rename, then a new live file with file_start.
        std::fs::rename(&live, crate::audit::rotate::rotated_path(&live, 6)).unwrap();
        let enc = encode_body(
            &head,
            "2026-12-01T10:00:01.000Z",
            &serde_json::json!({"event":"file_start","chain":"c1","instance":"i-0","cause":"rotated"}),
        )
        .unwrap();
        head = enc.head.clone();
        std::fs::write(&live, &enc.line).unwrap();
        write(&live, &mut head, 2, None);
        let (seqs, done, _) = all_rows(&mut r);
        assert_eq!(seqs, vec![7, 8, 9]);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].last_seq, 6);
    }

    #[test]
    fn garbage_is_refused_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let mut head = ChainHead::genesis();
        let lines = write(&live, &mut head, 5, Some("c1"));
        let text = lines.concat().replace("\"r3\"", "\"rX\"");
        std::fs::write(&live, format!("{text}not json at all\n")).unwrap();
        write(&live, &mut head, 1, None);
        let mut r = reader(&live, Arc::new(AtomicU64::new(u64::MAX)));
        let (seqs, _, refused) = all_rows(&mut r);
        assert_eq!(seqs, vec![1, 2, 4, 5, 6]);
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[0].reason, Refusal::Modified);
        assert_eq!(
            (refused[0].after_seq, refused[0].seq, refused[0].line),
            (2, Some(3), 3)
        );
        assert!(matches!(refused[1].reason, Refusal::Unreadable(_)));
        assert_eq!(refused[1].after_seq, 5);
    }

    #[test]
    fn an_incomplete_last_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let mut head = ChainHead::genesis();
        let lines = write(&live, &mut head, 2, Some("c1"));
        let mut text = lines.concat();
        let more = write(&dir.path().join("x"), &mut head, 1, None);
        text.push_str(&more[0][..20]);
        std::fs::write(&live, &text).unwrap();
        let mut r = reader(&live, Arc::new(AtomicU64::new(u64::MAX)));
        let (seqs, _, refused) = all_rows(&mut r);
        assert_eq!((seqs, refused.len()), (vec![1, 2], 0));
        text.push_str(&more[0][20..]);
        std::fs::write(&live, &text).unwrap();
        let (seqs, _, _) = all_rows(&mut r);
        assert_eq!(seqs, vec![3]);
    }

    #[test]
    fn last_line_reads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "a\nbb\n").unwrap();
        assert_eq!(last_line(&p).unwrap().as_deref(), Some("bb"));
        let long = "x".repeat(200_000);
        std::fs::write(&p, format!("a\n{long}\n")).unwrap();
        assert_eq!(last_line(&p).unwrap(), Some(long));
        std::fs::write(&p, "").unwrap();
        assert_eq!(last_line(&p).unwrap(), None);
    }
}
