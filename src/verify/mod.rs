//! Verification: proves an archive complete and unaltered, or names exactly
//! what is wrong.
//!
//! [`verify`] checks every seal's signature and hash, the seal chain of every
//! writer (contiguous batch numbers, `prev_seal` links, heartbeat cadence, and
//! a writer that went silent without closing), every batch object's length,
//! SHA-256 and zstd framing, every record hash, seq continuity and chain link
//! of every session within and across batches, session heads and Merkle
//! roots against the seals, and objects no seal covers. Batches are checked in
//! parallel.

pub(crate) mod batch;
mod finding;
mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

pub use finding::{Finding, Location, Problem};

/// Reads a record as verify does (FORMAT.md §7) and says whether it can be
/// placed in a chain. For benchmarks of that part of verify alone.
#[doc(hidden)]
pub fn read_record_for_bench(record: &[u8]) -> bool {
    let r = scan::read_record(record);
    r.problems.is_empty() && r.prev.is_some() && r.seq.is_some() && r.session.is_some()
}

use crate::archive::{layout, Archive};
use crate::digest::{seal_genesis, Digest};
use crate::error::{Error, Result};
use crate::keys::{key_id, VerifyingKey};
use crate::seal::{self, Seal, SealBody, SealError};
use crate::writer::now_ns;
use batch::{BatchJob, BatchResult, FoundSession};

/// Progress callback: batches checked so far, batches in all.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Settings of a verification.
#[derive(Clone)]
pub struct VerifyOptions {
    as_of_ns: Option<u64>,
    session: Option<String>,
    expected_writers: Vec<String>,
    heartbeat_grace: Duration,
    threads: usize,
    max_batch_bytes: u64,
    strict: bool,
    retention: Option<crate::archive::Retention>,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("as_of_ns", &self.as_of_ns)
            .field("session", &self.session)
            .field("heartbeat_grace", &self.heartbeat_grace)
            .field("threads", &self.threads)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("strict", &self.strict)
            .finish_non_exhaustive()
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            as_of_ns: None,
            session: None,
            expected_writers: Vec::new(),
            heartbeat_grace: Duration::from_secs(5),
            threads: 0,
            max_batch_bytes: 1 << 30,
            strict: false,
            retention: None,
            progress: None,
        }
    }
}

impl VerifyOptions {
    /// The time the archive is verified as of, unix nanoseconds (default: now).
    /// A writer that did not close and whose newest seal is more than a
    /// heartbeat (plus grace) older is reported as [`Problem::WriterSilent`].
    pub fn with_as_of(mut self, ns: u64) -> Self {
        self.as_of_ns = Some(ns);
        self
    }
    /// Writers that must be in the archive: one without any seal is
    /// [`Problem::WriterMissing`]. (A writer deleted whole leaves no trace
    /// otherwise: each writer's chain proves only itself.)
    pub fn with_expected_writers(mut self, writers: impl IntoIterator<Item = String>) -> Self {
        self.expected_writers = writers.into_iter().collect();
        self
    }
    /// Reports only findings about this session (and those about seals and
    /// objects, which concern every session).
    pub fn with_session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }
    /// Lateness tolerated beyond a writer's heartbeat interval (default 5 s).
    pub fn with_heartbeat_grace(mut self, grace: Duration) -> Self {
        self.heartbeat_grace = grace;
        self
    }
    /// Threads that check batches (default 0: one per core).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    /// Largest decompressed batch accepted (default 1 GiB).
    pub fn with_max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = bytes;
        self
    }
    /// Also parse every record against the record schema and report those
    /// that do not fit as [`Problem::RecordMalformed`] (default off: the
    /// record hash already proves the bytes are the ones sealed; this checks
    /// that the writer wrote well-formed records, at some cost in speed).
    pub fn with_strict_records(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
    /// S3 only: also check every object's Object Lock against this policy
    /// (mode, and retain-until at least its write time plus the period); each
    /// object that falls short is a [`Problem::RetentionInsufficient`].
    pub fn with_retention_policy(mut self, policy: crate::archive::Retention) -> Self {
        self.retention = Some(policy);
        self
    }
    /// Called after each window of batches is checked.
    pub fn with_progress(mut self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Writers found.
    pub writers: u64,
    /// Seals found (batches, heartbeats included).
    pub batches: u64,
    /// Distinct (writer, session) chains found.
    pub sessions: u64,
    /// Records checked.
    pub records: u64,
    /// Decompressed record bytes checked.
    pub bytes: u64,
    /// Everything found wrong, in archive order.
    pub findings: Vec<Finding>,
    /// The session the report is narrowed to (`--session`): `sessions`,
    /// `records` and the findings are that session's (and stated losses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Each writer found, by id: what its seals say about its state.
    pub writer_states: Vec<WriterState>,
}

/// What a writer's seals say about it (whether or not they verify: the
/// findings say that).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterState {
    /// The writer id.
    pub writer: String,
    /// Seal objects found.
    pub seals: u64,
    /// The highest batch number found.
    pub last_batch_no: u64,
    /// The newest seal's creation time, unix ns (0 if it is unreadable).
    pub last_seal_ns: u64,
    /// Whether the newest seal is a closing seal.
    pub closed: bool,
    /// For a writer that did not close: the time after which a missing
    /// heartbeat is reported (its newest seal plus heartbeat plus grace). A
    /// deletion of its newest seals shows only from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_after_ns: Option<u64>,
}

impl fmt::Display for WriterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |ns: u64| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
        };
        write!(
            f,
            "writer {}: {} seal(s) up to batch {}, ",
            self.writer, self.seals, self.last_batch_no
        )?;
        match self.silent_after_ns {
            _ if self.closed => write!(f, "closed at {}", time(self.last_seal_ns)),
            Some(t) => write!(
                f,
                "open, last seal {}: seals deleted after it show from {}",
                time(self.last_seal_ns),
                time(t)
            ),
            None => write!(f, "newest seal unreadable"),
        }
    }
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether some finding has this problem (compared by variant and values).
    pub fn has(&self, problem: &Problem) -> bool {
        self.findings.iter().any(|f| &f.problem == problem)
    }

    /// One line: `intact: …` or `NOT INTACT: …`.
    pub fn summary(&self) -> String {
        format!(
            "{}{}: {} writer(s), {} seal(s), {} session(s), {} record(s), {} finding(s)",
            if self.is_intact() {
                "intact"
            } else {
                "NOT INTACT"
            },
            match &self.session {
                Some(s) => format!(" (session {s:?} only)"),
                None => String::new(),
            },
            self.writers,
            self.batches,
            self.sessions,
            self.records,
            self.findings.len()
        )
    }
}

struct LoadedSeal {
    key: String,
    batch_no: u64,
    parsed: Option<Seal>,
}

/// Verifies `archive` against the `trusted` public keys.
///
/// Returns `Err` only when the archive cannot be read (listing or reading an
/// object fails); everything wrong with what was read is a [`Finding`].
pub async fn verify(
    archive: &Archive,
    trusted: &[VerifyingKey],
    opts: &VerifyOptions,
) -> Result<Report> {
    let as_of = opts.as_of_ns.unwrap_or_else(now_ns);
    let grace = opts.heartbeat_grace.as_nanos() as u64;
    let mut report = Report::default();
    let mut findings = Vec::new();
    let (objects, pinned) = list_objects(archive, &mut findings).await?;
    if let Some(policy) = opts.retention {
        check_retention(archive, &objects, &pinned, policy, &mut findings).await?;
    }
    let fetch = |key: String| {
        let version = pinned.get(&key).cloned();
        async move {
            match version {
                Some(v) => archive.get_version(&key, &v).await,
                None => archive.get(&key).await,
            }
        }
    };
    let mut covered: HashSet<String> = HashSet::new();
    let mut seal_keys: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for obj in &objects {
        match layout::parse(&obj.key) {
            Some(layout::Name::Seal { writer, batch_no }) => {
                covered.insert(obj.key.clone());
                seal_keys
                    .entry(writer)
                    .or_default()
                    .push((batch_no, obj.key.clone()));
            }
            Some(layout::Name::Batch { .. }) => {}
            None => {}
        }
    }
    let present: HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let trusted_ids: Vec<String> = trusted.iter().map(key_id).collect();

    // Seals, per writer, in batch order.
    let mut jobs: Vec<BatchJob> = Vec::new();
    for (writer, keys) in &seal_keys {
        report.writers += 1;
        let loaded: Vec<LoadedSeal> = futures::stream::iter(keys.iter().cloned())
            .map(|(batch_no, key)| {
                let size = present.get(key.as_str()).copied().unwrap_or(0);
                async move {
                    // A seal is a few KiB to a few MiB: one past the limit is not
                    // read into memory.
                    if size > opts.max_batch_bytes {
                        let reason = too_large(size, opts.max_batch_bytes);
                        return Ok::<_, Error>((batch_no, key, Err(reason)));
                    }
                    let bytes = fetch(key.clone()).await?;
                    let parsed = serde_json::from_slice::<Seal>(&bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|s| match s.body.format {
                            crate::seal::SEAL_FORMAT => Ok(s),
                            other => Err(format!(
                                "seal format {other}: this verifier reads format {}",
                                crate::seal::SEAL_FORMAT
                            )),
                        })
                        .and_then(|s| {
                            // Every byte of a seal is its content: the JCS
                            // bytes and nothing else (no added white space).
                            match crate::canonical::to_vec(&s) {
                                Ok(canonical) if canonical == bytes[..] => Ok(s),
                                _ => Err("not the canonical (JCS) bytes of its content".to_owned()),
                            }
                        });
                    Ok::<_, Error>((batch_no, key, parsed))
                }
            })
            .buffered(32)
            .map_ok(|(batch_no, key, parsed)| {
                let at = Location {
                    writer: Some(writer.clone()),
                    batch_no: Some(batch_no),
                    key: Some(key.clone()),
                    ..Default::default()
                };
                let parsed = match parsed {
                    Ok(s) => Some(s),
                    Err(reason) => {
                        findings.push(Finding {
                            at,
                            problem: Problem::SealUnreadable { reason },
                        });
                        None
                    }
                };
                LoadedSeal {
                    key,
                    batch_no,
                    parsed,
                }
            })
            .try_collect()
            .await?;
        report.batches += loaded.len() as u64;
        if let Some(last) = loaded.last() {
            let newest = last.parsed.as_ref().map(|s| &s.body);
            report.writer_states.push(WriterState {
                writer: writer.clone(),
                seals: loaded.len() as u64,
                last_batch_no: last.batch_no,
                last_seal_ns: newest.map_or(0, |b| b.created_ns),
                closed: newest.is_some_and(|b| b.closed),
                silent_after_ns: newest.filter(|b| !b.closed).map(|b| {
                    b.created_ns
                        .saturating_add(b.heartbeat_ns)
                        .saturating_add(grace)
                }),
            });
        }
        check_seal_chain(
            writer,
            &loaded,
            trusted,
            &trusted_ids,
            as_of,
            grace,
            &mut findings,
        );
        check_seal_versions(writer, &loaded, &pinned, &mut findings);
        for l in loaded {
            let Some(s) = l.parsed else { continue };
            if let Some(b) = &s.body.batch {
                covered.insert(b.key.clone());
                if !present.contains_key(b.key.as_str()) {
                    findings.push(Finding {
                        at: Location {
                            writer: Some(writer.clone()),
                            batch_no: Some(l.batch_no),
                            key: Some(b.key.clone()),
                            ..Default::default()
                        },
                        problem: Problem::BatchMissing,
                    });
                    // Its sessions still advance the chains (from the signed summary).
                }
            }
            jobs.push(BatchJob {
                writer: writer.clone(),
                seal: s.body,
                strict: opts.strict,
            });
        }
    }

    // Batches, in windows, checked in parallel.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| Error::Io {
            path: "verify thread pool".into(),
            source: std::io::Error::other(e),
        })?;
    let pool = Arc::new(pool);
    let window = (pool.current_num_threads() * 4).max(16);
    let total = jobs.len() as u64;
    let mut done = 0u64;
    let mut jobs = jobs.into_iter().peekable();
    let mut stitch = Stitcher::default();
    while jobs.peek().is_some() {
        let chunk: Vec<BatchJob> = jobs.by_ref().take(window).collect();
        type Fetched = (BatchJob, Option<bytes::Bytes>, Vec<Finding>);
        let fetched: Vec<Fetched> = futures::stream::iter(chunk)
            .map(|job| async {
                let versioned =
                    |b: &crate::seal::BatchRef| b.version_id.is_some() && archive.is_s3();
                // The listed size of the object (or of the version) the seal names.
                let size = |b: &crate::seal::BatchRef| {
                    let listed = present.get(b.key.as_str()).copied();
                    if versioned(b) && pinned.get(&b.key) != b.version_id.as_ref() {
                        return None;
                    }
                    listed
                };
                let (bytes, finding) = match &job.seal.batch {
                    // An object larger than any batch accepted is not read
                    // into memory (a verifier must survive a hostile archive).
                    Some(b) if size(b) > Some(opts.max_batch_bytes) => {
                        let size = size(b).unwrap_or_default();
                        let at = Location {
                            writer: Some(job.writer.clone()),
                            batch_no: Some(job.seal.batch_no),
                            key: Some(b.key.clone()),
                            ..Default::default()
                        };
                        let mut found = vec![Finding {
                            at: at.clone(),
                            problem: Problem::BatchUndecodable {
                                reason: too_large(size, opts.max_batch_bytes),
                            },
                        }];
                        if size != b.len {
                            found.insert(
                                0,
                                Finding {
                                    at,
                                    problem: Problem::BatchLengthMismatch {
                                        expected: b.len,
                                        found: size,
                                    },
                                },
                            );
                        }
                        (None, found)
                    }
                    // The seal names the version written: read that one.
                    Some(b) if versioned(b) => {
                        let v = b.version_id.as_deref().unwrap_or_default();
                        // Only a version the server does not have is a
                        // finding; a failure to read is an error (exit 2).
                        match archive.find_version(&b.key, v).await? {
                            Some(bytes) => (Some(bytes), vec![]),
                            None => (
                                None,
                                vec![Finding {
                                    at: Location {
                                        writer: Some(job.writer.clone()),
                                        batch_no: Some(job.seal.batch_no),
                                        key: Some(b.key.clone()),
                                        ..Default::default()
                                    },
                                    problem: Problem::SealedVersionMissing {
                                        version_id: v.to_owned(),
                                    },
                                }],
                            ),
                        }
                    }
                    Some(b) if present.contains_key(b.key.as_str()) => {
                        (Some(fetch(b.key.clone()).await?), vec![])
                    }
                    _ => (None, vec![]),
                };
                Ok::<_, Error>((job, bytes, finding))
            })
            .buffered(16)
            .try_collect()
            .await?;
        let fetched: Vec<(BatchJob, Option<bytes::Bytes>)> = fetched
            .into_iter()
            .map(|(job, bytes, finding)| {
                findings.extend(finding);
                (job, bytes)
            })
            .collect();
        let max = opts.max_batch_bytes;
        let p = pool.clone();
        let checked = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            p.install(|| {
                fetched
                    .into_par_iter()
                    .map(|(job, bytes)| {
                        let r = match &bytes {
                            Some(b) => job.check(b, max),
                            None => BatchResult::default(),
                        };
                        (job, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| Error::Io {
            path: "verify worker".into(),
            source: std::io::Error::other(e),
        })?;
        done += checked.len() as u64;
        for (job, r) in checked {
            report.records += r.records;
            report.bytes += r.bytes;
            stitch.batch(&job, &r, &mut findings);
            // Keep the findings only: memory stays bounded by the window.
            findings.extend(r.findings);
        }
        if let Some(p) = &opts.progress {
            p(done, total);
        }
    }
    report.sessions = stitch.heads.len() as u64;

    for obj in &objects {
        if !covered.contains(&obj.key) {
            findings.push(Finding {
                at: Location {
                    key: Some(obj.key.clone()),
                    ..Default::default()
                },
                problem: Problem::UncoveredObject,
            });
        }
    }
    if report.writers == 0 {
        findings.push(Finding {
            at: Location::default(),
            problem: Problem::NoSeals,
        });
    }
    for w in &opts.expected_writers {
        if !seal_keys.contains_key(w) {
            findings.push(Finding {
                at: Location {
                    writer: Some(w.clone()),
                    ..Default::default()
                },
                problem: Problem::WriterMissing,
            });
        }
    }
    if let Some(session) = &opts.session {
        // Stated losses (gap records) may concern any session: kept.
        findings.retain(|f| {
            f.at.session
                .as_deref()
                .is_none_or(|s| s == session || s == crate::record::GAP_SESSION)
        });
        report.sessions = stitch.heads.keys().filter(|(_, s)| s == session).count() as u64;
        // The records of that session (the whole archive is checked all the same).
        report.records = stitch.records.get(session).copied().unwrap_or(0);
        report.session = Some(session.clone());
        if report.sessions == 0 {
            findings.push(Finding {
                at: Location {
                    session: Some(session.clone()),
                    ..Default::default()
                },
                problem: Problem::SessionNotFound,
            });
        }
    }
    findings.sort_by(|a, b| {
        let key = |f: &Finding| {
            let l = &f.at;
            (
                l.writer.clone(),
                l.batch_no,
                l.session.clone(),
                l.seq,
                l.offset,
                l.key.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    report.findings = findings;
    Ok(report)
}

/// The objects to verify. On S3, from the list of versions: an object is
/// verified as first written (its oldest version), a newer version is a
/// finding, and so is a delete marker hiding it (the object is still read).
/// Why an object was not read.
fn too_large(size: u64, limit: u64) -> String {
    format!(
        "not read: the object is {size} bytes, more than the {limit} bytes a batch may \
         decompress to (VerifyOptions::with_max_batch_bytes)"
    )
}

async fn list_objects(
    archive: &Archive,
    findings: &mut Vec<Finding>,
) -> Result<(Vec<crate::archive::ObjectInfo>, HashMap<String, String>)> {
    let Some(versions) = archive.list_versions().await? else {
        if let Some(root) = archive.local_dir().map(std::path::Path::to_path_buf) {
            // Every regular file is an object (FORMAT.md §6), listed from the
            // directory itself: object_store's listing leaves out names it
            // uses itself (ending in `#` and digits), and fails on a loop of
            // symbolic links or a name with a control character.
            let files = tokio::task::spawn_blocking(move || local_files(&root))
                .await
                .map_err(|e| crate::Error::Io {
                    path: "listing the archive".into(),
                    source: std::io::Error::other(e),
                })?;
            let mut objects: Vec<_> = files
                .into_iter()
                .map(|(key, size)| crate::archive::ObjectInfo { key, size })
                .collect();
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            return Ok((objects, HashMap::new()));
        }
        return Ok((archive.list("").await?, HashMap::new()));
    };
    let mut by_key: BTreeMap<String, Vec<crate::archive::ObjectVersion>> = BTreeMap::new();
    for v in versions {
        by_key.entry(v.key.clone()).or_default().push(v);
    }
    let mut objects = Vec::new();
    let mut pinned = HashMap::new();
    for (key, vs) in by_key {
        let at = Location {
            key: Some(key.clone()),
            ..Default::default()
        };
        if vs.iter().any(|v| v.is_latest && v.delete_marker) {
            findings.push(Finding {
                at: at.clone(),
                problem: Problem::DeleteMarker,
            });
        }
        // S3 lists versions newest first: the last real one is the original.
        let real: Vec<_> = vs.iter().filter(|v| !v.delete_marker).collect();
        let Some(first) = real.last() else { continue };
        if real.len() > 1 {
            findings.push(Finding {
                at,
                problem: Problem::ObjectOverwritten {
                    versions: real.len() as u64,
                },
            });
        }
        objects.push(crate::archive::ObjectInfo {
            key: key.clone(),
            size: first.size,
        });
        pinned.insert(key, first.version_id.clone());
    }
    Ok((objects, pinned))
}

/// Every regular file under `root` (symbolic links followed, each directory
/// walked once, names in byte order, as the independent verifier walks
/// them), as a key relative to it and a size.
fn local_files(root: &std::path::Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(
        dir: &std::path::Path,
        prefix: &str,
        seen: &mut std::collections::HashSet<(u64, u64)>,
        out: &mut Vec<(String, u64)>,
    ) {
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if m.is_file() {
                out.push((format!("{prefix}{name}"), m.len()));
            } else if m.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), seen, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut Default::default(), &mut out);
    out
}

/// Checks every object's Object Lock against `policy` (S3 archives only).
async fn check_retention(
    archive: &Archive,
    objects: &[crate::archive::ObjectInfo],
    pinned: &HashMap<String, String>,
    policy: crate::archive::Retention,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    if !archive.is_s3() {
        return Err(Error::InvalidStoreUrl {
            url: archive.url().to_owned(),
            reason: "retention can only be checked on an s3:// archive".into(),
        });
    }
    let ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let locks: Vec<_> = futures::stream::iter(objects.iter())
        .map(|o| async move {
            let lock = archive
                .object_lock(&o.key, pinned.get(&o.key).map(String::as_str))
                .await?;
            Ok::<_, Error>((o.key.clone(), lock))
        })
        .buffered(16)
        .try_collect()
        .await?;
    for (key, lock) in locks {
        // Without the write time the required date is unknown: an error, not
        // a lock that passes against 1970.
        let Some(written) = lock.written.map(ns) else {
            return Err(Error::Store {
                key: key.clone(),
                source: object_store::Error::Generic {
                    store: "S3",
                    source: "HEAD gave no readable Last-Modified: cannot check the retention"
                        .into(),
                },
            });
        };
        let required = written.saturating_add(policy.period.as_nanos() as u64);
        let found_until = lock.retain_until.map(ns);
        let ok = lock.mode == Some(policy.mode) && found_until.is_some_and(|u| u >= required);
        if !ok {
            findings.push(Finding {
                at: Location {
                    key: Some(key),
                    ..Default::default()
                },
                problem: Problem::RetentionInsufficient {
                    expected_mode: policy.mode.header(),
                    found_mode: lock.mode.map(|m| m.header()),
                    required_until_ns: required,
                    found_until_ns: found_until,
                },
            });
        }
    }
    Ok(())
}

/// On S3: each seal names the version id of the seal before it; that must be
/// the version verified (the first written).
fn check_seal_versions(
    writer: &str,
    seals: &[LoadedSeal],
    pinned: &HashMap<String, String>,
    findings: &mut Vec<Finding>,
) {
    for pair in seals.windows(2) {
        let (prev, this) = (&pair[0], &pair[1]);
        let Some(s) = &this.parsed else { continue };
        let (Some(expected), Some(found)) =
            (s.body.prev_seal_version.as_ref(), pinned.get(&prev.key))
        else {
            continue;
        };
        if this.batch_no == prev.batch_no + 1 && expected != found {
            findings.push(Finding {
                at: Location {
                    writer: Some(writer.to_owned()),
                    batch_no: Some(prev.batch_no),
                    key: Some(prev.key.clone()),
                    ..Default::default()
                },
                problem: Problem::SealedVersionMissing {
                    version_id: expected.clone(),
                },
            });
        }
    }
}

fn check_seal_chain(
    writer: &str,
    seals: &[LoadedSeal],
    trusted: &[VerifyingKey],
    trusted_ids: &[String],
    as_of: u64,
    grace: u64,
    findings: &mut Vec<Finding>,
) {
    let at = |l: &LoadedSeal| Location {
        writer: Some(writer.to_owned()),
        batch_no: Some(l.batch_no),
        key: Some(l.key.clone()),
        ..Default::default()
    };
    let mut expected_no = 0u64;
    // (hash, body) of the previous seal, if it was present and readable.
    let mut prev: Option<(Digest, &SealBody)> = None;
    for l in seals {
        if l.batch_no > expected_no {
            findings.push(Finding {
                at: Location {
                    writer: Some(writer.to_owned()),
                    batch_no: Some(expected_no),
                    ..Default::default()
                },
                problem: Problem::MissingSeals {
                    first: expected_no,
                    last: l.batch_no - 1,
                },
            });
            prev = None;
        }
        expected_no = l.batch_no + 1;
        let Some(s) = &l.parsed else {
            prev = None;
            continue;
        };
        let body = &s.body;
        let mut misplaced = |field, expected: String, found: String| {
            findings.push(Finding {
                at: at(l),
                problem: Problem::SealMisplaced {
                    field,
                    expected,
                    found,
                },
            })
        };
        if body.writer != writer {
            misplaced("writer", writer.to_owned(), body.writer.clone());
        }
        if body.batch_no != l.batch_no {
            misplaced(
                "batch_no",
                l.batch_no.to_string(),
                body.batch_no.to_string(),
            );
        }
        if let Some(b) = &body.batch {
            let expected = layout::batch_key(writer, l.batch_no, &b.sha256);
            if b.key != expected {
                misplaced("batch.key", expected, b.key.clone());
            }
        }
        let problem = match seal::verify_seal(s, trusted) {
            Ok(()) => None,
            Err(SealError::HashMismatch { expected, found }) => {
                Some(Problem::SealHashMismatch { expected, found })
            }
            Err(SealError::UnknownKey { found, .. }) => Some(Problem::UnknownSigningKey {
                found,
                trusted: trusted_ids.to_vec(),
            }),
            Err(SealError::BadSignature { key_id }) => Some(Problem::BadSignature { key_id }),
        };
        if let Some(problem) = problem {
            findings.push(Finding { at: at(l), problem });
        }
        // The hash the next seal must link to is the hash of this body as it is.
        let this_hash = seal::seal_hash(body).unwrap_or(s.hash);
        let expected_prev = if l.batch_no == 0 {
            Some(seal_genesis(writer))
        } else {
            prev.map(|(h, _)| h)
        };
        if let Some(expected) = expected_prev {
            if body.prev_seal != expected {
                findings.push(Finding {
                    at: at(l),
                    problem: Problem::SealLinkBroken {
                        expected,
                        found: body.prev_seal,
                    },
                });
            }
        }
        if let Some((_, p)) = prev {
            if body.created_ns < p.created_ns {
                findings.push(Finding {
                    at: at(l),
                    problem: Problem::SealTimeRegressed {
                        previous_ns: p.created_ns,
                        found_ns: body.created_ns,
                    },
                });
            } else if !p.closed {
                let allowed = p.heartbeat_ns.saturating_add(grace);
                let gap = body.created_ns - p.created_ns;
                if gap > allowed {
                    findings.push(Finding {
                        at: at(l),
                        problem: Problem::HeartbeatGap {
                            gap_ns: gap,
                            allowed_ns: allowed,
                        },
                    });
                }
            }
        }
        prev = Some((this_hash, body));
    }
    // The newest seal: a writer that did not close must have sealed recently.
    if let Some(last) = seals.last() {
        if let Some(s) = &last.parsed {
            let allowed = s.body.heartbeat_ns.saturating_add(grace);
            if !s.body.closed && as_of.saturating_sub(s.body.created_ns) > allowed {
                findings.push(Finding {
                    at: at(last),
                    problem: Problem::WriterSilent {
                        last_seal_ns: s.body.created_ns,
                        as_of_ns: as_of,
                        allowed_ns: allowed,
                    },
                });
            }
        }
    }
}

/// Follows each (writer, session) chain across batches.
#[derive(Default)]
struct Stitcher {
    /// (writer, session) → (next seq, head hash).
    heads: HashMap<(String, String), (u64, Digest)>,
    /// Head hash → the (writer, session)s whose chain ends there, to find
    /// where a moved record came from without going through every session.
    by_head: HashMap<Digest, Vec<(String, String)>>,
    /// Records found per session (for `--session`).
    records: HashMap<String, u64>,
}

impl Stitcher {
    fn batch(&mut self, job: &BatchJob, r: &BatchResult, findings: &mut Vec<Finding>) {
        let at = |session: &str, seq: u64| Location {
            writer: Some(job.writer.clone()),
            batch_no: Some(job.seal.batch_no),
            key: job.seal.batch.as_ref().map(|b| b.key.clone()),
            session: Some(session.to_owned()),
            seq: Some(seq),
            offset: None,
        };
        if job.seal.batch.is_none() {
            // A seal without a batch lists no session (FORMAT.md §7): one that
            // does claims records no batch holds, e.g. to skip over some.
            for s in &job.seal.sessions {
                findings.push(Finding {
                    at: Location {
                        writer: Some(job.writer.clone()),
                        batch_no: Some(job.seal.batch_no),
                        session: Some(s.id.clone()),
                        ..Default::default()
                    },
                    problem: Problem::SessionNotInBatch,
                });
            }
        }
        let Some(found) = &r.sessions else {
            // Undecodable or missing batch (or none): advance from the signed summaries so
            // that later batches are still checked against the right heads.
            for s in &job.seal.sessions {
                self.set_head(
                    (job.writer.clone(), s.id.clone()),
                    (s.last_seq.saturating_add(1), s.head),
                );
            }
            return;
        };
        // Moved records are judged against the heads at the end of the
        // batches before (FORMAT.md §7): this batch's land after it.
        let mut ends = Vec::with_capacity(found.len());
        for s in found {
            *self.records.entry(s.id.clone()).or_default() += s.count;
            let FoundSession {
                id,
                first_seq,
                first_prev,
                last_seq,
                head,
                ..
            } = s;
            let k = (job.writer.clone(), id.clone());
            if let Some(&(next, prev_head)) = self.heads.get(&k) {
                let seq_problem = (*first_seq != next).then_some(Problem::SeqDiscontinuity {
                    expected: next,
                    found: *first_seq,
                });
                let problem = if *first_prev != prev_head {
                    self.moved_from(&job.writer, id, first_prev)
                        .or(seq_problem)
                        .or(Some(Problem::ChainLinkBroken {
                            expected: prev_head,
                            found: *first_prev,
                        }))
                } else {
                    seq_problem
                };
                if let Some(problem) = problem {
                    findings.push(Finding {
                        at: at(id, *first_seq),
                        problem,
                    });
                }
            } else if let Some(problem) =
                self.moved_from(&job.writer, id, first_prev).or_else(|| {
                    (*first_seq != 0).then_some(Problem::SeqDiscontinuity {
                        expected: 0,
                        found: *first_seq,
                    })
                })
            {
                // A session new to this writer: its first record starts from
                // seq 0, unless it continues another session's chain.
                findings.push(Finding {
                    at: at(id, *first_seq),
                    problem,
                });
            }
            ends.push((k, (last_seq.saturating_add(1), *head)));
        }
        for (k, head) in ends {
            self.set_head(k, head);
        }
    }

    fn set_head(&mut self, k: (String, String), head: (u64, Digest)) {
        let new = head.1;
        if let Some((_, old)) = self.heads.insert(k.clone(), head) {
            if old == new {
                return;
            }
            if let Some(v) = self.by_head.get_mut(&old) {
                v.retain(|x| *x != k);
                if v.is_empty() {
                    self.by_head.remove(&old);
                }
            }
        }
        self.by_head.entry(new).or_default().push(k);
    }

    /// The session of `writer` other than `me` whose head is `prev`, if any
    /// (the first by id, where several are).
    fn moved_from(&self, writer: &str, me: &str, prev: &Digest) -> Option<Problem> {
        self.by_head
            .get(prev)?
            .iter()
            .filter(|(w, other)| w == writer && other != me)
            .map(|(_, other)| other)
            .min()
            .map(|other| Problem::RecordOutOfSession {
                belongs_to: other.clone(),
            })
    }
}
