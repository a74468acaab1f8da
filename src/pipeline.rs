//! The back half shared by the tracing layer's worker and the collector:
//! spool, chain, seal, archive (DESIGN.md). A [`Sealer`] runs on one thread,
//! with its own runtime for the store, so it never blocks the caller's.
//!
//! The caller appends a group of records ([`Sealer::append`]: each is
//! chained, and its chained line spooled), makes the group durable with one
//! `fdatasync` ([`Sealer::sync`]), acknowledges it, and calls
//! [`Sealer::tick`] between groups, which seals when the batch is full or
//! the flush interval has passed, and backs off exponentially (up to 10 s)
//! while the store fails.
//!
//! A seal's work (compressing the batch, writing its object, signing and
//! writing the seal) runs on the sealer's own runtime thread, one seal at a
//! time, while the caller goes on
//! chaining and spooling into the next batch; a later `tick` takes the
//! outcome. Before a batch is fixed, a spool marker naming it is written,
//! so each seal covers exactly the spooled lines before its marker; the
//! spool's older segments go once that batch is sealed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::archive::Archive;
use crate::error::Result;
use crate::keys::SigningKey;
use crate::record::TraceRecord;
use crate::spool::{self, Entry, Spool, Unsealed};
use crate::writer::{Writer, WriterOptions};

/// The longest wait between seal attempts while the store fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of the seal latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most each bucket's bound (not cumulative; the last is +Inf).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, in microseconds.
    pub sum_us: AtomicU64,
    /// Number of observations.
    pub count: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`Sealer`] did, readable from any thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records made durable in the spool.
    pub spooled: AtomicU64,
    /// Records sealed into the archive.
    pub sealed: AtomicU64,
    /// Seals written (batches, heartbeats included).
    pub seals: AtomicU64,
    /// Failed seal attempts.
    pub store_errors: AtomicU64,
    /// Failed spool writes.
    pub spool_errors: AtomicU64,
    /// Bytes in the spool.
    pub spool_bytes: AtomicU64,
    /// Records the chain refused (counted, never silently).
    pub refused: AtomicU64,
    /// From the oldest record not yet sealed being chained and spooled to the
    /// seal that covers it being written.
    pub seal_latency: Histogram,
}

/// How a [`Sealer`] seals.
#[derive(Debug)]
pub struct SealerConfig {
    /// Where seals and batches go.
    pub archive: Archive,
    /// The writer's signing key.
    pub key: SigningKey,
    /// The writer id.
    pub writer_id: String,
    /// Seal at least this often when records are pending.
    pub flush_interval: Duration,
    /// Seal an empty batch after this long without a seal.
    pub heartbeat: Duration,
    /// Seal when this many records are pending.
    pub max_batch_records: usize,
    /// Seal when this many (uncompressed) bytes are pending.
    pub max_batch_bytes: usize,
    /// Allow an S3 bucket without Object Lock.
    pub allow_unlocked: bool,
    /// zstd level of batch objects ([`crate::writer::DEFAULT_ZSTD_LEVEL`] by default).
    pub zstd_level: i32,
}

/// Spool, chain, seal, archive: see the module documentation.
#[derive(Debug)]
pub struct Sealer {
    cfg: SealerConfig,
    rt: tokio::runtime::Runtime,
    writer: Writer,
    spool: Spool,
    counters: Arc<Counters>,
    failures: u32,
    /// Set once another process was found sealing under this writer id
    /// (the reason): no seal is tried any more.
    conflict: Option<String>,
    next_seal: Instant,
    /// When the oldest record not yet sealed was spooled.
    pending_since: Option<Instant>,
    /// A spool write that failed since the last sync.
    spool_failed: Option<crate::Error>,
    /// A spool write or sync failed at some point: what was chained since
    /// may not be durable. The collector stops on this; the layer counts it.
    spool_broken: bool,
    /// The seal being written, apart from this thread.
    in_flight: Option<InFlight>,
    /// The batch named by the newest spool marker, until it is sealed: the
    /// segments before that marker may go only then.
    marker: Option<u64>,
}

/// A seal whose writes run on the runtime's thread while records keep coming.
#[derive(Debug)]
struct InFlight {
    handle: tokio::task::JoinHandle<crate::writer::SealDone>,
    /// When the oldest record it seals was chained.
    since: Option<Instant>,
}

/// How often a seal in flight is checked for completion.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(2);

/// What [`Sealer::open`] found in the spool from an earlier run.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records spooled but not sealed; already chained again, in spool order.
    pub chained: usize,
    /// Held records not released, in hold id order.
    pub held: Vec<(u64, TraceRecord)>,
    /// Larger than every hold id in the spool, released ones included.
    pub next_hold_id: u64,
}

impl Sealer {
    /// Opens the writer, checks the bucket's Object Lock, and chains again
    /// what `left` (the spool's entries from an earlier run) holds unsealed.
    pub fn open(
        cfg: SealerConfig,
        spool: Spool,
        left: Vec<Entry>,
        counters: Arc<Counters>,
    ) -> Result<(Sealer, Recovered)> {
        Sealer::open_inner(cfg, spool, left, counters, None)
    }

    /// [`Sealer::open`], showing `visit` every chained record left in the
    /// spool, sealed or not, in spool order (for callers that rebuild state
    /// from them), one at a time.
    pub fn open_visiting(
        cfg: SealerConfig,
        spool: Spool,
        left: Vec<Entry>,
        counters: Arc<Counters>,
        mut visit: impl FnMut(&TraceRecord),
    ) -> Result<(Sealer, Recovered)> {
        Sealer::open_inner(cfg, spool, left, counters, Some(&mut visit))
    }

    fn open_inner(
        mut cfg: SealerConfig,
        spool: Spool,
        left: Vec<Entry>,
        counters: Arc<Counters>,
        visit: Option<&mut dyn FnMut(&TraceRecord)>,
    ) -> Result<(Sealer, Recovered)> {
        if let Some(reason) = spool.conflict() {
            let dir = spool.dir().display();
            return Err(crate::Error::WriterConflict {
                writer: crate::spool::conflict_writer(spool.dir())
                    .unwrap_or_else(|| cfg.writer_id.clone()),
                reason: format!(
                    "an earlier run stopped sealing ({reason}); the records it acknowledged \
                     stay in {dir} and cannot be sealed under that writer id. Start with another \
                     spool directory (and a writer id of its own); `sealtrail recover \
                     --spool-dir {dir} --store URL --signing-key FILE` archives this one's \
                     records under a new writer id (if it has not done so already)",
                ),
            });
        }
        // One thread of its own: seal writes run there while the caller
        // goes on chaining and spooling (see Sealer::tick).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sealtrail-seal")
            .on_thread_start(crate::layer::own_thread)
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io {
                path: "sealtrail runtime".into(),
                source,
            })?;
        let (archive, default) =
            rt.block_on(cfg.archive.clone().checked_for_lock(cfg.allow_unlocked))?;
        cfg.archive = archive;
        if let Some(default) = default {
            if let Some(r) = cfg.archive.retention() {
                // Each object's own lock replaces the bucket's default: a
                // configured retention weaker than the default locks the
                // archive for less than the bucket's policy.
                let weaker_mode = r.mode == crate::archive::LockMode::Governance
                    && default.mode == crate::archive::LockMode::Compliance;
                if r.period < default.period || weaker_mode {
                    tracing::warn!(
                        bucket_default_secs = default.period.as_secs(),
                        bucket_default_mode = ?default.mode,
                        configured_secs = r.period.as_secs(),
                        configured_mode = ?r.mode,
                        "the configured Object Lock retention is shorter or weaker than the bucket's default; \
                         each object's own lock replaces the default, so objects are locked for less than the bucket's policy"
                    );
                }
            }
        }
        let opts = WriterOptions::default()
            .with_heartbeat(cfg.heartbeat)
            .with_zstd_level(cfg.zstd_level);
        let writer = rt.block_on(Writer::open(
            cfg.archive.clone(),
            cfg.key.clone(),
            &cfg.writer_id,
            opts,
        ))?;
        let next_batch_no = writer.next_batch_no();
        let found = spool::recover(left, next_batch_no, visit);
        check_sealed_heads(&writer, &found.sealed_heads)?;
        let mut recovered = Recovered {
            held: found.held,
            next_hold_id: found.next_hold_id,
            ..Recovered::default()
        };
        counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        let next_seal = Instant::now() + cfg.flush_interval;
        let mut s = Sealer {
            cfg,
            rt,
            writer,
            spool,
            counters,
            failures: 0,
            conflict: None,
            next_seal,
            pending_since: None,
            spool_failed: None,
            spool_broken: false,
            in_flight: None,
            marker: None,
        };
        // The batch a crash interrupted: its object, if written, says exactly
        // which lines it holds (a marker may be stale, or missing when the
        // spool failed); else the last marker naming it does.
        let lines: Vec<&[u8]> = found
            .unsealed
            .iter()
            .map_while(|u| match u {
                Unsealed::Line(l) => Some(l.as_slice()),
                Unsealed::Record(_) => None,
            })
            .collect();
        let mut written = s
            .rt
            .block_on(s.writer.written_batch(&lines))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not look for the batch object an earlier run wrote");
                None
            });
        let begun = written.as_ref().map_or(found.begun, |w| w.lines);
        drop(lines);
        for u in found.unsealed {
            match u {
                Unsealed::Record(r) => s.writer.append(*r)?,
                Unsealed::Line(l) => s.writer.adopt(&l)?,
            };
            recovered.chained += 1;
            if recovered.chained == begun {
                // The batch whose seal was begun before the crash, as it
                // was: its object may be in the store already. (Its marker
                // is not this run's: no compaction after its seal; the next
                // marker's seal covers the older segments.)
                match written.take() {
                    Some(w) => s.writer.fix_written(w),
                    None => s.writer.fix_pending(),
                }
            }
        }
        if recovered.chained > 0 {
            s.pending_since = Some(Instant::now());
        }
        Ok((s, recovered))
    }

    /// What this sealer writes as: its writer id, its store's URL, and the
    /// number its next seal will have.
    pub fn identity(&self) -> (&str, &str, u64) {
        (
            &self.cfg.writer_id,
            self.cfg.archive.url(),
            self.writer.next_batch_no(),
        )
    }

    /// Whether the writer has seals and the newest is marked closed.
    pub fn newest_seal_closed(&self) -> bool {
        self.writer.newest_seal_closed()
    }

    /// The spool, for records held outside the chain ([`Spool::append_held`]).
    pub fn spool(&mut self) -> &mut Spool {
        &mut self.spool
    }

    /// Chains `record` into the pending batch and spools its chained line
    /// (durable at the next [`Sealer::sync`]); `released` is the hold it
    /// releases. A record the chain refuses (an empty or over-long session
    /// id) is an error, counted, and neither chained nor spooled.
    pub fn append(&mut self, record: TraceRecord, released: Option<u64>) -> Result<()> {
        if let Err(e) = self.writer.append(record) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.spool_line(self.writer.last_line_range(), released);
        Ok(())
    }

    /// Spools the chained line at `line` of the writer's pending lines.
    fn spool_line(&mut self, line: std::ops::Range<usize>, released: Option<u64>) {
        self.pending_since.get_or_insert_with(Instant::now);
        // After a failed write the spool may end in a torn entry: nothing is
        // written after it (so that the next start can cut it off), and
        // records are still chained and sealed, only not durable before.
        if self.spool_failed.is_none() && !self.spool_broken {
            let line = &self.writer.pending_lines()[line];
            if let Err(e) = self.spool.append_line(line, released) {
                self.spool_failed = Some(e);
            }
        }
    }

    /// [`Sealer::append`] on each of `records` in turn (each with the hold
    /// it releases), with their hashes computed side by side where they
    /// belong to different sessions. Returns why each refused record was
    /// refused.
    pub fn append_many(&mut self, records: Vec<(TraceRecord, Option<u64>)>) -> Vec<crate::Error> {
        let (records, released): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let mut refused = Vec::new();
        for (r, released) in self.writer.append_many(records).into_iter().zip(released) {
            match r {
                Ok(line) => self.spool_line(line, released),
                Err(e) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    refused.push(e);
                }
            }
        }
        refused
    }

    /// Makes the group durable: one `fdatasync` for all of it. Counts `n` records spooled.
    pub fn sync(&mut self, n: usize) -> Result<()> {
        let r = match self.spool_failed.take() {
            Some(e) => Err(e),
            None if self.spool_broken => Err(crate::Error::Io {
                path: "spool".into(),
                source: std::io::Error::other(
                    "a spool write failed earlier: records are sealed, but no longer spooled until the next start",
                ),
            }),
            None => self.spool.sync(),
        };
        self.spool_broken |= r.is_err();
        match &r {
            Ok(()) => {
                self.counters.spooled.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
        r
    }

    /// Whether a spool write or sync ever failed (see [`Counters::spool_errors`]).
    pub fn spool_broken(&self) -> bool {
        self.spool_broken
    }

    /// Why this sealer stopped sealing for good, if it did: another process
    /// writes seals under the same writer id ([`crate::Error::WriterConflict`]).
    /// Its records stay in the spool; the next start refuses to continue
    /// until the conflict is resolved.
    pub fn conflict(&self) -> Option<crate::Error> {
        self.conflict
            .as_ref()
            .map(|reason| crate::Error::WriterConflict {
                writer: self.cfg.writer_id.clone(),
                reason: reason.clone(),
            })
    }

    /// Counts and logs a failed seal; a conflict stops sealing.
    fn failed(&mut self, e: &crate::Error) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        self.failures = self.failures.saturating_add(1);
        match e {
            crate::Error::WriterConflict { reason, .. } => {
                if self.conflict.is_none() {
                    tracing::error!(error = %e, "sealing stopped");
                    // Every later start must refuse too: the archive's seals
                    // may cover the same sessions and seqs as this spool's
                    // records, so no check at the start could be sure.
                    if let Err(e) = self.spool.mark_conflict(&self.cfg.writer_id, reason) {
                        tracing::error!(error = %e, "the conflict could not be recorded in the spool");
                    }
                }
                self.conflict = Some(reason.clone());
            }
            _ => tracing::warn!(
                error = %e,
                retry_in_ms = self.retry_delay().as_millis() as u64,
                "a seal failed; the records wait in the spool and it is tried again"
            ),
        }
    }

    /// Records that fit in the next batch before it is full (at least one, at most `cap`).
    pub fn room(&self, cap: usize) -> usize {
        self.cfg
            .max_batch_records
            .saturating_sub(self.writer.open_records())
            .clamp(1, cap.max(1))
    }

    /// Whether the next batch (records not being sealed yet) reached a limit.
    pub fn full(&self) -> bool {
        self.writer.open_records() >= self.cfg.max_batch_records
            || self.writer.open_bytes() >= self.cfg.max_batch_bytes
    }

    /// Records chained but not sealed.
    pub fn pending(&self) -> usize {
        self.writer.pending_records()
    }

    /// Bytes chained but not sealed.
    pub fn pending_bytes(&self) -> usize {
        self.writer.pending_bytes()
    }

    /// Seals at the next [`Sealer::tick`] (after the seal in flight, if
    /// any), as for a full batch: the caller's backlog is full. Not while
    /// the store is failing (the backoff holds).
    pub fn seal_soon(&mut self) {
        if self.failures == 0 {
            self.next_seal = Instant::now();
        }
    }

    /// When [`Sealer::tick`] next has something to do: the flush interval
    /// (or the backoff after failures), a seal in flight, or a heartbeat
    /// due, whichever comes first (a heartbeat is not late by up to a
    /// flush interval: verify allows only a few seconds' grace).
    pub fn next_seal(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.next_seal;
        if self.in_flight.is_some() {
            next = next.min(now + IN_FLIGHT_POLL);
        } else if self.failures == 0 {
            next = next.min(now + self.writer.heartbeat_in());
        }
        next
    }

    /// Seals when due: the batch is full (and the store is not failing), or
    /// the flush interval (or the backoff after failures) has passed. The
    /// seal's writes run on the sealer's own thread; records chained
    /// meanwhile go to the next batch, and a later `tick` takes the outcome.
    /// `held` are the records still held, encoded ([`spool::encode_held`]),
    /// written again when the spool compacts ([`Spool::sealed`]).
    pub fn tick<'a>(&mut self, held: impl IntoIterator<Item = (u64, &'a [u8])>) {
        if self.conflict.is_some() {
            return;
        }
        if let Some(f) = &self.in_flight {
            if !f.handle.is_finished() {
                return;
            }
            let _ = self.complete(held);
        }
        let due = (self.full() || self.writer.heartbeat_due()) && self.failures == 0;
        if due || Instant::now() >= self.next_seal {
            self.start();
        }
    }

    /// Starts a seal: of the batch whose seal failed, if any, else of every
    /// pending record (behind a new spool marker), else a heartbeat when due.
    fn start(&mut self) {
        if self.writer.pending_records() == 0 && !self.writer.heartbeat_due() {
            self.next_seal = Instant::now() + self.cfg.flush_interval;
            return;
        }
        // A broken spool gets no marker (see `append`); the seal goes on
        // without one, and the next start skips what the seals cover.
        if self.writer.open_records() > 0 && !self.writer.has_frozen() && !self.spool_broken {
            let batch_no = self.writer.next_batch_no();
            match self.spool.mark_sealing(batch_no) {
                Ok(()) => self.marker = Some(batch_no),
                Err(e) => {
                    tracing::error!(error = %e, "the spool marker could not be written");
                    self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
                    self.spool_broken = true;
                }
            }
        }
        match self.writer.begin_seal(false) {
            Ok(job) => {
                self.in_flight = Some(InFlight {
                    handle: self.rt.spawn(job.run()),
                    since: self.pending_since.take(),
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "a seal could not be prepared");
                self.failed(&e);
                self.next_seal = Instant::now() + self.retry_delay();
            }
        }
    }

    /// Takes the outcome of the seal in flight (waiting for it).
    fn complete<'a>(&mut self, held: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<()> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let done = match self.rt.block_on(f.handle) {
            Ok(d) => d,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let c = self.counters.clone();
        let r = self.writer.finish_seal(done);
        if let Err(e) = &r {
            self.failed(e);
        }
        match &r {
            Ok(receipt) => {
                self.failures = 0;
                c.seals.fetch_add(1, Ordering::Relaxed);
                c.sealed.fetch_add(receipt.records, Ordering::Relaxed);
                if let (Some(t), true) = (f.since, receipt.records > 0) {
                    c.seal_latency.observe(t.elapsed());
                }
                if self.marker.is_some_and(|m| receipt.batch_no >= m) {
                    self.marker = None;
                    self.compact(held);
                }
                c.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
            }
            Err(_) => {
                // The batch is sealed again later: its records are the oldest.
                if f.since.is_some() {
                    self.pending_since = f.since;
                }
            }
        }
        self.next_seal = Instant::now() + self.retry_delay();
        r.map(|_| ())
    }

    /// The segments before the newest marker are sealed: lets them go.
    fn compact<'a>(&mut self, held: impl IntoIterator<Item = (u64, &'a [u8])>) {
        if self.spool_broken {
            return;
        }
        if let Err(e) = self.spool.sealed(held) {
            // Sealed, but the spool may now hold a torn entry.
            tracing::error!(error = %e, "the spool could not be compacted");
            self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
            self.spool_broken = true;
        }
    }

    /// Seals now (pending records, or a heartbeat when due), whatever the
    /// backoff, after the seal in flight if there is one.
    pub fn flush<'a>(
        &mut self,
        held: impl IntoIterator<Item = (u64, &'a [u8])> + Clone,
    ) -> Result<()> {
        let _ = self.complete(held.clone());
        if let Some(e) = self.conflict() {
            return Err(e);
        }
        let r = self.seal(false, held);
        match &r {
            Ok(()) => self.failures = 0,
            Err(e) => self.failed(e),
        }
        self.next_seal = Instant::now() + self.retry_delay();
        r
    }

    /// The flush interval, doubled for each consecutive failure, at most [`MAX_BACKOFF`].
    fn retry_delay(&self) -> Duration {
        let interval = self.cfg.flush_interval;
        if self.failures == 0 {
            return interval;
        }
        interval
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF.max(interval))
    }

    fn seal<'a>(
        &mut self,
        closing: bool,
        held: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<()> {
        let c = self.counters.clone();
        let pending = self.writer.pending_records();
        // The marker names the batch that will hold the last pending record:
        // once the seal is written, the segments before it may go (the
        // records still held in them written again first; see Spool::sealed).
        if pending > 0 && !self.spool_broken {
            let named = self.writer.last_pending_batch_no();
            match self.spool.mark_sealing(named) {
                Ok(()) => self.marker = Some(named),
                Err(e) => {
                    tracing::error!(error = %e, "the spool marker could not be written");
                    c.spool_errors.fetch_add(1, Ordering::Relaxed);
                    self.spool_broken = true;
                }
            }
        }
        let result = if closing {
            self.rt.block_on(self.writer.close()).map(Some)
        } else {
            self.rt.block_on(self.writer.tick())
        };
        match result {
            Ok(Some(_)) => {
                c.seals.fetch_add(1, Ordering::Relaxed);
                let sealed = pending.saturating_sub(self.writer.pending_records());
                c.sealed.fetch_add(sealed as u64, Ordering::Relaxed);
                if sealed > 0 {
                    if let Some(t) = self.pending_since.take() {
                        c.seal_latency.observe(t.elapsed());
                    }
                }
                if self.marker.is_some() && self.writer.pending_records() == 0 {
                    self.marker = None;
                    self.compact(held);
                }
                c.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The final seal, marked closed; tried three times. A store that stays
    /// down keeps the records in the spool for the next start.
    pub fn close<'a>(
        &mut self,
        held: impl IntoIterator<Item = (u64, &'a [u8])> + Clone,
    ) -> Result<()> {
        let _ = self.complete(held.clone());
        let mut last = Ok(());
        for attempt in 0..3 {
            if let Some(e) = self.conflict() {
                return Err(e);
            }
            last = self.seal(true, held.clone());
            match &last {
                Ok(()) => return last,
                Err(e) => self.failed(e),
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
        }
        last
    }
}

/// The lines the spool's markers say are sealed must be what the archive's
/// seals hold: for each session, the seals reach at least its last such
/// line, and end exactly at it if they end at its seq. Otherwise another
/// process wrote seals under this writer id, and continuing would take
/// this spool's records for sealed (and delete them).
fn check_sealed_heads(
    writer: &Writer,
    sealed: &std::collections::HashMap<String, (u64, crate::digest::Digest)>,
) -> Result<()> {
    let mut sessions: Vec<_> = sealed.iter().collect();
    sessions.sort_by_key(|(s, _)| *s);
    for (session, &(seq, hash)) in sessions {
        let head = writer.chain().head(session);
        let covered = match head {
            None => false,
            Some(h) if h.next_seq <= seq => false,
            Some(h) => h.next_seq > seq + 1 || h.hash == hash,
        };
        if !covered {
            return Err(crate::Error::WriterConflict {
                writer: writer.id().to_owned(),
                reason: format!(
                    "the spool holds record {seq} of session {session:?} as sealed, but the \
                     archive's seals {}; the spool is left as it is",
                    match head {
                        None => "do not name that session".to_owned(),
                        Some(h) if h.next_seq <= seq =>
                            format!("end that session at seq {}", h.next_seq.saturating_sub(1)),
                        Some(_) => "end that session with another record".to_owned(),
                    }
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::Kind;
    use crate::writer::tests::FailSeals;

    /// Writer "w", key `[3; 32]`, sealing every millisecond.
    pub(crate) fn config(archive: &Archive) -> SealerConfig {
        SealerConfig {
            archive: archive.clone(),
            key: SigningKey::from_bytes(&[3; 32]),
            writer_id: "w".into(),
            flush_interval: Duration::from_millis(1),
            heartbeat: Duration::from_secs(60),
            max_batch_records: 100,
            max_batch_bytes: 1 << 20,
            allow_unlocked: true,
            zstd_level: crate::writer::DEFAULT_ZSTD_LEVEL,
        }
    }

    const NONE: [(u64, &[u8]); 0] = [];

    /// A store whose next `fail` seal writes fail, and an archive over it.
    fn failing_seals(fail: usize) -> (Arc<FailSeals>, Archive) {
        FailSeals::archive(fail, false)
    }

    /// Verifies `archive` with the key of [`config`].
    fn verify_with(archive: &Archive, opts: &crate::VerifyOptions) -> crate::Report {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        rt.block_on(crate::verify(archive, &[key], opts)).unwrap()
    }

    /// Two processes sealing under one writer id: the second to write a seal
    /// number stops sealing for good, and its next start refuses to take the
    /// other's seal for its own (which would have deleted its records from
    /// the spool); the spool keeps them.
    #[test]
    fn a_second_process_under_the_same_writer_id_stops_and_keeps_its_spool() {
        let archive = Archive::memory();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |dir: &std::path::Path| {
            let (spool, left) = Spool::open(dir).unwrap();
            Sealer::open(config(&archive), spool, left, Arc::new(Counters::default()))
        };
        let (mut a, _) = open(dir_a.path()).unwrap();
        a.append(TraceRecord::new("conv-a", Kind::Span, "a0"), None)
            .unwrap();
        a.sync(1).unwrap();
        a.flush(NONE).unwrap();
        // B starts on the same archive and writer id, and seals batch 1.
        let (mut b, _) = open(dir_b.path()).unwrap();
        b.append(TraceRecord::new("conv-b", Kind::Span, "b0"), None)
            .unwrap();
        b.sync(1).unwrap();
        b.flush(NONE).unwrap();
        // A's batch 1 cannot be sealed: a conflict, not a store failure.
        a.append(TraceRecord::new("conv-a", Kind::Span, "a1"), None)
            .unwrap();
        a.sync(1).unwrap();
        let e = a.flush(NONE).unwrap_err();
        assert!(matches!(e, crate::Error::WriterConflict { .. }), "{e}");
        assert!(a.conflict().is_some());
        // Nothing more is tried: neither a tick nor the final seal.
        let errors = a.counters.store_errors.load(Ordering::Relaxed);
        a.tick(NONE);
        assert!(matches!(
            a.close(NONE),
            Err(crate::Error::WriterConflict { .. })
        ));
        assert_eq!(a.counters.store_errors.load(Ordering::Relaxed), errors);
        drop(a);
        // A's restart refuses: the conflict is recorded in its spool.
        let e = open(dir_a.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, crate::Error::WriterConflict { .. })
                && text.contains("an earlier run stopped sealing"),
            "{text}"
        );
        // Without that record (a crash before it was written), the start
        // still sees that its marker names batch 1, which the archive has
        // (B's), and that those seals do not cover its records.
        std::fs::remove_file(dir_a.path().join("writer-conflict")).unwrap();
        let e = open(dir_a.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, crate::Error::WriterConflict { .. })
                && text.contains("record 1 of session \"conv-a\"")
                && text.contains("end that session at seq 0"),
            "{text}"
        );
        // Again, and the spool still holds "a1".
        assert!(open(dir_a.path()).is_err());
        let (_, left) = Spool::open(dir_a.path()).unwrap();
        let lines: Vec<_> = left
            .iter()
            .filter_map(|e| match e {
                Entry::Line { line, .. } => {
                    Some(serde_json::from_slice::<crate::record::StoredRecord>(line).unwrap())
                }
                _ => None,
            })
            .map(|r| r.record.name)
            .collect();
        assert!(lines.contains(&"a1".to_owned()), "{lines:?}");
        // B is not disturbed.
        b.close(NONE).unwrap();
    }

    #[test]
    fn records_after_a_failed_seal_survive_a_crash_while_the_next_seal_fails() {
        let (store, archive) = failing_seals(1);
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        {
            let (spool, left) = Spool::open(dir.path()).unwrap();
            let (mut s, _) = Sealer::open(config(&archive), spool, left, counters.clone()).unwrap();
            s.append(TraceRecord::new("s", Kind::Span, "a"), None)
                .unwrap();
            s.sync(1).unwrap();
            // Batch 0's object is written, its seal is not.
            assert!(s.flush(NONE).is_err());
            s.append(TraceRecord::new("s", Kind::Span, "b"), None)
                .unwrap();
            s.sync(1).unwrap();
            // Now seal 0 is written (as it was) but the seal of batch 1, with "b", fails.
            store.pass.store(1, Ordering::SeqCst);
            store.fail.store(1, Ordering::SeqCst);
            assert!(s.flush(NONE).is_err());
            // A crash: nothing more is written.
        }
        let (spool, left) = Spool::open(dir.path()).unwrap();
        let (mut s, rec) = Sealer::open(config(&archive), spool, left, counters).unwrap();
        assert_eq!(
            rec.chained, 1,
            "the acknowledged record \"b\" is adopted again"
        );
        s.close(NONE).unwrap();
        let report = verify_with(&archive, &crate::VerifyOptions::default());
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.records, 2);
    }

    /// A crash after a batch object is written and before its seal: at the
    /// restart the batch is made again from exactly the lines before its
    /// marker, so its object is the one already written (not a second,
    /// different one that would leave the first uncovered for good); the
    /// records spooled after the marker go to the next batch.
    #[test]
    fn a_crash_between_a_batch_and_its_seal_leaves_no_uncovered_object() {
        let (_store, archive) = failing_seals(1);
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        {
            let (spool, left) = Spool::open(dir.path()).unwrap();
            let (mut s, _) = Sealer::open(config(&archive), spool, left, counters.clone()).unwrap();
            for name in ["a", "b"] {
                s.append(TraceRecord::new("s", Kind::Span, name), None)
                    .unwrap();
            }
            s.sync(2).unwrap();
            // Batch 0's object is written, its seal is not.
            s.start();
            assert!(s.complete(NONE).is_err());
            s.append(TraceRecord::new("s", Kind::Span, "c"), None)
                .unwrap();
            s.sync(1).unwrap();
            // A crash.
        }
        let (spool, left) = Spool::open(dir.path()).unwrap();
        // Another zstd level than the run that wrote batch 0's object: the
        // object is taken as written all the same.
        let mut cfg = config(&archive);
        cfg.zstd_level = 19;
        let (mut s, rec) = Sealer::open(cfg, spool, left, counters).unwrap();
        assert_eq!(rec.chained, 3);
        s.close(NONE).unwrap();
        let report = verify_with(&archive, &crate::VerifyOptions::default());
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!((report.records, report.batches), (3, 2));
    }

    /// Heartbeats are written when due, not at the next flush interval: a
    /// flush interval longer than verify's grace must not make an idle
    /// writer look as if seals were deleted.
    /// A marker written for a batch that was fixed only later (the batch
    /// before it was failing) does not end that batch at the restart.
    #[test]
    fn a_stale_marker_does_not_split_the_batch_being_sealed_at_a_crash() {
        for marker_fails in [false, true] {
            stale_marker(marker_fails);
        }
    }

    fn stale_marker(marker_fails: bool) {
        let (store, archive) = failing_seals(2);
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let rec = |n: &str| TraceRecord::new("s", Kind::Span, n);
        {
            let (spool, left) = Spool::open(dir.path()).unwrap();
            let (mut s, _) = Sealer::open(config(&archive), spool, left, counters.clone()).unwrap();
            s.append(rec("a"), None).unwrap();
            s.sync(1).unwrap();
            s.start();
            assert!(s.complete(NONE).is_err(), "seal 0 fails");
            s.append(rec("b"), None).unwrap();
            s.sync(1).unwrap();
            // Marks batch 1 (after "b"), but seal 0 fails again.
            assert!(s.flush(NONE).is_err());
            s.start();
            s.complete(NONE).unwrap();
            s.append(rec("c"), None).unwrap();
            s.sync(1).unwrap();
            // Batch 1 is "b" and "c": its object is written, its seal is not.
            store.fail.store(1, Ordering::SeqCst);
            // Its own marker could not be written (the disk filled up): only
            // the stale one is in the spool.
            s.spool_broken = marker_fails;
            s.start();
            assert!(s.complete(NONE).is_err());
            // A crash.
        }
        let (spool, left) = Spool::open(dir.path()).unwrap();
        let (mut s, _) = Sealer::open(config(&archive), spool, left, counters).unwrap();
        s.close(NONE).unwrap();
        let report = verify_with(&archive, &crate::VerifyOptions::default());
        assert!(report.is_intact(), "{marker_fails}: {:?}", report.findings);
        assert_eq!(report.records, 3);
    }

    #[test]
    fn heartbeats_are_on_time_whatever_the_flush_interval() {
        let archive = Archive::memory();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&archive);
        cfg.flush_interval = Duration::from_secs(30);
        cfg.heartbeat = Duration::from_millis(200);
        let (spool, left) = Spool::open(dir.path()).unwrap();
        let (mut s, _) = Sealer::open(cfg, spool, left, Arc::new(Counters::default())).unwrap();
        let end = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < end {
            std::thread::sleep(s.next_seal().saturating_duration_since(Instant::now()));
            s.tick(NONE);
        }
        s.close(NONE).unwrap();
        let opts = crate::VerifyOptions::default().with_heartbeat_grace(Duration::from_millis(150));
        let report = verify_with(&archive, &opts);
        assert!(report.is_intact(), "{:?}", report.findings);
        assert!(report.batches >= 5, "{}", report.batches);
    }

    #[test]
    fn held_records_outlive_seals_without_a_marker() {
        let archive = Archive::memory();
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let held = TraceRecord::new("", Kind::Span, "held");
        {
            let (mut spool, left) = Spool::open(dir.path()).unwrap();
            spool.append_held(7, &held).unwrap();
            spool.sync().unwrap();
            let (_s, _) = Sealer::open(config(&archive), spool, left, counters.clone()).unwrap();
        }
        // A start with nothing pending, closed at once: the final seal has no
        // marker, so the segment holding the held record must stay.
        {
            let (spool, left) = Spool::open(dir.path()).unwrap();
            let (mut s, rec) =
                Sealer::open(config(&archive), spool, left, counters.clone()).unwrap();
            assert_eq!(rec.held.len(), 1);
            let encoded: Vec<(u64, Vec<u8>)> = rec
                .held
                .iter()
                .map(|(id, r)| (*id, spool::encode_held(r).unwrap()))
                .collect();
            s.close(encoded.iter().map(|(id, e)| (*id, e.as_slice())))
                .unwrap();
        }
        let (spool, left) = Spool::open(dir.path()).unwrap();
        let (_s, rec) = Sealer::open(config(&archive), spool, left, counters).unwrap();
        assert_eq!(rec.held.len(), 1, "the held record is still in the spool");
        assert_eq!(rec.held[0].0, 7);
    }
}
