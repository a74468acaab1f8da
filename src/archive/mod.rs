//! The archive: an `object_store` behind one small write-once interface, and
//! the key layout of docs/FORMAT.md §6.
//!
//! Store URLs: `memory://` (tests), `file:///abs/path`, a bare path (the
//! default is `./sealtrail-data`), or `s3://bucket/prefix` (docs/S3.md). Every object is written with
//! [`PutMode::Create`]: writing an existing key is an error, and nothing here
//! deletes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::digest::Digest;
use crate::error::{Error, Result};

mod s3;
pub use s3::{LockMode, ObjectLock, ObjectVersion, Retention};

/// The default store: a directory beside the working directory.
pub const DEFAULT_STORE: &str = "./sealtrail-data";

/// An archive location.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// For `s3://` archives: the S3 client, to presign Object Lock PUTs.
    s3: Option<Arc<object_store::aws::AmazonS3>>,
    retention: Option<Retention>,
    /// For a local directory: its canonical path (see [`Archive::identity`]).
    local: Option<std::path::PathBuf>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

/// An object listed in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the archive root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

impl Archive {
    /// Opens the archive at `url`: `memory://`, `file:///abs/path` or a bare path.
    /// A local directory is created if it does not exist, readable by its
    /// owner only (mode 0700, as the spool).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, true)
    }

    /// Opens the archive at `url` to read it: as [`Archive::open`], but a
    /// local directory that does not exist is an error (a mistyped path is
    /// not an empty archive), and nothing is created.
    pub fn open_existing(url: &str) -> Result<Self> {
        Self::open_with(url, false)
    }

    fn open_with(url: &str, create: bool) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidStoreUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.is_empty() {
            return Err(bad("the URL is empty"));
        }
        if url == "memory://" || url == "memory:///" {
            return Ok(Self::from_store(Arc::new(InMemory::new()), "", url));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::open_s3(url, rest);
        }
        let dir = if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path, as in file:///var/lib/sealtrail",
                ));
            }
            let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            u.to_file_path().map_err(|_| bad("not a local file path"))?
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?}: use a path, file:///abs/path, s3://bucket/prefix or memory://"
            )));
        } else {
            std::path::PathBuf::from(url)
        };
        if create {
            // Owner-only, as the spool: the records may hold personal data.
            // An existing directory keeps its mode.
            crate::spool::create_dir(&dir)?;
        } else if !dir.is_dir() {
            let (kind, why) = if dir.exists() {
                (
                    std::io::ErrorKind::NotADirectory,
                    "no archive here: this is a file, and an archive is a directory",
                )
            } else {
                (
                    std::io::ErrorKind::NotFound,
                    "no archive here: the directory does not exist",
                )
            };
            return Err(Error::Io {
                path: dir.clone(),
                source: std::io::Error::new(kind, why),
            });
        }
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|source| Error::Store {
            key: dir.display().to_string(),
            source,
        })?;
        let mut archive = Self::from_store(Arc::new(fs), "", url);
        // (A directory just created or opened canonicalizes; if it did not,
        // its absolute path stands in.)
        archive.local = std::fs::canonicalize(&dir)
            .or_else(|_| std::path::absolute(&dir))
            .ok();
        Ok(archive)
    }

    /// An archive over any `object_store`, under `prefix` (may be empty).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        Archive {
            store,
            prefix: Path::from(prefix),
            url: url.to_owned(),
            s3: None,
            retention: None,
            local: None,
        }
    }

    /// The directory of a local archive (canonical), `None` for other stores.
    pub(crate) fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// What tells this archive apart from others in one process: a local
    /// directory's canonical path (however it was named), an `s3://` URL,
    /// or else (memory, a store given to [`Archive::from_store`]) the store
    /// object itself.
    pub fn identity(&self) -> String {
        match &self.local {
            Some(dir) => format!("file://{}", dir.display()),
            None => match self
                .s3
                .as_ref()
                .and_then(|_| self.url.strip_prefix("s3://"))
            {
                // The bucket, and the prefix as the store uses it.
                Some(rest) => format!(
                    "s3://{}/{}",
                    rest.split_once('/').map_or(rest, |(bucket, _)| bucket),
                    self.prefix
                ),
                None => format!(
                    "{} at {:p}, prefix {}",
                    self.url,
                    Arc::as_ptr(&self.store).cast::<()>(),
                    self.prefix
                ),
            },
        }
    }

    /// A fresh in-memory archive.
    pub fn memory() -> Self {
        Self::from_store(Arc::new(InMemory::new()), "", "memory://")
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn relative(&self, p: &Path) -> String {
        let s = p.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(pre)
                .unwrap_or(s)
                .trim_start_matches('/')
                .to_owned()
        }
    }

    /// Writes a new object; [`Error::AlreadyExists`] if `key` exists. Returns
    /// the object's version id where the store has versions (S3).
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<Option<String>> {
        if let (true, Some(r)) = (self.s3.is_some(), self.retention) {
            return self.put_locked(r, key, bytes).await;
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(r) => Ok(r.version),
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::AlreadyExists {
                key: key.to_owned(),
            }),
            Err(source) => Err(Error::Store {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// The version id of the current version of `key`, where the store has versions.
    pub async fn version_of(&self, key: &str) -> Result<Option<String>> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|source| Error::Store {
                key: key.to_owned(),
                source,
            })?;
        Ok(meta.version)
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let store_err = |source| Error::Store {
            key: key.to_owned(),
            source,
        };
        let r = self.store.get(&self.path(key)).await.map_err(store_err)?;
        r.bytes().await.map_err(store_err)
    }

    /// Lists the objects under `dir` (relative to the archive root; `""` for all).
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let p = if dir.is_empty() {
            self.prefix.clone()
        } else {
            self.path(dir)
        };
        let prefix = if p.as_ref().is_empty() {
            None
        } else {
            Some(&p)
        };
        let metas: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|source| Error::Store {
                key: dir.to_owned(),
                source,
            })?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.relative(&m.location),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// The key layout (docs/FORMAT.md §6).
pub mod layout {
    use super::Digest;

    /// Root of everything written in format version 1.
    pub const ROOT: &str = "v1/writers";

    /// Directory of a writer's batch objects.
    pub fn batches_dir(writer: &str) -> String {
        format!("{ROOT}/{writer}/batches/")
    }

    /// Directory of a writer's seals.
    pub fn seals_dir(writer: &str) -> String {
        format!("{ROOT}/{writer}/seals/")
    }

    /// Key of seal `batch_no` of `writer`.
    pub fn seal_key(writer: &str, batch_no: u64) -> String {
        format!("{ROOT}/{writer}/seals/{batch_no:020}.json")
    }

    /// Key of batch `batch_no` of `writer`, whose bytes hash to `sha256`.
    pub fn batch_key(writer: &str, batch_no: u64, sha256: &Digest) -> String {
        format!(
            "{ROOT}/{writer}/batches/{batch_no:020}-{}.jsonl.zst",
            &sha256.to_hex()[..16]
        )
    }

    /// What a key names.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Name {
        /// A seal.
        Seal {
            /// Writer id.
            writer: String,
            /// Batch number.
            batch_no: u64,
        },
        /// A batch object.
        Batch {
            /// Writer id.
            writer: String,
            /// Batch number.
            batch_no: u64,
        },
    }

    fn number(s: &str) -> Option<u64> {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    }

    /// Parses a key written by sealtrail; `None` for anything else.
    pub fn parse(key: &str) -> Option<Name> {
        let rest = key.strip_prefix(ROOT)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (writer, dir, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !super::super::writer::valid_writer_id(writer) {
            return None;
        }
        match dir {
            "seals" => Some(Name::Seal {
                writer: writer.to_owned(),
                batch_no: number(file.strip_suffix(".json")?)?,
            }),
            "batches" => {
                let stem = file.strip_suffix(".jsonl.zst")?;
                let (n, h) = stem.split_once('-')?;
                (h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .then_some(())?;
                Some(Name::Batch {
                    writer: writer.to_owned(),
                    batch_no: number(n)?,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Write-once and the rest of the store contract: tests/conformance.rs.

    #[cfg(unix)]
    #[test]
    fn a_new_local_archive_is_readable_by_its_owner_only_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new").join("archive");
        Archive::open(dir.to_str().unwrap()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let shared = parent.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        Archive::open(&format!("file://{}", shared.display())).unwrap();
        assert_eq!(mode(&shared), 0o750);
    }

    #[test]
    fn urls() {
        assert!(Archive::open("memory://").is_ok());
        for bad in ["", "file://relative", "ftp://x/y", "s3://", "s3:///prefix"] {
            assert!(
                matches!(Archive::open(bad), Err(Error::InvalidStoreUrl { .. })),
                "{bad}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/sub", dir.path().display());
        Archive::open(&url).unwrap();
        assert!(dir.path().join("sub").is_dir());
    }

    #[test]
    fn layout_round_trip() {
        let d = Digest::sha256(b"x");
        let k = layout::batch_key("w-1", 7, &d);
        assert_eq!(
            layout::parse(&k),
            Some(layout::Name::Batch {
                writer: "w-1".into(),
                batch_no: 7
            })
        );
        let s = layout::seal_key("w-1", 7);
        assert_eq!(s, "v1/writers/w-1/seals/00000000000000000007.json");
        assert_eq!(
            layout::parse(&s),
            Some(layout::Name::Seal {
                writer: "w-1".into(),
                batch_no: 7
            })
        );
        for bad in [
            "v1/writers/w/seals/7.json",
            "v1/writers/w/other/x",
            "x",
            "v1/writers/../seals/00000000000000000007.json",
        ] {
            assert_eq!(layout::parse(bad), None, "{bad}");
        }
    }
}
