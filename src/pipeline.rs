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
    /// From a record's arrival in the spool to its seal being written.
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
    next_seal: Instant,
    /// When the oldest record not yet sealed was spooled.
    pending_since: Option<Instant>,
    /// A spool write that failed since the last sync.
    spool_failed: Option<crate::Error>,
}

/// What [`Sealer::open`] found in the spool from an earlier run.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records spooled but not sealed; already chained again, in spool order.
    pub chained: usize,
    /// Held records not released, in hold id order.
    pub held: Vec<(u64, TraceRecord)>,
    /// Every record left in the spool (for callers that rebuild state from them).
    pub records: Vec<TraceRecord>,
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io {
                path: "sealtrail runtime".into(),
                source,
            })?;
        if let Some(default) = rt.block_on(cfg.archive.check_object_lock(cfg.allow_unlocked))? {
            if let Some(r) = cfg.archive.retention() {
                if default.period < r.period {
                    tracing::warn!(
                        bucket_default_secs = default.period.as_secs(),
                        configured_secs = r.period.as_secs(),
                        "the bucket's default Object Lock retention is shorter than the configured retention"
                    );
                }
            }
        }
        let opts = WriterOptions::default().with_heartbeat(cfg.heartbeat);
        let writer = rt.block_on(Writer::open(
            cfg.archive.clone(),
            cfg.key.clone(),
            &cfg.writer_id,
            opts,
        ))?;
        let mut recovered = Recovered {
            held: spool::held(&left),
            next_hold_id: left
                .iter()
                .filter_map(|e| match e {
                    Entry::Held { id, .. }
                    | Entry::Line {
                        released: Some(id), ..
                    } => Some(id + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            ..Recovered::default()
        };
        recovered.records = left
            .iter()
            .filter_map(|e| match e {
                Entry::Record(r) => Some((**r).clone()),
                Entry::Line { line, .. } => {
                    serde_json::from_slice::<crate::record::StoredRecord>(line)
                        .ok()
                        .map(|s| s.record)
                }
                _ => None,
            })
            .collect();
        counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        let next_seal = Instant::now() + cfg.flush_interval;
        let mut s = Sealer {
            cfg,
            rt,
            writer,
            spool,
            counters,
            failures: 0,
            next_seal,
            pending_since: None,
            spool_failed: None,
        };
        for u in spool::unsealed(left, s.writer.next_batch_no()) {
            match u {
                Unsealed::Record(r) => s.writer.append(*r)?,
                Unsealed::Line(l) => s.writer.adopt(&l)?,
            };
            recovered.chained += 1;
        }
        if recovered.chained > 0 {
            s.pending_since = Some(Instant::now());
        }
        Ok((s, recovered))
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
        self.pending_since.get_or_insert_with(Instant::now);
        if let Err(e) = self.spool.append_line(self.writer.last_line(), released) {
            // Still chained, so still sealed; but not durable until then,
            // which the next sync reports.
            self.spool_failed.get_or_insert(e);
        }
        Ok(())
    }

    /// Makes the group durable: one `fdatasync` for all of it. Counts `n` records spooled.
    pub fn sync(&mut self, n: usize) -> Result<()> {
        let r = match self.spool_failed.take() {
            Some(e) => Err(e),
            None => self.spool.sync(),
        };
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

    /// Records that fit in the pending batch before it is full (at least one, at most `cap`).
    pub fn room(&self, cap: usize) -> usize {
        self.cfg
            .max_batch_records
            .saturating_sub(self.writer.pending_records())
            .clamp(1, cap.max(1))
    }

    /// Whether the pending batch reached a limit.
    pub fn full(&self) -> bool {
        self.writer.pending_records() >= self.cfg.max_batch_records
            || self.writer.pending_bytes() >= self.cfg.max_batch_bytes
    }

    /// Records chained but not sealed.
    pub fn pending(&self) -> usize {
        self.writer.pending_records()
    }

    /// When [`Sealer::tick`] next has something to do.
    pub fn next_seal(&self) -> Instant {
        self.next_seal
    }

    /// Seals when due: the batch is full (and the store is not failing), or
    /// the flush interval (or the backoff after failures) has passed.
    /// `held` are the records still held, written again after the seal marker.
    pub fn tick<'a>(&mut self, held: impl IntoIterator<Item = (u64, &'a TraceRecord)>) {
        if (self.full() && self.failures == 0) || Instant::now() >= self.next_seal {
            self.failures = match self.seal(false, held) {
                Ok(()) => 0,
                Err(_) => self.failures.saturating_add(1),
            };
            self.next_seal = Instant::now() + self.retry_delay();
        }
    }

    /// Seals now (pending records, or a heartbeat when due), whatever the backoff.
    pub fn flush<'a>(
        &mut self,
        held: impl IntoIterator<Item = (u64, &'a TraceRecord)>,
    ) -> Result<()> {
        let r = self.seal(false, held);
        self.failures = if r.is_ok() { 0 } else { self.failures + 1 };
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
        held: impl IntoIterator<Item = (u64, &'a TraceRecord)>,
    ) -> Result<()> {
        let c = self.counters.clone();
        let pending = self.writer.pending_records();
        let mut marked = Ok(());
        if pending > 0 {
            marked = self
                .spool
                .mark_sealing(self.writer.next_batch_no())
                .and_then(|()| {
                    for (id, r) in held {
                        self.spool.append_held(id, r)?;
                    }
                    self.spool.sync()
                });
            if marked.is_err() {
                c.spool_errors.fetch_add(1, Ordering::Relaxed);
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
                // Without a complete marker (and the held records after
                // it), the older segments must stay: recovery needs them.
                if marked.is_err() || self.spool.sealed().is_err() {
                    c.spool_errors.fetch_add(1, Ordering::Relaxed);
                }
                c.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                c.store_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The final seal, marked closed; tried three times. A store that stays
    /// down keeps the records in the spool for the next start.
    pub fn close<'a>(
        &mut self,
        held: impl IntoIterator<Item = (u64, &'a TraceRecord)> + Clone,
    ) -> Result<()> {
        let mut last = Ok(());
        for attempt in 0..3 {
            last = self.seal(true, held.clone());
            if last.is_ok() {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
        }
        last
    }
}
