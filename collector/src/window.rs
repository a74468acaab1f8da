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
//! The file is only an aid: a missing, unreadable or damaged one is logged
//! and ignored (the archive is unaffected; only the duplicate check is
//! narrower). Layout: [`MAGIC`], then per record, oldest first, its 24-byte
//! identity, the byte length of its session as a little-endian u32
//! (`u32::MAX`: none) and the session's UTF-8 bytes; then the SHA-256 of all
//! that.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The window's file in the spool directory.
pub(crate) const FILE: &str = "duplicate-window";

const MAGIC: &[u8] = b"sealtrail duplicate window 1\n";
const NONE: u32 = u32::MAX;

/// A received record's identity and, for a span whose session is known, its
/// session.
pub(crate) type Entry = ([u8; 24], Option<Arc<str>>);

/// Writes `entries` (oldest first) to `dir`/[`FILE`], atomically: a crash
/// leaves the old file or the new one, whole.
pub(crate) fn save<'a>(
    dir: &Path,
    entries: impl Iterator<Item = (&'a [u8; 24], Option<&'a str>)>,
) -> std::io::Result<()> {
    let mut buf = MAGIC.to_vec();
    for (key, session) in entries {
        buf.extend_from_slice(key);
        match session {
            // A session id longer than 4 GiB cannot be received (--max-body).
            Some(s) if s.len() < NONE as usize => {
                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            _ => buf.extend_from_slice(&NONE.to_le_bytes()),
        }
    }
    let digest = Sha256::digest(&buf);
    buf.extend_from_slice(&digest);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut open = fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut f = open.open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Reads `dir`/[`FILE`]: `Ok(None)` when there is none, an error naming
/// what is wrong when it cannot be used.
pub(crate) fn load(dir: &Path) -> Result<Option<Vec<Entry>>, String> {
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
    let mut rest = &body[MAGIC.len()..];
    let mut sessions: HashMap<&str, Arc<str>> = HashMap::new();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (Some(key), Some(len)) = (rest.get(..24), rest.get(24..28)) else {
            return Err(damaged("truncated entry"));
        };
        let key: [u8; 24] = key.try_into().expect("24 bytes");
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
        rest = &rest[28..];
        let session = if len == NONE {
            None
        } else {
            let Some(s) = rest.get(..len as usize) else {
                return Err(damaged("truncated session"));
            };
            let s = std::str::from_utf8(s).map_err(|_| damaged("a session is not UTF-8"))?;
            rest = &rest[len as usize..];
            Some(sessions.entry(s).or_insert_with(|| Arc::from(s)).clone())
        };
        out.push((key, session));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        let a = [1u8; 24];
        let b = [2u8; 24];
        save(dir.path(), [(&a, Some("s-ü")), (&b, None)].into_iter()).unwrap();
        assert_eq!(
            load(dir.path()).unwrap().unwrap(),
            vec![(a, Some(Arc::from("s-ü"))), (b, None)]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Any changed byte is refused, not half-read.
        let path = dir.path().join(FILE);
        let good = fs::read(&path).unwrap();
        for i in [0, MAGIC.len(), MAGIC.len() + 25, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert!(load(dir.path()).is_err(), "byte {i}");
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
