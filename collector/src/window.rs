//! The duplicate window kept across a clean restart.
//!
//! While it runs, the pipeline remembers the last [`crate::pipeline::WINDOW`]
//! records received (their identity, and for spans their session): the
//! duplicate check, and the sessions that children arriving later inherit.
//! After a crash the spool still holds what was not sealed, and the window is
//! rebuilt from it; after a clean stop the spool is empty. So a clean stop
//! saves the window in the spool directory, and the next start reads it back
//! before the spool's own records: a client's retry, or a child whose
//! session-carrying ancestor came before the restart, is then treated as if
//! there had been no restart.
//!
//! The window names the writer id, the store and the number of the writer's
//! next seal after the stop that saved it ([`Saved`]): a start that writes
//! as another writer, to another store, or after more seals (a later run
//! that crashed) does not use it. A missing, unreadable or damaged file is
//! logged and ignored too: the archive is unaffected, only the duplicate
//! check is narrower.
//!
//! Layout: [`MAGIC`]; the writer id, the store URL (each a little-endian u32
//! length and UTF-8 bytes) and the next seal number (u64); the distinct
//! sessions (a u32 count, then each as a length and bytes); per record,
//! oldest first, its 24-byte identity and the index of its session (u32,
//! `u32::MAX`: none); then the SHA-256 of all that.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The window's file in the spool directory.
pub(crate) const FILE: &str = "duplicate-window";

const MAGIC: &[u8] = b"sealtrail duplicate window 2\n";
const NONE: u32 = u32::MAX;

/// A received record's identity and, for a span whose session is known, its
/// session.
pub(crate) type Entry = ([u8; 24], Option<Arc<str>>);

/// Who saved a window.
#[derive(Debug, PartialEq)]
pub(crate) struct Saved {
    pub(crate) writer: String,
    pub(crate) store: String,
    pub(crate) next_batch_no: u64,
}

/// Writes `entries` (oldest first) to `dir`/[`FILE`], atomically: a crash
/// leaves the old file or the new one, whole.
pub(crate) fn save<'a>(
    dir: &Path,
    saved: &Saved,
    entries: impl Iterator<Item = (&'a [u8; 24], Option<&'a str>)> + Clone,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut open = fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut out = Hashed {
        file: BufWriter::new(open.open(&tmp)?),
        hash: Sha256::new(),
    };
    out.put(MAGIC)?;
    out.string(&saved.writer)?;
    out.string(&saved.store)?;
    out.put(&saved.next_batch_no.to_le_bytes())?;
    // Each session once: many records share one.
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut sessions = Vec::new();
    for s in entries.clone().filter_map(|(_, s)| s) {
        if !index.contains_key(s) && sessions.len() < NONE as usize {
            index.insert(s, sessions.len() as u32);
            sessions.push(s);
        }
    }
    out.put(&(sessions.len() as u32).to_le_bytes())?;
    for s in &sessions {
        out.string(s)?;
    }
    for (key, session) in entries {
        out.put(key)?;
        let i = session.and_then(|s| index.get(s).copied()).unwrap_or(NONE);
        out.put(&i.to_le_bytes())?;
    }
    let digest = out.hash.finalize();
    let mut file = out.file.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&digest)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE))?;
    fs::File::open(dir)?.sync_all()
}

struct Hashed<W: Write> {
    file: W,
    hash: Sha256,
}

impl<W: Write> Hashed<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.file.write_all(b)
    }

    fn string(&mut self, s: &str) -> std::io::Result<()> {
        // Writer ids, URLs and session ids are far below 4 GiB.
        self.put(&(s.len() as u32).to_le_bytes())?;
        self.put(s.as_bytes())
    }
}

/// Reads `dir`/[`FILE`]: `Ok(None)` when there is none, an error naming
/// what is wrong when it cannot be read.
pub(crate) fn load(dir: &Path) -> Result<Option<(Saved, Vec<Entry>)>, String> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = |why: &str| format!("{}: {why}", path.display());
    if bytes.len() < MAGIC.len() + 32 || !bytes.starts_with(MAGIC) {
        return Err(damaged("not a duplicate window of this version"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(damaged("its digest does not match (a damaged file)"));
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let truncated = || damaged("truncated");
    let saved = Saved {
        writer: r.string().ok_or_else(truncated)?,
        store: r.string().ok_or_else(truncated)?,
        next_batch_no: r.u64().ok_or_else(truncated)?,
    };
    let count = r.u32().ok_or_else(truncated)?;
    let mut sessions: Vec<Arc<str>> = Vec::new();
    for _ in 0..count {
        sessions.push(Arc::from(r.string().ok_or_else(truncated)?));
    }
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let key: [u8; 24] = r.take(24).ok_or_else(truncated)?.try_into().expect("24");
        let i = r.u32().ok_or_else(truncated)?;
        let session = match i {
            NONE => None,
            i => Some(
                sessions
                    .get(i as usize)
                    .ok_or_else(|| damaged("a session index out of range"))?
                    .clone(),
            ),
        };
        out.push((key, session));
    }
    Ok(Some((saved, out)))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        let saved = Saved {
            writer: "w-1".into(),
            store: "s3://bucket/prefix".into(),
            next_batch_no: 42,
        };
        let (a, b, c) = ([1u8; 24], [2u8; 24], [3u8; 24]);
        let entries = [(&a, Some("s-ü")), (&b, None), (&c, Some("s-ü"))];
        save(dir.path(), &saved, entries.iter().copied()).unwrap();
        let (got_saved, got) = load(dir.path()).unwrap().unwrap();
        assert_eq!(got_saved, saved);
        let s: Arc<str> = Arc::from("s-ü");
        assert_eq!(got, vec![(a, Some(s.clone())), (b, None), (c, Some(s))]);
        // One session, stored once.
        let path = dir.path().join(FILE);
        let good = fs::read(&path).unwrap();
        assert_eq!(
            good.windows("s-ü".len())
                .filter(|w| *w == "s-ü".as_bytes())
                .count(),
            1
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Any changed byte is refused, not half-read.
        for i in [
            0,
            MAGIC.len(),
            MAGIC.len() + 5,
            good.len() - 40,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert!(load(dir.path()).is_err(), "byte {i}");
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
