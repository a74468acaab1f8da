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
//!    new writer id, sealed and closed. A new run finds it and finishes it.
//!
//! The old spool is left as it was; once verify reports the new writer,
//! it can be removed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::archive::{layout, Archive};
use crate::error::{Error, Result};
use crate::pipeline::{Counters, Sealer, SealerConfig};
use crate::record::{StoredRecord, TraceRecord};
use crate::seal::Seal;
use crate::spool::{Entry, Spool};

/// The new spool inside the old one.
pub const RECOVERY_DIR: &str = "recovery";

/// Records moved per seal.
const CHUNK: usize = 1000;

/// What [`recover_spool`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolRecovery {
    /// The writer id the spool was written under.
    pub from_writer: String,
    /// The writer id its records are archived under now.
    pub into_writer: String,
    /// Records this run chained and sealed under `into_writer`.
    pub moved: usize,
    /// Spooled records that a seal of `from_writer` already holds: not moved.
    /// (Counted when the records to move are chosen, 0 when a run resumes.)
    pub already_sealed: usize,
    /// Whether an earlier run had chosen the records (step 1 was done).
    pub resumed: bool,
    /// The new writer's last seal (closed).
    pub last_batch_no: Option<u64>,
}

/// Archives the records of the spool in `dir` that no seal of its writer
/// holds under the writer id `cfg.writer_id` (empty: a new one is made,
/// `<host>-<8 hex digits>`): see the module documentation. The spool's
/// writer id is the one kept in it, or `from_writer` for a writer that was
/// given its id (and kept none). `force` allows a spool whose writer did
/// not record a conflict (one that refuses to start because the archive's
/// seals do not cover its records, after a crash right after the
/// conflict); without it such a spool is refused.
pub fn recover_spool(
    dir: &Path,
    from_writer: Option<&str>,
    mut cfg: SealerConfig,
    force: bool,
) -> Result<SpoolRecovery> {
    let kept = std::fs::read_to_string(dir.join("writer-id"))
        .ok()
        .map(|s| s.trim().to_owned());
    let from_writer = match (kept, from_writer) {
        (Some(kept), Some(given)) if kept != given => {
            return Err(Error::InvalidSetting {
                setting: "--from-writer",
                reason: format!(
                    "{} was written as writer {kept:?} (its writer-id file), not {given:?}",
                    dir.display()
                ),
            })
        }
        (Some(id), _) => id,
        (None, Some(given)) => given.to_owned(),
        (None, None) => {
            return Err(Error::InvalidSetting {
                setting: "--from-writer",
                reason: format!(
                    "{} keeps no writer id (its writer was given one, e.g. with --writer-id): \
                     name it with --from-writer",
                    dir.display()
                ),
            })
        }
    };
    if !crate::writer::valid_writer_id(&from_writer) {
        return Err(Error::InvalidWriterId { id: from_writer });
    }
    if !dir.join("lock").exists() {
        return Err(Error::InvalidSetting {
            setting: "--spool-dir",
            reason: format!("{} is not a sealtrail spool directory", dir.display()),
        });
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
        let partial = dir.join(format!("{RECOVERY_DIR}.partial"));
        if partial.exists() {
            // An earlier run stopped before step 1 was complete.
            std::fs::remove_dir_all(&partial).map_err(|source| Error::Io {
                path: partial.clone(),
                source,
            })?;
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
        let (records, sealed) = rt.block_on(choose(&cfg.archive, &from_writer, entries))?;
        already_sealed = sealed;
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
        write_recovery_spool(&partial, into.as_deref(), &records)?;
        if old.conflict().is_none() {
            old.mark_conflict(&format!(
                "its records were moved to {} by `sealtrail recover`",
                rdir.display()
            ))?;
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
    if held.is_empty() && moved == 0 {
        // Done before: nothing to seal (and no seal to add).
        return Ok(SpoolRecovery {
            from_writer,
            into_writer,
            moved: 0,
            already_sealed,
            resumed,
            last_batch_no: None,
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
    sealer.close(std::iter::empty())?;
    let (_, _, next) = sealer.identity();
    Ok(SpoolRecovery {
        from_writer,
        into_writer,
        moved,
        already_sealed,
        resumed,
        last_batch_no: next.checked_sub(1),
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
/// hold id, each in its parent's session if a spooled record names it, else
/// in its trace's, as when its wait passes), and how many are already
/// sealed: a line is sealed when a batch sealed by `writer` holds its hash.
async fn choose(
    archive: &Archive,
    writer: &str,
    entries: Vec<Entry>,
) -> Result<(Vec<TraceRecord>, usize)> {
    let first_marker = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Sealing { batch_no } => Some(*batch_no),
            _ => None,
        })
        .min();
    let sealed = match first_marker {
        // No line was ever part of a batch being sealed.
        None => HashSet::new(),
        Some(from) => sealed_hashes(archive, writer, from).await?,
    };
    let mut lines = Vec::new();
    let mut held = Vec::new();
    let mut released = HashSet::new();
    let mut already = 0;
    // The session of every spooled span, sealed or not: a held child's parent.
    let mut sessions: HashMap<(String, String), String> = HashMap::new();
    let learn = |r: &TraceRecord, sessions: &mut HashMap<_, _>| {
        if let (Some(t), Some(s)) = (&r.trace_id, &r.span_id) {
            sessions.insert((t.clone(), s.clone()), r.session.clone());
        }
    };
    for e in entries {
        match e {
            Entry::Line { line, released: r } => {
                released.extend(r);
                let stored: StoredRecord =
                    serde_json::from_slice(&line).map_err(|e| Error::InvalidRecord {
                        reason: format!("a spooled line is not a chained record: {e}"),
                    })?;
                learn(&stored.record, &mut sessions);
                if sealed.contains(&stored.hash.0) {
                    already += 1;
                } else {
                    lines.push(stored.record);
                }
            }
            // Spools of earlier versions: records not chained yet.
            Entry::Record(r) => {
                learn(&r, &mut sessions);
                lines.push(*r)
            }
            Entry::Held { id, record } => held.push((id, *record)),
            Entry::Sealing { .. } => {}
        }
    }
    held.retain(|(id, _)| !released.contains(id));
    held.sort_by_key(|(id, _)| *id);
    let mut seen = HashSet::new();
    for (id, mut r) in held {
        if !seen.insert(id) {
            continue; // a held record written again at compaction
        }
        let parent = r.trace_id.clone().zip(r.parent_span_id.clone());
        r.session = parent
            .and_then(|k| sessions.get(&k).cloned())
            .or_else(|| r.trace_id.clone())
            // (The collector's session for log records without a trace.)
            .unwrap_or_else(|| "sealtrail.logs".to_owned());
        learn(&r, &mut sessions);
        lines.push(r);
    }
    Ok((lines, already))
}

/// The hashes of the records in every batch that `writer` sealed from
/// batch number `from` on.
async fn sealed_hashes(archive: &Archive, writer: &str, from: u64) -> Result<HashSet<[u8; 32]>> {
    let mut out = HashSet::new();
    for obj in archive.list(&layout::seals_dir(writer)).await? {
        let Some(layout::Name::Seal { batch_no, .. }) = layout::parse(&obj.key) else {
            continue;
        };
        if batch_no < from {
            continue;
        }
        let bad = |reason: String| Error::Recovery {
            writer: writer.to_owned(),
            reason: format!("{}: {reason}", obj.key),
        };
        let seal: Seal = serde_json::from_slice(&archive.get(&obj.key).await?)
            .map_err(|e| bad(e.to_string()))?;
        let Some(batch) = seal.body.batch else {
            continue;
        };
        let bytes = archive.get(&batch.key).await?;
        let (content, _) = crate::verify::batch::decode(&bytes, 1 << 30)
            .map_err(|e| bad(format!("{}: {e}", batch.key)))?;
        for line in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let stored: StoredRecord =
                serde_json::from_slice(line).map_err(|e| bad(format!("{}: {e}", batch.key)))?;
            out.insert(stored.hash.0);
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
    use std::time::Duration;

    const NONE: [(u64, &[u8]); 0] = [];

    fn config(archive: &Archive, writer_id: &str) -> SealerConfig {
        SealerConfig {
            archive: archive.clone(),
            key: SigningKey::from_bytes(&[3; 32]),
            writer_id: writer_id.into(),
            flush_interval: Duration::from_millis(1),
            heartbeat: Duration::from_secs(60),
            max_batch_records: 100,
            max_batch_bytes: 1 << 20,
            allow_unlocked: true,
            zstd_level: crate::writer::DEFAULT_ZSTD_LEVEL,
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

    /// A writer stopped by a writer-id conflict, with records in its spool
    /// that it sealed (kept beside a held one), that it could not seal, and
    /// held ones: `recover_spool` archives exactly those no seal holds under
    /// a new writer, each held one in its parent's session or its trace's,
    /// once (a second run adds nothing), and verify is intact but for the
    /// stopped writer's batch object that no seal covers.
    #[test]
    fn a_stopped_writers_spool_is_archived_under_a_new_writer_once() {
        let archive = Archive::memory();
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
        let seals_w = seals(&archive, "w");

        // Refused, and nothing written: the old writer's own id; a spool
        // without a recorded conflict (unless forced).
        let e = recover_spool(dir_a.path(), None, config(&archive, "w"), false).unwrap_err();
        assert!(e.to_string().contains("the stopped writer's own id"), "{e}");
        let e = recover_spool(dir_b.path(), None, config(&archive, "w3"), false).unwrap_err();
        assert!(e.to_string().contains("the spool is in use"), "{e}");
        drop(b);
        let e = recover_spool(dir_b.path(), None, config(&archive, "w3"), false).unwrap_err();
        assert!(e.to_string().contains("records no writer conflict"), "{e}");
        assert!(!dir_a.path().join(RECOVERY_DIR).exists());
        assert!(!dir_b.path().join(RECOVERY_DIR).exists());
        // A step 1 that a crash cut short is done again.
        std::fs::create_dir(dir_a.path().join("recovery.partial")).unwrap();
        std::fs::write(dir_a.path().join("recovery.partial/writer-id"), "x\n").unwrap();

        let r = recover_spool(dir_a.path(), None, config(&archive, "w2"), false).unwrap();
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
        let again = recover_spool(dir_a.path(), None, config(&archive, ""), false).unwrap();
        assert_eq!((again.moved, again.resumed), (0, true));
        assert_eq!(seals(&archive, "w2"), seals_w2);
        let e = recover_spool(dir_a.path(), None, config(&archive, "w4"), false).unwrap_err();
        assert!(e.to_string().contains("chose writer id \"w2\""), "{e}");
        assert!(matches!(
            open(&archive, dir_a.path()),
            Err(Error::WriterConflict { .. })
        ));
    }
}
