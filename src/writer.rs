//! The writer: chains records, and seals and archives them in batches.
//!
//! A [`Writer`] owns one writer id in one archive. [`Writer::append`] chains a
//! record in memory; [`Writer::flush`] writes the pending records as one batch
//! object and its signed seal; [`Writer::tick`] does that, or writes an empty
//! heartbeat seal when nothing was sealed for a heartbeat interval;
//! [`Writer::close`] writes the final seal, marked closed.
//!
//! A writer opened on an archive it wrote before continues it: it reads its
//! own seals, checks them, and continues the seal chain and every session's
//! chain from their heads.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::archive::{layout, Archive};
use crate::chain::{Chain, Head};
use crate::digest::{seal_genesis, Digest};
use crate::error::{Error, Result};
use crate::keys::SigningKey;
use crate::merkle;
use crate::record::TraceRecord;
use crate::seal::{self, BatchRef, Seal, SealBody, SessionSummary, SEAL_FORMAT};

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
/// Default zstd level of batch objects: 1. On sealtrail's records (about
/// 1 KiB of JSON, an incompressible hash and ids in each) level 1 compresses
/// about twice as fast as level 3 and to within 3 % of its size, smaller on
/// some record shapes; measured with `zstd -b1 -e3` on batches written by the
/// layer benchmark and by `sealtrail bench-load`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Whether `id` is a valid writer id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_writer_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Unix nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reads `<spool>/writer-id`, or makes one (`<host>-<8 hex digits>`) and keeps
/// it there, so a restarted writer continues its own chains.
pub fn persisted_writer_id(spool: &std::path::Path) -> Result<String> {
    let path = spool.join("writer-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let id = s.trim().to_owned();
        return if valid_writer_id(&id) {
            Ok(id)
        } else {
            Err(Error::InvalidWriterId { id })
        };
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sealtrail".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let mut r = [0u8; 4];
    let _ = getrandom::getrandom(&mut r);
    let id = format!(
        "{}-{}",
        if host.is_empty() { "sealtrail" } else { &host },
        hex::encode(r)
    );
    let id = id.trim_start_matches('.').to_owned();
    // Durable before any record is spooled under it: written aside, synced,
    // renamed into place, and the directory synced (a power loss must not
    // leave an empty file, or none, beside records chained under the id).
    let tmp = path.with_extension("tmp");
    let io = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(id)
}

/// Settings of a [`Writer`].
#[derive(Clone)]
pub struct WriterOptions {
    heartbeat: Duration,
    zstd_level: i32,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterOptions")
            .field("heartbeat", &self.heartbeat)
            .field("zstd_level", &self.zstd_level)
            .finish_non_exhaustive()
    }
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            heartbeat: DEFAULT_HEARTBEAT,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            clock: Arc::new(now_ns),
        }
    }
}

impl WriterOptions {
    /// The longest the writer goes without a seal while open (default 60 s).
    /// Recorded in every seal; `verify` reports longer gaps.
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// zstd compression level of batch objects (default [`DEFAULT_ZSTD_LEVEL`]).
    pub fn with_zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// The clock used for seal times, in unix nanoseconds (tests and test vectors).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// What one seal wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealReceipt {
    /// The batch number.
    pub batch_no: u64,
    /// The seal's hash.
    pub seal_hash: Digest,
    /// The seal object's key.
    pub seal_key: String,
    /// The batch object's key, if the batch had records.
    pub batch_key: Option<String>,
    /// Records in the batch.
    pub records: u64,
}

/// Records chained and not sealed.
#[derive(Default)]
struct Pending {
    /// The lines and hashes of the records not yet fixed in a batch.
    lines: Vec<u8>,
    hashes: Vec<Digest>,
    /// Their sessions.
    sessions: BTreeMap<String, SessionSummary>,
    /// A batch whose seal failed: it is sealed again as it is.
    frozen: Option<Frozen>,
    /// Records and line bytes of the batch a [`SealJob`] is sealing now.
    sealing: Option<(usize, usize)>,
    /// The buffers of the batch sealed last, emptied, for the next one: a
    /// fresh buffer of a batch's size costs a page fault (and the zeroing
    /// of a page) every 4 KiB of records.
    spare: Option<(Vec<u8>, Vec<Digest>)>,
}

impl Pending {
    /// Counts a record just chained (its line is in `lines`) in its
    /// session's summary.
    fn note(&mut self, record: TraceRecord, hash: Digest) {
        self.hashes.push(hash);
        match self.sessions.get_mut(&record.session) {
            Some(s) => {
                s.count += 1;
                s.last_seq = record.seq;
                s.head = hash;
            }
            None => {
                self.sessions.insert(
                    record.session.clone(),
                    SessionSummary {
                        count: 1,
                        first_seq: record.seq,
                        head: hash,
                        id: record.session,
                        last_seq: record.seq,
                    },
                );
            }
        }
    }
}

/// The largest line buffer kept for the next batch (a batch that grew
/// while the store was slow is not kept).
const SPARE_MAX: usize = 32 << 20;

/// A batch whose content is fixed.
#[derive(Clone, Default)]
struct Frozen {
    /// Its lines, until compressed.
    lines: Vec<u8>,
    hashes: Vec<Digest>,
    /// The batch object's reference, once compressed (its version id once written).
    batch: Option<BatchRef>,
    /// The batch object, compressed.
    bytes: Bytes,
    records: usize,
    line_bytes: usize,
    sessions: Vec<SessionSummary>,
    /// The seal as first signed, with its bytes: a retry writes exactly
    /// these, so that a seal written by an attempt whose answer was lost is
    /// recognised as ours.
    signed: Option<(Seal, Bytes)>,
}

/// The writes of one seal (the batch object, then the seal object), done
/// apart from the [`Writer`], which meanwhile takes more records: see
/// [`Writer::begin_seal`].
pub struct SealJob {
    archive: Archive,
    key: SigningKey,
    writer: String,
    zstd_level: i32,
    frozen: Frozen,
    body: SealBody,
    seal_key: String,
}

/// A batch object an earlier run wrote before crashing: see [`Writer::written_batch`].
#[derive(Debug)]
pub struct WrittenBatch {
    /// How many of the spooled lines it holds.
    pub lines: usize,
    key: String,
    sha256: Digest,
    bytes: Bytes,
}

/// What a [`SealJob`] did, for [`Writer::finish_seal`].
pub struct SealDone {
    frozen: Frozen,
    result: Result<(Seal, Option<String>)>,
}

impl fmt::Debug for SealJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealJob")
            .field("seal_key", &self.seal_key)
            .field("records", &self.frozen.records)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SealDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealDone")
            .field("records", &self.frozen.records)
            .field("ok", &self.result.is_ok())
            .finish()
    }
}

impl SealJob {
    /// Compresses the batch (the first time), writes the batch object (an
    /// identical one left by an earlier attempt is accepted), then signs and
    /// writes the seal.
    pub async fn run(mut self) -> SealDone {
        let result = self.write().await;
        SealDone {
            frozen: self.frozen,
            result,
        }
    }

    /// Compresses the lines and fixes the batch object's reference.
    fn compress(&mut self) -> Result<()> {
        let f = &mut self.frozen;
        if f.records == 0 || f.batch.is_some() {
            return Ok(());
        }
        let compressed =
            zstd::bulk::compress(&f.lines, self.zstd_level).map_err(|source| Error::Io {
                path: "zstd".into(),
                source,
            })?;
        let sha256 = Digest::sha256(&compressed);
        f.batch = Some(BatchRef {
            key: layout::batch_key(&self.writer, self.body.batch_no, &sha256),
            len: compressed.len() as u64,
            merkle_root: merkle::root(&f.hashes).unwrap_or_default(),
            records: f.records as u64,
            sha256,
            version_id: None,
        });
        f.bytes = Bytes::from(compressed);
        // Emptied, and given back to the writer by `finish_seal`.
        f.lines.clear();
        f.hashes.clear();
        if f.lines.capacity() > SPARE_MAX {
            f.lines = Vec::new();
            f.hashes = Vec::new();
        }
        Ok(())
    }

    async fn write(&mut self) -> Result<(Seal, Option<String>)> {
        self.compress()?;
        if let Some(b) = &mut self.frozen.batch {
            b.version_id =
                put_batch(&self.archive, &b.key, self.frozen.bytes.clone(), &b.sha256).await?;
        }
        let (sealed, bytes) = match &self.frozen.signed {
            Some(signed) => signed.clone(),
            None => {
                self.body.batch = self.frozen.batch.clone();
                let sealed = seal::seal(self.body.clone(), &self.key)?;
                let bytes = Bytes::from(crate::canonical::to_vec(&sealed)?);
                self.frozen.signed = Some((sealed.clone(), bytes.clone()));
                (sealed, bytes)
            }
        };
        match self.archive.put_new(&self.seal_key, bytes.clone()).await {
            Ok(version) => Ok((sealed, version)),
            Err(Error::AlreadyExists { key }) => {
                // An earlier attempt may have written it and lost the answer.
                if self.archive.get(&key).await? == bytes {
                    let version = self.archive.version_of(&key).await?;
                    return Ok((sealed, version));
                }
                Err(Error::WriterConflict {
                    writer: self.writer.clone(),
                    reason: format!("{key} holds a seal this writer did not write"),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Writes a batch object; an identical object left by an earlier failed
/// attempt is accepted, a different one is an error.
async fn put_batch(
    archive: &Archive,
    key: &str,
    bytes: Bytes,
    sha256: &Digest,
) -> Result<Option<String>> {
    match archive.put_new(key, bytes).await {
        Err(Error::AlreadyExists { key }) => {
            let existing = archive.get(&key).await?;
            if Digest::sha256(&existing) == *sha256 {
                archive.version_of(&key).await
            } else {
                Err(Error::AlreadyExists { key })
            }
        }
        r => r,
    }
}

/// Chains, seals and archives the records of one writer.
pub struct Writer {
    archive: Archive,
    key: SigningKey,
    id: String,
    opts: WriterOptions,
    chain: Chain,
    batch_no: u64,
    prev_seal: Digest,
    /// The previous seal object's version id, on stores with versions.
    prev_seal_version: Option<String>,
    last_seal_ns: u64,
    pending: Pending,
    /// Where the line of the record appended last starts in `pending.lines`.
    last_line: usize,
    closed: bool,
    /// Whether the newest seal in the archive (this run's or an earlier
    /// one's) is marked closed.
    newest_closed: bool,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("archive", &self.archive)
            .field("id", &self.id)
            .field("batch_no", &self.batch_no)
            .field("pending", &self.pending_records())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens writer `id` on `archive`, continuing what it wrote before.
    ///
    /// Fails with [`Error::Recovery`] if the writer's existing seals do not
    /// verify with `key` or do not form an unbroken chain: run
    /// `sealtrail verify` to see why, and use a new writer id.
    pub async fn open(
        archive: Archive,
        key: SigningKey,
        id: &str,
        opts: WriterOptions,
    ) -> Result<Self> {
        if !valid_writer_id(id) {
            return Err(Error::InvalidWriterId { id: id.to_owned() });
        }
        let mut w = Writer {
            archive,
            key,
            id: id.to_owned(),
            opts,
            chain: Chain::new(id),
            batch_no: 0,
            prev_seal: seal_genesis(id),
            prev_seal_version: None,
            last_seal_ns: 0,
            pending: Pending::default(),
            last_line: 0,
            closed: false,
            newest_closed: false,
        };
        w.recover().await?;
        if w.last_seal_ns == 0 {
            w.last_seal_ns = (w.opts.clock)();
        }
        Ok(w)
    }

    async fn recover(&mut self) -> Result<()> {
        let fail = |reason: String| Error::Recovery {
            writer: self.id.clone(),
            reason,
        };
        let dir = layout::seals_dir(&self.id);
        // On S3, every seal as first written, also one hidden by a delete
        // marker or overwritten: the writer continues its true chain (and
        // never writes a second seal under a key that holds one).
        let listed: Vec<(String, Option<String>)> =
            match self.archive.list_versions_in(&dir).await? {
                Some(versions) => {
                    let mut first: BTreeMap<String, String> = BTreeMap::new();
                    // Newest first per key: the last version with data is the first written.
                    for v in versions.into_iter().filter(|v| !v.delete_marker) {
                        first.insert(v.key, v.version_id);
                    }
                    first.into_iter().map(|(k, v)| (k, Some(v))).collect()
                }
                None => self
                    .archive
                    .list(&dir)
                    .await?
                    .into_iter()
                    .map(|o| (o.key, None))
                    .collect(),
            };
        let trusted = [self.key.verifying_key()];
        if let Some((last, version)) = listed.last() {
            self.prev_seal_version = match version {
                Some(v) => Some(v.clone()),
                None => self.archive.version_of(last).await?,
            };
        }
        for (key, version) in listed {
            let Some(layout::Name::Seal { batch_no, .. }) = layout::parse(&key) else {
                return Err(fail(format!("unexpected object {key} among the seals")));
            };
            if batch_no != self.batch_no {
                return Err(fail(format!("seal {} is missing", self.batch_no)));
            }
            let bytes = match &version {
                Some(v) => self.archive.get_version(&key, v).await?,
                None => self.archive.get(&key).await?,
            };
            let s: Seal = serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("seal {key} is unreadable: {e}")))?;
            seal::verify_seal(&s, &trusted).map_err(|e| {
                fail(format!(
                    "seal {key}: {e}. A writer continues only with the key it signed with; \
                     after a key change, start a new writer (another writer id, or a new \
                     spool directory for the default one), and verify with both public keys"
                ))
            })?;
            if s.body.writer != self.id
                || s.body.batch_no != batch_no
                || s.body.prev_seal != self.prev_seal
            {
                return Err(fail(format!("seal {key} does not continue the seal chain")));
            }
            for sess in &s.body.sessions {
                self.chain.set_head(
                    &sess.id,
                    Head {
                        next_seq: sess.last_seq + 1,
                        hash: sess.head,
                    },
                );
            }
            self.batch_no = batch_no + 1;
            self.prev_seal = s.hash;
            self.last_seal_ns = s.body.created_ns;
            self.newest_closed = s.body.closed;
        }
        Ok(())
    }

    /// The writer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The number the next seal will have.
    pub fn next_batch_no(&self) -> u64 {
        self.batch_no
    }

    /// Whether the writer has seals and the newest is marked closed (by this
    /// run or, before it was opened, by an earlier one).
    pub fn newest_seal_closed(&self) -> bool {
        self.newest_closed
    }

    /// The batch number that will hold the record appended last when the
    /// pending records are sealed: one more than [`Writer::next_batch_no`]
    /// when a batch whose seal failed is still to be sealed as it was and
    /// records came after it.
    pub fn last_pending_batch_no(&self) -> u64 {
        match &self.pending.frozen {
            Some(_) if !self.pending.hashes.is_empty() => self.batch_no + 1,
            _ => self.batch_no,
        }
    }

    /// Records appended but not yet sealed.
    pub fn pending_records(&self) -> usize {
        let fixed = self.pending.sealing.map(|(r, _)| r).unwrap_or(0)
            + self.pending.frozen.as_ref().map_or(0, |f| f.records);
        self.pending.hashes.len() + fixed
    }

    /// Uncompressed bytes appended but not yet sealed.
    pub fn pending_bytes(&self) -> usize {
        let fixed = self.pending.sealing.map(|(_, b)| b).unwrap_or(0)
            + self.pending.frozen.as_ref().map_or(0, |f| f.line_bytes);
        self.pending.lines.len() + fixed
    }

    /// The session chains.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Chains `record` (assigning `seq` and `prev`) into the pending batch and
    /// returns its hash. Nothing is written until the next seal.
    pub fn append(&mut self, mut record: TraceRecord) -> Result<Digest> {
        if self.closed {
            return Err(Error::WriterClosed {
                writer: self.id.clone(),
            });
        }
        let start = self.pending.lines.len();
        let hash = self.chain.append(&mut record, &mut self.pending.lines)?;
        self.last_line = start;
        self.pending.note(record, hash);
        Ok(hash)
    }

    /// Appends `records` in order, as [`Writer::append`] on each in turn
    /// would, faster when they belong to several sessions (their hashes are
    /// computed side by side). Returns for each the range of its line in
    /// [`Writer::pending_lines`], or why it was refused.
    pub fn append_many(&mut self, mut records: Vec<TraceRecord>) -> Vec<Result<Range<usize>>> {
        if self.closed {
            let closed = || Error::WriterClosed {
                writer: self.id.clone(),
            };
            return records.iter().map(|_| Err(closed())).collect();
        }
        let results = self
            .chain
            .append_many(&mut records, &mut self.pending.lines);
        records
            .into_iter()
            .zip(results)
            .map(|(record, r)| {
                r.map(|(hash, line)| {
                    self.last_line = line.start;
                    self.pending.note(record, hash);
                    line
                })
            })
            .collect()
    }

    /// The lines of the records appended since the last batch was fixed.
    pub fn pending_lines(&self) -> &[u8] {
        &self.pending.lines
    }

    /// The line (`{"hash":…,"record":…}\n`) of the record appended last, as
    /// the batch object will hold it. Valid right after [`Writer::append`]
    /// (after [`Writer::append_many`]: the line of its last record chained).
    pub fn last_line(&self) -> &[u8] {
        &self.pending.lines[self.last_line_range()]
    }

    /// Where [`Writer::last_line`] is in [`Writer::pending_lines`].
    pub fn last_line_range(&self) -> Range<usize> {
        self.last_line.min(self.pending.lines.len())..self.pending.lines.len()
    }

    /// Puts back a line this writer chained before a crash (from its spool):
    /// it must continue its session's chain exactly, or it is refused.
    pub fn adopt(&mut self, line: &[u8]) -> Result<Digest> {
        let stored: crate::record::StoredRecord =
            serde_json::from_slice(line).map_err(|e| Error::InvalidRecord {
                reason: format!("a spooled line is not a chained record: {e}"),
            })?;
        let seq = stored.record.seq;
        let session = stored.record.session.clone();
        let start = self.pending.lines.len();
        let head = self.chain.head(&session);
        // Already sealed (by a seal written without a spool marker, when
        // the spool could not be written): nothing to do. (Below the head of
        // a session with records pending, it is an error, as below.)
        let pending = self.pending.sessions.contains_key(&session)
            || self
                .pending
                .frozen
                .as_ref()
                .is_some_and(|f| f.sessions.iter().any(|s| s.id == session));
        if !pending && head.is_some_and(|h| seq < h.next_seq) {
            return Ok(stored.hash);
        }
        let hash = self.append(stored.record)?;
        if hash != stored.hash || self.pending.lines[start..self.pending.lines.len() - 1] != *line {
            return Err(Error::Recovery {
                writer: self.id.clone(),
                reason: format!(
                    "the spool's record {seq} of session {session:?} does not continue that \
                     session's chain as this archive's seals leave it ({}): the spool belongs to \
                     another archive (--store changed?), another writer id, or another key; start \
                     with the store, writer id and key it was written for, or with a new spool \
                     directory",
                    match head {
                        None => "they do not name the session".to_owned(),
                        Some(h) => format!("next seq {}, head {}", h.next_seq, h.hash),
                    }
                ),
            });
        }
        Ok(hash)
    }

    /// Seals the pending records, if any: as one batch, or as two when an
    /// earlier attempt wrote a batch object but not its seal. Returns the last seal.
    pub async fn flush(&mut self) -> Result<Option<SealReceipt>> {
        let mut last = None;
        while self.pending_records() > 0 {
            last = Some(self.seal_batch(false).await?);
        }
        Ok(last)
    }

    /// Seals now, with or without records (a heartbeat when there are none).
    pub async fn heartbeat(&mut self) -> Result<SealReceipt> {
        self.seal_batch(false).await
    }

    /// Seals pending records, or an empty heartbeat batch when nothing was
    /// sealed for a heartbeat interval. Call it at least every flush interval.
    pub async fn tick(&mut self) -> Result<Option<SealReceipt>> {
        if self.pending_records() > 0 {
            return self.flush().await;
        }
        if self.heartbeat_due() {
            return self.heartbeat().await.map(Some);
        }
        Ok(None)
    }

    /// Seals the pending records in a final seal marked closed. After it, no
    /// heartbeat is expected and the writer accepts nothing more.
    pub async fn close(&mut self) -> Result<SealReceipt> {
        if self.pending.frozen.is_some() {
            let r = self.seal_batch(false).await?;
            // Its seal was first signed by a close: it is the final seal.
            if self.closed {
                return Ok(r);
            }
        }
        let r = self.seal_batch(true).await?;
        self.closed = true;
        Ok(r)
    }

    async fn seal_batch(&mut self, closed: bool) -> Result<SealReceipt> {
        let job = self.begin_seal(closed)?;
        self.finish_seal(job.run().await)
    }

    /// Whether a batch whose seal failed waits to be sealed again as it is.
    pub fn has_frozen(&self) -> bool {
        self.pending.frozen.is_some()
    }

    /// Whether a heartbeat interval passed since the last seal.
    pub fn heartbeat_due(&self) -> bool {
        let now = (self.opts.clock)();
        now.saturating_sub(self.last_seal_ns) >= self.opts.heartbeat.as_nanos() as u64
    }

    /// How long until a heartbeat is due (zero when it is).
    pub fn heartbeat_in(&self) -> Duration {
        let since = (self.opts.clock)().saturating_sub(self.last_seal_ns);
        self.opts
            .heartbeat
            .saturating_sub(Duration::from_nanos(since))
    }

    /// Whether a [`SealJob`] from [`Writer::begin_seal`] is not finished yet.
    pub fn sealing(&self) -> bool {
        self.pending.sealing.is_some()
    }

    /// Pending records not in the batch being sealed or to be sealed again.
    pub fn open_records(&self) -> usize {
        self.pending.hashes.len()
    }

    /// Pending line bytes not in the batch being sealed or to be sealed again.
    pub fn open_bytes(&self) -> usize {
        self.pending.lines.len()
    }

    /// Fixes the next seal: the batch whose seal failed, if there is one
    /// (sealed again as it was: re-batching it could leave an object
    /// unsealed), else every pending record (none: a heartbeat), and returns
    /// the work to do (compressing, writing); records may be appended while
    /// it runs. Give the job's outcome to [`Writer::finish_seal`]
    /// before beginning another.
    pub fn begin_seal(&mut self, closed: bool) -> Result<SealJob> {
        if self.closed {
            return Err(Error::WriterClosed {
                writer: self.id.clone(),
            });
        }
        if self.pending.sealing.is_some() {
            return Err(Error::Io {
                path: "seal".into(),
                source: std::io::Error::other("a seal is already being written"),
            });
        }
        let frozen = match self.pending.frozen.take() {
            Some(f) => f,
            None => self.freeze(),
        };
        self.pending.sealing = Some((frozen.records, frozen.line_bytes));
        let body = SealBody {
            batch: None,
            batch_no: self.batch_no,
            closed,
            created_ns: (self.opts.clock)(),
            format: SEAL_FORMAT,
            heartbeat_ns: self.opts.heartbeat.as_nanos() as u64,
            key_id: String::new(),
            prev_seal: self.prev_seal,
            prev_seal_version: self.prev_seal_version.clone(),
            sessions: frozen.sessions.clone(),
            writer: self.id.clone(),
        };
        Ok(SealJob {
            archive: self.archive.clone(),
            key: self.key.clone(),
            writer: self.id.clone(),
            zstd_level: self.opts.zstd_level,
            seal_key: layout::seal_key(&self.id, self.batch_no),
            frozen,
            body,
        })
    }

    /// Takes the outcome of the job from [`Writer::begin_seal`]: on success
    /// the sealed records leave the pending batch; on failure the batch is
    /// kept, fixed, to be sealed again as it is.
    pub fn finish_seal(&mut self, done: SealDone) -> Result<SealReceipt> {
        self.pending.sealing = None;
        let frozen = done.frozen;
        let (sealed, version) = match done.result {
            Ok(x) => x,
            Err(e) => {
                self.pending.frozen = Some(frozen);
                return Err(e);
            }
        };
        self.prev_seal_version = version;
        self.batch_no += 1;
        self.prev_seal = sealed.hash;
        self.last_seal_ns = sealed.body.created_ns;
        self.newest_closed = sealed.body.closed;
        if sealed.body.closed {
            self.closed = true;
        }
        if frozen.lines.capacity() > 0 && frozen.lines.is_empty() {
            self.pending.spare = Some((frozen.lines, frozen.hashes));
        }
        Ok(SealReceipt {
            batch_no: sealed.body.batch_no,
            seal_key: layout::seal_key(&self.id, sealed.body.batch_no),
            seal_hash: sealed.hash,
            batch_key: frozen.batch.map(|b| b.key),
            records: frozen.records as u64,
        })
    }

    /// Fixes the pending records as the next batch, as a seal begun before a
    /// crash fixed them: the next seal seals exactly these records (so a
    /// batch object an earlier attempt wrote is the same object), and
    /// records appended later go to the batch after. Does nothing when a
    /// batch is already fixed or nothing is pending.
    pub fn fix_pending(&mut self) {
        if self.pending.frozen.is_none()
            && self.pending.sealing.is_none()
            && !self.pending.hashes.is_empty()
        {
            self.pending.frozen = Some(self.freeze());
        }
    }

    /// At a restart: if an earlier run wrote the object of this writer's
    /// next batch (and crashed before its seal), how many of `lines` (the
    /// spooled lines no seal covers, in order) that object holds, exactly,
    /// and the object; `None` when there is none that those lines begin.
    /// Give it to [`Writer::fix_written`] once those lines are adopted.
    pub async fn written_batch(&self, lines: &[&[u8]]) -> Result<Option<WrittenBatch>> {
        let dir = layout::batches_dir(&self.id);
        let prefix = format!("{dir}{:020}-", self.batch_no);
        let most: usize = lines.iter().map(|l| l.len() + 1).sum();
        for obj in self.archive.list(&dir).await? {
            if !obj.key.starts_with(&prefix) || obj.size > 2 * most as u64 + 1024 {
                continue;
            }
            let bytes = self.archive.get(&obj.key).await?;
            let sha256 = Digest::sha256(&bytes);
            if obj.key != layout::batch_key(&self.id, self.batch_no, &sha256) {
                continue;
            }
            let Ok((content, frame_len)) = crate::verify::batch::decode(&bytes, most as u64) else {
                continue;
            };
            if frame_len != bytes.len() {
                continue;
            }
            let (mut at, mut n) = (0, 0);
            for l in lines {
                let end = at + l.len();
                if content.get(at..end) != Some(l) || content.get(end) != Some(&b'\n') {
                    break;
                }
                at = end + 1;
                n += 1;
                if at == content.len() {
                    return Ok(Some(WrittenBatch {
                        lines: n,
                        key: obj.key,
                        sha256,
                        bytes,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Fixes the pending records as the next batch, as [`Writer::fix_pending`],
    /// with the object an earlier run wrote for exactly these records (from
    /// [`Writer::written_batch`]): the seal covers that object as it is, even
    /// when this run would compress differently (another zstd level or version).
    pub fn fix_written(&mut self, written: WrittenBatch) {
        self.fix_pending();
        let Some(f) = self.pending.frozen.as_mut() else {
            return;
        };
        if f.batch.is_some() || f.records != written.lines {
            return;
        }
        f.batch = Some(BatchRef {
            key: written.key,
            len: written.bytes.len() as u64,
            merkle_root: merkle::root(&f.hashes).unwrap_or_default(),
            records: f.records as u64,
            sha256: written.sha256,
            version_id: None,
        });
        f.bytes = written.bytes;
        f.lines.clear();
        f.hashes.clear();
    }

    /// Fixes the pending records as the next batch (compressed later, by
    /// its [`SealJob`]). Records appended later go to the next batch.
    fn freeze(&mut self) -> Frozen {
        self.last_line = 0;
        let (lines, hashes) = self.pending.spare.take().unwrap_or_default();
        Frozen {
            records: self.pending.hashes.len(),
            line_bytes: self.pending.lines.len(),
            lines: std::mem::replace(&mut self.pending.lines, lines),
            hashes: std::mem::replace(&mut self.pending.hashes, hashes),
            sessions: std::mem::take(&mut self.pending.sessions)
                .into_values()
                .collect(),
            ..Frozen::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::Kind;

    #[test]
    fn writer_ids() {
        for ok in ["w", "host-1.prod_a", &"x".repeat(64)] {
            assert!(valid_writer_id(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!valid_writer_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn spooled_lines_are_adopted_only_where_they_continue_the_chain() {
        let archive = Archive::memory();
        let key = SigningKey::from_bytes(&[3; 32]);
        let open = || Writer::open(archive.clone(), key.clone(), "w", WriterOptions::default());
        let mut w = open().await.unwrap();
        w.append(TraceRecord::new("s", Kind::Span, "a")).unwrap();
        w.flush().await.unwrap();
        let hash = w.append(TraceRecord::new("s", Kind::Span, "b")).unwrap();
        let line = w.last_line().strip_suffix(b"\n").unwrap().to_vec();
        drop(w); // A crash: "b" was spooled, not sealed.

        let mut w = open().await.unwrap();
        assert_eq!(w.adopt(&line).unwrap(), hash);
        assert_eq!(w.chain().head("s").unwrap().next_seq, 2);
        // The same line again does not continue the chain.
        assert!(matches!(w.adopt(&line), Err(Error::Recovery { .. })));
        // Nor does a line another writer chained.
        let mut other = Writer::open(
            Archive::memory(),
            key.clone(),
            "x",
            WriterOptions::default(),
        )
        .await
        .unwrap();
        other
            .append(TraceRecord::new("t", Kind::Span, "z"))
            .unwrap();
        let foreign = other.last_line().strip_suffix(b"\n").unwrap().to_vec();
        let mut w = open().await.unwrap();
        assert!(matches!(w.adopt(&foreign), Err(Error::Recovery { .. })));
    }

    #[tokio::test]
    async fn reopened_writer_continues_chains() {
        let archive = Archive::memory();
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut w = Writer::open(archive.clone(), key.clone(), "w", WriterOptions::default())
            .await
            .unwrap();
        w.append(TraceRecord::new("s", Kind::Span, "a")).unwrap();
        let first = w.append(TraceRecord::new("s", Kind::Span, "b")).unwrap();
        w.flush().await.unwrap();
        drop(w);
        let mut w = Writer::open(archive.clone(), key.clone(), "w", WriterOptions::default())
            .await
            .unwrap();
        assert_eq!(w.next_batch_no(), 1);
        assert_eq!(
            w.chain().head("s"),
            Some(Head {
                next_seq: 2,
                hash: first
            })
        );
        w.append(TraceRecord::new("s", Kind::Span, "c")).unwrap();
        let r = w.close().await.unwrap();
        assert_eq!((r.batch_no, r.records), (1, 1));
        assert!(matches!(
            w.append(TraceRecord::new("s", Kind::Span, "d")),
            Err(Error::WriterClosed { .. })
        ));

        // Another key cannot continue this writer's archive.
        let other = SigningKey::from_bytes(&[4; 32]);
        let err = Writer::open(archive, other, "w", WriterOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Recovery { .. }), "{err}");
    }

    /// A store whose seal writes fail while `fail` is above zero, after
    /// letting `pass` of them through.
    #[derive(Debug)]
    pub(crate) struct FailSeals {
        pub(crate) inner: object_store::memory::InMemory,
        pub(crate) fail: std::sync::atomic::AtomicUsize,
        pub(crate) pass: std::sync::atomic::AtomicUsize,
        /// Failed seal writes are written first (their answer is lost).
        pub(crate) lose_answer: std::sync::atomic::AtomicBool,
    }

    impl FailSeals {
        /// A store whose next `fail` seal writes fail (written first when
        /// `lose_answer`), and an archive over it.
        pub(crate) fn archive(fail: usize, lose_answer: bool) -> (Arc<Self>, Archive) {
            let store = Arc::new(FailSeals {
                inner: object_store::memory::InMemory::new(),
                fail: std::sync::atomic::AtomicUsize::new(fail),
                pass: std::sync::atomic::AtomicUsize::new(0),
                lose_answer: std::sync::atomic::AtomicBool::new(lose_answer),
            });
            let archive = Archive::from_store(store.clone(), "", "memory://fail-seals");
            (store, archive)
        }
    }

    /// Verifies `archive` against `key`, with the default options.
    async fn verify_by(archive: &Archive, key: &SigningKey) -> crate::Report {
        crate::verify(
            archive,
            &[key.verifying_key()],
            &crate::VerifyOptions::default(),
        )
        .await
        .unwrap()
    }

    impl std::fmt::Display for FailSeals {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FailSeals")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for FailSeals {
        async fn put_opts(
            &self,
            p: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            use std::sync::atomic::Ordering;
            if p.as_ref().contains("/seals/")
                && self
                    .pass
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err()
                && self.fail.load(Ordering::SeqCst) > 0
            {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                if self.lose_answer.load(Ordering::SeqCst) {
                    self.inner.put_opts(p, payload, opts).await?;
                }
                return Err(object_store::Error::Generic {
                    store: "FailSeals",
                    source: "injected outage".into(),
                });
            }
            self.inner.put_opts(p, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            p: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(p, opts).await
        }
        async fn get_opts(
            &self,
            p: &object_store::path::Path,
            opts: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(p, opts).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            opts: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, opts).await
        }
    }

    #[tokio::test]
    async fn a_failed_seal_is_retried_with_the_same_batch_and_leaves_no_orphan() {
        let (_store, archive) = FailSeals::archive(1, false);
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut w = Writer::open(archive.clone(), key.clone(), "w", WriterOptions::default())
            .await
            .unwrap();
        w.append(TraceRecord::new("s", Kind::Span, "a")).unwrap();
        w.append(TraceRecord::new("t", Kind::Span, "b")).unwrap();
        assert!(w.flush().await.is_err(), "the seal write fails once");
        // Records arriving in between go to the next batch.
        w.append(TraceRecord::new("s", Kind::Span, "c")).unwrap();
        let last = w.flush().await.unwrap().unwrap();
        assert_eq!((last.batch_no, last.records), (1, 1));
        w.close().await.unwrap();
        let objects = archive.list("").await.unwrap();
        let batches = objects
            .iter()
            .filter(|o| o.key.contains("/batches/"))
            .count();
        assert_eq!(batches, 2, "{objects:?}");
        let report = verify_by(&archive, &key).await;
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.records, 3);
    }

    /// A seal written by an attempt whose answer was lost is recognised as
    /// ours when the seal is written again: the writer goes on.
    #[tokio::test]
    async fn a_seal_whose_answer_was_lost_is_recognised_on_retry() {
        for closing in [false, true] {
            let (_store, archive) = FailSeals::archive(1, true);
            let key = SigningKey::from_bytes(&[3; 32]);
            let mut w = Writer::open(archive.clone(), key.clone(), "w", WriterOptions::default())
                .await
                .unwrap();
            w.append(TraceRecord::new("s", Kind::Span, "a")).unwrap();
            if closing {
                assert!(w.close().await.is_err(), "the answer is lost");
                w.close().await.unwrap();
            } else {
                assert!(w.flush().await.is_err(), "the answer is lost");
                w.append(TraceRecord::new("s", Kind::Span, "b")).unwrap();
                let r = w.flush().await.unwrap().unwrap();
                assert_eq!(r.batch_no, 1);
                w.close().await.unwrap();
            }
            let report = verify_by(&archive, &key).await;
            assert!(report.is_intact(), "{closing}: {:?}", report.findings);
            let want = if closing { (1, 1) } else { (2, 3) };
            assert_eq!((report.records, report.batches), want, "{closing}");
        }
    }

    #[tokio::test]
    async fn heartbeat_only_when_idle_for_an_interval() {
        let t = Arc::new(std::sync::atomic::AtomicU64::new(1_000));
        let clock = t.clone();
        let opts = WriterOptions::default()
            .with_heartbeat(Duration::from_nanos(100))
            .with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
        let mut w = Writer::open(
            Archive::memory(),
            SigningKey::from_bytes(&[3; 32]),
            "w",
            opts,
        )
        .await
        .unwrap();
        assert_eq!(w.tick().await.unwrap(), None);
        t.store(1_100, std::sync::atomic::Ordering::SeqCst);
        let hb = w.tick().await.unwrap().unwrap();
        assert_eq!((hb.batch_no, hb.records, hb.batch_key), (0, 0, None));
        assert_eq!(w.tick().await.unwrap(), None);
    }
}
