//! The `tracing` layer: one line in a Rust agent's subscriber.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! let (audit, _guard) = sealtrail::layer().expect("audit trail");
//! tracing_subscriber::registry().with(audit).init();
//! // … spans with gen_ai.* / audit.* fields are now archived; dropping the
//! // guard seals and flushes everything.
//! ```
//!
//! The instrumented thread only captures fields into a per-span struct and,
//! when the span closes, hands it to a bounded queue. A background thread with
//! its own runtime maps, spools (fsync, group commit), chains, seals and
//! archives. See docs/MAPPING.md for which spans are captured and how.

mod fields;
mod gate;
mod sites;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::span::{Attributes as SpanAttributes, Id, Record};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{Extensions, ExtensionsMut, LookupSpan};
use tracing_subscriber::Layer;

pub use fields::{OTEL_KIND, OTEL_NAME, OTEL_STATUS_CODE, OTEL_STATUS_MESSAGE};

use crate::archive::DEFAULT_STORE;
use crate::error::{Error, Result};
use crate::keys::{self, SigningKey};
use crate::map::{self, SpanData};
use crate::record::{Attributes, Event, Status, StatusCode, Value};
use crate::writer::{now_ns, valid_writer_id};
use fields::Capture as FieldCapture;

/// Environment variable naming the signing key file when none is configured.
pub const SIGNING_KEY_ENV: &str = "SEALTRAIL_SIGNING_KEY_FILE";
/// Default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "./sealtrail-spool";

/// Default of [`AuditLayerBuilder::with_max_backlog`]: 64 MiB.
pub const DEFAULT_MAX_BACKLOG: usize = 64 << 20;
/// Default of [`AuditLayerBuilder::with_max_queue_bytes`]: 64 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 << 20;
pub use crate::record::GAP_SESSION;

/// Which spans become records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capture {
    /// Spans with a `gen_ai.*`, `audit.*`, `openinference.*`, `traceloop.*`
    /// or `langfuse.*` field, and every span nested inside one (the default).
    #[default]
    Conventions,
    /// Every span the layer sees (narrow it with `.with_filter(..)`).
    All,
}

/// What to do when the queue to the background worker is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overload {
    /// Wait for room: never drop a record (the default). A slow store slows the agent.
    #[default]
    Block,
    /// Drop the record, count it, and write a signed `gap` record (session
    /// [`GAP_SESSION`]) stating how many were dropped and when.
    DropWithGapRecord,
}

/// Counters of the layer, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Spans captured and queued.
    pub captured: u64,
    /// Spans dropped: by [`Overload::DropWithGapRecord`], refused by the
    /// chain (e.g. an over-long session id), closed once the guard is
    /// being dropped, or still open at the final seal. All but those that
    /// close while the final seal is written are stated in gap records.
    pub dropped: u64,
    /// Records written to the spool and synced.
    pub spooled: u64,
    /// Records sealed into the archive.
    pub sealed: u64,
    /// Seals written (heartbeats included).
    pub seals: u64,
    /// Failed seal attempts (the records stay pending and are retried).
    pub store_errors: u64,
    /// Failed spool writes (the records are still sealed, but were not durable in between).
    pub spool_errors: u64,
    /// Bytes of records chained and spooled but not sealed yet. It grows
    /// while the store is slow or failing, up to about the backlog limit
    /// ([`AuditLayerBuilder::with_max_backlog`]).
    pub backlog_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) captured: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Captured spans open ([`live`] fields), spans closing right now, and
    /// whether the final seal has stated the open ones: what makes every
    /// span at shutdown either archived or counted as dropped, exactly once.
    pub(crate) live: AtomicU64,
    /// Bytes chained but not sealed (set by the worker).
    pub(crate) backlog: AtomicU64,
    /// The guard is being dropped: the worker stops waiting for room, and
    /// spans that close from now on are dropped (counted), not queued.
    pub(crate) closing: AtomicBool,
    pub(crate) sealer: Arc<crate::pipeline::Counters>,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = &self.sealer;
        Stats {
            captured: g(&self.captured),
            dropped: g(&self.dropped),
            spooled: g(&p.spooled),
            sealed: g(&p.sealed),
            seals: g(&p.seals),
            store_errors: g(&p.store_errors),
            spool_errors: g(&p.spool_errors),
            backlog_bytes: g(&self.backlog),
        }
    }
}

/// A span's state in the registry's extensions: boxed once when the span
/// opens, and the same box goes to the worker when it closes. `layer` tells
/// apart the sealtrail layers of one subscriber (each with its own filter,
/// say): a span that a second one captures too keeps that state in a
/// [`MoreOpen`].
struct Open {
    layer: u64,
    closed: Box<Closed>,
}

/// The states of a span captured by more than one sealtrail layer, beyond the first.
struct MoreOpen(Vec<Open>);

thread_local! {
    static OWN_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one of sealtrail's own (the layer's worker,
/// the seal runtime's threads): no span there is captured, so the archive's
/// own I/O (an HTTP client's spans, under `Capture::All`) never feeds back
/// into the trail, nor waits on the queue it drains.
pub(crate) fn own_thread() {
    OWN_THREAD.with(|c| c.set(true));
}

fn on_own_thread() -> bool {
    OWN_THREAD.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// [`Counters::live`]: open captured spans in the low 32 bits, spans being
/// closed (between leaving the open count and being counted as captured or
/// dropped) in the next 31, and [`live::STATED`] once the final seal has
/// counted the open spans as dropped.
pub(crate) mod live {
    pub(crate) const OPEN: u64 = 1;
    pub(crate) const OPEN_MASK: u64 = (1 << 32) - 1;
    pub(crate) const CLOSING: u64 = 1 << 32;
    pub(crate) const CLOSING_MASK: u64 = ((1 << 31) - 1) << 32;
    pub(crate) const STATED: u64 = 1 << 63;
}

/// The session named by a span that a layer does not capture (a request
/// span with only `session.id`, say), for the captured spans inside it:
/// (layer, session).
struct Carriers(Vec<(u64, String)>);

fn carried_session(ext: &Extensions<'_>, layer: u64) -> Option<String> {
    ext.get::<Carriers>()?
        .0
        .iter()
        .find(|c| c.0 == layer)
        .map(|c| c.1.clone())
}

fn carry_session(ext: &mut ExtensionsMut<'_>, layer: u64, session: String) {
    match ext.get_mut::<Carriers>() {
        Some(c) => match c.0.iter_mut().find(|c| c.0 == layer) {
            Some(c) => c.1 = session,
            None => c.0.push((layer, session)),
        },
        None => ext.insert(Carriers(vec![(layer, session)])),
    }
}

/// The session that `values` name, by the fields at `indexes` (in order of
/// preference).
fn session_in(
    values: impl FnOnce(&mut FieldCapture<'_, fields::Fields>),
    indexes: &[u8],
) -> Option<String> {
    let (fields, _, _) = capture_apart(values);
    let i = fields::session_index(&fields, indexes)?;
    fields.get(i)?.as_session()
}

/// Captures `values` on their own, outside any span's state (and so
/// without its lock held): fields, `otel.name`, status.
fn capture_apart(
    values: impl FnOnce(&mut FieldCapture<'_, fields::Fields>),
) -> (fields::Fields, Option<String>, (StatusCode, Option<String>)) {
    let mut fields = fields::Fields::default();
    let (mut name, mut status) = (None, (StatusCode::Unset, None));
    values(&mut FieldCapture {
        attributes: &mut fields,
        name: &mut name,
        status: &mut status,
        message: None,
    });
    (fields, name, status)
}

/// The state `layer` keeps for a span.
fn open_of<'a>(ext: &'a Extensions<'_>, layer: u64) -> Option<&'a Closed> {
    match ext.get::<Open>() {
        Some(o) if o.layer == layer => Some(&o.closed),
        _ => ext
            .get::<MoreOpen>()?
            .0
            .iter()
            .find(|o| o.layer == layer)
            .map(|o| &*o.closed),
    }
}

fn open_of_mut<'a>(ext: &'a mut ExtensionsMut<'_>, layer: u64) -> Option<&'a mut Closed> {
    if ext.get_mut::<Open>().is_some_and(|o| o.layer == layer) {
        return ext.get_mut::<Open>().map(|o| &mut *o.closed);
    }
    ext.get_mut::<MoreOpen>()?
        .0
        .iter_mut()
        .find(|o| o.layer == layer)
        .map(|o| &mut *o.closed)
}

fn insert_open(ext: &mut ExtensionsMut<'_>, open: Open) {
    if ext.get_mut::<Open>().is_none() {
        ext.insert(open);
    } else if let Some(more) = ext.get_mut::<MoreOpen>() {
        more.0.push(open);
    } else {
        ext.insert(MoreOpen(vec![open]));
    }
}

fn remove_open(ext: &mut ExtensionsMut<'_>, layer: u64) -> Option<Box<Closed>> {
    if ext.get_mut::<Open>().is_some_and(|o| o.layer == layer) {
        return ext.remove::<Open>().map(|o| o.closed);
    }
    let more = ext.get_mut::<MoreOpen>()?;
    let i = more.0.iter().position(|o| o.layer == layer)?;
    Some(more.0.swap_remove(i).closed)
}

/// A span, open (in an [`Open`]) or closed on its way to the worker, which
/// formats and maps it.
pub(crate) struct Closed {
    state: SpanState,
    metadata: &'static tracing::Metadata<'static>,
    session: SessionOf,
    end_ns: u64,
    /// The bytes it holds in the queue to the worker ([`gate`]).
    queued: usize,
}

/// Where a closed span's session id is.
pub(crate) enum SessionOf {
    /// In the span's own field at this index (read by the worker, so the
    /// instrumented thread copies nothing).
    Own(usize),
    /// An ancestor's, copied at close (the ancestor may close first).
    Inherited(String),
    /// Nowhere: the trace id is the session.
    Trace,
}

/// About the heap bytes a value holds.
fn value_bytes(v: &Value) -> usize {
    16 + match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Map(m) => attributes_bytes(m),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => 0,
    }
}

fn attributes_bytes(a: &Attributes) -> usize {
    a.iter().map(|(k, v)| 48 + k.len() + value_bytes(v)).sum()
}

impl Closed {
    /// About the bytes it holds: itself, spilled fields, what is rare.
    fn approx_bytes(&self) -> usize {
        let mut n = std::mem::size_of::<Closed>() + self.state.fields.heap_bytes();
        if let Some(r) = &self.state.rare {
            n += std::mem::size_of::<Rare>()
                + r.name.as_ref().map_or(0, String::len)
                + r.status_message.as_ref().map_or(0, String::len)
                + r.links.len() * 24
                + r.events
                    .iter()
                    .map(|e| 64 + e.name.len() + attributes_bytes(&e.attributes))
                    .sum::<usize>();
        }
        if let SessionOf::Inherited(s) = &self.session {
            n += s.len();
        }
        n
    }

    /// The span's data and session. What it owns is moved out; the box it
    /// is in goes back to the [`Pool`].
    pub(crate) fn take_span(&mut self) -> (SpanData, String) {
        let s = &mut self.state;
        let trace_id = hex_words(&s.trace_id);
        let session = match std::mem::replace(&mut self.session, SessionOf::Trace) {
            SessionOf::Own(i) => s.fields.get(i).and_then(|v| v.as_session()),
            SessionOf::Inherited(session) => Some(session),
            SessionOf::Trace => None,
        }
        .unwrap_or_else(|| trace_id.clone());
        let rare = s.rare.take().map(|r| *r).unwrap_or_default();
        let span = SpanData {
            name: rare.name.unwrap_or_else(|| self.metadata.name().to_owned()),
            trace_id: Some(trace_id),
            span_id: Some(hex_words(&[s.span_id])),
            parent_span_id: (s.parent_span_id != 0).then(|| hex_words(&[s.parent_span_id])),
            start_ns: s.start_ns,
            end_ns: self.end_ns,
            status: Status {
                code: s.status,
                message: rare.status_message,
            },
            attributes: {
                let mut a = fields::named(&s.fields, self.metadata.fields());
                if !rare.links.is_empty() {
                    a.insert(map::OTEL_LINKS, links(&rare.links));
                }
                a
            },
            events: rare.events,
            resource: Attributes::new(),
        };
        (span, session)
    }
}

/// Lowercase hex of `words`, each big-endian (an id as OpenTelemetry writes
/// it), without going through `fmt` (three ids per span).
fn hex_words(words: &[u64]) -> String {
    let mut out = String::with_capacity(words.len() * 16);
    for w in words {
        let mut digits = [0u8; 16];
        hex::encode_to_slice(w.to_be_bytes(), &mut digits).expect("16 hex digits per word");
        out.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
    }
    out
}

/// Links as the collector archives OTLP links: one map per link.
fn links(links: &[([u64; 2], u64)]) -> Value {
    Value::Array(
        links
            .iter()
            .map(|(t, s)| {
                Value::Map(
                    [
                        ("trace_id", Value::Str(hex_words(t))),
                        ("span_id", Value::Str(hex_words(&[*s]))),
                    ]
                    .into_iter()
                    .collect(),
                )
            })
            .collect(),
    )
}

/// The boxes of closed spans, given back by the worker once it has taken
/// their data, for new spans: the instrumented thread then mostly allocates
/// nothing for a span, and frees nothing the worker allocated (an allocator
/// frees a block handed across threads slowly). Never waited for: when
/// another thread holds it, a span allocates, or the worker frees.
#[derive(Default)]
#[allow(clippy::vec_box)] // the boxes themselves are what is reused
pub(crate) struct Pool(std::sync::Mutex<Vec<Box<Closed>>>);

/// Boxes kept in the [`Pool`] at most (each about 250 bytes).
const POOL_MAX: usize = 1024;

impl Pool {
    fn take(&self) -> Option<Box<Closed>> {
        self.0.try_lock().ok()?.pop()
    }

    pub(crate) fn give(&self, mut c: Box<Closed>) {
        // Fields that spilled to the heap (a long prompt) are not kept.
        if c.state.fields.heap_bytes() > 0 {
            c.state.fields = fields::Fields::default();
        }
        if let Ok(mut boxes) = self.0.try_lock() {
            if boxes.len() < POOL_MAX {
                boxes.push(c);
            }
        }
    }
}

pub(crate) enum Msg {
    Span(Box<Closed>),
    Flush(mpsc::Sender<Result<()>>),
    Shutdown(mpsc::Sender<Result<()>>),
}

/// The `tracing` layer. Build it with [`layer`] or [`AuditLayer::builder`].
pub struct AuditLayer {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    overload: Overload,
    capture: Capture,
    session_keys: Arc<[String]>,
    id_base: u64,
    next_id: AtomicU64,
    /// This layer's number in the per-thread callsite cache ([`sites`]).
    site_id: u64,
    /// The byte bound of the queue.
    gate: Arc<gate::Gate>,
    /// Boxes for new spans, given back by the worker.
    pool: Arc<Pool>,
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("overload", &self.overload)
            .field("capture", &self.capture)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Builds the layer with the defaults (see [`AuditLayerBuilder`]); the key
/// comes from `SEALTRAIL_SIGNING_KEY_FILE`.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// let (audit, _guard) = sealtrail::layer()?; // keep the guard: dropping it seals and stops
/// tracing_subscriber::registry().with(audit).init();
/// # Ok::<(), sealtrail::Error>(())
/// ```
///
/// # Errors
/// As [`AuditLayerBuilder::build`]: no key (the variable is not set, or its
/// file is missing or not a key), a bad store URL or an unreachable store,
/// a spool directory in use or damaged.
pub fn layer() -> Result<(AuditLayer, FlushGuard)> {
    AuditLayer::builder().build()
}

/// Settings of the layer.
#[derive(Clone)]
pub struct AuditLayerBuilder {
    store: String,
    archive: Option<crate::Archive>,
    retention: Option<crate::archive::Retention>,
    allow_unlocked: bool,
    key: Option<KeySource>,
    writer_id: Option<String>,
    spool_dir: PathBuf,
    flush_interval: Duration,
    heartbeat: Duration,
    max_batch_records: usize,
    max_batch_bytes: usize,
    max_backlog: usize,
    queue_capacity: usize,
    max_queue_bytes: usize,
    session_keys: Vec<String>,
    capture: Capture,
    overload: Overload,
    shutdown_timeout: Duration,
    resource: Attributes,
}

#[derive(Clone)]
enum KeySource {
    File(PathBuf),
    Key(Box<SigningKey>),
}

impl fmt::Debug for AuditLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayerBuilder")
            .field("store", &self.store)
            .field("writer_id", &self.writer_id)
            .field("spool_dir", &self.spool_dir)
            .field("flush_interval", &self.flush_interval)
            .field("heartbeat", &self.heartbeat)
            .field("overload", &self.overload)
            .field("capture", &self.capture)
            .field("max_backlog", &self.max_backlog)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for AuditLayerBuilder {
    fn default() -> Self {
        let service = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unknown_service".into());
        AuditLayerBuilder {
            store: DEFAULT_STORE.into(),
            archive: None,
            retention: None,
            allow_unlocked: false,
            key: None,
            writer_id: None,
            spool_dir: DEFAULT_SPOOL_DIR.into(),
            flush_interval: Duration::from_secs(1),
            heartbeat: crate::writer::DEFAULT_HEARTBEAT,
            max_batch_records: 10_000,
            max_batch_bytes: 8 << 20,
            max_backlog: DEFAULT_MAX_BACKLOG,
            queue_capacity: 65_536,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            session_keys: map::DEFAULT_SESSION_KEYS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            capture: Capture::default(),
            overload: Overload::default(),
            shutdown_timeout: Duration::from_secs(10),
            resource: [("service.name", Value::Str(service))]
                .into_iter()
                .collect(),
        }
    }
}

impl AuditLayer {
    /// A builder with the defaults.
    pub fn builder() -> AuditLayerBuilder {
        AuditLayerBuilder::default()
    }

    /// The layer's counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

impl AuditLayerBuilder {
    /// Archive URL: a path, `file:///abs/path` or `memory://` (default `./sealtrail-data`).
    pub fn with_store(mut self, url: impl Into<String>) -> Self {
        self.store = url.into();
        self
    }
    /// An archive opened by the caller (any `object_store`, see [`crate::Archive::from_store`]);
    /// replaces [`with_store`](Self::with_store).
    pub fn with_archive(mut self, archive: crate::Archive) -> Self {
        self.archive = Some(archive);
        self
    }
    /// Lock every archived object under S3 Object Lock for this long (an
    /// `s3://` store only; see [`crate::Archive::with_retention`]).
    pub fn with_retention(mut self, retention: crate::archive::Retention) -> Self {
        self.retention = Some(retention);
        self
    }
    /// Accept an `s3://` bucket without Object Lock (by default building fails:
    /// objects in such a bucket can be deleted or overwritten).
    pub fn with_allow_unlocked(mut self, allow: bool) -> Self {
        self.allow_unlocked = allow;
        self
    }
    /// Signing key file (PKCS#8 PEM, see `sealtrail keygen`). Default: `$SEALTRAIL_SIGNING_KEY_FILE`.
    pub fn with_signing_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = Some(KeySource::File(path.into()));
        self
    }
    /// A signing key held in memory.
    pub fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.key = Some(KeySource::Key(Box::new(key)));
        self
    }
    /// Writer id (default: made once and kept in the spool directory's `writer-id` file).
    ///
    /// Each writer (each process, each layer) needs an id of its own: two
    /// under one id on one store would fork its chain of seals. A second
    /// layer of the same process under the same id and store is refused
    /// when it is built. Across processes, the second to seal finds the
    /// other's seal, stops sealing for good (logged, and counted in
    /// `store_errors`), and refuses to start again with that spool
    /// (`sealtrail recover` archives its records under a new id); under
    /// [`Overload::Block`] the agent then waits once the backlog is full.
    /// The default, made once per spool directory, is unique in practice.
    pub fn with_writer_id(mut self, id: impl Into<String>) -> Self {
        self.writer_id = Some(id.into());
        self
    }
    /// Spool directory (default `./sealtrail-spool`); one writer per
    /// directory. It must outlive the process (not a container's scratch
    /// space): it holds what is not sealed yet, sealed at the next start,
    /// and the default writer id.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }
    /// How often pending records are sealed (default 1 s, at least 1 ms).
    pub fn with_flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }
    /// Heartbeat interval (default 60 s, at least 1 s). The writer seals at
    /// least this often, records or not.
    pub fn with_heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }
    /// Seal early once this many records are pending (default 10,000).
    pub fn with_max_batch_records(mut self, n: usize) -> Self {
        self.max_batch_records = n.max(1);
        self
    }
    /// Seal early once this many uncompressed bytes are pending (default 8 MiB).
    pub fn with_max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n.max(1);
        self
    }
    /// Bytes of records that may wait for their seal (default 64 MiB) while
    /// the store is slow or failing. They are spooled, so durable, but also
    /// kept in memory until sealed. At the limit the worker takes no more
    /// spans until a seal succeeds: the queue fills and the overload policy
    /// applies ([`Overload::Block`]: the agent waits for the store;
    /// [`Overload::DropWithGapRecord`]: spans are dropped and the loss is
    /// recorded). Reaching it with a healthy store seals at once. Memory
    /// stays within about this limit plus one group the worker takes from
    /// the queue (up to 4,096 spans). See [`Stats::backlog_bytes`].
    pub fn with_max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes.max(1);
        self
    }
    /// Capacity of the queue to the worker, in spans (default 65,536).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
    /// Bytes the spans in the queue to the worker may hold (default 64 MiB,
    /// about: fields, events, the span's own state): spans differ in size by
    /// orders of magnitude (a GenAI span may carry a whole conversation), so
    /// the queue is bounded in bytes as well as in spans. When it is full
    /// the overload policy applies, as when it holds
    /// [`with_queue_capacity`](Self::with_queue_capacity) spans. A span is
    /// queued while those before it hold less than this, so the queue may
    /// exceed it by one span (of any size).
    pub fn with_max_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_queue_bytes = bytes.max(1);
        self
    }
    /// Attribute names that carry the session id, tried in order (docs/MAPPING.md).
    pub fn with_session_keys<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        keys: I,
    ) -> Self {
        self.session_keys = keys.into_iter().map(Into::into).collect();
        self
    }
    /// Which spans are captured.
    pub fn with_capture(mut self, capture: Capture) -> Self {
        self.capture = capture;
        self
    }
    /// What happens when the queue is full.
    pub fn with_overload(mut self, overload: Overload) -> Self {
        self.overload = overload;
        self
    }
    /// The longest dropping the guard waits for the final seal (default 10 s).
    pub fn with_shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }
    /// Resource attributes recorded with every span (default `service.name` =
    /// the executable's name). They replace the default: include
    /// `service.name` yourself.
    pub fn with_resource(mut self, resource: Attributes) -> Self {
        self.resource = resource;
        self
    }

    /// Opens the store, the key and the spool, continues the writer's chains,
    /// seals what an earlier run left in the spool, and starts the worker.
    ///
    /// Errors: a bad store URL or unreachable store, a missing or unreadable
    /// key, a spool in use by another writer or damaged.
    pub fn build(self) -> Result<(AuditLayer, FlushGuard)> {
        // The settings, the key and the writer id first: a bad one creates nothing.
        if self.flush_interval < Duration::from_millis(1) {
            return Err(Error::InvalidSetting {
                setting: "flush interval",
                reason: "it must be at least 1 ms".into(),
            });
        }
        // Each heartbeat is an object kept for the retention period.
        if self.heartbeat < Duration::from_secs(1) {
            return Err(Error::InvalidSetting {
                setting: "heartbeat",
                reason: format!("{:?}: it must be at least 1 s", self.heartbeat),
            });
        }
        let key = match &self.key {
            Some(KeySource::Key(k)) => (**k).clone(),
            Some(KeySource::File(p)) => keys::read_signing_key(p)?,
            None => match std::env::var_os(SIGNING_KEY_ENV) {
                Some(p) => keys::read_signing_key(Path::new(&p))?,
                None => {
                    return Err(Error::KeyFile {
                        path: PathBuf::from(format!("${SIGNING_KEY_ENV}")),
                        reason: format!(
                            "no signing key: set {SIGNING_KEY_ENV} or call with_signing_key_file (create one with `sealtrail keygen`)"
                        ),
                    })
                }
            },
        };
        if let Some(id) = self.writer_id.as_ref().filter(|id| !valid_writer_id(id)) {
            return Err(Error::InvalidWriterId { id: id.clone() });
        }
        let mut archive = match &self.archive {
            Some(a) => a.clone(),
            None => crate::Archive::open(&self.store)?,
        };
        if let Some(r) = self.retention {
            archive = archive.with_retention(r)?;
        }
        // Released when the worker ends (or if it does not start). A given
        // id is claimed before anything is created.
        let given = match &self.writer_id {
            Some(id) => Some(WriterClaim::new(&archive, id)?),
            None => None,
        };
        let (spool, left) = crate::spool::Spool::open(&self.spool_dir)?;
        let (writer_id, claim) = match given {
            Some(claim) => (claim.1.clone(), claim),
            None => {
                let id = crate::writer::persisted_writer_id(&self.spool_dir)?;
                let claim = WriterClaim::new(&archive, &id)?;
                (id, claim)
            }
        };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel(self.queue_capacity);
        let gate = Arc::new(gate::Gate::new(self.max_queue_bytes));
        let pool = Arc::new(Pool::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let cfg = worker::Config {
            sealer: crate::pipeline::SealerConfig {
                archive,
                key,
                writer_id,
                flush_interval: self.flush_interval,
                heartbeat: self.heartbeat,
                max_batch_records: self.max_batch_records,
                max_batch_bytes: self.max_batch_bytes,
                allow_unlocked: self.allow_unlocked,
                zstd_level: crate::writer::DEFAULT_ZSTD_LEVEL,
            },
            resource: self.resource.clone(),
            counters: counters.clone(),
            max_backlog: self.max_backlog,
            gate: gate.clone(),
            pool: pool.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sealtrail-worker".into())
            .spawn(move || {
                own_thread();
                let _claim = claim;
                worker::run(cfg, spool, left, rx, ready_tx)
            })
            .map_err(|source| Error::Io {
                path: "sealtrail-worker thread".into(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Io {
                    path: "sealtrail-worker thread".into(),
                    source: std::io::Error::other("the worker stopped during start-up"),
                });
            }
        }
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        let layer = AuditLayer {
            tx: tx.clone(),
            counters: counters.clone(),
            overload: self.overload,
            capture: self.capture,
            session_keys: self.session_keys.into(),
            id_base: u64::from_le_bytes(seed),
            next_id: AtomicU64::new(1),
            site_id: sites::new_layer_id(),
            gate,
            pool,
        };
        let guard = FlushGuard {
            tx,
            thread: Some(thread),
            timeout: self.shutdown_timeout,
            counters,
            stopped: false,
        };
        Ok((layer, guard))
    }
}

/// The (archive, writer id) pairs that the audit layers of this process
/// write as.
static CLAIMED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// One layer's claim on its writer id in its archive: a second layer of
/// the same process under the same id would fork the writer's seal chain,
/// so it is refused when it is built, not at its first seal.
struct WriterClaim(String, String);

impl WriterClaim {
    fn new(archive: &crate::Archive, writer_id: &str) -> Result<WriterClaim> {
        let key = (archive.identity(), writer_id.to_owned());
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.contains(&key) {
            return Err(Error::InvalidSetting {
                setting: "writer id",
                reason: format!(
                    "another audit layer of this process writes as {writer_id:?} to {} \
                     (or one whose shutdown timed out is still sealing): give each layer a \
                     writer id of its own (the default is made once per spool directory)",
                    archive.url()
                ),
            });
        }
        claimed.push(key.clone());
        Ok(WriterClaim(key.0, key.1))
    }
}

impl Drop for WriterClaim {
    fn drop(&mut self) {
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        claimed.retain(|(a, w)| !(*a == self.0 && *w == self.1));
    }
}

/// Seals and flushes everything when dropped (waiting at most the shutdown
/// timeout, 10 s by default: the dropping thread blocks meanwhile). Keep it
/// alive for as long as the program traces, in a named binding (`_guard`,
/// not `_`, which drops it at once). [`FlushGuard::shutdown`] does the same
/// and returns the outcome; dropping logs a failure (`tracing::error!`).
/// `std::process::exit` skips it: what was spooled is sealed at the next
/// start with the same spool directory.
#[must_use = "dropping the guard immediately seals and stops the audit trail"]
pub struct FlushGuard {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
    timeout: Duration,
    counters: Arc<Counters>,
    /// [`FlushGuard::shutdown`] ran, or the drop.
    stopped: bool,
}

impl fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlushGuard")
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl FlushGuard {
    /// Seals everything captured so far now, and waits for it (at most the
    /// shutdown timeout). Errors if the store refused the seal.
    ///
    /// # Errors
    /// The store's error; [`Error::TimedOut`] when the seal did not finish
    /// in time; [`Error::LayerStopped`] after the layer has stopped.
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now().checked_add(self.timeout);
        let sent = send_by(&self.tx, Msg::Flush(tx), deadline).map_err(|()| Error::LayerStopped)?;
        let timed_out = Error::TimedOut {
            what: "the flush",
            timeout: self.timeout,
        };
        if !sent {
            return Err(timed_out);
        }
        match rx.recv_timeout(left(deadline)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(timed_out),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::LayerStopped),
        }
    }

    /// The layer's counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Seals everything and stops the layer, as dropping the guard does, and
    /// says how that went: the counters at the end, or why the final seal
    /// failed (the records it did not seal stay in the spool, and the next
    /// start with the same spool directory seals them). Spans that close
    /// after this are counted as dropped.
    ///
    /// # Errors
    /// The store's error; [`Error::TimedOut`] when the final seal did not
    /// finish within the shutdown timeout; [`Error::LayerStopped`] if the
    /// layer had stopped already.
    pub fn shutdown(mut self) -> Result<Stats> {
        self.stop()?;
        Ok(self.stats())
    }

    fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Err(Error::LayerStopped);
        }
        self.stopped = true;
        // The worker stops waiting for room in the backlog, to reach the
        // shutdown message behind the spans queued before it.
        self.counters.closing.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now().checked_add(self.timeout);
        let timed_out = Error::TimedOut {
            what: "the final seal",
            timeout: self.timeout,
        };
        match send_by(&self.tx, Msg::Shutdown(tx), deadline) {
            Ok(true) => {}
            Ok(false) => {
                // Not queued: the layer lives on, and so does the backlog limit.
                self.counters.closing.store(false, Ordering::Relaxed);
                return Err(timed_out);
            }
            Err(()) => return Err(Error::LayerStopped),
        }
        let sealed = match rx.recv_timeout(left(deadline)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(timed_out),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::LayerStopped),
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sealed
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Err(e) = self.stop() {
            tracing::error!(
                error = %e,
                "the audit layer's final seal failed: what it did not seal stays in the spool \
                 and is sealed by the next start"
            );
        }
    }
}

/// Time left until `deadline` (`None`: none, wait for good).
fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// Queues `msg` for the worker, waiting for room no later than `deadline`
/// (the queue is full while the worker waits for the store). `Ok(false)`:
/// not queued in time; `Err`: the worker is gone.
fn send_by(tx: &SyncSender<Msg>, mut msg: Msg, deadline: Option<Instant>) -> Result<bool, ()> {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(true),
            Err(TrySendError::Disconnected(_)) => return Err(()),
            Err(TrySendError::Full(m)) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Per-span state, kept in the span's extensions (inside an [`Open`]) from
/// creation to close: the ids and times, the fields packed inline (spilling
/// to the heap past [`fields::INLINE`] bytes), and what is rare (a renamed
/// span, a status message, events, links) in a box of its own.
struct SpanState {
    fields: fields::Fields,
    rare: Option<Box<Rare>>,
    status: StatusCode,
    start_ns: u64,
    /// High and low halves (u64s, not a u128, to keep the state 8-aligned).
    trace_id: [u64; 2],
    span_id: u64,
    /// 0: none (span ids are never 0).
    parent_span_id: u64,
    /// Opened after the final seal stated the open spans (see [`live`]).
    opened_after_statement: bool,
}

/// The parts of a span's state that most spans never have.
#[derive(Default)]
struct Rare {
    name: Option<String>,
    status_message: Option<String>,
    events: Vec<Event>,
    /// Spans this one follows from (`Span::follows_from`): trace and span ids.
    links: Vec<([u64; 2], u64)>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.status_message.is_none()
            && self.events.is_empty()
            && self.links.is_empty()
    }
}

impl SpanState {
    /// The session id among the fields at `indexes` (a [`sites::Site`]'s).
    fn session(&self, indexes: &[u8]) -> Option<String> {
        let i = fields::session_index(&self.fields, indexes)?;
        self.fields.get(i)?.as_session()
    }

    /// Records `values` (span fields or a `Span::record`), sending `otel.*`
    /// control fields to their slots.
    fn record(&mut self, values: impl FnOnce(&mut FieldCapture<'_, fields::Fields>)) {
        let mut rare = self.rare.take().map(|r| *r).unwrap_or_default();
        let mut status = (self.status, rare.status_message.take());
        values(&mut FieldCapture {
            attributes: &mut self.fields,
            name: &mut rare.name,
            status: &mut status,
            message: None,
        });
        (self.status, rare.status_message) = status;
        if !rare.is_empty() {
            self.rare = Some(Box::new(rare));
        }
    }

    /// Adds what a `Span::record` captured on its own (see `on_record`): as
    /// [`SpanState::record`] would have.
    fn merge(
        &mut self,
        fields: &fields::Fields,
        name: Option<String>,
        status: (StatusCode, Option<String>),
    ) {
        self.fields.extend(fields);
        if status.0 != StatusCode::Unset {
            self.status = status.0;
        }
        if name.is_some() || status.1.is_some() {
            let rare = self.rare.get_or_insert_with(Box::default);
            if name.is_some() {
                rare.name = name;
            }
            if status.1.is_some() {
                rare.status_message = status.1;
            }
        }
    }
}

/// SplitMix64's finalizer: a bijection on u64 that scatters consecutive inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl AuditLayer {
    /// Span and trace ids: distinct within the layer (a bijection of a
    /// counter), unrelated across processes (a random base per layer), and
    /// without a system call on the hot path.
    fn new_id(&self) -> u64 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        mix(self.id_base.wrapping_add(n)).max(1)
    }

    fn site(&self, meta: &'static tracing::Metadata<'static>) -> sites::Site {
        sites::site(self.site_id, meta, &self.session_keys)
    }

    fn new_span_id(&self) -> u64 {
        self.new_id()
    }

    fn new_trace_id(&self) -> [u64; 2] {
        [
            self.new_id(),
            mix(self.id_base ^ self.new_id().rotate_left(17)),
        ]
    }

    fn enqueue(&self, closed: Box<Closed>) {
        let c = &self.counters;
        if closed.state.opened_after_statement {
            // Opened after the final seal stated the open spans: not
            // among them, and never archived.
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // From open to closing, atomically with the final seal's statement.
        let was = c
            .live
            .fetch_add(live::CLOSING - live::OPEN, Ordering::SeqCst);
        if was & live::STATED != 0 {
            // Stated (and counted as dropped) as open by the final seal.
            c.live.fetch_sub(live::CLOSING, Ordering::SeqCst);
            return;
        }
        self.send(closed);
        c.live.fetch_sub(live::CLOSING, Ordering::SeqCst);
    }

    fn send(&self, mut closed: Box<Closed>) {
        // Once the guard is being dropped, a span is not queued: the worker
        // takes no more after its final seal.
        if self.counters.closing.load(Ordering::SeqCst) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let n = closed.approx_bytes();
        closed.queued = n;
        let msg = Msg::Span(closed);
        let sent = match self.overload {
            Overload::Block => self.gate.enter(n) && self.tx.send(msg).is_ok(),
            Overload::DropWithGapRecord => {
                self.gate.try_enter(n)
                    && match self.tx.try_send(msg) {
                        Ok(()) => true,
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.gate.leave(n);
                            false
                        }
                    }
            }
        };
        let c = if sent {
            &self.counters.captured
        } else {
            &self.counters.dropped
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &SpanAttributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if on_own_thread() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent();
        let parent_ids = parent.as_ref().and_then(|p| {
            open_of(&p.extensions(), self.site_id).map(|o| (o.state.trace_id, o.state.span_id))
        });
        let captured = parent_ids.is_some()
            || self.capture == Capture::All
            || self.site(attrs.metadata()).capture;
        if !captured {
            // Not captured, but it may name the session of what it holds.
            let site = self.site(attrs.metadata());
            if !site.sessions().is_empty() {
                if let Some(s) = session_in(|c| attrs.record(c), site.sessions()) {
                    carry_session(&mut span.extensions_mut(), self.site_id, s);
                }
            }
            return;
        }
        let was = self.counters.live.fetch_add(live::OPEN, Ordering::SeqCst);
        let opened_after_statement = was & live::STATED != 0;
        if opened_after_statement {
            self.counters.live.fetch_sub(live::OPEN, Ordering::SeqCst);
        }
        let trace_id = parent_ids
            .map(|(t, _)| t)
            .unwrap_or_else(|| self.new_trace_id());
        let mut state = SpanState {
            fields: fields::Fields::default(),
            rare: None,
            status: StatusCode::Unset,
            start_ns: now_ns(),
            trace_id,
            span_id: self.new_span_id(),
            parent_span_id: parent_ids.map_or(0, |(_, s)| s),
            opened_after_statement,
        };
        state.record(|c| attrs.record(c));
        let fresh = Closed {
            state,
            metadata: attrs.metadata(),
            session: SessionOf::Trace,
            end_ns: 0,
            queued: 0,
        };
        let closed = match self.pool.take() {
            Some(mut b) => {
                *b = fresh;
                b
            }
            None => Box::new(fresh),
        };
        insert_open(
            &mut span.extensions_mut(),
            Open {
                layer: self.site_id,
                closed,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if open_of(&span.extensions(), self.site_id).is_some() {
            // Recorded before the span is locked: formatting a value may
            // emit an event in this span itself.
            let (fields, name, status) = capture_apart(|c| values.record(c));
            if let Some(open) = open_of_mut(&mut span.extensions_mut(), self.site_id) {
                open.state.merge(&fields, name, status);
            }
            return;
        }
        let site = self.site(span.metadata());
        if !site.sessions().is_empty() {
            if let Some(s) = session_in(|c| values.record(c), site.sessions()) {
                carry_session(&mut span.extensions_mut(), self.site_id, s);
            }
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if open_of(&span.extensions(), self.site_id).is_none() {
            return;
        }
        // The event's fields are recorded before the span's extensions are
        // locked: formatting a value may emit an event in this span itself.
        let mut attributes = Attributes::new();
        let mut message = None;
        let mut ignored_name = None;
        let mut set = (StatusCode::Unset, None);
        event.record(&mut FieldCapture {
            attributes: &mut attributes,
            name: &mut ignored_name,
            status: &mut set,
            message: Some(&mut message),
        });
        let level = *event.metadata().level();
        attributes.insert("level", level.as_str());
        let mut ext = span.extensions_mut();
        let Some(open) = open_of_mut(&mut ext, self.site_id) else {
            return;
        };
        let state = &mut open.state;
        let mut rare = state.rare.take().map(|r| *r).unwrap_or_default();
        let mut status = (state.status, rare.status_message.take());
        if set.0 != StatusCode::Unset {
            status.0 = set.0;
        }
        if set.1.is_some() {
            status.1 = set.1;
        }
        if level == Level::ERROR && state.status != StatusCode::Ok {
            status.0 = StatusCode::Error;
            if status.1.is_none() {
                status.1 = message.clone();
            }
        }
        state.status = status.0;
        rare.status_message = status.1;
        rare.events.push(Event {
            attributes,
            name: message.unwrap_or_else(|| event.metadata().name().to_owned()),
            time_ns: now_ns(),
        });
        state.rare = Some(Box::new(rare));
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (Some(span), Some(cause)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        // Only a captured span has ids to link to.
        let Some(link) =
            open_of(&cause.extensions(), self.site_id).map(|o| (o.state.trace_id, o.state.span_id))
        else {
            return;
        };
        let mut ext = span.extensions_mut();
        if let Some(open) = open_of_mut(&mut ext, self.site_id) {
            open.state
                .rare
                .get_or_insert_with(Box::default)
                .links
                .push(link);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut closed) = remove_open(&mut span.extensions_mut(), self.site_id) else {
            return;
        };
        let state = &closed.state;
        let own = fields::session_index(&state.fields, self.site(span.metadata()).sessions());
        let session = match own {
            Some(i) => SessionOf::Own(i),
            None => span
                .scope()
                .skip(1)
                .find_map(|ancestor| {
                    let ext = ancestor.extensions();
                    match open_of(&ext, self.site_id) {
                        Some(open) => open
                            .state
                            .session(self.site(ancestor.metadata()).sessions()),
                        None => carried_session(&ext, self.site_id),
                    }
                })
                .map_or(SessionOf::Trace, SessionOf::Inherited),
        };
        closed.session = session;
        closed.end_ns = now_ns();
        self.enqueue(closed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_lowercase_hex_of_big_endian_words() {
        assert_eq!(
            super::hex_words(&[0x0123_4567_89ab_cdef, 1]),
            "0123456789abcdef0000000000000001"
        );
        assert_eq!(super::hex_words(&[u64::MAX]), "ffffffffffffffff");
    }
}
