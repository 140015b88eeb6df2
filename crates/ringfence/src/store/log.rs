//! The record log: the durable half of the embedded write path.
//!
//! Why a log in front of SQLite: a decision is acknowledged once it is durable, and the
//! cheapest durable write there is is one sequential append and one `fdatasync` for a whole
//! group of records. SQLite's B-tree inserts (the `transactions` table and its id index, the
//! entity index, alerts, the outbox) and its WAL frames and checkpoints then run on the
//! indexer thread ([`super::sqlite`]), off the acknowledgement path, in large transactions.
//!
//! # Files
//! Segments `<data>/log/<n>.seg`, numbered from 1. Each is preallocated ([`SEGMENT_BYTES`],
//! `fallocate`) before it is needed, so an append only writes data blocks, and running out of
//! space shows when the *next* segment is allocated, while the current one still has room for
//! what was already accepted. A segment is deleted once every entry in it is indexed and
//! SQLite has checkpointed it.
//!
//! # Entries
//! `len: u32 | crc32: u32 | seq: i64 | payload[len]` (little endian); the CRC covers `seq` and
//! the payload. Sequence numbers follow each other by one across segments. A preallocated
//! segment reads as zeros, so a zero length ends the entries. At open, the first entry that
//! does not check (torn by a crash, bad CRC, out of sequence) ends the log: nothing after it
//! was acknowledged (each group is acknowledged after its `fdatasync`), and the bytes after it
//! are zeroed so that later appends cannot be followed by stale entries.
//!
//! # Payloads
//! Each entry holds what the indexer writes, already encoded ([`encode`]): SQL parameters and
//! the JSON texts, so indexing never serialises JSON again and a restart indexes the tail
//! with the same code as the live path.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{StoreError, WriteOp};

/// Preallocated size of one segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes before each payload: length, CRC, sequence number.
pub const HEADER: usize = 16;

const TAG_TX: u8 = 1;
const TAG_LABEL: u8 = 2;
const TAG_SITE_OFFSET: u8 = 3;

/// Appends the frame of entry `seq` holding `op` to `out`.
pub fn append_entry(out: &mut Vec<u8>, seq: i64, op: &WriteOp) -> Result<(), StoreError> {
    let at = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    encode(out, op)?;
    let len = (out.len() - at - HEADER) as u32;
    out[at + 8..at + 16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[at + 8..]);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One entry found in a buffer: its sequence number, payload and where the next begins.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Sequence number.
    pub seq: i64,
    /// Encoded [`IndexOp`].
    pub payload: &'a [u8],
    /// Offset of the next frame.
    pub next: usize,
}

/// The frame at `pos` of `buf`, or `None` when there is none that checks (end of entries,
/// torn write, bad CRC).
pub fn frame_at(buf: &[u8], pos: usize) -> Option<Frame<'_>> {
    let header = buf.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let end = pos.checked_add(HEADER)?.checked_add(len)?;
    let checked = buf.get(pos + 8..end)?;
    if crc32fast::hash(checked) != crc {
        return None;
    }
    let seq = i64::from_le_bytes(header[8..16].try_into().ok()?);
    Some(Frame {
        seq,
        payload: &buf[pos + HEADER..end],
        next: end,
    })
}

// ---- payload encoding -------------------------------------------------------------------

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// [`put_str`] of `v`'s JSON, encoded in place (no string of its own).
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), StoreError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Encodes what the indexer writes for `op` (see [`IndexOp`]).
pub fn encode(out: &mut Vec<u8>, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::Tx(rec) => {
            let tx = &rec.tx;
            let d = &rec.decision.decision;
            out.push(TAG_TX);
            put_str(out, tx.transaction_id.as_str());
            out.extend_from_slice(&tx.timestamp.millis().to_le_bytes());
            out.extend_from_slice(&tx.amount.to_le_bytes());
            put_str(out, d.decision.as_str());
            out.extend_from_slice(&d.score.to_le_bytes());
            out.push(d.alert as u8);
            put_json(out, tx)?;
            put_json(out, &rec.decision)?;
            match &rec.origin {
                Some(o) => {
                    out.push(1);
                    put_str(out, &o.site);
                    out.extend_from_slice(&o.seq.to_le_bytes());
                }
                None => out.push(0),
            }
            put_opt_str(out, rec.alert_event.as_deref());
            out.push(rec.decision.degraded as u8);
            let entities = super::entity_keys(tx);
            out.extend_from_slice(&(entities.len() as u32).to_le_bytes());
            for e in &entities {
                put_str(out, e);
            }
            out.extend_from_slice(&(rec.conflicts.len() as u32).to_le_bytes());
            for c in &rec.conflicts {
                put_str(out, &c.key());
                put_json(out, c)?;
                put_json(out, &[super::sqlite::conflict_reason(c)])?;
            }
            // Every decision above approve is queued for analysts, escalations included.
            if d.decision > ringfence_core::decision::Action::Approve {
                out.push(1);
                put_opt_str(out, d.account.as_deref());
                put_str(
                    out,
                    d.reasons.first().map_or("score", |r| r.category.as_str()),
                );
                put_json(out, &d.reasons)?;
            } else {
                out.push(0);
            }
        }
        WriteOp::Label(l) => {
            out.push(TAG_LABEL);
            put_str(out, &l.transaction_id);
            out.push(l.fraud as u8);
            match l.previous {
                Some(p) => out.extend_from_slice(&[1, p as u8]),
                None => out.push(0),
            }
            put_opt_str(out, l.source.as_deref());
            put_opt_str(out, l.note.as_deref());
            out.extend_from_slice(&l.labeled_at.millis().to_le_bytes());
        }
        WriteOp::SiteOffset(o) => {
            out.push(TAG_SITE_OFFSET);
            put_str(out, &o.site);
            out.extend_from_slice(&o.seq.to_le_bytes());
        }
        WriteOp::Close => {
            return Err(StoreError::Corrupt("a close is not a record".into()));
        }
    }
    Ok(())
}

/// A decided transaction as the indexer writes it.
#[derive(Debug)]
pub struct IndexTx<'a> {
    /// Transaction id.
    pub id: &'a str,
    /// Event time (ms).
    pub ts: i64,
    /// Amount.
    pub amount: f64,
    /// Decision (`approve`, ...).
    pub action: &'a str,
    /// Score.
    pub score: f64,
    /// The ladder's alert flag.
    pub alert: bool,
    /// The transaction as JSON.
    pub event: &'a str,
    /// The decision record as JSON.
    pub decision: &'a str,
    /// Site and sequence number there, for a replicated record.
    pub origin: Option<(&'a str, i64)>,
    /// Alert for the outbox (JSON).
    pub alert_event: Option<&'a str>,
    /// Decided while the shared log was unreachable.
    pub degraded: bool,
    /// Entity keys (`kind:id`).
    pub entities: Vec<&'a str>,
    /// Cross-site conflicts: key, conflict JSON, alert reasons JSON.
    pub conflicts: Vec<(&'a str, &'a str, &'a str)>,
    /// The analysts' queue row: account, category, reasons JSON.
    pub alert_row: Option<(Option<&'a str>, &'a str, &'a str)>,
}

/// A decoded log payload.
#[derive(Debug)]
pub enum IndexOp<'a> {
    /// A decided transaction.
    Tx(Box<IndexTx<'a>>),
    /// A label: transaction id, verdict, previous verdict, source, note, time (ms).
    Label {
        /// The labelled transaction.
        transaction_id: &'a str,
        /// Verdict.
        fraud: bool,
        /// The verdict replaced.
        previous: Option<bool>,
        /// Who gave it.
        source: Option<&'a str>,
        /// Note.
        note: Option<&'a str>,
        /// When (ms).
        labeled_at: i64,
    },
    /// A replicated record already held: the site's offset moves.
    SiteOffset {
        /// The site.
        site: &'a str,
        /// Its sequence number.
        seq: i64,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| StoreError::Corrupt("log payload ends early".into()))?;
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, StoreError> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    fn str(&mut self) -> Result<&'a str, StoreError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| StoreError::Corrupt("log payload holds invalid UTF-8".into()))
    }
    fn opt_str(&mut self) -> Result<Option<&'a str>, StoreError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        })
    }
}

/// Decodes a payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<IndexOp<'_>, StoreError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    Ok(match r.u8()? {
        TAG_TX => {
            let id = r.str()?;
            let ts = r.i64()?;
            let amount = r.f64()?;
            let action = r.str()?;
            let score = r.f64()?;
            let alert = r.u8()? != 0;
            let event = r.str()?;
            let decision = r.str()?;
            let origin = match r.u8()? {
                0 => None,
                _ => Some((r.str()?, r.i64()?)),
            };
            let alert_event = r.opt_str()?;
            let degraded = r.u8()? != 0;
            let n = r.u32()? as usize;
            let mut entities = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                entities.push(r.str()?);
            }
            let n = r.u32()? as usize;
            let mut conflicts = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                conflicts.push((r.str()?, r.str()?, r.str()?));
            }
            let alert_row = match r.u8()? {
                0 => None,
                _ => Some((r.opt_str()?, r.str()?, r.str()?)),
            };
            IndexOp::Tx(Box::new(IndexTx {
                id,
                ts,
                amount,
                action,
                score,
                alert,
                event,
                decision,
                origin,
                alert_event,
                degraded,
                entities,
                conflicts,
                alert_row,
            }))
        }
        TAG_LABEL => IndexOp::Label {
            transaction_id: r.str()?,
            fraud: r.u8()? != 0,
            previous: match r.u8()? {
                0 => None,
                _ => Some(r.u8()? != 0),
            },
            source: r.opt_str()?,
            note: r.opt_str()?,
            labeled_at: r.i64()?,
        },
        TAG_SITE_OFFSET => IndexOp::SiteOffset {
            site: r.str()?,
            seq: r.i64()?,
        },
        tag => return Err(StoreError::Corrupt(format!("unknown log entry kind {tag}"))),
    })
}

// ---- segment files ------------------------------------------------------------------------

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:010}.seg"))
}

/// Reserves `len` bytes for `file` (so later writes into them need no allocation).
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: `fallocate` reads only its integer arguments; the descriptor is owned by `file`,
    // which outlives the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates segment `n`, preallocated and durable in its directory.
fn create_segment(dir: &Path, n: u64, len: u64) -> std::io::Result<File> {
    let path = segment_path(dir, n);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if let Err(e) = preallocate(&file, len).and_then(|()| file.sync_all()) {
        drop(file);
        // A half-made segment would be taken for the next one at open: remove it.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes zeros over `from..to` of `file` and makes them durable.
fn zero(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// Whether an IO error means the disk is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// What [`LogFiles::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The files, positioned after the last entry.
    pub files: LogFiles,
    /// The last entry's sequence number, if the log holds any.
    pub last_seq: Option<i64>,
}

/// The segment files and the append position (owned by the log-writer thread; the indexer
/// takes closed segments off [`LogFiles::closed`] to delete them).
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    segment_bytes: u64,
    current: File,
    current_n: u64,
    offset: u64,
    /// Last sequence number written to the current segment.
    current_last: Option<i64>,
    spare: Option<File>,
    /// Where a failed append may have left bytes (from, to): zeroed before the next append.
    dirty: Option<(u64, u64)>,
}

impl LogFiles {
    /// Opens the log in `dir` (creating it), calls `each` with every entry whose sequence
    /// number is above `after`, in order, one segment at a time (`each` gets the segment's
    /// bytes and the frames' offsets), cuts a torn tail, and returns the files positioned for
    /// appending plus the segments that are complete (number, last sequence number).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        after: i64,
        mut each: impl FnMut(&[u8], &[usize]) -> Result<(), StoreError>,
    ) -> Result<(Opened, Vec<(u64, i64)>), StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut last_seq: Option<i64> = None;
        // Segments holding entries: (number, last seq, end offset).
        let mut with_data: Vec<(u64, i64, u64)> = Vec::new();
        let mut empty: Vec<u64> = Vec::new();
        for &n in &numbers {
            let bytes = std::fs::read(segment_path(dir, n))?;
            let mut pos = 0usize;
            let mut offsets = Vec::new();
            let mut seg_last = None;
            while let Some(f) = frame_at(&bytes, pos) {
                if let Some(prev) = last_seq {
                    if f.seq != prev + 1 {
                        if seg_last.is_none() {
                            // A whole entry out of sequence at the start of a segment is no
                            // torn write: records would be missing.
                            return Err(StoreError::Corrupt(format!(
                                "log segment {n} starts at sequence number {} after {prev}",
                                f.seq
                            )));
                        }
                        break;
                    }
                }
                if f.seq > after {
                    offsets.push(pos);
                }
                seg_last = Some(f.seq);
                last_seq = Some(f.seq);
                pos = f.next;
            }
            let Some(seg_last) = seg_last else {
                if bytes.iter().any(|&b| b != 0) {
                    // Not all zeros: a torn first append of this segment (never acknowledged).
                    tracing::warn!(segment = n, "log segment starts with a torn entry; cut");
                    let file = OpenOptions::new().write(true).open(segment_path(dir, n))?;
                    zero(&file, 0, bytes.len() as u64)?;
                }
                empty.push(n);
                continue;
            };
            if !empty.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "log segment {n} holds entries after an empty segment: the log is damaged"
                )));
            }
            each(&bytes, &offsets)?;
            if let Some(garbage_end) = bytes[pos..].iter().rposition(|&b| b != 0) {
                tracing::warn!(
                    segment = n,
                    offset = pos,
                    "log ends with a torn or unacknowledged entry; cut"
                );
                let file = OpenOptions::new().write(true).open(segment_path(dir, n))?;
                zero(&file, pos as u64, (pos + garbage_end + 1) as u64)?;
            }
            with_data.push((n, seg_last, pos as u64));
        }
        // The current segment: the last holding entries, else the first empty one, else new.
        let (current_n, offset, current_last) = match with_data.last() {
            Some(&(n, last, end)) => (n, end, Some(last)),
            None => (empty.first().copied().unwrap_or(1), 0, None),
        };
        let current = if numbers.contains(&current_n) {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(dir, current_n))?
        } else {
            create_segment(dir, current_n, segment_bytes)?
        };
        // An empty segment after the current one is the spare; any further ones go.
        let mut spare = None;
        for n in empty.iter().copied().filter(|&n| n > current_n) {
            if n == current_n + 1 {
                spare = Some(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(segment_path(dir, n))?,
                );
            } else {
                std::fs::remove_file(segment_path(dir, n))?;
            }
        }
        let closed = with_data
            .iter()
            .filter(|(n, _, _)| *n != current_n)
            .map(|&(n, last, _)| (n, last))
            .collect();
        let files = LogFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            current,
            current_n,
            offset,
            current_last,
            spare,
            dirty: None,
        };
        Ok((Opened { files, last_seq }, closed))
    }

    /// Appends `frames` (whole entries, `last_seq` the last of them) with one write and one
    /// `fdatasync`. Returns the segment closed to make room, if one was (number, last seq).
    /// On failure nothing counts as written: the next append goes to the same place, after
    /// [`LogFiles::repair`] succeeded.
    pub fn append(&mut self, frames: &[u8], last_seq: i64) -> std::io::Result<Option<(u64, i64)>> {
        if let Some((from, to)) = self.dirty {
            zero(&self.current, from, to)?;
            self.dirty = None;
        }
        let mut closed = None;
        if self.offset > 0 && self.offset + frames.len() as u64 > self.segment_bytes {
            let spare = match self.spare.take() {
                Some(f) => f,
                None => create_segment(&self.dir, self.current_n + 1, self.segment_bytes)?,
            };
            if let Some(last) = self.current_last {
                closed = Some((self.current_n, last));
            }
            self.current = spare;
            self.current_n += 1;
            self.offset = 0;
            self.current_last = None;
        }
        let at = self.offset;
        let written = self
            .current
            .write_all_at(frames, at)
            .and_then(|()| self.current.sync_data());
        if let Err(e) = written {
            self.dirty = Some((at, at + frames.len() as u64));
            return Err(e);
        }
        self.offset += frames.len() as u64;
        self.current_last = Some(last_seq);
        Ok(closed)
    }

    /// Makes sure the next segment is allocated (ahead of need). Err: no space for it.
    pub fn ensure_spare(&mut self) -> std::io::Result<()> {
        if self.spare.is_none() {
            self.spare = Some(create_segment(
                &self.dir,
                self.current_n + 1,
                self.segment_bytes,
            )?);
        }
        Ok(())
    }

    /// After a failed append: zeroes what it may have left and checks that writing works
    /// again (Err: it still does not).
    pub fn repair(&mut self) -> std::io::Result<()> {
        if let Some((from, to)) = self.dirty {
            zero(&self.current, from, to)?;
            self.dirty = None;
        }
        self.ensure_spare()
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Deletes segment `n` of the log in `dir`.
pub fn delete_segment(dir: &Path, n: u64) -> std::io::Result<()> {
    match std::fs::remove_file(segment_path(dir, n)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---- the id filter ------------------------------------------------------------------------

/// Hashes are uniformly distributed already: the set uses them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A 64-bit hash of every stored transaction id: answers "certainly not stored" without IO,
/// so a fresh client id costs no SQLite read. A hit (a duplicate, or one hash collision in
/// about 2^64 / ids) is checked against the store. Memory: 8 bytes per id plus the hash
/// table's control byte and spare capacity, 9 to 18 bytes per id (about 14 on average:
/// 14 MB per million stored transactions).
#[derive(Default)]
pub struct IdFilter {
    set: Mutex<HashSet<u64, BuildHasherDefault<IdentityHasher>>>,
}

impl std::fmt::Debug for IdFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdFilter")
            .field("ids", &self.len())
            .finish()
    }
}

fn id_hash(id: &str) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all the filter needs.
    let mut h = DefaultHasher::new();
    h.write(id.as_bytes());
    h.finish()
}

impl IdFilter {
    /// Whether `id` may be stored (false: certainly not).
    pub fn may_contain(&self, id: &str) -> bool {
        let h = id_hash(id);
        self.set.lock().map_or(true, |s| s.contains(&h))
    }

    /// Adds ids.
    pub fn insert<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut s) = self.set.lock() {
            for id in ids {
                s.insert(id_hash(id));
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.set.lock().map_or(0, |s| s.len())
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Segments that are complete, waiting until SQLite holds them durably: (number, last seq).
pub type ClosedSegments = Mutex<VecDeque<(u64, i64)>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LabelRecord, Origin};
    use ringfence_core::event::Timestamp;

    fn label(id: &str) -> WriteOp {
        WriteOp::Label(LabelRecord {
            transaction_id: id.into(),
            fraud: true,
            previous: Some(false),
            source: Some("analyst".into()),
            note: None,
            labeled_at: Timestamp::from_millis(42),
        })
    }

    fn frames(first: i64, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            append_entry(&mut out, first + i as i64, &label(&format!("tx{i}"))).expect("encode");
        }
        out
    }

    fn reopen(dir: &Path, after: i64) -> (Opened, Vec<i64>) {
        let mut seen = Vec::new();
        let (opened, _) = LogFiles::open(dir, 4096, after, |bytes, offsets| {
            for &o in offsets {
                let f = frame_at(bytes, o).expect("frame");
                assert!(matches!(
                    decode(f.payload).expect("decode"),
                    IndexOp::Label { .. }
                ));
                seen.push(f.seq);
            }
            Ok(())
        })
        .expect("open");
        (opened, seen)
    }

    #[test]
    fn payloads_round_trip() {
        let mut out = Vec::new();
        append_entry(&mut out, 7, &label("t1")).expect("encode");
        append_entry(
            &mut out,
            8,
            &WriteOp::SiteOffset(Origin {
                site: "north".into(),
                seq: 99,
            }),
        )
        .expect("encode");
        let a = frame_at(&out, 0).expect("first");
        assert_eq!(a.seq, 7);
        match decode(a.payload).expect("decode") {
            IndexOp::Label {
                transaction_id,
                fraud,
                previous,
                source,
                note,
                labeled_at,
            } => {
                assert_eq!(
                    (transaction_id, fraud, previous, source, note, labeled_at),
                    ("t1", true, Some(false), Some("analyst"), None, 42)
                );
            }
            other => panic!("not a label: {other:?}"),
        }
        let b = frame_at(&out, a.next).expect("second");
        assert_eq!(b.seq, 8);
        assert!(matches!(
            decode(b.payload).expect("decode"),
            IndexOp::SiteOffset {
                site: "north",
                seq: 99
            }
        ));
        assert!(frame_at(&out, b.next).is_none());
    }

    #[test]
    fn appends_survive_reopen_and_rotate_segments() {
        let dir = tempfile::tempdir().expect("dir");
        let (opened, seen) = reopen(dir.path(), 0);
        assert!(seen.is_empty());
        assert_eq!(opened.last_seq, None);
        let mut files = opened.files;
        let mut closed = Vec::new();
        for g in 0..20 {
            let buf = frames(1 + g * 5, 5);
            if let Some(c) = files.append(&buf, g * 5 + 5).expect("append") {
                closed.push(c);
            }
        }
        assert!(!closed.is_empty(), "4 KB segments must have rotated");
        drop(files);
        let (opened, seen) = reopen(dir.path(), 0);
        assert_eq!(seen, (1..=100).collect::<Vec<_>>());
        assert_eq!(opened.last_seq, Some(100));
        // Only what is above the indexed position is handed back.
        let (_, seen) = reopen(dir.path(), 97);
        assert_eq!(seen, vec![98, 99, 100]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_appends_are_not_followed_by_it() {
        let dir = tempfile::tempdir().expect("dir");
        let (opened, _) = reopen(dir.path(), 0);
        let mut files = opened.files;
        files.append(&frames(1, 3), 3).expect("append");
        // A group of three that reached the disk only in part (a crash mid-write): its
        // first entry whole, the second cut short.
        let group = frames(4, 3);
        let first_len = frame_at(&group, 0).expect("frame").next;
        let torn = &group[..first_len + 20];
        let at = files.offset;
        files.current.write_all_at(torn, at).expect("write");
        drop(files);
        let (opened, seen) = reopen(dir.path(), 0);
        assert_eq!(
            seen,
            vec![1, 2, 3, 4],
            "the whole entry stays, the torn one goes"
        );
        assert_eq!(opened.last_seq, Some(4));
        // Appending a shorter entry where the torn one was leaves nothing of it behind.
        let mut files = opened.files;
        let short = {
            let mut out = Vec::new();
            append_entry(&mut out, 5, &label("x")).expect("encode");
            out
        };
        files.append(&short, 5).expect("append");
        drop(files);
        let (_, seen) = reopen(dir.path(), 0);
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_bad_crc_or_a_gap_ends_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (opened, _) = reopen(dir.path(), 0);
        let mut files = opened.files;
        files.append(&frames(1, 4), 4).expect("append");
        // Flip a payload byte of the third entry.
        let bytes = std::fs::read(segment_path(dir.path(), 1)).expect("read");
        let second = frame_at(&bytes, 0).expect("1").next;
        let third = frame_at(&bytes, second).expect("2").next;
        files
            .current
            .write_all_at(&[bytes[third + HEADER] ^ 0xff], (third + HEADER) as u64)
            .expect("write");
        drop(files);
        let (opened, seen) = reopen(dir.path(), 0);
        assert_eq!(seen, vec![1, 2]);
        // An entry out of sequence (7 after 2) is not taken either.
        let mut files = opened.files;
        files.append(&frames(7, 1), 7).expect("append");
        drop(files);
        let (_, seen) = reopen(dir.path(), 0);
        assert_eq!(seen, vec![1, 2]);
    }

    #[test]
    fn the_filter_knows_inserted_ids() {
        let f = IdFilter::default();
        assert!(!f.may_contain("a"));
        f.insert(["a", "b"]);
        assert!(f.may_contain("a") && f.may_contain("b") && !f.may_contain("c"));
        assert_eq!(f.len(), 2);
    }
}
