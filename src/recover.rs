//! Archiving a stopped writer's spooled records under a new writer id.
//!
//! A writer that finds another process sealing under its writer id stops
//! sealing for good ([`crate::Error::WriterConflict`]) and keeps what it
//! acknowledged in its spool, which no later start seals. [`recover_spool`]
//! archives those records: the ones that no seal of the old writer holds
//! are chained again, in spool order, under a new writer id of their own,
//! sealed, and the new writer closed. It runs in two steps, each of which a
//! crash can interrupt and a new run completes:
//!
//! 1. The records to move are written, durably, to a new spool inside the
//!    old one (`<spool>/recovery`, with its own `writer-id`), and the old
//!    spool is marked stopped (`writer-conflict`), so that it is never
//!    sealed again under its own id.
//! 2. That spool is sealed as any spool is after a crash: chained under the
//!    new writer id, sealed, and the new writer closed. A new run finds it
//!    and finishes it.
//!
//! Which records were archived already is read from the archive, not from
//! the spool's own markers (a seal can be written without one): a spooled
//! line is sealed when a batch that the old writer's seals list holds its
//! hash. Before that, the spool is checked to continue the old writer's
//! chains in that archive, so that a wrong store or writer id is refused
//! rather than taken for "nothing sealed".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::archive::{layout, Archive};
use crate::error::{Error, Result};
use crate::keys::VerifyingKey;
use crate::pipeline::{Counters, Sealer, SealerConfig};
use crate::record::{StoredRecord, TraceRecord};
use crate::seal::Seal;
use crate::spool::{Entry, Spool};

/// The new spool inside the old one.
pub const RECOVERY_DIR: &str = "recovery";

/// Records moved per seal.
const CHUNK: usize = 1000;

/// The attribute that marks a log record (as the collector archives one).
const SIGNAL: &str = "otel.signal";

/// The collector's session for a log record without a trace.
const LOG_SESSION: &str = "sealtrail.logs";

/// What [`recover_spool`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolRecovery {
    /// The writer id the spool was written under.
    pub from_writer: String,
    /// The writer id its records are archived under now (empty when there
    /// was nothing to move).
    pub into_writer: String,
    /// Records this run chained and sealed under `into_writer`.
    pub moved: usize,
    /// Spooled records that a seal of `from_writer` already holds: not moved.
    /// (Counted when the records to move are chosen, 0 when a run resumes.)
    pub already_sealed: usize,
    /// Whether an earlier run had chosen the records (step 1 was done).
    pub resumed: bool,
    /// The new writer's closing seal, if this run wrote it.
    pub closed_at: Option<u64>,
}

/// Archives the records of the spool in `dir` that no seal of its writer
/// holds under the writer id `cfg.writer_id` (empty: a new one is made,
/// `<host>-<8 hex digits>`): see the module documentation. The spool's
/// writer is `from_writer`, or else the id its conflict record names, or
/// else the default id kept in the spool (`writer-id`). Which records
/// that writer sealed is read only from seals signed by one of `trusted`
/// (empty: the public key of `cfg.key`) and from batch objects of the
/// length and digest their seals state; any other seal or batch object of
/// that writer is refused (run `sealtrail verify`). `force`
/// allows a spool whose writer did not record a conflict (one that refuses
/// to start because the archive's seals do not cover its records, after a
/// crash right after the conflict); without it such a spool is refused.
pub fn recover_spool(
    dir: &Path,
    from_writer: Option<&str>,
    mut cfg: SealerConfig,
    trusted: &[VerifyingKey],
    force: bool,
) -> Result<SpoolRecovery> {
    let own = [cfg.key.verifying_key()];
    let trusted = if trusted.is_empty() {
        &own[..]
    } else {
        trusted
    };
    if !dir.join("lock").exists() {
        return Err(Error::InvalidSetting {
            setting: "--spool-dir",
            reason: format!("{} is not a sealtrail spool directory", dir.display()),
        });
    }
    // The id it wrote as: given, else as its conflict record says, else
    // its default id.
    let kept = crate::spool::conflict_writer(dir).or_else(|| {
        std::fs::read_to_string(dir.join("writer-id"))
            .ok()
            .map(|s| s.trim().to_owned())
    });
    let from_writer = match (from_writer, kept) {
        (Some(given), _) => given.to_owned(),
        (None, Some(kept)) => kept,
        (None, None) => {
            return Err(Error::InvalidSetting {
                setting: "--from-writer",
                reason: format!(
                    "{} keeps no writer id (its writer was given one, e.g. with --writer-id, \
                     and recorded no conflict): name it with --from-writer",
                    dir.display()
                ),
            })
        }
    };
    if !crate::writer::valid_writer_id(&from_writer) {
        return Err(Error::InvalidWriterId { id: from_writer });
    }
    let (mut old, entries) = Spool::open(dir)?;
    let rdir = dir.join(RECOVERY_DIR);
    let resumed = rdir.is_dir();
    let mut already_sealed = 0;
    if !resumed {
        if old.conflict().is_none() && !force {
            return Err(Error::InvalidSetting {
                setting: "--spool-dir",
                reason: format!(
                    "{} records no writer conflict: a start with it seals its records itself. \
                     If its start refuses because the archive's seals do not cover its records, \
                     recover it with --force",
                    dir.display()
                ),
            });
        }
        let into = match cfg.writer_id.as_str() {
            "" => None,
            id => Some(id.to_owned()),
        };
        if into.as_deref() == Some(from_writer.as_str()) {
            return Err(Error::InvalidSetting {
                setting: "--writer-id",
                reason: format!("{from_writer:?} is the stopped writer's own id: give a new one"),
            });
        }
        let rt = runtime()?;
        let (records, sealed) =
            rt.block_on(choose(&cfg.archive, &from_writer, trusted, entries))?;
        already_sealed = sealed;
        if records.is_empty() {
            return Ok(SpoolRecovery {
                from_writer,
                into_writer: String::new(),
                moved: 0,
                already_sealed,
                resumed,
                closed_at: None,
            });
        }
        if let Some(id) = &into {
            if rt.block_on(has_seals(&cfg.archive, id))? {
                return Err(Error::InvalidSetting {
                    setting: "--writer-id",
                    reason: format!(
                        "writer {id:?} already has seals in {}: give a writer id of its own",
                        cfg.archive.url()
                    ),
                });
            }
        }
        let partial = dir.join(format!("{RECOVERY_DIR}.partial"));
        if partial.exists() {
            // An earlier run stopped before step 1 was complete.
            std::fs::remove_dir_all(&partial).map_err(|source| Error::Io {
                path: partial.clone(),
                source,
            })?;
        }
        write_recovery_spool(&partial, into.as_deref(), &records)?;
        if old.conflict().is_none() {
            old.mark_conflict(
                &from_writer,
                &format!(
                    "its records were moved to {} by `sealtrail recover`",
                    rdir.display()
                ),
            )?;
        }
        std::fs::rename(&partial, &rdir).map_err(|source| Error::Io {
            path: rdir.clone(),
            source,
        })?;
        sync_dir(dir)?;
    }
    // Step 2: the recovery spool, as after a crash.
    let into_writer = crate::writer::persisted_writer_id(&rdir)?;
    if !cfg.writer_id.is_empty() && cfg.writer_id != into_writer {
        return Err(Error::InvalidSetting {
            setting: "--writer-id",
            reason: format!(
                "an earlier run chose writer id {into_writer:?} for {}: run again with that id, or without one",
                rdir.display()
            ),
        });
    }
    cfg.writer_id = into_writer.clone();
    let (spool, left) = Spool::open(&rdir)?;
    let (mut sealer, found) = Sealer::open(cfg, spool, left, Arc::new(Counters::default()))?;
    let mut held = found.held;
    held.sort_by_key(|(id, _)| *id);
    let mut moved = found.chained;
    if held.is_empty() && moved == 0 && sealer.newest_seal_closed() {
        // Done before: nothing to seal, and the new writer closed.
        return Ok(SpoolRecovery {
            from_writer,
            into_writer,
            moved: 0,
            already_sealed,
            resumed,
            closed_at: None,
        });
    }
    let encoded: Vec<(u64, Vec<u8>)> = held
        .iter()
        .map(|(id, r)| Ok((*id, crate::spool::encode_held(r)?)))
        .collect::<Result<_>>()?;
    let mut done = 0;
    for chunk in held.chunks(CHUNK) {
        for (id, record) in chunk {
            sealer.append(record.clone(), Some(*id))?;
        }
        sealer.sync(chunk.len())?;
        done += chunk.len();
        moved += chunk.len();
        sealer.seal_soon();
        sealer.tick(encoded[done..].iter().map(|(id, b)| (*id, b.as_slice())));
        if let Some(e) = sealer.conflict() {
            return Err(e);
        }
    }
    // Also when a crash (or a failed final seal) left everything sealed
    // but the writer open: a writer that never closes would be reported
    // as silent once its heartbeat passes.
    sealer.close(std::iter::empty())?;
    let (_, _, next) = sealer.identity();
    Ok(SpoolRecovery {
        from_writer,
        into_writer,
        moved,
        already_sealed,
        resumed,
        closed_at: next.checked_sub(1),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "sealtrail runtime".into(),
            source,
        })
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Whether `writer` has any seal in `archive`.
async fn has_seals(archive: &Archive, writer: &str) -> Result<bool> {
    Ok(!archive.list(&layout::seals_dir(writer)).await?.is_empty())
}

/// The records of `entries` to move, in spool order (held ones last, by
/// hold id, in the sessions the collector would give them), and how many
/// spooled records are sealed already.
async fn choose(
    archive: &Archive,
    writer: &str,
    trusted: &[VerifyingKey],
    entries: Vec<Entry>,
) -> Result<(Vec<TraceRecord>, usize)> {
    let mut lines = Vec::new();
    let mut held = Vec::new();
    let mut released = HashSet::new();
    for e in entries {
        match e {
            Entry::Line { line, released: r } => {
                released.extend(r);
                let stored: StoredRecord =
                    serde_json::from_slice(&line).map_err(|e| Error::InvalidRecord {
                        reason: format!("a spooled line is not a chained record: {e}"),
                    })?;
                lines.push(stored);
            }
            Entry::Record(_) => {
                return Err(Error::InvalidSetting {
                    setting: "--spool-dir",
                    reason: "the spool holds records in the format of an earlier sealtrail \
                             version (not chained), which recover does not read"
                        .into(),
                })
            }
            Entry::Held { id, record } => held.push((id, *record)),
            Entry::Sealing { .. } => {}
        }
    }
    let sealed = sealed_hashes(archive, writer, trusted, &lines).await?;
    let mut known = Sessions::default();
    let mut out = Vec::new();
    let mut already = 0;
    for l in lines {
        known.learn(&l.record);
        if sealed.contains(&l.hash.0) {
            already += 1;
        } else {
            out.push(l.record);
        }
    }
    held.retain(|(id, _)| !released.contains(id));
    held.sort_by_key(|(id, _)| *id);
    held.dedup_by_key(|(id, _)| *id); // a held record written again at compaction
    out.extend(known.place_held(held));
    Ok((out, already))
}

/// A span's identity: trace id and span id.
type SpanKey = (String, String);

/// The sessions of spans, as the collector resolves held records.
#[derive(Default)]
struct Sessions(HashMap<SpanKey, String>);

impl Sessions {
    fn is_log(r: &TraceRecord) -> bool {
        r.attributes.get(SIGNAL).is_some()
    }

    /// A span's own key (a log record has none: its span id names its span).
    fn own(r: &TraceRecord) -> Option<SpanKey> {
        if Self::is_log(r) {
            return None;
        }
        Some((r.trace_id.clone()?, r.span_id.clone()?))
    }

    /// What a held record waits for: its span's parent, or a log record's span.
    fn anchor(r: &TraceRecord) -> Option<SpanKey> {
        let span = if Self::is_log(r) {
            &r.span_id
        } else {
            &r.parent_span_id
        };
        Some((r.trace_id.clone()?, span.clone()?))
    }

    fn learn(&mut self, r: &TraceRecord) {
        if let Some(k) = Self::own(r) {
            self.0.insert(k, r.session.clone());
        }
    }

    /// Gives each held record its session: its anchor's, also through other
    /// held records; failing that, as when its wait passes, its trace's (and
    /// its own held descendants get that too). In hold id order, as the
    /// collector releases them at shutdown.
    fn place_held(&mut self, held: Vec<(u64, TraceRecord)>) -> Vec<TraceRecord> {
        let mut waiting: HashMap<SpanKey, Vec<u64>> = HashMap::new();
        let mut records: BTreeMap<u64, TraceRecord> = BTreeMap::new();
        let mut placed: BTreeMap<u64, TraceRecord> = BTreeMap::new();
        for (id, r) in held {
            if let Some(a) = Self::anchor(&r) {
                waiting.entry(a).or_default().push(id);
            }
            records.insert(id, r);
        }
        // Resolve what the spooled spans name, then what expires, in order.
        let mut queue: Vec<SpanKey> = waiting
            .keys()
            .filter(|k| self.0.contains_key(*k))
            .cloned()
            .collect();
        loop {
            while let Some(k) = queue.pop() {
                let session = self.0[&k].clone();
                for id in waiting.remove(&k).unwrap_or_default() {
                    if let Some(mut r) = records.remove(&id) {
                        r.session = session.clone();
                        if let Some(own) = Self::own(&r) {
                            self.0.insert(own.clone(), session.clone());
                            queue.push(own);
                        }
                        placed.insert(id, r);
                    }
                }
            }
            let Some((id, mut r)) = records.pop_first() else {
                break;
            };
            r.session = r.trace_id.clone().unwrap_or_else(|| LOG_SESSION.to_owned());
            if let Some(own) = Self::own(&r) {
                self.0.insert(own.clone(), r.session.clone());
                queue.push(own);
            }
            placed.insert(id, r);
        }
        placed.into_values().collect()
    }
}

/// The hashes of the records in the batches sealed by `writer` that can
/// hold a line of `lines` (by session and seq, from the seals' session
/// summaries). Checks first that every spooled session continues the
/// writer's chain in `archive`: its first spooled record is seq 0 from the
/// writer's genesis, or a seal holds the record before it. Every seal read
/// must be signed by one of `trusted`, and every batch object read must
/// have the length and digest its seal states: a forged seal or an altered
/// batch could otherwise pass records off as sealed, and they would be lost.
async fn sealed_hashes(
    archive: &Archive,
    writer: &str,
    trusted: &[VerifyingKey],
    lines: &[StoredRecord],
) -> Result<HashSet<[u8; 32]>> {
    let mut first: HashMap<&str, &StoredRecord> = HashMap::new();
    for l in lines {
        let e = first.entry(l.record.session.as_str()).or_insert(l);
        if l.record.seq < e.record.seq {
            *e = l;
        }
    }
    let wrong = |session: &str, what: String| Error::Recovery {
        writer: writer.to_owned(),
        reason: format!(
            "the spool's session {session:?} {what}: is the spool's writer id \
             (--from-writer) or the store (--store, {}) not the one it wrote?",
            archive.url()
        ),
    };
    let mut needed: HashSet<u64> = HashSet::new();
    let mut batches: HashMap<u64, crate::seal::BatchRef> = HashMap::new();
    let mut continued: HashSet<&str> = HashSet::new();
    let objects = archive.list(&layout::seals_dir(writer)).await?;
    if objects.is_empty() {
        // A writer that met another under its id has seals.
        return Err(Error::Recovery {
            writer: writer.to_owned(),
            reason: format!(
                "it has no seals in {}: is the spool's writer id (--from-writer) or the \
                 store (--store) not the one it wrote?",
                archive.url()
            ),
        });
    }
    for obj in &objects {
        let Some(layout::Name::Seal { batch_no, .. }) = layout::parse(&obj.key) else {
            continue;
        };
        let seal: Seal =
            serde_json::from_slice(&archive.get(&obj.key).await?).map_err(|e| Error::Recovery {
                writer: writer.to_owned(),
                reason: format!("{}: {e}", obj.key),
            })?;
        if let Err(e) = crate::seal::verify_seal(&seal, trusted) {
            return Err(Error::Recovery {
                writer: writer.to_owned(),
                reason: format!(
                    "seal {}: {e}. Recover reads only seals it can verify: give the key the \
                     stopped writer signed with (--public-key), and run `sealtrail verify` on the store",
                    obj.key
                ),
            });
        }
        if seal.body.writer != writer || seal.body.batch_no != batch_no {
            return Err(Error::Recovery {
                writer: writer.to_owned(),
                reason: format!(
                    "seal {} is signed as writer {:?}'s batch {}: run `sealtrail verify` on the store",
                    obj.key, seal.body.writer, seal.body.batch_no
                ),
            });
        }
        let Some(batch) = seal.body.batch else {
            continue;
        };
        for s in &seal.body.sessions {
            let Some(f) = first.get(s.id.as_str()) else {
                continue;
            };
            let q = f.record.seq;
            if q > 0 && (s.first_seq..=s.last_seq).contains(&(q - 1)) {
                // The batch that holds the record before: checked by hash below.
                continued.insert(f.record.session.as_str());
                needed.insert(batch_no);
            }
            if s.last_seq >= q {
                needed.insert(batch_no);
            }
        }
        batches.insert(batch_no, batch);
    }
    let mut sessions: Vec<_> = first.values().collect();
    sessions.sort_by_key(|l| &l.record.session);
    for f in sessions {
        let s = f.record.session.as_str();
        if f.record.seq == 0 {
            if f.record.prev != crate::digest::genesis(writer, s) {
                return Err(wrong(
                    s,
                    format!("does not start from writer {writer:?}'s genesis"),
                ));
            }
        } else if !continued.contains(s) {
            return Err(wrong(
                s,
                format!(
                    "starts at seq {}, and no seal of writer {writer:?} holds seq {}",
                    f.record.seq,
                    f.record.seq - 1
                ),
            ));
        }
    }
    let mut out = HashSet::new();
    let mut needed: Vec<u64> = needed.into_iter().collect();
    needed.sort_unstable();
    for n in needed {
        let batch = &batches[&n];
        let key = &batch.key;
        let bytes = archive.get(key).await?;
        if bytes.len() as u64 != batch.len || crate::digest::Digest::sha256(&bytes) != batch.sha256
        {
            return Err(Error::Recovery {
                writer: writer.to_owned(),
                reason: format!(
                    "batch object {key} is not the one its seal signs ({} bytes, sha256 {}, \
                     where the seal states {} bytes, sha256 {}): run `sealtrail verify` on the store",
                    bytes.len(),
                    crate::digest::Digest::sha256(&bytes),
                    batch.len,
                    batch.sha256
                ),
            });
        }
        let (content, _) =
            crate::verify::batch::decode(&bytes, 1 << 30).map_err(|e| Error::Recovery {
                writer: writer.to_owned(),
                reason: format!("{key}: {e}"),
            })?;
        for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let stored: StoredRecord =
                serde_json::from_slice(line).map_err(|e| Error::Recovery {
                    writer: writer.to_owned(),
                    reason: format!("{key}: {e}"),
                })?;
            out.insert(stored.hash.0);
        }
    }
    // The record before each session's first spooled one is in those
    // batches, by hash: the same seqs under the same writer id in another
    // store do not pass.
    let mut sessions: Vec<_> = first.values().filter(|f| f.record.seq > 0).collect();
    sessions.sort_by_key(|l| &l.record.session);
    for f in sessions {
        if !out.contains(&f.record.prev.0) {
            return Err(wrong(
                &f.record.session,
                format!(
                    "starts at seq {} after a record that the batch sealed as seq {} does not hold",
                    f.record.seq,
                    f.record.seq - 1
                ),
            ));
        }
    }
    Ok(out)
}

/// Step 1: `records` as held records of a new spool in `partial`, with the
/// writer id `into` (or a new one), durable.
fn write_recovery_spool(partial: &Path, into: Option<&str>, records: &[TraceRecord]) -> Result<()> {
    crate::spool::create_dir(partial)?;
    match into {
        Some(id) => {
            let path = partial.join("writer-id");
            std::fs::write(&path, format!("{id}\n"))
                .and_then(|()| std::fs::File::open(&path)?.sync_all())
                .map_err(|source| Error::Io { path, source })?;
        }
        None => {
            crate::writer::persisted_writer_id(partial)?;
        }
    }
    let (mut spool, _) = Spool::open(partial)?;
    for (i, r) in records.iter().enumerate() {
        spool.append_held(i as u64, r)?;
    }
    spool.sync()?;
    drop(spool);
    sync_dir(partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::record::Kind;
    use crate::verify::Problem;

    const NONE: [(u64, &[u8]); 0] = [];

    fn config(archive: &Archive, writer_id: &str) -> SealerConfig {
        SealerConfig {
            writer_id: writer_id.into(),
            ..crate::pipeline::tests::config(archive)
        }
    }

    fn span(session: &str, name: &str, trace: &str, id: &str, parent: Option<&str>) -> TraceRecord {
        let mut r = TraceRecord::new(session, Kind::Span, name);
        r.trace_id = Some(trace.into());
        r.span_id = Some(id.into());
        r.parent_span_id = parent.map(Into::into);
        r
    }

    fn open(archive: &Archive, dir: &Path) -> Result<Sealer> {
        std::fs::write(dir.join("writer-id"), "w\n").unwrap();
        let (spool, left) = Spool::open(dir)?;
        Sealer::open(
            config(archive, "w"),
            spool,
            left,
            Arc::new(Counters::default()),
        )
        .map(|(s, _)| s)
    }

    fn seals(archive: &Archive, writer: &str) -> usize {
        let rt = runtime().unwrap();
        rt.block_on(archive.list(&layout::seals_dir(writer)))
            .unwrap()
            .len()
    }

    /// Writer "w" in the spool of the first directory, stopped by a
    /// writer-id conflict with the writer returned (spool in the second),
    /// with records in its spool that it sealed (kept beside a held one),
    /// that it could not seal ("a1", "a2"), and two held ones.
    fn stopped(archive: &Archive) -> (tempfile::TempDir, tempfile::TempDir, Sealer) {
        let archive = archive.clone();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = open(&archive, dir_a.path()).unwrap();
        // Batch 0: "a0", sealed; a held child keeps its segment in the spool.
        a.append(span("conv-a", "a0", "t1", "s1", None), None)
            .unwrap();
        let child = span("", "child of a0", "t1", "s9", Some("s1"));
        a.spool().append_held(7, &child).unwrap();
        let orphan = span("", "orphan", "t2", "s5", Some("s4"));
        a.spool().append_held(8, &orphan).unwrap();
        a.sync(1).unwrap();
        let held = [
            (7, crate::spool::encode_held(&child).unwrap()),
            (8, crate::spool::encode_held(&orphan).unwrap()),
        ];
        let held_ref = || held.iter().map(|(id, b)| (*id, b.as_slice()));
        a.flush(held_ref()).unwrap();
        // B, under the same writer id, seals batch 1; A's batch 1 conflicts.
        let mut b = open(&archive, dir_b.path()).unwrap();
        b.append(span("conv-b", "b0", "t3", "s1", None), None)
            .unwrap();
        b.sync(1).unwrap();
        b.flush(NONE).unwrap();
        for name in ["a1", "a2"] {
            a.append(span("conv-a", name, "t1", name, Some("s1")), None)
                .unwrap();
        }
        a.sync(2).unwrap();
        assert!(matches!(
            a.flush(held_ref()),
            Err(Error::WriterConflict { .. })
        ));
        drop(a);
        (dir_a, dir_b, b)
    }

    /// `recover_spool` archives exactly the records no seal holds under a
    /// new writer, each held one in its parent's session or its trace's,
    /// once (a second run adds nothing), and verify is intact but for the
    /// stopped writer's batch object that no seal covers.
    #[test]
    fn a_stopped_writers_spool_is_archived_under_a_new_writer_once() {
        let archive = Archive::memory();
        let (dir_a, dir_b, b) = stopped(&archive);
        let seals_w = seals(&archive, "w");

        // Refused, and nothing written: the old writer's own id; a spool
        // without a recorded conflict (unless forced).
        let e = recover_spool(dir_a.path(), None, config(&archive, "w"), &[], false).unwrap_err();
        assert!(e.to_string().contains("the stopped writer's own id"), "{e}");
        let e = recover_spool(dir_b.path(), None, config(&archive, "w3"), &[], false).unwrap_err();
        assert!(e.to_string().contains("the spool is in use"), "{e}");
        drop(b);
        let e = recover_spool(dir_b.path(), None, config(&archive, "w3"), &[], false).unwrap_err();
        assert!(e.to_string().contains("records no writer conflict"), "{e}");
        assert!(!dir_a.path().join(RECOVERY_DIR).exists());
        assert!(!dir_b.path().join(RECOVERY_DIR).exists());
        // A wrong writer id or store is refused, not taken for "nothing sealed".
        let e =
            recover_spool(dir_a.path(), Some("v"), config(&archive, "w2"), &[], false).unwrap_err();
        assert!(
            e.to_string().contains("it has no seals in memory://"),
            "{e}"
        );
        let e = recover_spool(
            dir_a.path(),
            None,
            config(&Archive::memory(), "w2"),
            &[],
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("it has no seals in memory://"),
            "{e}"
        );
        // Seals of another writer "v" in that archive: the spool's chains are not v's.
        let other = Archive::memory();
        runtime().unwrap().block_on(async {
            let key = SigningKey::from_bytes(&[3; 32]);
            let opts = crate::WriterOptions::default();
            let mut v = crate::Writer::open(other.clone(), key, "v", opts)
                .await
                .unwrap();
            v.append(span("x", "x0", "t9", "s1", None)).unwrap();
            v.close().await.unwrap();
        });
        let e =
            recover_spool(dir_a.path(), Some("v"), config(&other, "w2"), &[], false).unwrap_err();
        assert!(
            e.to_string()
                .contains("session \"conv-a\" does not start from writer \"v\"'s genesis"),
            "{e}"
        );
        assert!(!dir_a.path().join(RECOVERY_DIR).exists());
        // A step 1 that a crash cut short is done again.
        std::fs::create_dir(dir_a.path().join("recovery.partial")).unwrap();
        std::fs::write(dir_a.path().join("recovery.partial/writer-id"), "x\n").unwrap();

        let r = recover_spool(dir_a.path(), None, config(&archive, "w2"), &[], false).unwrap();
        assert_eq!(
            (r.from_writer.as_str(), r.into_writer.as_str()),
            ("w", "w2")
        );
        assert_eq!((r.moved, r.already_sealed, r.resumed), (4, 1, false));
        assert_eq!(seals(&archive, "w"), seals_w, "nothing written as w");
        let rt = runtime().unwrap();
        let moved: Vec<(String, String, u64)> = rt
            .block_on(crate::read::records(&archive, |_| true))
            .unwrap()
            .into_iter()
            .filter(|(w, _)| w == "w2")
            .map(|(_, r)| (r.name, r.session, r.seq))
            .collect();
        let want = [
            ("a1", "conv-a", 0),
            ("a2", "conv-a", 1),
            ("child of a0", "conv-a", 2),
            ("orphan", "t2", 0),
        ];
        assert_eq!(
            moved,
            want.map(|(n, s, q)| (n.to_owned(), s.to_owned(), q))
                .to_vec()
        );
        let report = rt
            .block_on(crate::verify(
                &archive,
                &[SigningKey::from_bytes(&[3; 32]).verifying_key()],
                &crate::VerifyOptions::default(),
            ))
            .unwrap();
        let problems: Vec<_> = report.findings.iter().map(|f| &f.problem).collect();
        assert_eq!(problems, [&Problem::UncoveredObject], "{report:?}");
        assert!(report.findings[0]
            .at
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with("v1/writers/w/batches/00000000000000000001-")));

        // Again: nothing to do, no seal added; the old spool still refuses.
        let seals_w2 = seals(&archive, "w2");
        let again = recover_spool(dir_a.path(), None, config(&archive, ""), &[], false).unwrap();
        assert_eq!((again.moved, again.resumed), (0, true));
        assert_eq!(seals(&archive, "w2"), seals_w2);
        let e = recover_spool(dir_a.path(), None, config(&archive, "w4"), &[], false).unwrap_err();
        assert!(e.to_string().contains("chose writer id \"w2\""), "{e}");
        assert!(matches!(
            open(&archive, dir_a.path()),
            Err(Error::WriterConflict { .. })
        ));
    }

    /// Recover reads only seals signed by a key it trusts and batch objects
    /// as their seals sign them: a record is never taken for sealed on the
    /// word of a forged seal or an altered batch. Refused, nothing written.
    #[test]
    fn untrusted_seals_and_altered_batches_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let url = format!("file://{}", root.path().display());
        let archive = Archive::open(&url).unwrap();
        let (dir_a, _dir_b, b) = stopped(&archive);
        drop(b);
        let stranger = SigningKey::from_bytes(&[9; 32]).verifying_key();
        let e = recover_spool(
            dir_a.path(),
            None,
            config(&archive, "w2"),
            &[stranger],
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("signed by unknown key id"), "{e}");
        assert!(e.to_string().contains("--public-key"), "{e}");
        assert!(!dir_a.path().join(RECOVERY_DIR).exists());

        // Batch 0 (which holds the spooled "a0") altered on disk.
        let dir = root.path().join("v1/writers/w/batches");
        let batch = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("00000000000000000000-")
            })
            .unwrap();
        let mut bytes = std::fs::read(&batch).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut perm = std::fs::metadata(&batch).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&batch, perm).unwrap();
        std::fs::write(&batch, &bytes).unwrap();
        let e = recover_spool(dir_a.path(), None, config(&archive, "w2"), &[], false).unwrap_err();
        assert!(
            e.to_string().contains("is not the one its seal signs"),
            "{e}"
        );
        assert!(!dir_a.path().join(RECOVERY_DIR).exists());
        assert_eq!(seals(&archive, "w2"), 0);

        // Put back, it passes (with the key given explicitly).
        bytes[last] ^= 1;
        std::fs::write(&batch, &bytes).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let r = recover_spool(
            dir_a.path(),
            None,
            config(&archive, "w2"),
            &[stranger, key],
            false,
        )
        .unwrap();
        assert_eq!((r.moved, r.already_sealed), (4, 1));
    }

    /// The new writer's closing seal fails (three tries): the run fails, its
    /// records are sealed, and a new run closes the writer rather than
    /// report "nothing to do" and leave it open (silent, for verify).
    #[test]
    fn a_new_writer_left_open_is_closed_by_the_next_run() {
        use std::sync::atomic::Ordering::SeqCst;
        let (store, archive) = crate::writer::tests::FailSeals::archive(0, false);
        let (dir_a, _dir_b, b) = stopped(&archive);
        drop(b);
        // The data seal passes; the three tries of the closing seal fail.
        store.pass.store(1, SeqCst);
        store.fail.store(3, SeqCst);
        assert!(recover_spool(dir_a.path(), None, config(&archive, "w2"), &[], false).is_err());
        assert_eq!(seals(&archive, "w2"), 1);
        let r = recover_spool(dir_a.path(), None, config(&archive, ""), &[], false).unwrap();
        assert_eq!((r.moved, r.resumed, r.closed_at), (0, true, Some(1)));
        let again = recover_spool(dir_a.path(), None, config(&archive, ""), &[], false).unwrap();
        assert_eq!((again.moved, again.closed_at), (0, None));
        assert_eq!(seals(&archive, "w2"), 2);
    }

    /// Held records get the sessions the collector would give them: a log
    /// record its span's (not its span's parent's), a held child that of
    /// its held parent, also when the parent was held after it, and what
    /// no spooled span names its trace's (passed on to its held children).
    #[test]
    fn held_records_get_the_collectors_sessions() {
        let mut known = Sessions::default();
        known.learn(&span("conv-1", "root", "t1", "r", None));
        let mut log = span("", "log", "t1", "r", Some("zz"));
        log.attributes.insert(SIGNAL, "log");
        let held = vec![
            (1, span("", "grandchild", "t1", "gc", Some("c"))),
            (2, span("", "child", "t1", "c", Some("r"))),
            (3, log),
            (4, span("", "orphan child", "t2", "oc", Some("o"))),
            (5, span("", "orphan", "t2", "o", Some("gone"))),
        ];
        let placed: Vec<(String, String)> = known
            .place_held(held)
            .into_iter()
            .map(|r| (r.name, r.session))
            .collect();
        let want = [
            ("grandchild", "conv-1"),
            ("child", "conv-1"),
            ("log", "conv-1"),
            ("orphan child", "t2"),
            ("orphan", "t2"),
        ];
        assert_eq!(
            placed,
            want.map(|(n, s)| (n.to_owned(), s.to_owned())).to_vec()
        );
    }

    /// The same writer id with the same seqs in another store (say, staging
    /// and production): the record before the spool's first one is looked
    /// for by hash, so the wrong store is refused, and the right one works.
    #[test]
    fn another_store_with_the_same_writer_id_and_seqs_is_refused() {
        let (x, y) = (Archive::memory(), Archive::memory());
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(&x, dir.path()).unwrap();
        a.append(span("conv-a", "r0", "t1", "s1", None), None)
            .unwrap();
        a.sync(1).unwrap();
        a.flush(NONE).unwrap();
        a.append(span("conv-a", "r1", "t1", "s2", Some("s1")), None)
            .unwrap();
        a.sync(1).unwrap();
        drop(a); // stopped without sealing r1
        let other = tempfile::tempdir().unwrap();
        let mut b = open(&y, other.path()).unwrap();
        b.append(span("conv-a", "not r0", "t9", "s1", None), None)
            .unwrap();
        b.sync(1).unwrap();
        b.flush(NONE).unwrap();
        drop(b);
        let e = recover_spool(dir.path(), None, config(&y, "w2"), &[], true).unwrap_err();
        assert!(
            e.to_string().contains(
                "starts at seq 1 after a record that the batch sealed as seq 0 does not hold"
            ),
            "{e}"
        );
        assert!(!dir.path().join(RECOVERY_DIR).exists());
        let r = recover_spool(dir.path(), None, config(&x, "w2"), &[], true).unwrap();
        assert_eq!((r.moved, r.already_sealed), (1, 0));
    }
}
