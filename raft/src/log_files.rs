//! The Raft log in append-only segment files under `<data>/log/`.
//!
//! Why not sled: a Raft log is appended at the end, read back in order and cut at either end;
//! sled stored it as a B-tree whose leaves held up to 16 entries and were rewritten whole,
//! as separate blob files once they passed 128 KiB (most batches do), and every flush went
//! through sled's I/O thread pool, which wakes all of its idle threads for each job. Measured
//! with `perf` under `edgerun bench submit`: 30–45% of the leader's CPU was sled.
//!
//! Layout: segment files named by the index of their first entry (`00000000000000000042.seg`),
//! each starting with [`MAGIC`], then records: `len: u32 LE`, `crc: u32 LE` (CRC-32 of the
//! index bytes and the payload), `index: u64 LE`, then `len` bytes of bincode `Entry`. A
//! segment is closed once it passes [`SEGMENT_BYTES`]; the last one is appended to.
//!
//! Durability: an append is one `write` of all its records; its completion is reported only
//! after `fdatasync` on the sync thread, which covers every append queued before it (group
//! commit). New segment files and removals are made durable with a directory fsync.
//! The vote, the committed index and the purge point stay in sled's `raft_meta` tree.
//!
//! At open, a record cut short at the very end of the last segment (a write interrupted by a
//! crash, never acknowledged) is dropped with a warning; a record whose checksum does not
//! match anywhere else is damage, and the log refuses to open (`edgerun doctor` names it).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use crate::{Entry, LogId};

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"ERLOG\0\0\x01";
const HEADER: usize = 16;
/// A segment is closed (and a new one started) once it is this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// No single entry is larger than this; a larger length in a header is damage.
const MAX_RECORD: u32 = 1 << 30;

/// How [`LogError::Damaged`] reads.
pub const DAMAGED: &str = "the Raft log is damaged";

/// What went wrong with the log's files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What is on disk is not a whole log (a checksum, a gap, a header): the node must not
    /// start on it; `edgerun doctor` tells more.
    #[error("{DAMAGED}: {0}")]
    Damaged(String),
    /// One entry cannot be read back (its segment is gone, it does not decode, it holds
    /// another index).
    #[error("log entry {index}: {detail}")]
    Entry { index: u64, detail: String },
    /// An entry cannot be written (it does not encode, or is too large).
    #[error("log entry {index} cannot be written: {detail}")]
    Write { index: u64, detail: String },
    #[error("starting the log's sync thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl LogError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The log directory of a data directory.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

fn seg_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Append `e` as one record to `out`.
fn frame(out: &mut Vec<u8>, e: &Entry) -> Result<(), LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    edgerun_model::encode_into(&mut *out, e).map_err(|err| LogError::Write {
        index: e.log_id.index,
        detail: err.to_string(),
    })?;
    let len = out.len() - start - HEADER;
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| LogError::Write {
            index: e.log_id.index,
            detail: format!("{len} bytes is too large"),
        })?;
    let index = e.log_id.index;
    let sum = crc(index, &out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&index.to_le_bytes());
    Ok(())
}

/// One record found by a scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub index: u64,
    /// Key of the segment (its first index) and where the record starts in it.
    pub seg: u64,
    pub offset: u64,
    pub len: u32,
}

/// What reading a log directory found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Segment files by first index, with their sizes.
    pub segments: BTreeMap<u64, (PathBuf, u64)>,
    pub records: Vec<Found>,
    /// An incomplete record at the end of the last segment: (segment, offset, bytes).
    pub torn: Option<(u64, u64, u64)>,
    pub bytes: u64,
    /// Damage: the log cannot be used as it is.
    pub problems: Vec<String>,
}

/// How thoroughly [`scan`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Depth {
    /// Headers only (quick, at every start).
    Headers,
    /// Every checksum.
    Checksums,
    /// Every checksum, and every entry decoded (doctor).
    Decode,
}

/// Read the log directory `dir` without changing it.
pub fn scan(dir: &Path, depth: Depth) -> Scan {
    let mut s = Scan::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return s,
        Err(e) => {
            s.problems.push(format!("reading {}: {e}", dir.display()));
            return s;
        }
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first) if stem.len() == 20 => {
                let len = ent.metadata().map(|m| m.len()).unwrap_or(0);
                s.bytes += len;
                s.segments.insert(first, (ent.path(), len));
            }
            _ => s.problems.push(format!(
                "{} is not a log segment name",
                ent.path().display()
            )),
        }
    }
    let last_seg = s.segments.keys().next_back().copied();
    let segs: Vec<(u64, PathBuf, u64)> = s
        .segments
        .iter()
        .map(|(k, (p, l))| (*k, p.clone(), *l))
        .collect();
    for (key, path, len) in segs {
        let is_last = Some(key) == last_seg;
        if let Err(e) = scan_segment(key, &path, len, is_last, depth, &mut s) {
            s.problems.push(format!("reading {}: {e}", path.display()));
        }
    }
    // The records must follow each other without a gap.
    for w in s.records.windows(2) {
        if w[1].index != w[0].index + 1 {
            s.problems.push(format!(
                "the log jumps from entry {} to {}",
                w[0].index, w[1].index
            ));
            break;
        }
    }
    s
}

fn scan_segment(
    key: u64,
    path: &Path,
    len: u64,
    is_last: bool,
    depth: Depth,
    s: &mut Scan,
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let shown = path.display();
    let mut magic = [0u8; 8];
    if len < MAGIC.len() as u64 {
        if is_last {
            s.torn = Some((key, 0, len));
        } else {
            s.problems
                .push(format!("{shown} is {len} bytes, shorter than its header"));
        }
        return Ok(());
    }
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        s.problems
            .push(format!("{shown} is not an edgerun log segment"));
        return Ok(());
    }
    let mut off = MAGIC.len() as u64;
    let mut payload = Vec::new();
    let mut first = true;
    while off < len {
        let rest = len - off;
        let mut h = [0u8; HEADER];
        let complete_header = rest >= HEADER as u64;
        if complete_header {
            r.read_exact(&mut h)?;
        }
        let n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let index = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        if !complete_header || (n <= MAX_RECORD && u64::from(n) > rest - HEADER as u64) {
            // Cut short by the end of the file.
            if is_last {
                s.torn = Some((key, off, rest));
            } else {
                s.problems.push(format!(
                    "{shown} ends inside a record at byte {off}: entries are missing"
                ));
            }
            return Ok(());
        }
        if n > MAX_RECORD {
            s.problems.push(format!(
                "{shown}: the record at byte {off} claims {n} bytes: the log is damaged"
            ));
            return Ok(());
        }
        if first && index != key {
            s.problems
                .push(format!("{shown} starts with entry {index}, not {key}"));
        }
        first = false;
        if depth == Depth::Headers {
            r.seek_relative(i64::from(n))?;
        } else {
            payload.resize(n as usize, 0);
            r.read_exact(&mut payload)?;
            if crc(index, &payload) != sum {
                s.problems.push(format!(
                    "log entry {index} ({shown}, byte {off}) does not decode: its checksum does not match"
                ));
                return Ok(());
            }
            if depth == Depth::Decode {
                match edgerun_model::decode::<Entry>(&payload) {
                    Ok(e) if e.log_id.index == index => {}
                    Ok(e) => s.problems.push(format!(
                        "log entry {index} ({shown}) holds index {}",
                        e.log_id.index
                    )),
                    Err(e) => s
                        .problems
                        .push(format!("log entry {index} ({shown}) does not decode: {e}")),
                }
            }
        }
        s.records.push(Found {
            index,
            seg: key,
            offset: off,
            len: n,
        });
        off += HEADER as u64 + u64::from(n);
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Segment {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
}

#[derive(Clone, Copy)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
}

struct Files {
    segments: BTreeMap<u64, Segment>,
    /// Index of `locs[0]`; when the log is empty, the index the next append should carry.
    first: u64,
    locs: VecDeque<Loc>,
    last: Option<LogId>,
    /// Entries appended and not yet read for applying, as they were handed in: replication
    /// clones them and the apply takes them, instead of reading and decoding the file (three
    /// times per entry on a leader). At most [`CACHE_BYTES`] of encoded size.
    cache: BTreeMap<u64, (Entry, usize)>,
    cache_bytes: usize,
}

/// The entry cache's bound, in encoded bytes.
const CACHE_BYTES: usize = 32 << 20;
/// The append buffer kept between appends up to this size (reused pages, no fresh faults).
const KEEP_BUFFER: usize = 16 << 20;

impl Files {
    fn cache_put(&mut self, index: u64, e: Entry, bytes: usize) {
        self.cache_bytes += bytes;
        if let Some((_, old)) = self.cache.insert(index, (e, bytes)) {
            self.cache_bytes -= old;
        }
        while self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_first() {
                Some((_, (_, b))) => self.cache_bytes -= b,
                None => break,
            }
        }
    }

    /// Drop cached entries outside `keep`.
    fn cache_retain(&mut self, keep: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.cache.keys().copied().filter(|i| !keep(*i)).collect();
        for i in gone {
            if let Some((_, b)) = self.cache.remove(&i) {
                self.cache_bytes -= b;
            }
        }
    }
}

/// A completion to run once everything written before it is on disk.
type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// The Raft log's files; shared by the store and its readers.
pub struct LogFiles {
    dir: PathBuf,
    files: Mutex<Files>,
    /// The append buffer, kept between appends.
    scratch: Mutex<Vec<u8>>,
    sync: Mutex<mpsc::Sender<(Arc<File>, Done)>>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl LogFiles {
    /// Open (creating) the log in `dir`. `purged`: the last index already in the snapshot;
    /// entries up to it are not part of the log any more (files left by an interrupted purge
    /// are removed). Returns warnings worth a log line (a torn write dropped).
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<(LogFiles, Vec<String>), LogError> {
        crate::private::create_dir(dir).map_err(LogError::io(dir))?;
        let mut notes = Vec::new();
        // Temporary files of an interrupted migration.
        if let Ok(rd) = std::fs::read_dir(dir) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(ent.path());
                }
            }
        }
        let s = scan(dir, Depth::Checksums);
        if !s.problems.is_empty() {
            return Err(LogError::Damaged(s.problems.join("; ")));
        }
        let mut changed = false;
        if let Some((seg, off, bytes)) = s.torn {
            let path = dir.join(seg_name(seg));
            if off == 0 {
                std::fs::remove_file(&path).map_err(LogError::io(&path))?;
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(LogError::io(&path))?;
                f.set_len(off)
                    .and_then(|()| f.sync_all())
                    .map_err(LogError::io(&path))?;
            }
            changed = true;
            notes.push(format!(
                "dropped an incomplete record at the end of the Raft log ({bytes} bytes of {} from byte {off}): a write cut short, never acknowledged",
                path.display()
            ));
        }
        let mut segments = BTreeMap::new();
        let mut locs = VecDeque::new();
        let mut first = purged.map_or(0, |p| p + 1);
        let kept: Vec<&Found> = s
            .records
            .iter()
            .filter(|r| purged.is_none_or(|p| r.index > p))
            .collect();
        if let (Some(p), Some(r)) = (purged, kept.first()) {
            if r.index != p + 1 {
                return Err(LogError::Damaged(format!(
                    "it starts at entry {} but entries up to {p} were purged: entries are missing",
                    r.index
                )));
            }
        }
        if let Some(r) = kept.first() {
            first = r.index;
        }
        for r in &kept {
            locs.push_back(Loc {
                seg: r.seg,
                offset: r.offset,
                len: r.len,
            });
        }
        for (key, (path, len)) in &s.segments {
            let len = match s.torn {
                Some((seg, off, _)) if seg == *key => off,
                _ => *len,
            };
            if !kept.iter().any(|r| r.seg == *key) {
                // Purged, or holding no entry: not needed.
                if path.exists() {
                    std::fs::remove_file(path).map_err(LogError::io(path))?;
                    changed = true;
                }
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(LogError::io(path))?;
            segments.insert(
                *key,
                Segment {
                    file: Arc::new(file),
                    path: path.clone(),
                    len,
                },
            );
        }
        if changed {
            sync_dir(dir).map_err(LogError::io(dir))?;
        }
        let mut files = Files {
            segments,
            first,
            locs,
            last: None,
            cache: BTreeMap::new(),
            cache_bytes: 0,
        };
        if let Some(idx) = files.locs.len().checked_sub(1) {
            let e = read_loc(&files, dir, first + idx as u64, files.locs[idx])?;
            files.last = Some(e.log_id);
        }
        let (tx, rx) = mpsc::channel::<(Arc<File>, Done)>();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(rx))
            .map_err(LogError::Thread)?;
        Ok((
            LogFiles {
                dir: dir.to_path_buf(),
                files: Mutex::new(files),
                scratch: Mutex::new(Vec::new()),
                sync: Mutex::new(tx),
            },
            notes,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last entry's id, if the log holds any.
    pub fn last(&self) -> Option<LogId> {
        self.lock().last
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.lock().locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write `entries` (which must follow the last one) to the end of the log. Returns the
    /// file to sync before they count as durable (hand it to [`LogFiles::when_durable`]);
    /// none when nothing was written and no segment exists.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> std::io::Result<Option<Arc<File>>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let buf = &mut *scratch;
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf.shrink_to(KEEP_BUFFER);
        }
        let mut ids = Vec::new();
        let mut owned = Vec::new();
        for e in entries {
            let start = buf.len();
            frame(buf, &e).map_err(io_err)?;
            ids.push((e.log_id, start, (buf.len() - start - HEADER) as u32));
            owned.push(e);
        }
        let mut f = self.lock();
        let Some(&(first_id, _, _)) = ids.first() else {
            // Nothing new; what is waiting to be synced is in the last segment, if any.
            return Ok(f.segments.values().next_back().map(|s| s.file.clone()));
        };
        match f.last {
            Some(l) if first_id.index != l.index + 1 => {
                return Err(io_err(format!(
                    "appending entry {} after {}: the log would have a gap",
                    first_id.index, l.index
                )))
            }
            None => f.first = first_id.index,
            _ => {}
        }
        let roll = f
            .segments
            .values()
            .next_back()
            .is_none_or(|s| s.len >= SEGMENT_BYTES);
        if roll {
            if let Some(s) = f.segments.values().next_back() {
                // Everything before the new segment is durable before anything after it.
                s.file.sync_data()?;
            }
            let path = self.dir.join(seg_name(first_id.index));
            let file = crate::private::create_new(&path)?;
            file.write_all_at(MAGIC, 0)?;
            file.sync_all()?;
            sync_dir(&self.dir)?;
            f.segments.insert(
                first_id.index,
                Segment {
                    file: Arc::new(file),
                    path,
                    len: MAGIC.len() as u64,
                },
            );
        }
        let (&key, seg) = f
            .segments
            .iter_mut()
            .next_back()
            .ok_or_else(|| io_err("no segment to append to"))?;
        let base = seg.len;
        seg.file.write_all_at(buf, base)?;
        seg.len += buf.len() as u64;
        let file = Some(seg.file.clone());
        drop(scratch);
        for ((id, start, len), e) in ids.into_iter().zip(owned) {
            f.locs.push_back(Loc {
                seg: key,
                offset: base + start as u64,
                len,
            });
            f.last = Some(id);
            f.cache_put(id.index, e, len as usize);
        }
        Ok(file)
    }

    /// Run `done` once everything written to `file` so far is on disk (in order with every
    /// earlier call).
    pub fn when_durable(&self, file: Arc<File>, done: Done) {
        let sent = self
            .sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((file, done));
        if let Err(mpsc::SendError((_, done))) = sent {
            done(Err(io_err("the log's sync thread stopped")));
        }
    }

    /// Entries with index in `from..to`: from the cache (taken out of it when `take`, for the
    /// apply, the last reader; cloned otherwise), else read from the files (outside the lock:
    /// appends go on).
    pub fn read(&self, from: u64, to: u64, take: bool) -> Result<Vec<Entry>, LogError> {
        enum Got {
            Have(Entry),
            Read(u64, Arc<File>, Loc),
        }
        let wanted: Vec<Got> = {
            let mut f = self.lock();
            let from = from.max(f.first);
            let to = to.min(f.first + f.locs.len() as u64);
            let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
            for i in from..to {
                let cached = if take {
                    f.cache.remove(&i).map(|(e, b)| {
                        f.cache_bytes -= b;
                        e
                    })
                } else {
                    f.cache.get(&i).map(|(e, _)| e.clone())
                };
                if let Some(e) = cached {
                    out.push(Got::Have(e));
                    continue;
                }
                let loc = f.locs[(i - f.first) as usize];
                let file = f
                    .segments
                    .get(&loc.seg)
                    .map(|s| s.file.clone())
                    .ok_or_else(|| LogError::Entry {
                        index: i,
                        detail: format!("its segment {} is gone", loc.seg),
                    })?;
                out.push(Got::Read(i, file, loc));
            }
            out
        };
        wanted
            .into_iter()
            .map(|g| match g {
                Got::Have(e) => Ok(e),
                Got::Read(i, file, loc) => read_at(&file, &self.dir, i, loc),
            })
            .collect()
    }

    /// Remove every entry from `index` on (a follower's conflicting suffix).
    pub fn truncate(&self, index: u64) -> std::io::Result<()> {
        let mut f = self.lock();
        let end = f.first + f.locs.len() as u64;
        if index >= end {
            return Ok(());
        }
        let index = index.max(f.first);
        let loc = f.locs[(index - f.first) as usize];
        let gone: Vec<u64> = f.segments.range(index..).map(|(k, _)| *k).collect();
        for k in &gone {
            if let Some(s) = f.segments.remove(k) {
                std::fs::remove_file(&s.path)?;
            }
        }
        if loc.seg < index {
            if let Some(s) = f.segments.get_mut(&loc.seg) {
                s.file.set_len(loc.offset)?;
                s.file.sync_all()?;
                s.len = loc.offset;
            }
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        let keep = (index - f.first) as usize;
        f.locs.truncate(keep);
        f.cache_retain(|i| i < index);
        f.last = match keep.checked_sub(1) {
            Some(i) => Some(
                read_loc(&f, &self.dir, f.first + i as u64, f.locs[i])
                    .map_err(io_err)?
                    .log_id,
            ),
            None => None,
        };
        if f.locs.is_empty() {
            f.first = index;
        }
        Ok(())
    }

    /// Forget every entry up to `index` (it is in a snapshot); whole segments are removed.
    pub fn purge(&self, index: u64) -> std::io::Result<()> {
        let mut f = self.lock();
        if index < f.first {
            return Ok(());
        }
        let n = ((index + 1 - f.first) as usize).min(f.locs.len());
        f.locs.drain(..n);
        f.cache_retain(|i| i > index);
        f.first = index + 1;
        if f.locs.is_empty() {
            f.last = None;
        }
        // A segment can go when the next one starts at or before index + 1 (everything in it
        // is purged), or when nothing is left at all.
        let keys: Vec<u64> = f.segments.keys().copied().collect();
        let mut gone = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let all_purged = match keys.get(i + 1) {
                Some(next) => *next <= index + 1,
                None => f.locs.is_empty(),
            };
            if all_purged {
                gone.push(*k);
            }
        }
        for k in &gone {
            if let Some(s) = f.segments.remove(k) {
                std::fs::remove_file(&s.path)?;
            }
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn read_loc(f: &Files, dir: &Path, index: u64, loc: Loc) -> Result<Entry, LogError> {
    let seg = f.segments.get(&loc.seg).ok_or_else(|| LogError::Entry {
        index,
        detail: format!("its segment {} is gone", loc.seg),
    })?;
    read_at(&seg.file, dir, index, loc)
}

fn read_at(file: &File, dir: &Path, index: u64, loc: Loc) -> Result<Entry, LogError> {
    let shown = || dir.join(seg_name(loc.seg)).display().to_string();
    let entry = |detail: String| LogError::Entry { index, detail };
    let mut buf = vec![0u8; HEADER + loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(|e| entry(format!("reading it from {}: {e}", shown())))?;
    let sum = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let payload = &buf[HEADER..];
    if crc(index, payload) != sum {
        return Err(entry(format!(
            "({}) does not decode: its checksum does not match",
            shown()
        )));
    }
    let e: Entry =
        edgerun_model::decode(payload).map_err(|e| entry(format!("does not decode: {e}")))?;
    if e.log_id.index != index {
        return Err(entry(format!("holds index {}", e.log_id.index)));
    }
    Ok(e)
}

/// A sync's outcome, kept to answer every completion that waited on the same file.
type SyncResult = Result<(), (std::io::ErrorKind, String)>;

/// The sync thread: waits for completions, syncs the files they wrote once for all that are
/// waiting, and runs them in order.
fn sync_loop(rx: mpsc::Receiver<(Arc<File>, Done)>) {
    while let Ok(job) = rx.recv() {
        let mut jobs = vec![job];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let mut synced: Vec<(*const File, SyncResult)> = Vec::new();
        let mut results = Vec::with_capacity(jobs.len());
        for (file, _) in &jobs {
            let key = Arc::as_ptr(file);
            let r = match synced.iter().find(|(k, _)| *k == key) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = file.sync_data().map_err(|e| (e.kind(), e.to_string()));
                    synced.push((key, r.clone()));
                    r
                }
            };
            results.push(r);
        }
        for ((_, done), r) in jobs.into_iter().zip(results) {
            done(r.map_err(|(kind, msg)| std::io::Error::new(kind, msg)));
        }
    }
}

/// Write `entries` (in order) as the log in `dir`, which holds no segment yet: one segment,
/// written under a temporary name, synced, then renamed. For moving a log out of sled.
pub fn write_fresh(dir: &Path, entries: impl IntoIterator<Item = Entry>) -> Result<u64, LogError> {
    crate::private::create_dir(dir).map_err(LogError::io(dir))?;
    let mut buf = MAGIC.to_vec();
    let mut first = None;
    let mut n = 0u64;
    for e in entries {
        first.get_or_insert(e.log_id.index);
        frame(&mut buf, &e)?;
        n += 1;
    }
    let Some(first) = first else { return Ok(0) };
    let tmp = dir.join(format!("{}.tmp", seg_name(first)));
    let path = dir.join(seg_name(first));
    let res = (|| -> std::io::Result<()> {
        let f = crate::private::create(&tmp)?;
        f.write_all_at(&buf, 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    res.map_err(LogError::io(&path))?;
    Ok(n)
}

#[cfg(test)]
mod tests;
