//! The spool: a local, append-only, fsynced log of records between their
//! arrival and their seal (DESIGN.md, "spool").
//!
//! A record is chained first, and its chained line (the exact bytes the
//! batch object will hold, `{"hash":…,"record":…}`) is what the spool keeps:
//! one encoding serves both. Lines are appended to the active segment and
//! made durable together by [`Spool::sync`] (group commit). Before a writer
//! seals, [`Spool::mark_sealing`] appends a marker naming the batch number
//! and starts a new segment; once the seal is written, [`Spool::sealed`]
//! deletes the segments before the active one, whose lines the seal now
//! covers (see below for segments that hold held records). After a crash, [`Spool::open`] returns every entry left;
//! [`unsealed`] keeps those after the last marker whose seal exists, which
//! the writer adopts again ([`crate::Writer::adopt`]), continuing its chains.
//! The batch whose seal was begun but not written is sealed again as exactly
//! the lines its object in the store holds, if that object was written
//! ([`crate::Writer::written_batch`]), else up to the last marker naming
//! it ([`Recovery::begun`]), so that no object is left that no seal covers.
//!
//! The collector also spools records whose session is not known yet
//! ([`Spool::append_held`], with a hold id, not chained) and, once known,
//! the chained line together with the hold id it releases
//! ([`Spool::append_line`] with `Some(id)`), in one entry, so a crash never
//! loses nor doubles a held record. Sealed segments in which a record is
//! still held are kept until enough of them wait ([`COMPACT_BYTES`]); then
//! the records they still hold are written again into the active segment
//! (synced) before those segments are deleted. A record held across many
//! seals is so written again about once per compaction, not at every seal. [`held`] returns the held records not yet released (a record
//! may appear more than once; the copies are identical).
//!
//! Entry framing: `u32 LE length ‖ CRC-32 of the payload (LE) ‖ payload`, payload
//! - `0x00 ‖ canonical JSON of a record` (not chained; written by earlier versions),
//! - `0x01 ‖ u64 LE batch number` (a marker),
//! - `0x02 ‖ u64 LE hold id ‖ JSON of the held record`,
//! - `0x03 ‖ u64 LE hold id ‖ chained line` (a line that releases a hold),
//! - `0x04 ‖ chained line`.
//!
//! Earlier versions framed entries with the first 4 bytes of SHA-256 instead
//! of CRC-32; both are accepted. A torn entry at the end of the newest
//! segment (a crash mid-write, never synced) is cut off; damage anywhere
//! else is an error, never skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::record::TraceRecord;

/// One spooled entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A record, not chained (spools of earlier versions).
    Record(Box<TraceRecord>),
    /// A chained line, as the batch object will hold it.
    Line {
        /// The line, without its newline.
        line: Vec<u8>,
        /// The hold id it releases, if it was held.
        released: Option<u64>,
    },
    /// The records before this marker are being sealed as batch `batch_no`.
    Sealing {
        /// The batch number.
        batch_no: u64,
    },
    /// A record whose session is not known yet (its `session` is empty).
    Held {
        /// Unique among the spool's held records, increasing in arrival order.
        id: u64,
        /// The record.
        record: Box<TraceRecord>,
    },
}

/// What [`unsealed`] returns: entries to put back into the writer's pending batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Unsealed {
    /// A record to chain (from spools of earlier versions).
    Record(Box<TraceRecord>),
    /// A chained line to adopt.
    Line(Vec<u8>),
}

/// Sealed segments that still hold held records are deleted (their held
/// records written again first) once they hold this many bytes, or once
/// there are [`COMPACT_SEGMENTS`] of them; and then only once they hold three
/// times the bytes of the records still held, so that writing those again
/// costs at most half of what was written since the last compaction. At
/// [`MAX_SEGMENTS`] they are deleted whatever they hold, so that a long
/// `--hold-wait` cannot pile up files.
pub const COMPACT_BYTES: u64 = 128 << 20;

/// See [`COMPACT_BYTES`].
pub const COMPACT_SEGMENTS: usize = 64;

/// See [`COMPACT_BYTES`].
pub const MAX_SEGMENTS: usize = 4096;

/// Where the newest copy of each held record is, and its size.
#[derive(Debug, Default)]
struct HeldCopies {
    /// Hold id → (segment, bytes).
    at: HashMap<u64, (u64, u64)>,
    /// Segment → how many newest copies it holds.
    per_segment: BTreeMap<u64, usize>,
    /// Bytes of all newest copies.
    bytes: u64,
}

impl HeldCopies {
    fn put(&mut self, id: u64, segment: u64, bytes: u64) {
        self.remove(id);
        self.at.insert(id, (segment, bytes));
        *self.per_segment.entry(segment).or_insert(0) += 1;
        self.bytes += bytes;
    }

    fn remove(&mut self, id: u64) {
        let Some((segment, bytes)) = self.at.remove(&id) else {
            return;
        };
        self.bytes -= bytes;
        if let Some(c) = self.per_segment.get_mut(&segment) {
            *c -= 1;
            if *c == 0 {
                self.per_segment.remove(&segment);
            }
        }
    }

    fn segment_of(&self, id: u64) -> Option<u64> {
        self.at.get(&id).map(|(s, _)| *s)
    }

    /// Whether a segment numbered below `segment` holds a newest copy.
    fn any_before(&self, segment: u64) -> bool {
        self.per_segment.range(..segment).next().is_some()
    }

    fn holds(&self, segment: u64) -> bool {
        self.per_segment.contains_key(&segment)
    }

    /// Forgets the copies in segments numbered below `segment`.
    fn forget_before(&mut self, segment: u64) {
        let mut freed = 0;
        self.at.retain(|_, (s, b)| {
            let keep = *s >= segment;
            if !keep {
                freed += *b;
            }
            keep
        });
        self.bytes -= freed;
        self.per_segment = self.per_segment.split_off(&segment);
    }
}

/// The spool directory, locked by this process.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
    active: BufWriter<File>,
    active_no: u64,
    /// Bytes in all segments, and in the active one.
    bytes: u64,
    active_bytes: u64,
    /// Segments before the active one, oldest first: (number, bytes).
    closed: VecDeque<(u64, u64)>,
    /// The records held and not released: where their newest copy is.
    held: HeldCopies,
    unsynced: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates a spool directory (and its parents) if it does not exist,
/// readable by the owner only: records hold prompts and personal data.
pub fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut create = fs::DirBuilder::new();
    create.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut create, 0o700);
    create.create(dir).map_err(io_err(dir))
}

/// The file that records a writer-id conflict ([`Spool::mark_conflict`]).
const CONFLICT: &str = "writer-conflict";

/// The writer id that the writer of the spool in `dir` wrote as, if it
/// recorded a conflict ([`Spool::mark_conflict`]; a file written by an
/// earlier version does not say). Read without opening the spool.
pub fn conflict_writer(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(CONFLICT)).ok()?;
    Spool::conflict_parts(&text).0.map(str::to_owned)
}

fn segment_name(n: u64) -> String {
    format!("segment-{n:020}.log")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|s| {
            s.strip_prefix("segment-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        }) else {
            continue;
        };
        out.push((n, e.path()));
    }
    out.sort();
    Ok(out)
}

impl Spool {
    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why an earlier run stopped sealing for good (another process seals
    /// under the same writer id), if one did: see [`Spool::mark_conflict`].
    pub fn conflict(&self) -> Option<String> {
        let text = fs::read_to_string(self.dir.join(CONFLICT)).ok()?;
        Some(match Self::conflict_parts(&text) {
            (Some(_), reason) => reason.to_owned(),
            (None, _) => text,
        })
    }

    /// The conflict file: `writer <id>` on its first line, then the reason.
    fn conflict_parts(text: &str) -> (Option<&str>, &str) {
        match text.split_once('\n') {
            Some((first, reason)) => match first.strip_prefix("writer ") {
                Some(id) if crate::writer::valid_writer_id(id) => (Some(id), reason),
                _ => (None, text),
            },
            None => (None, text),
        }
    }

    /// Records, durably, that this spool's writer found another process
    /// sealing under its writer id: every later start refuses (its records
    /// cannot be sealed under that id, and must not be taken for sealed).
    /// `writer` is the id it wrote as (`sealtrail recover` reads it back).
    pub fn mark_conflict(&mut self, writer: &str, reason: &str) -> Result<()> {
        // Written aside and renamed into place: never an empty record.
        let path = self.dir.join(CONFLICT);
        let tmp = self.dir.join(format!("{CONFLICT}.tmp"));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(format!("writer {writer}\n{reason}").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// Opens (creating) the spool in `dir`, takes its lock, and returns the
    /// entries left by an earlier run, oldest first.
    pub fn open(dir: &Path) -> Result<(Spool, Vec<Entry>)> {
        create_dir(dir)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(Error::Io {
                path: dir.to_owned(),
                source: std::io::Error::other(
                    "the spool is in use (by another process, or another audit layer or \
                     collector in this one); give each writer its own spool directory",
                ),
            });
        }
        let segs = segments(dir)?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut closed = VecDeque::new();
        let mut held = HeldCopies::default();
        for (i, (n, path)) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let first = entries.len();
            let len = read_segment(path, last, &mut entries)?;
            bytes += len;
            closed.push_back((*n, len));
            for e in &entries[first..] {
                match e {
                    Entry::Held { id, record } => {
                        // The size as written (the entry's framing included).
                        let len = encode_held(record).map_or(0, |b| b.len() as u64);
                        held.put(*id, *n, 17 + len);
                    }
                    Entry::Line {
                        released: Some(id), ..
                    } => held.remove(*id),
                    _ => {}
                }
            }
        }
        let active_no = segs.last().map_or(0, |(n, _)| n + 1);
        let active = Self::create_segment(dir, active_no)?;
        Ok((
            Spool {
                dir: dir.to_owned(),
                _lock: lock,
                active,
                active_no,
                bytes,
                active_bytes: 0,
                closed,
                held,
                unsynced: false,
            },
            entries,
        ))
    }

    fn create_segment(dir: &Path, n: u64) -> Result<BufWriter<File>> {
        let path = dir.join(segment_name(n));
        let mut open = OpenOptions::new();
        open.create_new(true).append(true);
        // Records hold prompts and personal data: readable by the owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let f = open.open(&path).map_err(io_err(&path))?;
        // Make the new directory entry durable too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(BufWriter::with_capacity(256 * 1024, f))
    }

    /// Bytes held in the spool's segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one entry: `kind`, then `parts` in order.
    fn write_entry(&mut self, kind: u8, parts: &[&[u8]]) -> Result<()> {
        let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        for p in parts {
            crc.update(p);
        }
        let mut head = [0u8; 9];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[8] = kind;
        let w = &mut self.active;
        let written = w
            .write_all(&head)
            .and_then(|()| parts.iter().try_for_each(|p| w.write_all(p)));
        if let Err(e) = written {
            return Err(io_err(&self.dir.join(segment_name(self.active_no)))(e));
        }
        self.bytes += 8 + len as u64;
        self.active_bytes += 8 + len as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Appends a chained line (durable after the next [`Spool::sync`]);
    /// `released` names the hold it releases, if it was held.
    pub fn append_line(&mut self, line: &[u8], released: Option<u64>) -> Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match released {
            None => self.write_entry(4, &[line]),
            Some(id) => {
                self.write_entry(3, &[&id.to_le_bytes(), line])?;
                self.held.remove(id);
                Ok(())
            }
        }
    }

    /// Appends a record whose session is not known yet, under hold id `id`.
    pub fn append_held(&mut self, id: u64, record: &TraceRecord) -> Result<()> {
        self.append_held_encoded(id, &encode_held(record)?)
    }

    /// [`Spool::append_held`] with the record already encoded by
    /// [`encode_held`]: a record held across several seals is written again
    /// after each, and is encoded only once.
    pub fn append_held_encoded(&mut self, id: u64, encoded: &[u8]) -> Result<()> {
        self.write_entry(2, &[&id.to_le_bytes(), encoded])?;
        self.held.put(id, self.active_no, 17 + encoded.len() as u64);
        Ok(())
    }

    /// Makes everything appended so far durable (one `fdatasync` for all of it).
    pub fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let path = self.dir.join(segment_name(self.active_no));
        self.active.flush().map_err(io_err(&path))?;
        self.active.get_ref().sync_data().map_err(io_err(&path))?;
        self.unsynced = false;
        Ok(())
    }

    /// Marks that the records so far are being sealed as `batch_no`, makes
    /// that durable, and starts a new segment.
    pub fn mark_sealing(&mut self, batch_no: u64) -> Result<()> {
        self.write_entry(1, &[&batch_no.to_le_bytes()])?;
        self.sync()?;
        self.active = Self::create_segment(&self.dir, self.active_no + 1)?;
        self.closed.push_back((self.active_no, self.active_bytes));
        self.active_no += 1;
        self.active_bytes = 0;
        Ok(())
    }

    /// The seal after the last marker was written: the segments before the
    /// active one are covered. Deletes them, oldest first, up to the first
    /// in which a record is still held. Once [`COMPACT_BYTES`] or
    /// [`COMPACT_SEGMENTS`] of them wait, it compacts: `held` are the records
    /// still held, encoded ([`encode_held`]); those whose newest copy is in a
    /// covered segment are written again (and synced), and then every
    /// covered segment is deleted. A held record not in `held` is then no
    /// longer kept.
    ///
    /// On error the spool may hold a torn entry: stop writing to it.
    pub fn sealed<'a>(&mut self, held: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<()> {
        let below = self.active_no;
        let (count, bytes) = self
            .closed
            .iter()
            .take_while(|(n, _)| *n < below)
            .fold((0, 0), |(c, b), (_, len)| (c + 1, b + len));
        if count == 0 {
            return Ok(());
        }
        let due = count >= MAX_SEGMENTS
            || ((bytes >= COMPACT_BYTES || count >= COMPACT_SEGMENTS)
                && bytes >= 3 * self.held.bytes);
        if self.held.any_before(below) && due {
            for (id, encoded) in held {
                if self.held.segment_of(id).is_none_or(|n| n < below) {
                    self.append_held_encoded(id, encoded)?;
                }
            }
            self.sync()?;
            // Copies left only in the segments to delete are no longer kept.
            self.held.forget_before(below);
        }
        let mut deleted = false;
        while let Some(&(n, len)) = self.closed.front() {
            if n >= below || self.held.holds(n) {
                break;
            }
            deleted = true;
            let path = self.dir.join(segment_name(n));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.bytes = self.bytes.saturating_sub(len);
            self.closed.pop_front();
        }
        if !deleted {
            return Ok(());
        }
        // Make the deletions durable: a segment that came back after a
        // power loss would hold held records whose release it no longer sees.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(())
    }
}

fn read_segment(path: &Path, newest: bool, out: &mut Vec<Entry>) -> Result<u64> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err(path))?;
    let mut at = 0usize;
    let damaged = |at: usize, what: &str| {
        Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "spool entry at byte {at} is {what}; the spool is damaged (not a torn write at its end). \
             Move it aside and run `sealtrail verify` to see what the archive holds"
        )),
    }
    };
    while at < data.len() {
        let torn = |out_len: usize| -> Result<u64> {
            if newest {
                // A write that a crash cut short: it was never synced, so never acknowledged.
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(out_len as u64).and_then(|_| f.sync_all()))
                    .map_err(io_err(path))?;
                Ok(out_len as u64)
            } else {
                Err(damaged(out_len, "incomplete"))
            }
        };
        let Some(head) = data.get(at..at + 8) else {
            return torn(at);
        };
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            return torn(at);
        };
        let crc_ok = crc32fast::hash(payload).to_le_bytes() == head[4..8];
        if payload.is_empty() || !(crc_ok || Digest::sha256(payload).0[..4] == head[4..8]) {
            // In the newest segment, an entry that ends the file, or is
            // followed only by zeros (blocks allocated but never written
            // before a power loss), was never synced: it is a torn write.
            let rest_zero = data[at..].iter().all(|b| *b == 0);
            return if newest && (at + 8 + len == data.len() || rest_zero) {
                torn(at)
            } else {
                Err(damaged(at, "corrupt"))
            };
        }
        match payload[0] {
            0 => out.push(Entry::Record(Box::new(
                serde_json::from_slice(&payload[1..]).map_err(|_| damaged(at, "not a record"))?,
            ))),
            1 if payload.len() == 9 => out.push(Entry::Sealing {
                batch_no: u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default()),
            }),
            2 if payload.len() > 9 => out.push(Entry::Held {
                id: u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default()),
                record: Box::new(
                    serde_json::from_slice(&payload[9..])
                        .map_err(|_| damaged(at, "not a record"))?,
                ),
            }),
            3 if payload.len() > 9 => out.push(Entry::Line {
                released: Some(u64::from_le_bytes(
                    payload[1..9].try_into().unwrap_or_default(),
                )),
                line: payload[9..].to_vec(),
            }),
            4 => out.push(Entry::Line {
                released: None,
                line: payload[1..].to_vec(),
            }),
            _ => return Err(damaged(at, "of an unknown type")),
        }
        at += 8 + len;
    }
    Ok(data.len() as u64)
}

/// The records of `entries` that no seal covers yet, given the writer's next
/// batch number: those after the last marker whose seal exists.
pub fn unsealed(entries: Vec<Entry>, next_batch_no: u64) -> Vec<Unsealed> {
    recover(entries, next_batch_no, None).unsealed
}

/// What an earlier run left in the spool, sorted by [`recover`].
#[derive(Debug, Default)]
pub struct Recovery {
    /// The records no seal covers yet, in spool order, as [`unsealed`].
    pub unsealed: Vec<Unsealed>,
    /// How many of the first `unsealed` form the batch whose seal was begun
    /// (the last marker naming the writer's next batch ends it) but not
    /// written: they are sealed again as exactly that batch, since its
    /// object may already be in the store. 0 when no seal was begun.
    pub begun: usize,
    /// The held records not released, as [`held`].
    pub held: Vec<(u64, TraceRecord)>,
    /// A hold id larger than every one in the spool.
    pub next_hold_id: u64,
    /// For each session with chained lines that the spool's markers say are
    /// sealed, the last such line's seq and hash: the archive's seals must
    /// cover them ([`crate::pipeline::Sealer`] checks, to catch another
    /// process sealing under the same writer id).
    pub sealed_heads: std::collections::HashMap<String, (u64, crate::digest::Digest)>,
}

/// Sorts the entries an earlier run left (taking them): see [`Recovery`]. `visit`, if given,
/// sees every record of a chained line or of an earlier version's entry,
/// sealed or not, in spool order, one at a time.
pub fn recover(
    entries: Vec<Entry>,
    next_batch_no: u64,
    mut visit: Option<&mut dyn FnMut(&TraceRecord)>,
) -> Recovery {
    let cut = entries
        .iter()
        .rposition(|e| matches!(e, Entry::Sealing { batch_no } if *batch_no < next_batch_no))
        .map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut held = std::collections::BTreeMap::new();
    let mut released = std::collections::HashSet::new();
    let mut next_hold_id = 0;
    let mut begun = None;
    let mut sealed_heads = std::collections::HashMap::new();
    for (i, e) in entries.into_iter().enumerate() {
        match e {
            Entry::Record(r) => {
                if let Some(v) = visit.as_mut() {
                    v(&r);
                }
                if i >= cut {
                    out.push(Unsealed::Record(r));
                }
            }
            Entry::Line { line, released: r } => {
                if visit.is_some() || i < cut {
                    if let Ok(s) = serde_json::from_slice::<crate::record::StoredRecord>(&line) {
                        if let Some(v) = visit.as_mut() {
                            v(&s.record);
                        }
                        if i < cut {
                            let e = sealed_heads
                                .entry(s.record.session)
                                .or_insert((s.record.seq, s.hash));
                            if s.record.seq >= e.0 {
                                *e = (s.record.seq, s.hash);
                            }
                        }
                    }
                }
                if let Some(id) = r {
                    next_hold_id = next_hold_id.max(id + 1);
                    released.insert(id);
                    held.remove(&id);
                }
                if i >= cut {
                    out.push(Unsealed::Line(line));
                }
            }
            Entry::Held { id, record } => {
                next_hold_id = next_hold_id.max(id + 1);
                if !released.contains(&id) {
                    held.entry(id).or_insert(record);
                }
            }
            Entry::Sealing { batch_no } => {
                // The batch a seal was begun for ends at the last marker
                // naming it: a marker may name it earlier, written for a
                // seal that then did not get that far (the batch before
                // it was failing), and the batch was fixed later.
                if i >= cut && batch_no == next_batch_no {
                    begun = Some(out.len());
                }
            }
        }
    }
    Recovery {
        unsealed: out,
        begun: begun.unwrap_or(0),
        held: held.into_iter().map(|(id, r)| (id, *r)).collect(),
        next_hold_id,
        sealed_heads,
    }
}

/// A held record as [`Spool::append_held_encoded`] takes it: its JSON.
pub fn encode_held(record: &TraceRecord) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(1024);
    crate::canonical::write_record(record, &mut body).map_err(|e| Error::InvalidRecord {
        reason: format!("cannot encode: {e}"),
    })?;
    Ok(body)
}

/// The held records of `entries` that no entry releases, once each, by hold id.
pub fn held(entries: &[Entry]) -> Vec<(u64, TraceRecord)> {
    recover(entries.to_vec(), 0, None).held
}

#[cfg(test)]
mod tests {
    /// The conflict record names the writer id it was recorded under, for
    /// `sealtrail recover`; a record of an earlier version (the reason
    /// alone) still reads.
    #[test]
    fn a_conflict_record_names_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        assert_eq!(
            (spool.conflict(), conflict_writer(dir.path())),
            (None, None)
        );
        spool
            .mark_conflict("shared", "seal 3 holds another seal")
            .unwrap();
        assert_eq!(
            spool.conflict().as_deref(),
            Some("seal 3 holds another seal")
        );
        assert_eq!(conflict_writer(dir.path()).as_deref(), Some("shared"));
        std::fs::write(dir.path().join(CONFLICT), "an older record").unwrap();
        assert_eq!(spool.conflict().as_deref(), Some("an older record"));
        assert_eq!(conflict_writer(dir.path()), None);
    }

    use super::*;
    use crate::record::{Kind, StoredRecord};

    fn rec(i: u64) -> TraceRecord {
        let mut r = TraceRecord::new("s", Kind::Span, format!("r{i}"));
        r.start_ns = i;
        r
    }

    fn line(i: u64) -> Vec<u8> {
        let mut out = Vec::new();
        crate::chain::encode_line(&rec(i), &mut out).unwrap();
        out.pop(); // the newline
        out
    }

    fn names(v: Vec<Unsealed>) -> Vec<String> {
        v.into_iter()
            .map(|u| match u {
                Unsealed::Record(r) => r.name.clone(),
                Unsealed::Line(l) => {
                    serde_json::from_slice::<StoredRecord>(&l)
                        .unwrap()
                        .record
                        .name
                }
            })
            .collect()
    }

    #[test]
    fn lines_survive_reopen_and_markers_split_sealed_from_unsealed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, left) = Spool::open(dir.path()).unwrap();
            assert!(left.is_empty());
            s.append_line(&line(1), None).unwrap();
            s.append_line(&line(2), None).unwrap();
            s.sync().unwrap();
            s.mark_sealing(0).unwrap();
            s.append_line(&line(3), None).unwrap();
            s.sync().unwrap();
            // Crash: the seal of batch 0 may or may not have been written.
        }
        let (s, left) = Spool::open(dir.path()).unwrap();
        assert_eq!(left.len(), 4);
        // Seal 0 was written (next batch is 1): only r3 is unsealed.
        assert_eq!(names(unsealed(left.clone(), 1)), ["r3"]);
        // Seal 0 was not written: all three.
        assert_eq!(names(unsealed(left, 0)), ["r1", "r2", "r3"]);
        drop(s);
    }

    #[test]
    fn unchained_records_of_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path()).unwrap();
            let body = crate::canonical::to_vec(&rec(7)).unwrap();
            s.write_entry(0, &[&body]).unwrap();
            s.sync().unwrap();
        }
        let (_s, left) = Spool::open(dir.path()).unwrap();
        assert_eq!(unsealed(left, 0), vec![Unsealed::Record(Box::new(rec(7)))]);
    }

    #[cfg(unix)]
    #[test]
    fn the_spool_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new").join("spool");
        let (mut s, _) = Spool::open(&dir).unwrap();
        s.append_line(&line(1), None).unwrap();
        s.sync().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("segment-")
            {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
    }

    #[test]
    fn sealed_deletes_older_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path()).unwrap();
        s.append_line(&line(1), None).unwrap();
        s.mark_sealing(0).unwrap();
        s.append_line(&line(2), None).unwrap();
        s.sync().unwrap();
        s.sealed([]).unwrap();
        drop(s);
        let (_, left) = Spool::open(dir.path()).unwrap();
        assert_eq!(
            left,
            vec![Entry::Line {
                line: line(2),
                released: None
            }]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_but_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path()).unwrap();
        s.append_line(&line(1), None).unwrap();
        s.append_line(&line(2), None).unwrap();
        s.sync().unwrap();
        drop(s);
        let seg = dir.path().join(segment_name(0));
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (s, left) = Spool::open(dir.path()).unwrap();
        assert_eq!(names(unsealed(left, 0)), ["r1"]);
        drop(s);
        // Now segment 0 is no longer the newest; flip a byte in its first entry.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[12] ^= 1;
        fs::write(&seg, bytes).unwrap();
        let err = Spool::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn a_zero_filled_tail_after_a_power_loss_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path()).unwrap();
        s.append_line(&line(1), None).unwrap();
        s.sync().unwrap();
        drop(s);
        let seg = dir.path().join(segment_name(0));
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        fs::write(&seg, bytes).unwrap();
        let (_s, left) = Spool::open(dir.path()).unwrap();
        assert_eq!(names(unsealed(left, 0)), ["r1"]);
    }

    #[test]
    fn held_records_are_returned_until_released() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path()).unwrap();
            s.append_held(1, &rec(1)).unwrap();
            s.append_held(2, &rec(2)).unwrap();
            s.append_line(&line(3), None).unwrap();
            s.sync().unwrap();
            s.mark_sealing(0).unwrap();
            s.append_line(&line(2), Some(2)).unwrap();
            s.sync().unwrap();
            // Still held at the seal: segment 0 is kept.
            s.sealed([]).unwrap();
            assert!(dir.path().join(segment_name(0)).exists());
        }
        let (_s, left) = Spool::open(dir.path()).unwrap();
        let held = held(&left);
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].0, held[0].1.name.as_str()), (1, "r1"));
        assert_eq!(names(unsealed(left, 1)), ["r2"]);
    }

    #[test]
    fn a_record_held_across_seals_is_written_again_only_when_compacting() {
        let dir = tempfile::tempdir().unwrap();
        let copies = |dir: &Path| {
            let (_s, left) = Spool::open(dir).unwrap();
            let n = left
                .iter()
                .filter(|e| matches!(e, Entry::Held { .. }))
                .count();
            (n, held(&left))
        };
        let files = |dir: &Path| segments(dir).unwrap().len();
        let h = encode_held(&rec(0)).unwrap();
        let mut s = Spool::open(dir.path()).unwrap().0;
        s.append_held_encoded(0, &h).unwrap();
        let seal = |s: &mut Spool, i: u64, held: &[(u64, &[u8])]| {
            s.append_line(&line(i), None).unwrap();
            s.sync().unwrap();
            s.mark_sealing(i).unwrap();
            s.sealed(held.iter().copied()).unwrap();
        };
        // Segment 0 holds the record: it and every later sealed segment stay.
        for i in 1..COMPACT_SEGMENTS as u64 {
            seal(&mut s, i, &[(0, &h)]);
        }
        assert_eq!(files(dir.path()), COMPACT_SEGMENTS);
        drop(s);
        assert_eq!(
            copies(dir.path()).0,
            1,
            "not written again before compacting"
        );
        // The next seal compacts: one more copy, in the active segment, and
        // every sealed segment goes.
        let mut s = Spool::open(dir.path()).unwrap().0;
        seal(&mut s, 100, &[(0, &h)]);
        assert_eq!(files(dir.path()), 1);
        drop(s);
        let (n, still) = copies(dir.path());
        assert_eq!(n, 1);
        assert_eq!(still, vec![(0, rec(0))]);
        // Released: the segment holding its copy goes at the next seal.
        let mut s = Spool::open(dir.path()).unwrap().0;
        s.append_line(&line(0), Some(0)).unwrap();
        seal(&mut s, 101, &[]);
        assert_eq!(files(dir.path()), 1, "only the active segment is left");
        drop(s);
        assert_eq!(copies(dir.path()), (0, vec![]));
    }

    #[test]
    fn one_process_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _) = Spool::open(dir.path()).unwrap();
        let err = Spool::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("the spool is in use"), "{err}");
    }
}
