//! The background worker: map, spool, chain, seal, archive.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Counters, Msg};
use crate::archive::Archive;
use crate::error::Result;
use crate::keys::SigningKey;
use crate::map;
use crate::record::{Attributes, Kind, TraceRecord, Value, GAP_DROPPED, GAP_SESSION};
use crate::spool::{self, Entry, Spool};
use crate::writer::{now_ns, Writer, WriterOptions};

pub(crate) struct Config {
    pub(crate) archive: Archive,
    pub(crate) key: SigningKey,
    pub(crate) writer_id: String,
    pub(crate) flush_interval: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) resource: Attributes,
    pub(crate) counters: Arc<Counters>,
    pub(crate) allow_unlocked: bool,
}

/// Spans taken from the queue in one go, spooled with one fsync.
const GROUP: usize = 4096;

/// How long the worker waits after the first span of a group for more.
const LINGER: Duration = Duration::from_millis(2);

/// The longest wait between seal attempts while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct Worker {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    writer: Writer,
    spool: Spool,
    reported_dropped: u64,
    last_gap_ns: u64,
}

pub(crate) fn run(
    cfg: Config,
    spool: Spool,
    left: Vec<Entry>,
    rx: Receiver<Msg>,
    ready: mpsc::Sender<Result<()>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let _ = ready.send(Err(crate::Error::Io {
                path: "sealtrail-worker runtime".into(),
                source,
            }));
            return;
        }
    };
    match rt.block_on(cfg.archive.check_object_lock(cfg.allow_unlocked)) {
        Ok(Some(default)) => {
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
        Ok(None) => {}
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let opts = WriterOptions::default().with_heartbeat(cfg.heartbeat);
    let writer = match rt.block_on(Writer::open(
        cfg.archive.clone(),
        cfg.key.clone(),
        &cfg.writer_id,
        opts,
    )) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut w = Worker {
        cfg,
        rt,
        writer,
        spool,
        reported_dropped: 0,
        last_gap_ns: now_ns(),
    };
    // Records an earlier run spooled but did not seal: chain them again.
    for r in spool::unsealed(left, w.writer.next_batch_no()) {
        if let Err(e) = w.writer.append(r) {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    let _ = w.seal(false);
    w.serve(rx);
}

impl Worker {
    fn serve(&mut self, rx: Receiver<Msg>) {
        let mut next_flush = Instant::now() + self.cfg.flush_interval;
        // Consecutive failed seal attempts: retries back off exponentially.
        let mut failures = 0u32;
        let mut group: Vec<TraceRecord> = Vec::with_capacity(GROUP);
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            let mut control = None;
            match rx.recv_timeout(wait) {
                Ok(Msg::Span(c)) => {
                    group.push(self.record(*c));
                    // Linger briefly so that the spans that follow find the
                    // worker busy rather than parked: a parked receiver costs
                    // every sender a wake-up system call.
                    std::thread::sleep(LINGER);
                    // Take whatever else is already queued, up to a group
                    // and no further than the batch limit.
                    let room = self.room();
                    while group.len() < room {
                        match rx.try_recv() {
                            Ok(Msg::Span(c)) => group.push(self.record(*c)),
                            Ok(other) => {
                                control = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Ok(other) => control = Some(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.take(&mut group);
                    self.shutdown();
                    return;
                }
            }
            self.take(&mut group);
            match control {
                Some(Msg::Flush(reply)) => {
                    let r = self.seal(false);
                    next_flush = Instant::now() + self.cfg.flush_interval;
                    let _ = reply.send(r);
                }
                Some(Msg::Shutdown(reply)) => {
                    // Everything queued before the shutdown is sealed too.
                    while let Ok(m) = rx.try_recv() {
                        if let Msg::Span(c) = m {
                            group.push(self.record(*c));
                            if group.len() >= self.room() {
                                self.take(&mut group);
                                if self.full() {
                                    let _ = self.seal(false);
                                }
                            }
                        }
                    }
                    self.take(&mut group);
                    self.shutdown();
                    let _ = reply.send(());
                    return;
                }
                _ => {}
            }
            if (self.full() && failures == 0) || Instant::now() >= next_flush {
                failures = match self.seal(false) {
                    Ok(()) => 0,
                    Err(_) => failures.saturating_add(1),
                };
                next_flush = Instant::now() + self.retry_delay(failures);
            }
        }
    }

    /// The flush interval, doubled for each consecutive failure, at most [`MAX_BACKOFF`].
    fn retry_delay(&self, failures: u32) -> Duration {
        let interval = self.cfg.flush_interval;
        if failures == 0 {
            return interval;
        }
        interval
            .saturating_mul(1 << failures.min(16))
            .min(MAX_BACKOFF.max(interval))
    }

    /// Records that fit in the pending batch before it is full (at least one).
    fn room(&self) -> usize {
        self.cfg
            .max_batch_records
            .saturating_sub(self.writer.pending_records())
            .clamp(1, GROUP)
    }

    fn full(&self) -> bool {
        self.writer.pending_records() >= self.cfg.max_batch_records
            || self.writer.pending_bytes() >= self.cfg.max_batch_bytes
    }

    fn record(&self, c: super::Closed) -> TraceRecord {
        let (mut span, session) = c.into_span();
        span.resource = self.cfg.resource.clone();
        map::to_record(span, session, "tracing", now_ns())
    }

    /// Spools a group of records with one fsync, then chains them.
    fn take(&mut self, group: &mut Vec<TraceRecord>) {
        self.gap_record(group);
        if group.is_empty() {
            return;
        }
        let c = &self.cfg.counters;
        let spooled = group
            .iter()
            .try_for_each(|r| self.spool.append(r))
            .and_then(|()| self.spool.sync());
        match spooled {
            Ok(()) => c.spooled.fetch_add(group.len() as u64, Ordering::Relaxed),
            Err(_) => c.spool_errors.fetch_add(1, Ordering::Relaxed),
        };
        for r in group.drain(..) {
            // A record the chain refuses (e.g. an over-long session id) is dropped and counted.
            if self.writer.append(r).is_err() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds a `gap` record when spans were dropped since the last one.
    fn gap_record(&mut self, group: &mut Vec<TraceRecord>) {
        let dropped = self.cfg.counters.dropped.load(Ordering::Relaxed);
        if dropped == self.reported_dropped {
            return;
        }
        let now = now_ns();
        let mut r = TraceRecord::new(GAP_SESSION, Kind::Gap, "records dropped");
        r.attributes.insert(
            GAP_DROPPED,
            Value::Int((dropped - self.reported_dropped) as i64),
        );
        r.attributes
            .insert("audit.dropped_total", Value::Int(dropped as i64));
        r.attributes
            .insert("audit.overload", "drop_with_gap_record");
        r.start_ns = self.last_gap_ns;
        r.end_ns = now;
        r.received_ns = now;
        r.source = "sealtrail".into();
        r.resource = self.cfg.resource.clone();
        self.reported_dropped = dropped;
        self.last_gap_ns = now;
        group.push(r);
    }

    /// Seals pending records (or a heartbeat when due, or the final seal).
    fn seal(&mut self, closing: bool) -> Result<()> {
        let c = &self.cfg.counters;
        let pending = self.writer.pending_records();
        if pending > 0
            && self
                .spool
                .mark_sealing(self.writer.next_batch_no())
                .is_err()
        {
            c.spool_errors.fetch_add(1, Ordering::Relaxed);
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
                if self.spool.sealed().is_err() {
                    c.spool_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                c.store_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn shutdown(&mut self) {
        let mut group = Vec::new();
        self.take(&mut group);
        // The final seal; a store that stays down keeps the records in the
        // spool for the next start.
        for attempt in 0..3 {
            if self.seal(true).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
        }
    }
}
