//! The collector's pipeline: received spans and log records → the shared
//! mapping → chain → spool (durable, then acknowledged) → seal → archive.
//!
//! One thread owns the spool and the writer. Receivers [`Pipeline::submit`]
//! exports; the thread takes the exports queued (group commit: up to 1024
//! exports or 65,536 records), chains their records and spools the chained
//! lines (held records unchained), makes them durable with one `fdatasync`,
//! then answers them.
//!
//! **Sessions across spans.** A span whose own attributes name no session and
//! whose parent's session is not known yet is *held*: spooled (so it is
//! durable and acknowledged) under a hold id, until a span of the same trace
//! resolves its parent's session, or until the hold wait passes (default
//! 30 s), after which its session is the trace id. A root span without a
//! session attribute is in its trace id's session at once. A log record is
//! in the session of the span it names (held the same way), else in its
//! trace's, else in [`LOG_SESSION`]. Released records are chained in their
//! order of arrival, before the span that released them. See docs/COLLECTOR.md.
//!
//! **Duplicates.** A span whose (trace id, span id) was received before is
//! acknowledged and not archived again. The window is the last [`WINDOW`]
//! records received; a clean stop saves it for the next start
//! ([`crate::window`]), and after a crash it is rebuilt from the records
//! still in the spool (a log record is identified by a digest of its
//! encoding, kept in the record as [`LOG_DIGEST`], so across crashes too).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealtrail::chain::HASH_RUN;
use sealtrail::map::{self, SpanData};
use sealtrail::pipeline::{self, Sealer, SealerConfig};
use sealtrail::spool::Spool;
use sealtrail::writer::now_ns;
use sealtrail::TraceRecord;
use tokio::sync::oneshot;

use crate::window;

/// The session of log records that name neither a span, a trace nor a session.
pub(crate) const LOG_SESSION: &str = "sealtrail.logs";

/// The attribute that marks a record made from an OTLP log record.
pub(crate) const SIGNAL: &str = "otel.signal";

/// The attribute holding a log record's identity for the duplicate check
/// (hex; the first 24 bytes of a SHA-256 of the record as sent), so that the
/// check survives a restart as it does for spans.
pub(crate) const LOG_DIGEST: &str = "sealtrail.log_digest";

/// How many received records the duplicate check, and the sessions known
/// for children that arrive later, remember (oldest forgotten first).
pub(crate) const WINDOW: usize = 1_000_000;

/// Chained records waiting for their seal, at most (bytes), by default:
/// beyond this, while the store fails, exports are answered "unavailable"
/// (retryable). `sealtrail serve --max-backlog`.
pub(crate) const DEFAULT_MAX_BACKLOG: usize = 256 << 20;

/// How long a request waits for its turn (an HTTP body slot, then room in
/// the pipeline's queue) before it is refused as retryable
/// ([`Unavailable::Busy`]).
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Why a request waited too long: [`Unavailable::Busy`].
pub(crate) const QUEUE_FULL: &str = "its pipeline queue stayed full for 5 s";
pub(crate) const NO_BODY_SLOT: &str = "no slot for a request body came free within 5 s";

/// Exports taken from the queue in one group (one fsync).
const GROUP_EXPORTS: usize = 1024;

/// Records taken in one group, at most.
const GROUP_RECORDS: usize = 65_536;

/// A span or log record, converted, on its way to the pipeline.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) span: SpanData,
    /// A log record: `span.span_id` names the span it belongs to.
    pub(crate) log: bool,
    /// Identity for the duplicate check.
    pub(crate) key: [u8; 24],
}

/// The pipeline's answer to an export.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Records spooled (durable).
    pub(crate) new: usize,
    /// Records received before: acknowledged, not archived again.
    pub(crate) duplicates: usize,
    /// Records rejected, with the first reason.
    pub(crate) rejected: usize,
    pub(crate) message: Option<String>,
}

/// Why an export could not be taken: the client should retry later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    #[error("the spool could not be written: {0}")]
    Spool(String),
    #[error("the collector is shutting down")]
    ShuttingDown,
    #[error("the collector is busy: {0}; retry later")]
    Busy(&'static str),
    #[error("the archive store is failing: {0} bytes of records wait to be sealed; retry later")]
    Backlog(usize),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// False once shutdown began (`/readyz`).
    pub(crate) ready: std::sync::atomic::AtomicBool,
    pub(crate) spans_received: AtomicU64,
    pub(crate) logs_received: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) released_by_ancestor: AtomicU64,
    pub(crate) released_by_timeout: AtomicU64,
    pub(crate) released_at_shutdown: AtomicU64,
    /// Rejections by reason (decode, content_type, too_large, unauthenticated,
    /// backlog, invalid).
    pub(crate) rejected: Rejected,
    pub(crate) sealer: Arc<pipeline::Counters>,
}

#[derive(Debug, Default)]
pub(crate) struct Rejected {
    pub(crate) decode: AtomicU64,
    pub(crate) content_type: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) unauthenticated: AtomicU64,
    /// Refused as retryable: over `--max-backlog` while the store fails.
    pub(crate) backlog: AtomicU64,
    /// Refused as retryable: the spool could not be written.
    pub(crate) spool: AtomicU64,
    /// Refused as retryable: the collector is shutting down.
    pub(crate) shutting_down: AtomicU64,
    /// Refused as retryable: the pipeline's queue stayed full.
    pub(crate) busy: AtomicU64,
    /// Records rejected alone (partial success).
    pub(crate) invalid: AtomicU64,
    /// Records of requests refused as retryable, by reason.
    pub(crate) records_backlog: AtomicU64,
    pub(crate) records_spool: AtomicU64,
    pub(crate) records_shutting_down: AtomicU64,
    pub(crate) records_busy: AtomicU64,
}

impl Rejected {
    /// Counts a decoded request of `records` records refused as retryable.
    pub(crate) fn unavailable(&self, why: &Unavailable, records: u64) {
        let (requests, recs) = match why {
            Unavailable::Backlog(_) => (&self.backlog, &self.records_backlog),
            Unavailable::Spool(_) => (&self.spool, &self.records_spool),
            Unavailable::ShuttingDown => (&self.shutting_down, &self.records_shutting_down),
            Unavailable::Busy(_) => (&self.busy, &self.records_busy),
        };
        requests.fetch_add(1, Ordering::Relaxed);
        recs.fetch_add(records, Ordering::Relaxed);
    }
}

enum Msg {
    Export {
        items: Vec<Item>,
        ack: oneshot::Sender<Result<Accepted, Unavailable>>,
    },
    Shutdown(oneshot::Sender<Result<(), String>>),
}

/// The receivers' handle on the pipeline thread.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    tx: flume::Sender<Msg>,
    pub(crate) metrics: Arc<Metrics>,
}

/// How the pipeline runs.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) sealer: SealerConfig,
    pub(crate) spool_dir: PathBuf,
    pub(crate) hold_wait: Duration,
    pub(crate) session_keys: Vec<String>,
    /// Bytes of records waiting for their seal beyond which exports are
    /// refused as retryable (the store is failing).
    pub(crate) max_backlog: usize,
    /// At shutdown, leave held records in the spool for the next start
    /// instead of releasing them into their trace's session and sealing them.
    pub(crate) keep_held_on_shutdown: bool,
}

impl Pipeline {
    /// Opens the spool and the writer, recovers what an earlier run left, and
    /// starts the pipeline thread.
    pub(crate) fn start(cfg: Config) -> sealtrail::Result<(Pipeline, std::thread::JoinHandle<()>)> {
        let (spool, left) = Spool::open(&cfg.spool_dir)?;
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = flume::bounded(256);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("sealtrail-pipeline".into())
            .spawn(move || {
                // What the spool's records say, for the duplicate check and
                // the known sessions (spans: their session; log records: none).
                let mut spooled = Vec::new();
                let opened =
                    Sealer::open_visiting(cfg.sealer, spool, left, m.sealer.clone(), |r| {
                        if let Some(k) = record_key(r) {
                            let log = r.attributes.get(SIGNAL).is_some();
                            spooled.push((k, (!log).then(|| Arc::<str>::from(r.session.as_str()))));
                        }
                    });
                let (sealer, recovered) = match opened {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // However the thread ends (a panic included), the collector
                // is no longer ready.
                let _not_ready = NotReadyOnExit(m.clone());
                let mut state = State::new(sealer, m, cfg.hold_wait, cfg.session_keys);
                state.max_backlog = cfg.max_backlog;
                state.keep_held_on_shutdown = cfg.keep_held_on_shutdown;
                state.restore_window();
                if let Err(e) = state.recover(recovered, spooled) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                state.serve(rx);
            })
            .map_err(|source| sealtrail::Error::Io {
                path: "sealtrail-pipeline thread".into(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((Pipeline { tx, metrics }, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(sealtrail::Error::Io {
                    path: "sealtrail-pipeline thread".into(),
                    source: std::io::Error::other("the pipeline stopped during start-up"),
                })
            }
        }
    }

    /// Hands `items` to the pipeline; answers once they are durable in the
    /// spool. A request that finds the queue full for [`QUEUE_WAIT`] is
    /// refused as retryable (nothing taken), so that an overloaded collector
    /// tells its clients to back off rather than hold them until they time
    /// out.
    pub(crate) async fn submit(
        &self,
        items: Vec<Item>,
        deadline: tokio::time::Instant,
    ) -> Result<Accepted, Unavailable> {
        let (ack, done) = oneshot::channel();
        let send = self.tx.send_async(Msg::Export { items, ack });
        match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Unavailable::ShuttingDown),
            Err(_) => return Err(Unavailable::Busy(QUEUE_FULL)),
        }
        done.await.map_err(|_| Unavailable::ShuttingDown)?
    }

    /// Seals everything (held records too, unless they are kept for the
    /// next start) and stops the thread. An error says what the final seal
    /// left in the spool, and why.
    pub(crate) async fn shutdown(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send_async(Msg::Shutdown(tx))
            .await
            .map_err(|_| "the pipeline had already stopped".to_owned())?;
        rx.await
            .map_err(|_| "the pipeline stopped before its final seal".to_owned())?
    }
}

struct NotReadyOnExit(Arc<Metrics>);

impl Drop for NotReadyOnExit {
    fn drop(&mut self) {
        self.0.ready.store(false, Ordering::Relaxed);
    }
}

/// A span's identity (trace id and span id, 24 bytes), or a log record's
/// (a digest).
type SpanKey = [u8; 24];

fn span_key(trace: Option<&str>, span: Option<&str>) -> Option<SpanKey> {
    Some(span_bytes((
        u128::from_str_radix(trace?, 16).ok()?,
        u64::from_str_radix(span?, 16).ok()?,
    )))
}

/// A spooled record's identity for the duplicate check: a span's ids, a log
/// record's digest.
fn record_key(r: &TraceRecord) -> Option<SpanKey> {
    if r.attributes.get(SIGNAL).is_none() {
        return span_key(r.trace_id.as_deref(), r.span_id.as_deref());
    }
    match r.attributes.get(LOG_DIGEST) {
        Some(sealtrail::Value::Str(h)) => {
            let mut k = [0u8; 24];
            hex::decode_to_slice(h, &mut k).ok().map(|()| k)
        }
        _ => None,
    }
}

struct Held {
    /// The record, encoded as the spool holds it ([`sealtrail::spool::encode_held`]):
    /// written again when the spool compacts while it is held, so kept
    /// encoded (about half the memory of the record itself), and decoded
    /// once, when released.
    encoded: Vec<u8>,
    /// When it was received (the wait runs from then).
    received_ns: u64,
    /// The span whose session this record waits for.
    anchor: SpanKey,
    /// For a held span: its own key, which its children may be waiting on.
    own: Option<SpanKey>,
}

impl Held {
    /// The record, decoded from the bytes it was encoded to when held.
    fn record(&self) -> TraceRecord {
        serde_json::from_slice(&self.encoded)
            .expect("a held record decodes from the bytes it was encoded to")
    }
}

/// One spool operation of a group, in order.
enum Op {
    Record(TraceRecord),
    Hold(u64),
    Release(u64, TraceRecord),
}

struct State {
    sealer: Sealer,
    metrics: Arc<Metrics>,
    hold_wait: Duration,
    session_keys: Vec<String>,
    max_backlog: usize,
    keep_held_on_shutdown: bool,
    /// Records received in the window: the duplicate check, and for spans
    /// the session once known (for children that arrive later).
    known: HashMap<SpanKey, Option<Arc<str>>>,
    /// `known`'s keys, oldest first.
    order: VecDeque<SpanKey>,
    waiting: HashMap<SpanKey, Vec<u64>>,
    held: BTreeMap<u64, Held>,
    next_hold_id: u64,
}

impl State {
    fn new(
        sealer: Sealer,
        metrics: Arc<Metrics>,
        hold_wait: Duration,
        session_keys: Vec<String>,
    ) -> State {
        State {
            sealer,
            metrics,
            hold_wait,
            session_keys,
            max_backlog: DEFAULT_MAX_BACKLOG,
            keep_held_on_shutdown: false,
            known: HashMap::new(),
            order: VecDeque::new(),
            waiting: HashMap::new(),
            held: BTreeMap::new(),
            next_hold_id: 0,
        }
    }

    /// Reads the duplicate check and the known sessions that the last clean
    /// stop saved ([`crate::window`]); the spool's own records come after.
    fn restore_window(&mut self) {
        let dir = self.sealer.spool().dir().to_owned();
        let (writer, store, next) = self.sealer.identity();
        match window::load(&dir) {
            Ok(None) => {}
            Ok(Some((saved, _)))
                if saved.writer != writer
                    || saved.store != store
                    || saved.next_batch_no != next =>
            {
                tracing::warn!(
                    saved_writer = %saved.writer,
                    saved_store = %saved.store,
                    saved_next_seal = saved.next_batch_no,
                    next_seal = next,
                    "the duplicate window in the spool was saved by another writer, for another \
                     store, or before later seals (a run that crashed): not used"
                );
            }
            Ok(Some((_, entries))) => {
                let records = entries.len();
                for (k, session) in entries {
                    match session {
                        Some(s) => self.learn(k, s),
                        None => {
                            self.remember(k);
                        }
                    }
                }
                tracing::info!(
                    records,
                    "read the duplicate window that the last clean stop saved"
                );
            }
            Err(e) => tracing::warn!(
                detail = %e,
                "the duplicate window of the last clean stop is not used: a retry of a record \
                 received before it would be archived again"
            ),
        }
    }

    /// Saves the duplicate check and the known sessions for the next start
    /// ([`crate::window`]).
    fn save_window(&mut self) {
        let dir = self.sealer.spool().dir().to_owned();
        let (writer, store, next_batch_no) = self.sealer.identity();
        let saved = window::Saved {
            writer: writer.to_owned(),
            store: store.to_owned(),
            next_batch_no,
        };
        let entries = self
            .order
            .iter()
            .map(|k| (k, self.known.get(k).and_then(|s| s.as_deref())));
        if let Err(e) = window::save(&dir, &saved, entries) {
            tracing::warn!(
                detail = %e,
                "could not save the duplicate window: after this restart, a retry of a record \
                 received before it would be archived again"
            );
        }
    }

    /// Rebuilds the duplicate check, the known sessions and the held records
    /// from what the spool still holds.
    fn recover(
        &mut self,
        rec: pipeline::Recovered,
        spooled: Vec<(SpanKey, Option<Arc<str>>)>,
    ) -> sealtrail::Result<()> {
        self.next_hold_id = rec.next_hold_id;
        if rec.chained > 0 || !rec.held.is_empty() {
            tracing::info!(
                unsealed = rec.chained,
                held = rec.held.len(),
                "recovered from the spool what an earlier run acknowledged and did not seal"
            );
        }
        for (k, session) in spooled {
            match session {
                Some(s) => self.learn(k, s),
                None => {
                    self.remember(k);
                }
            }
        }
        let mut ops = Vec::new();
        for (id, record) in rec.held {
            self.remember_record(&record);
            let is_log = record.attributes.get(SIGNAL).is_some();
            // Already spooled as held: if its ancestor is known by now, release it.
            if let Some(r) = self.place(id, record, is_log, &mut ops) {
                ops.push(Op::Release(id, r));
            }
        }
        self.commit(ops, Vec::new());
        self.metrics
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Adds a spooled record to the duplicate check.
    fn remember_record(&mut self, r: &TraceRecord) {
        if let Some(k) = record_key(r) {
            self.remember(k);
        }
    }

    /// Adds `key` to the duplicate check; false if it was there.
    fn remember(&mut self, key: SpanKey) -> bool {
        if self.known.contains_key(&key) {
            return false;
        }
        self.known.insert(key, None);
        self.admit(key);
        true
    }

    /// Remembers the session of span `k`.
    fn learn(&mut self, k: SpanKey, session: Arc<str>) {
        match self.known.get_mut(&k) {
            Some(v) => *v = Some(session),
            None => {
                self.known.insert(k, Some(session));
                self.admit(k);
            }
        }
    }

    /// Records `k` as the newest key, forgetting the oldest beyond the window.
    fn admit(&mut self, k: SpanKey) {
        self.order.push_back(k);
        while self.order.len() > WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
    }

    fn serve(&mut self, rx: flume::Receiver<Msg>) {
        loop {
            let next = self
                .next_expiry()
                .map_or(self.sealer.next_seal(), |e| e.min(self.sealer.next_seal()));
            let wait = next.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.close() {
                        tracing::error!("{e}");
                    }
                    return;
                }
            };
            let mut exports = Vec::new();
            let mut shutdown = None;
            let mut n = 0;
            let mut next_msg = first;
            while let Some(m) = next_msg.take() {
                match m {
                    Msg::Export { items, ack } => {
                        n += items.len();
                        exports.push((items, ack));
                    }
                    Msg::Shutdown(reply) => {
                        shutdown = Some(reply);
                        break;
                    }
                }
                if exports.len() >= GROUP_EXPORTS || n >= GROUP_RECORDS {
                    break;
                }
                next_msg = rx.try_recv().ok();
            }
            let mut ops = Vec::new();
            let mut answers = Vec::with_capacity(exports.len());
            let backlog = self.sealer.pending_bytes();
            for (items, ack) in exports {
                if backlog > self.max_backlog {
                    // Backpressure while the store fails: take nothing more
                    // into memory; the clients retry (nothing is lost).
                    // (Counted by the receiver.)
                    let _ = ack.send(Err(Unavailable::Backlog(backlog)));
                    continue;
                }
                let accepted = self.take(items, &mut ops);
                answers.push((ack, accepted));
            }
            self.expire(&mut ops, now_ns());
            self.commit(ops, answers);
            if let Some(reply) = shutdown {
                // Exports queued behind the shutdown are answered "unavailable":
                // the client retries them against the next start.
                let _ = reply.send(self.close());
                return;
            }
            self.sealer
                .tick(self.held.iter().map(|(id, h)| (*id, h.encoded.as_slice())));
            self.stop_if_broken();
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        let (_, h) = self.held.first_key_value()?;
        let arrived = h.received_ns;
        let due = arrived.saturating_add(self.hold_wait.as_nanos() as u64);
        let now = now_ns();
        Some(Instant::now() + Duration::from_nanos(due.saturating_sub(now)))
    }

    /// Maps and places one export's items; returns its answer.
    fn take(&mut self, items: Vec<Item>, ops: &mut Vec<Op>) -> Accepted {
        let mut a = Accepted::default();
        let received = now_ns();
        for item in items {
            if !self.remember(item.key) {
                a.duplicates += 1;
                continue;
            }
            let record = map::to_record(item.span, String::new(), "otlp", received);
            let id = self.next_hold_id;
            self.next_hold_id += 1;
            match self.place(id, record, item.log, ops) {
                Some(r) => ops.push(Op::Record(r)),
                None => ops.push(Op::Hold(id)),
            }
            a.new += 1;
        }
        a
    }

    /// Resolves `record`'s session (releasing what waited for it, into
    /// `ops`) and returns it, or holds it under `id` and returns `None`.
    fn place(
        &mut self,
        id: u64,
        mut record: TraceRecord,
        is_log: bool,
        ops: &mut Vec<Op>,
    ) -> Option<TraceRecord> {
        let own = if is_log {
            None
        } else {
            span_key(record.trace_id.as_deref(), record.span_id.as_deref())
        };
        let anchor = if is_log {
            span_key(record.trace_id.as_deref(), record.span_id.as_deref())
        } else {
            span_key(record.trace_id.as_deref(), record.parent_span_id.as_deref())
        };
        let session: Option<Arc<str>> =
            match map::session_of(&record.attributes, &self.session_keys) {
                Some(s) => Some(s.into()),
                None => match anchor {
                    None => Some(
                        record
                            .trace_id
                            .clone()
                            .unwrap_or_else(|| LOG_SESSION.to_owned())
                            .into(),
                    ),
                    Some(a) => self.known.get(&a).cloned().flatten(),
                },
            };
        match (session, anchor) {
            (Some(s), _) => {
                record.session = s.to_string();
                if let Some(k) = own {
                    // What waited for this span arrived before it: chained first.
                    self.resolve(k, s, ops);
                }
                Some(record)
            }
            (None, Some(anchor)) => {
                self.waiting.entry(anchor).or_default().push(id);
                self.held.insert(
                    id,
                    Held {
                        encoded: sealtrail::spool::encode_held(&record)
                            .expect("a record always has canonical bytes"),
                        received_ns: record.received_ns,
                        anchor,
                        own,
                    },
                );
                self.metrics.held.fetch_add(1, Ordering::Relaxed);
                None
            }
            (None, None) => unreachable!("a record without an anchor has a session"),
        }
    }

    /// Span `k` is in `session`: release what waits for it, and for them.
    fn resolve(&mut self, k: SpanKey, session: Arc<str>, ops: &mut Vec<Op>) {
        self.learn(k, session.clone());
        let mut released = Vec::new();
        let mut queue = vec![k];
        while let Some(k) = queue.pop() {
            for id in self.waiting.remove(&k).unwrap_or_default() {
                if let Some(h) = self.held.remove(&id) {
                    if let Some(own) = h.own {
                        self.learn(own, session.clone());
                        queue.push(own);
                    }
                    released.push((id, h.record()));
                }
            }
        }
        if released.is_empty() {
            return;
        }
        self.metrics
            .released_by_ancestor
            .fetch_add(released.len() as u64, Ordering::Relaxed);
        self.metrics
            .held
            .fetch_sub(released.len() as u64, Ordering::Relaxed);
        released.sort_by_key(|(id, _)| *id);
        for (id, mut r) in released {
            r.session = session.to_string();
            ops.push(Op::Release(id, r));
        }
    }

    /// Releases the held records whose wait has passed at `now` into their
    /// trace's session; returns how many. (`u64::MAX`: all of them.)
    fn expire(&mut self, ops: &mut Vec<Op>, now: u64) -> u64 {
        let wait = self.hold_wait.as_nanos() as u64;
        let mut released = 0;
        while let Some((&id, h)) = self.held.first_key_value() {
            if now != u64::MAX && h.received_ns.saturating_add(wait) > now {
                break;
            }
            let Some(h) = self.held.remove(&id) else {
                break;
            };
            if let Some(w) = self.waiting.get_mut(&h.anchor) {
                w.retain(|x| *x != id);
                if w.is_empty() {
                    self.waiting.remove(&h.anchor);
                }
            }
            self.metrics.held.fetch_sub(1, Ordering::Relaxed);
            if now != u64::MAX {
                self.metrics
                    .released_by_timeout
                    .fetch_add(1, Ordering::Relaxed);
            }
            released += 1;
            let mut record = h.record();
            let session: Arc<str> = record
                .trace_id
                .clone()
                .unwrap_or_else(|| LOG_SESSION.to_owned())
                .into();
            record.session = session.to_string();
            ops.push(Op::Release(id, record));
            if let Some(own) = h.own {
                self.resolve(own, session, ops);
            }
        }
        released
    }

    /// Chains and spools the group with one fsync, then answers the exports.
    fn commit(
        &mut self,
        ops: Vec<Op>,
        answers: Vec<(oneshot::Sender<Result<Accepted, Unavailable>>, Accepted)>,
    ) {
        let n = ops.len();
        let mut held_failed = None;
        // Records are chained a run at a time (their hashes computed side
        // by side), in order: a hold's entry is spooled before the records
        // after it. A run is short, so that its records are still in the
        // CPU's cache when chained and freed.
        let mut run = Vec::with_capacity(HASH_RUN);
        for op in ops {
            match op {
                Op::Hold(id) => {
                    self.chain_run(&mut run);
                    // Released within this group: its line follows.
                    if let Some(h) = self.held.get(&id) {
                        if let Err(e) = self.sealer.spool().append_held_encoded(id, &h.encoded) {
                            held_failed.get_or_insert(e);
                        }
                    }
                }
                Op::Record(r) => run.push((r, None)),
                Op::Release(id, r) => run.push((r, Some(id))),
            }
            if run.len() == HASH_RUN {
                self.chain_run(&mut run);
            }
        }
        self.chain_run(&mut run);
        let written = match held_failed {
            Some(e) => Err(e),
            None => self.sealer.sync(n),
        };
        if let Err(e) = &written {
            tracing::error!(error = %e, "the spool could not be written; exports are refused until it can");
        }
        for (ack, accepted) in answers {
            let _ = ack.send(match &written {
                Ok(()) => Ok(accepted),
                Err(e) => Err(Unavailable::Spool(e.to_string())),
            });
        }
        if written.is_err() {
            // Nothing of this group was acknowledged; what was chained may
            // not be durable. Stop: the next start recovers from the spool.
            self.stop_for_spool();
        }
    }

    /// Chains and spools the records of `run`, emptying it.
    fn chain_run(&mut self, run: &mut Vec<(TraceRecord, Option<u64>)>) {
        if run.is_empty() {
            return;
        }
        let records = std::mem::replace(run, Vec::with_capacity(HASH_RUN));
        for e in self.sealer.append_many(records) {
            tracing::error!(error = %e, "a record was refused by the chain");
        }
    }

    /// A spool that failed to write or sync leaves records chained that
    /// may not be durable, and may hold a torn entry mid-segment. The
    /// collector stops at once (exit status 1) rather than acknowledge
    /// anything more; the next start recovers from what the spool holds.
    fn stop_if_broken(&self) {
        if self.sealer.spool_broken() {
            self.stop_for_spool();
        }
        if let Some(e) = self.sealer.conflict() {
            // Another process seals under this writer id: nothing this
            // one acknowledges could be sealed. Stop acknowledging.
            self.metrics.ready.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "stopping: exports are no longer acknowledged");
            std::process::exit(1);
        }
    }

    fn stop_for_spool(&self) -> ! {
        self.metrics.ready.store(false, Ordering::Relaxed);
        tracing::error!(
            "the spool could not be written: stopping; restart once the disk is writable, and the spool is recovered"
        );
        std::process::exit(1);
    }

    /// The final seal. Unless they are kept for the next start, the records
    /// still held are released into their trace's session first (as if
    /// their wait had passed), so that the spool is left empty.
    fn close(&mut self) -> Result<(), String> {
        let mut ops = Vec::new();
        self.expire(&mut ops, now_ns());
        if !self.keep_held_on_shutdown {
            let n = self.expire(&mut ops, u64::MAX);
            self.metrics
                .released_at_shutdown
                .fetch_add(n, Ordering::Relaxed);
            if n > 0 {
                tracing::info!(
                    records = n,
                    "released the records still held into their trace's session for the final seal"
                );
            }
        }
        // In batches of at most the batch limit, as while running.
        while !ops.is_empty() {
            let rest = ops.split_off(self.sealer.room(usize::MAX).min(ops.len()));
            self.commit(ops, Vec::new());
            if self.sealer.full() {
                // A failure is retried by the final seal below.
                let _ = self
                    .sealer
                    .flush(self.held.iter().map(|(id, h)| (*id, h.encoded.as_slice())));
            }
            ops = rest;
        }
        let sealed = self
            .sealer
            .close(self.held.iter().map(|(id, h)| (*id, h.encoded.as_slice())));
        self.save_window();
        sealed.map_err(|e| {
            format!(
                "the final seal failed: {e}; the records not sealed stay in the spool ({}) \
                     and are sealed by the next start with the same spool directory",
                self.sealer.spool().dir().display()
            )
        })
    }
}

/// The duplicate-check key of a span.
pub(crate) fn span_bytes((trace, span): (u128, u64)) -> SpanKey {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&trace.to_be_bytes());
    k[16..].copy_from_slice(&span.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that finds the queue full for [`QUEUE_WAIT`] is refused as
    /// retryable, and nothing of it is taken.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_for_the_queue_is_refused_as_busy() {
        let (tx, rx) = flume::bounded(1);
        let p = Pipeline {
            tx,
            metrics: Arc::new(Metrics::default()),
        };
        // The pipeline thread is stalled: the queue holds one export already.
        let (ack, _done) = oneshot::channel();
        p.tx.send(Msg::Export {
            items: Vec::new(),
            ack,
        })
        .unwrap();
        let started = tokio::time::Instant::now();
        let answer = p
            .submit(Vec::new(), tokio::time::Instant::now() + QUEUE_WAIT)
            .await;
        assert!(matches!(answer, Err(Unavailable::Busy(_))), "{answer:?}");
        assert_eq!(started.elapsed(), QUEUE_WAIT);
        assert_eq!(rx.len(), 1, "the refused request was not queued");
    }
}
