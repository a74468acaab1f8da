//! The background worker: map, then spool, chain, seal and archive through a
//! [`Sealer`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{live, Counters, Msg};
use crate::error::Result;
use crate::map;
use crate::pipeline::{Sealer, SealerConfig};
use crate::record::{Attributes, Kind, TraceRecord, Value, GAP_DROPPED, GAP_SESSION};
use crate::spool::{Entry, Spool};
use crate::writer::now_ns;

pub(crate) struct Config {
    pub(crate) sealer: SealerConfig,
    pub(crate) resource: Attributes,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_backlog: usize,
    /// The byte bound of the queue: room is given back as spans are taken.
    pub(crate) gate: Arc<super::gate::Gate>,
    /// Where the boxes of the spans taken go back to.
    pub(crate) pool: Arc<super::Pool>,
}

/// Closes the gate however the worker ends: senders waiting for room give up.
struct CloseGate(Arc<super::gate::Gate>);

impl Drop for CloseGate {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Spans taken from the queue in one go, spooled with one fsync.
const GROUP: usize = 4096;

/// How long the worker waits after the first span of a group for more.
const LINGER: Duration = Duration::from_millis(2);

/// The layer never holds records: every span knows its session when it closes.
const NOTHING_HELD: [(u64, &[u8]); 0] = [];

/// How often the worker looks again while the backlog is full.
const BACKLOG_POLL: Duration = Duration::from_millis(10);

struct Worker {
    sealer: Sealer,
    resource: Attributes,
    counters: Arc<Counters>,
    max_backlog: usize,
    reported_dropped: u64,
    last_gap_ns: u64,
    gate: Arc<super::gate::Gate>,
    pool: Arc<super::Pool>,
}

pub(crate) fn run(
    cfg: Config,
    spool: Spool,
    left: Vec<Entry>,
    rx: Receiver<Msg>,
    ready: mpsc::Sender<Result<()>>,
) {
    let _close = CloseGate(cfg.gate.clone());
    let sealer = match Sealer::open(cfg.sealer, spool, left, cfg.counters.sealer.clone()) {
        Ok((s, _)) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut w = Worker {
        sealer,
        resource: cfg.resource,
        counters: cfg.counters,
        max_backlog: cfg.max_backlog,
        gate: cfg.gate,
        pool: cfg.pool,
        reported_dropped: 0,
        last_gap_ns: now_ns(),
    };
    let _ = ready.send(Ok(()));
    // Seal what an earlier run left.
    let _ = w.sealer.flush(NOTHING_HELD);
    w.serve(rx);
}

impl Worker {
    fn serve(&mut self, rx: Receiver<Msg>) {
        loop {
            self.wait_for_room();
            let wait = self
                .sealer
                .next_seal()
                .saturating_duration_since(Instant::now());
            let mut control = None;
            // Each span is chained as soon as it is taken (its record is
            // freed while the allocator still has it at hand); the group
            // is spooled with one fsync.
            let mut n = 0;
            match rx.recv_timeout(wait) {
                Ok(Msg::Span(c)) => {
                    let room = self.sealer.room(GROUP);
                    self.append(c, &mut n);
                    // Linger briefly so that the spans that follow find the
                    // worker busy rather than parked: a parked receiver costs
                    // every sender a wake-up system call.
                    std::thread::sleep(LINGER);
                    // Take whatever else is already queued, up to a group
                    // and no further than the batch limit.
                    while n < room {
                        match rx.try_recv() {
                            Ok(Msg::Span(c)) => self.append(c, &mut n),
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
                    // No layer is left: no span is open.
                    let _ = self.shutdown(n, 0);
                    return;
                }
            }
            self.gap_record(&mut n);
            self.sync(n);
            match control {
                Some(Msg::Flush(reply)) => {
                    let _ = reply.send(self.sealer.flush(NOTHING_HELD));
                }
                Some(Msg::Shutdown(reply)) => {
                    // The open spans are stated now: from here on a span
                    // that closes is counted as dropped, not queued. Those
                    // closing at this moment, and those queued behind the
                    // shutdown message, are sealed (or counted) first.
                    let open = self.counters.live.fetch_or(live::STATED, Ordering::SeqCst)
                        & live::OPEN_MASK;
                    let mut n = 0;
                    let mut room = self.sealer.room(GROUP);
                    loop {
                        let settled =
                            self.counters.live.load(Ordering::SeqCst) & live::CLOSING_MASK == 0;
                        while let Ok(m) = rx.try_recv() {
                            if let Msg::Span(c) = m {
                                self.append(c, &mut n);
                                if n >= room {
                                    self.sync(n);
                                    n = 0;
                                    if self.sealer.full() {
                                        let _ = self.sealer.flush(NOTHING_HELD);
                                    }
                                    room = self.sealer.room(GROUP);
                                }
                            }
                        }
                        if settled {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    drop(rx);
                    let _ = reply.send(self.shutdown(n, open));
                    return;
                }
                _ => {}
            }
            self.sealer.tick(NOTHING_HELD);
            self.publish_backlog();
        }
    }

    /// While the records waiting for their seal fill the backlog (the store
    /// is slow or failing), takes no more spans, so that memory stays
    /// bounded: the queue fills and the overload policy applies. Seals (and
    /// retries) meanwhile; returns once there is room, or when the guard is
    /// dropped (what is queued then is spooled and the final seal tried).
    fn wait_for_room(&mut self) {
        while self.sealer.pending_bytes() >= self.max_backlog
            && !self.counters.closing.load(Ordering::Relaxed)
        {
            // A healthy store: seal now, not at the flush interval.
            self.sealer.seal_soon();
            let wait = self
                .sealer
                .next_seal()
                .saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(BACKLOG_POLL));
            self.sealer.tick(NOTHING_HELD);
            self.publish_backlog();
        }
    }

    fn publish_backlog(&self) {
        self.counters
            .backlog
            .store(self.sealer.pending_bytes() as u64, Ordering::Relaxed);
    }

    fn record(&self, c: &mut super::Closed) -> TraceRecord {
        let (mut span, session) = c.take_span();
        span.resource = self.resource.clone();
        map::to_record(span, session, "tracing", now_ns())
    }

    /// Chains and spools (without syncing) the record of `c`; counts it in `n`.
    fn append(&mut self, mut c: Box<super::Closed>, n: &mut usize) {
        self.gate.leave(c.queued);
        let r = self.record(&mut c);
        self.pool.give(c);
        self.chain(r, n);
    }

    fn chain(&mut self, r: TraceRecord, n: &mut usize) {
        // A record the chain refuses (e.g. an over-long session id) is
        // dropped, counted, and stated in the next gap record.
        if self.sealer.append(r, None).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            *n += 1;
        }
    }

    /// Makes the `n` records appended since the last sync durable, with one fsync.
    fn sync(&mut self, n: usize) {
        if n > 0 {
            let _ = self.sealer.sync(n);
        }
    }

    /// Chains a `gap` record when spans were dropped since the last one
    /// (counted in `n`).
    fn gap_record(&mut self, n: &mut usize) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
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
        r.resource = self.resource.clone();
        self.reported_dropped = dropped;
        self.last_gap_ns = now;
        self.chain(r, n);
    }

    /// Syncs the `n` records not synced yet (and a last gap record, and one
    /// for the spans still open), then writes the final seal.
    fn shutdown(&mut self, mut n: usize, open: u64) -> Result<()> {
        self.gap_record(&mut n);
        self.open_spans_record(open, &mut n);
        self.sync(n);
        self.sealer.close(NOTHING_HELD)
    }

    /// Chains a `gap` record for the `open` captured spans still open at the
    /// final seal (a task still running, a span around the code that drops
    /// the guard): they will not be archived. Counted as dropped now; when
    /// they close later they are not counted again (see `live`).
    fn open_spans_record(&mut self, open: u64, n: &mut usize) {
        if open == 0 {
            return;
        }
        let dropped = self.counters.dropped.fetch_add(open, Ordering::Relaxed) + open;
        let now = now_ns();
        let mut r = TraceRecord::new(GAP_SESSION, Kind::Gap, "spans open at shutdown");
        // Since the last gap record: these, and any dropped in between.
        r.attributes.insert(
            GAP_DROPPED,
            Value::Int(dropped.saturating_sub(self.reported_dropped) as i64),
        );
        r.attributes
            .insert("audit.dropped_total", Value::Int(dropped as i64));
        r.attributes
            .insert("audit.open_at_shutdown", Value::Int(open as i64));
        r.start_ns = now;
        r.end_ns = now;
        r.received_ns = now;
        r.source = "sealtrail".into();
        r.resource = self.resource.clone();
        self.reported_dropped = dropped;
        self.chain(r, n);
    }
}
