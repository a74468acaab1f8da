//! The archive: an `object_store` behind one small write-once interface, and
//! the key layout of docs/FORMAT.md §6.
//!
//! Store URLs: `memory://` (tests), `file:///abs/path`, or a bare path (the
//! default is `./sealtrail-data`). Every object is written with
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
}

/// S3 Object Lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, the root account included, can delete or shorten retention.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    /// `COMPLIANCE` or `GOVERNANCE`, as S3 names them.
    pub fn header(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// How long every archived object is locked, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The lock mode.
    pub mode: LockMode,
    /// Each object is retained until its write time plus this.
    pub period: std::time::Duration,
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
    /// A local directory is created if it does not exist.
    pub fn open(url: &str) -> Result<Self> {
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
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|source| Error::Store {
            key: dir.display().to_string(),
            source,
        })?;
        Ok(Self::from_store(Arc::new(fs), "", url))
    }

    /// `s3://bucket/prefix`, configured from the standard AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers,
    /// `AWS_ALLOW_HTTP` for loopback). Writes are conditional
    /// (`If-None-Match: *`) and carry an `x-amz-checksum-sha256`.
    fn open_s3(url: &str, rest: &str) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, Checksum};
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidStoreUrl {
                url: url.to_owned(),
                reason: "no bucket: use s3://bucket or s3://bucket/prefix".into(),
            });
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_checksum_algorithm(Checksum::SHA256)
            .build()
            .map_err(|e| Error::InvalidStoreUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let store = Arc::new(store);
        let mut archive = Self::from_store(store.clone(), prefix.trim_matches('/'), url);
        archive.s3 = Some(store);
        Ok(archive)
    }

    /// Locks every object this archive writes from now on under S3 Object
    /// Lock: each PUT carries `x-amz-object-lock-mode`,
    /// `x-amz-object-lock-retain-until-date` (write time plus `period`) and
    /// `x-amz-checksum-sha256` (with `x-amz-sdk-checksum-algorithm`), signed
    /// together with `If-None-Match: *` into a presigned URL
    /// (`Signer::signed_url_opts`), because `object_store` has no
    /// per-request headers.
    /// Only for `s3://` archives.
    pub fn with_retention(mut self, retention: Retention) -> Result<Self> {
        if self.s3.is_none() {
            return Err(Error::InvalidStoreUrl {
                url: self.url.clone(),
                reason: "Object Lock retention needs an s3:// store".into(),
            });
        }
        self.retention = Some(retention);
        Ok(self)
    }

    /// Checks that the bucket of an `s3://` archive has Object Lock enabled,
    /// and returns its default retention, if it has one. A bucket without
    /// Object Lock is [`Error::ObjectLockDisabled`] (explaining how to enable
    /// it) unless `allow_unlocked`. Does nothing for other stores.
    pub async fn check_object_lock(&self, allow_unlocked: bool) -> Result<Option<Retention>> {
        use http::Method;
        use object_store::signer::{SignedUrlOptions, Signer};
        let Some(s3) = &self.s3 else { return Ok(None) };
        let bucket = self
            .url
            .trim_start_matches("s3://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let store_err = |e: String| Error::Store {
            key: format!("{bucket}?object-lock"),
            source: object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            },
        };
        let opts = SignedUrlOptions::default().with_query([("object-lock", "")]);
        let url = s3
            .signed_url_opts(
                Method::GET,
                &Path::from(""),
                std::time::Duration::from_secs(300),
                &opts,
            )
            .await
            .map_err(|e| store_err(e.to_string()))?;
        let resp = shared_http_client()
            .get(url.as_str())
            .send()
            .await
            .map_err(|e| store_err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let enabled = status == 200 && xml_text(&body, "ObjectLockEnabled") == Some("Enabled");
        if !enabled {
            if status != 200 && status != 404 {
                return Err(store_err(format!(
                    "GetObjectLockConfiguration answered {status}: {body}"
                )));
            }
            return if allow_unlocked {
                Ok(None)
            } else {
                Err(Error::ObjectLockDisabled { bucket })
            };
        }
        let mode = match xml_text(&body, "Mode") {
            Some("COMPLIANCE") => LockMode::Compliance,
            Some("GOVERNANCE") => LockMode::Governance,
            _ => return Ok(None),
        };
        let days: Option<u64> = xml_text(&body, "Days").and_then(|d| d.parse().ok());
        let years: Option<u64> = xml_text(&body, "Years").and_then(|d| d.parse().ok());
        let period = days.map(|d| d * 86_400).or(years.map(|y| y * 365 * 86_400));
        Ok(period.map(|secs| Retention {
            mode,
            period: std::time::Duration::from_secs(secs),
        }))
    }

    /// Every version and delete marker under the archive root, for an `s3://`
    /// archive (`None` for other stores), newest first per key as S3 lists them.
    pub async fn list_versions(&self) -> Result<Option<Vec<ObjectVersion>>> {
        use http::Method;
        use object_store::signer::{SignedUrlOptions, Signer};
        let Some(s3) = &self.s3 else { return Ok(None) };
        let store_err = |e: String| Error::Store {
            key: format!("{}?versions", self.url),
            source: object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            },
        };
        let prefix = if self.prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("versions".to_owned(), String::new()),
                ("prefix".to_owned(), prefix.clone()),
            ];
            if let Some((k, v)) = &markers {
                query.push(("key-marker".into(), k.clone()));
                query.push(("version-id-marker".into(), v.clone()));
            }
            let opts = SignedUrlOptions::default().with_query(query);
            let url = s3
                .signed_url_opts(
                    Method::GET,
                    &Path::from(""),
                    std::time::Duration::from_secs(300),
                    &opts,
                )
                .await
                .map_err(|e| store_err(e.to_string()))?;
            let resp = shared_http_client()
                .get(url.as_str())
                .send()
                .await
                .map_err(|e| store_err(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| store_err(e.to_string()))?;
            if status != 200 {
                return Err(store_err(format!(
                    "ListObjectVersions answered {status}: {body}"
                )));
            }
            let page: ListVersionsResult =
                quick_xml::de::from_str(&body).map_err(|e| store_err(e.to_string()))?;
            for e in page.entries {
                let (f, delete_marker) = match e {
                    VersionEntry::Version(f) => (f, false),
                    VersionEntry::DeleteMarker(f) => (f, true),
                    VersionEntry::Other => continue,
                };
                let key = f.key.strip_prefix(&prefix).unwrap_or(&f.key).to_owned();
                out.push(ObjectVersion {
                    key,
                    version_id: f.version_id,
                    is_latest: f.is_latest,
                    delete_marker,
                    size: f.size,
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_version_id_marker,
            ) {
                (true, Some(k), Some(v)) => markers = Some((k, v)),
                _ => break,
            }
        }
        Ok(Some(out))
    }

    /// Reads one version of an object of an `s3://` archive.
    pub async fn get_version(&self, key: &str, version_id: &str) -> Result<Bytes> {
        use http::Method;
        use object_store::signer::{SignedUrlOptions, Signer};
        let store_err = |e: String| Error::Store {
            key: format!("{key}?versionId={version_id}"),
            source: object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            },
        };
        let Some(s3) = &self.s3 else {
            return Err(store_err(
                "object versions exist only in s3:// archives".into(),
            ));
        };
        let opts = SignedUrlOptions::default().with_query([("versionId", version_id)]);
        let url = s3
            .signed_url_opts(
                Method::GET,
                &self.path(key),
                std::time::Duration::from_secs(300),
                &opts,
            )
            .await
            .map_err(|e| store_err(e.to_string()))?;
        let resp = shared_http_client()
            .get(url.as_str())
            .send()
            .await
            .map_err(|e| store_err(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(store_err(format!("GET answered {status}")));
        }
        resp.bytes().await.map_err(|e| store_err(e.to_string()))
    }

    /// The Object Lock of one object version of an `s3://` archive, as the
    /// server reports it (HEAD): mode and retain-until if locked, and when the
    /// version was written.
    pub async fn object_lock(&self, key: &str, version_id: Option<&str>) -> Result<ObjectLock> {
        use http::Method;
        use object_store::signer::{SignedUrlOptions, Signer};
        let store_err = |e: String| Error::Store {
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            },
        };
        let Some(s3) = &self.s3 else {
            return Err(store_err(
                "Object Lock exists only in s3:// archives".into(),
            ));
        };
        let mut opts = SignedUrlOptions::default();
        if let Some(v) = version_id {
            opts = opts.with_query([("versionId", v)]);
        }
        let url = s3
            .signed_url_opts(
                Method::HEAD,
                &self.path(key),
                std::time::Duration::from_secs(300),
                &opts,
            )
            .await
            .map_err(|e| store_err(e.to_string()))?;
        let resp = shared_http_client()
            .head(url.as_str())
            .send()
            .await
            .map_err(|e| store_err(e.to_string()))?;
        if resp.status().as_u16() != 200 {
            return Err(store_err(format!(
                "HEAD answered {}",
                resp.status().as_u16()
            )));
        }
        let h = resp.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mode = match text("x-amz-object-lock-mode").as_deref() {
            Some("COMPLIANCE") => Some(LockMode::Compliance),
            Some("GOVERNANCE") => Some(LockMode::Governance),
            _ => None,
        };
        let retain_until = text("x-amz-object-lock-retain-until-date")
            .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok());
        let written = text("last-modified").and_then(|s| httpdate::parse_http_date(&s).ok());
        Ok(ObjectLock {
            mode,
            retain_until,
            written,
        })
    }

    /// Whether this is an `s3://` archive.
    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    /// The retention every write carries, if any.
    pub fn retention(&self) -> Option<Retention> {
        self.retention
    }

    async fn put_locked(
        &self,
        s3: &object_store::aws::AmazonS3,
        r: Retention,
        key: &str,
        bytes: Bytes,
    ) -> Result<Option<String>> {
        use base64::Engine as _;
        use http::{HeaderName, HeaderValue, Method};
        use object_store::signer::{SignedUrlOptions, Signer};
        let store_err = |e: String| Error::Store {
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            },
        };
        // Dates are whole seconds; two more make sure that the lock outlasts
        // the server's own write time plus the period.
        let until = rfc3339_seconds(
            std::time::SystemTime::now() + r.period + std::time::Duration::from_secs(2),
        );
        let checksum = base64::engine::general_purpose::STANDARD.encode(Digest::sha256(&bytes).0);
        // S3 refuses a lock PUT without a checksum it can check: the SHA-256
        // and the header naming its algorithm, as the AWS SDKs send them.
        let headers: [(&'static str, String); 5] = [
            ("if-none-match", "*".into()),
            ("x-amz-checksum-sha256", checksum),
            ("x-amz-sdk-checksum-algorithm", "SHA256".into()),
            ("x-amz-object-lock-mode", r.mode.header().into()),
            ("x-amz-object-lock-retain-until-date", until),
        ];
        let mut opts = SignedUrlOptions::default();
        for (name, value) in &headers {
            let v = HeaderValue::from_str(value).map_err(|e| store_err(e.to_string()))?;
            opts = opts.with_signed_header(HeaderName::from_static(name), v);
        }
        let url = s3
            .signed_url_opts(
                Method::PUT,
                &self.path(key),
                std::time::Duration::from_secs(300),
                &opts,
            )
            .await
            .map_err(|source| Error::Store {
                key: key.to_owned(),
                source,
            })?;
        let mut req = shared_http_client().put(url.as_str()).body(bytes);
        for (name, value) in &headers {
            req = req.header(*name, value.as_str());
        }
        let resp = req.send().await.map_err(|e| store_err(e.to_string()))?;
        match resp.status().as_u16() {
            200..=299 => Ok(resp
                .headers()
                .get("x-amz-version-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)),
            412 => Err(Error::AlreadyExists {
                key: key.to_owned(),
            }),
            code => {
                let body = resp.text().await.unwrap_or_default();
                Err(store_err(format!(
                    "Object Lock PUT answered {code}: {body}"
                )))
            }
        }
    }

    /// An archive over any `object_store`, under `prefix` (may be empty).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        Archive {
            store,
            prefix: Path::from(prefix),
            url: url.to_owned(),
            s3: None,
            retention: None,
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
        if let (Some(s3), Some(r)) = (&self.s3, self.retention) {
            return self.put_locked(s3, r, key, bytes).await;
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

/// The text of the first `<tag>…</tag>` in a small S3 XML answer.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// The Object Lock of one object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    /// Lock mode, if the version is locked.
    pub mode: Option<LockMode>,
    /// Retained until, if locked.
    pub retain_until: Option<std::time::SystemTime>,
    /// When the version was written (`Last-Modified`).
    pub written: Option<std::time::SystemTime>,
}

/// One version of an object, or a delete marker, as S3 lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Key relative to the archive root.
    pub key: String,
    /// The version id.
    pub version_id: String,
    /// Whether this is the version a plain GET returns.
    pub is_latest: bool,
    /// A delete marker rather than data.
    pub delete_marker: bool,
    /// Size in bytes (0 for a delete marker).
    pub size: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    #[serde(default, rename = "$value")]
    entries: Vec<VersionEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
enum VersionEntry {
    Version(VersionFields),
    DeleteMarker(VersionFields),
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionFields {
    key: String,
    version_id: String,
    is_latest: bool,
    #[serde(default)]
    size: u64,
}

/// One HTTP client for the Object Lock PUTs (connection reuse).
fn shared_http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// RFC 3339 in UTC with whole seconds, as S3 expects retain-until dates.
fn rfc3339_seconds(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The key layout (docs/FORMAT.md §6).
pub mod layout {
    use super::Digest;

    /// Root of everything written in format version 1.
    pub const ROOT: &str = "v1/writers";

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
    fn retain_until_dates_are_rfc3339_utc() {
        let t = |s: u64| rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(t(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn retention_needs_s3() {
        let err = Archive::memory()
            .with_retention(Retention {
                mode: LockMode::Compliance,
                period: std::time::Duration::from_secs(60),
            })
            .unwrap_err();
        assert!(err.to_string().contains("needs an s3:// store"), "{err}");
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
