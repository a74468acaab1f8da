//! S3: opening `s3://` archives, Object Lock on every write, and the few S3
//! calls `object_store` has no method for (bucket lock configuration, object
//! versions, a version's lock). Those are presigned by `object_store`'s own
//! signer, with any extra headers folded into the signature, and sent with
//! the same HTTP library it uses: nothing is signed by hand (docs/S3.md).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};

use super::Archive;
use crate::digest::Digest;
use crate::error::{Error, Result};

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
    pub period: Duration,
}

/// The Object Lock of one object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    /// Lock mode, if the version is locked.
    pub mode: Option<LockMode>,
    /// Retained until, if locked.
    pub retain_until: Option<SystemTime>,
    /// When the version was written (`Last-Modified`).
    pub written: Option<SystemTime>,
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

/// An error of an S3 call about `what`.
fn s3_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store {
        key: what.to_owned(),
        source: object_store::Error::Generic {
            store: "S3",
            source: e.to_string().into(),
        },
    }
}

/// One HTTP client for these calls (connection reuse). With timeouts: a
/// server that accepts a connection and never answers must fail the call
/// (the seal is retried), not hang it for good. The read timeout catches a
/// stalled server; the total one is long enough for a large batch.
fn http_client() -> std::result::Result<&'static reqwest::Client, &'static str> {
    static CLIENT: std::sync::OnceLock<std::result::Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(Duration::from_secs(60))
                .timeout(REQUEST_TIMEOUT)
                .build()
                // Never a client without timeouts instead.
                .map_err(|e| format!("cannot set up the HTTP client for S3: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// How long a connection to the S3 server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one S3 request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Added to a lock's retain-until date, computed before the request is
/// presigned and sent: more than a request can take (credentials, connect,
/// upload), so that the lock always outlasts the server's write time plus
/// the retention period, as `verify --check-retention` checks it.
const UNTIL_MARGIN: Duration = Duration::from_secs(20 * 60);

/// Seconds in a year of a bucket's default retention, as humantime counts
/// the `y` of `--retention 7y` (365.25 days), so that the two compare equal.
const YEAR_SECS: u64 = 31_557_600;

/// Whether a 400 answer to a versioned GET says that the version does not
/// exist (a version id that cannot exist is `InvalidArgument` on S3), rather
/// than that the request failed (an expired token, a bad signature, …).
fn no_such_version(body: &str) -> bool {
    match xml_text(body, "Code") {
        // S3 says InvalidArgument for other request errors too (encryption
        // headers, signing): only one about the version id counts.
        Some("InvalidArgument") => xml_text(body, "ArgumentName") == Some("versionId"),
        Some("NoSuchVersion" | "NoSuchKey") => true,
        _ => false,
    }
}

/// The text of the first `<tag>…</tag>` in a small S3 XML answer.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// RFC 3339 in UTC with whole seconds, as S3 expects retain-until dates.
fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Archive {
    /// `s3://bucket/prefix`, configured from the standard AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers,
    /// `AWS_ALLOW_HTTP` for loopback). Writes are conditional
    /// (`If-None-Match: *`) and carry an `x-amz-checksum-sha256`.
    pub(super) fn open_s3(url: &str, rest: &str) -> Result<Self> {
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

    /// Whether this is an `s3://` archive.
    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    /// Locks every object this archive writes from now on under S3 Object
    /// Lock: each PUT carries `x-amz-object-lock-mode`,
    /// `x-amz-object-lock-retain-until-date` (write time plus `period`, plus
    /// a 20-minute margin) and `x-amz-checksum-sha256` with
    /// `x-amz-sdk-checksum-algorithm`, signed together with
    /// `If-None-Match: *` into a presigned URL, because `object_store` has no
    /// per-request headers. Only for `s3://` archives.
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

    /// The retention every write carries, if any.
    pub fn retention(&self) -> Option<Retention> {
        self.retention
    }

    /// A request `object_store` has no call for: presigned by its signer with
    /// `headers` folded into the signature, then sent with them.
    async fn s3_send(
        &self,
        method: Method,
        path: &Path,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
        body: Option<Bytes>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| s3_err(what, "only s3:// archives have this"))?;
        let mut opts = SignedUrlOptions::default();
        if !query.is_empty() {
            opts = opts.with_query(query.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        for (name, value) in headers {
            let v = HeaderValue::from_str(value).map_err(|e| s3_err(what, e))?;
            opts = opts.with_signed_header(HeaderName::from_static(name), v);
        }
        let url = s3
            .signed_url_opts(method.clone(), path, Duration::from_secs(300), &opts)
            .await
            .map_err(|e| s3_err(what, e))?;
        let mut req = http_client()
            .map_err(|e| s3_err(what, e))?
            .request(method, url.as_str());
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| s3_err(what, e))
    }

    /// The write path with a retention: see [`Archive::with_retention`].
    pub(super) async fn put_locked(
        &self,
        r: Retention,
        key: &str,
        bytes: Bytes,
    ) -> Result<Option<String>> {
        use base64::Engine as _;
        // Dates are whole seconds; the margin makes sure that the lock
        // outlasts the server's own write time plus the period.
        let until = rfc3339_seconds(SystemTime::now() + r.period + UNTIL_MARGIN);
        let checksum = base64::engine::general_purpose::STANDARD.encode(Digest::sha256(&bytes).0);
        // S3 refuses a lock PUT without a checksum it can check: the SHA-256
        // and the header naming its algorithm, as the AWS SDKs send them.
        let headers = [
            ("if-none-match", "*".to_owned()),
            ("x-amz-checksum-sha256", checksum),
            ("x-amz-sdk-checksum-algorithm", "SHA256".to_owned()),
            ("x-amz-object-lock-mode", r.mode.header().to_owned()),
            ("x-amz-object-lock-retain-until-date", until),
        ];
        let resp = self
            .s3_send(
                Method::PUT,
                &self.path(key),
                &[],
                &headers,
                Some(bytes),
                key,
            )
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(resp
                .headers()
                .get("x-amz-version-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)),
            // 412, or 304 from servers that answer `If-None-Match` so.
            304 | 412 => Err(Error::AlreadyExists {
                key: key.to_owned(),
            }),
            code => {
                let body = resp.text().await.unwrap_or_default();
                Err(s3_err(
                    key,
                    format!("Object Lock PUT answered {code}: {body}"),
                ))
            }
        }
    }

    /// Checks that the bucket of an `s3://` archive has Object Lock enabled,
    /// and returns its default retention, if it has one. A bucket without
    /// Object Lock is [`Error::ObjectLockDisabled`] (explaining how to enable
    /// it) unless `allow_unlocked`. Does nothing for other stores.
    pub async fn check_object_lock(&self, allow_unlocked: bool) -> Result<Option<Retention>> {
        if self.s3.is_none() {
            return Ok(None);
        }
        let bucket = self
            .url
            .trim_start_matches("s3://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let what = format!("{bucket}?object-lock");
        let resp = self
            .s3_send(
                Method::GET,
                &Path::from(""),
                &[("object-lock", "")],
                &[],
                None,
                &what,
            )
            .await?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| s3_err(&what, e))?;
        if status != 200 || xml_text(&body, "ObjectLockEnabled") != Some("Enabled") {
            if status == 404 && body.contains("NoSuchBucket") {
                return Err(s3_err(
                    &what,
                    format!("the bucket {bucket:?} does not exist"),
                ));
            }
            if status != 200 && status != 404 {
                return Err(s3_err(
                    &what,
                    format!("GetObjectLockConfiguration answered {status}: {body}"),
                ));
            }
            if self.retention.is_some() {
                // S3 refuses every write with a lock to such a bucket: no
                // seal would ever be written.
                return Err(Error::InvalidSetting {
                    setting: "retention",
                    reason: format!(
                        "bucket {bucket:?} does not have Object Lock enabled, so no object can be \
                         written with a retention; enable Object Lock on the bucket, or run without \
                         a retention (and with --allow-unlocked)"
                    ),
                });
            }
            return if allow_unlocked {
                Ok(None)
            } else {
                Err(Error::ObjectLockDisabled { bucket })
            };
        }
        let mode = match xml_text(&body, "Mode") {
            Some("COMPLIANCE") => Some(LockMode::Compliance),
            Some("GOVERNANCE") => Some(LockMode::Governance),
            _ => None,
        };
        let days: Option<u64> = xml_text(&body, "Days").and_then(|d| d.parse().ok());
        let years: Option<u64> = xml_text(&body, "Years").and_then(|d| d.parse().ok());
        let period = days
            .map(|d| d.saturating_mul(86_400))
            .or(years.map(|y| y.saturating_mul(YEAR_SECS)));
        let default = mode.zip(period).map(|(mode, secs)| Retention {
            mode,
            period: Duration::from_secs(secs),
        });
        // Object Lock alone locks nothing: an object needs a retention of
        // its own or the bucket's default.
        if default.is_none() && self.retention.is_none() && !allow_unlocked {
            return Err(Error::ObjectLockNoRetention { bucket });
        }
        Ok(default)
    }

    /// [`Archive::check_object_lock`], and then, for a bucket whose default
    /// retention is all there is (none configured), this archive with that
    /// default as its own retention: S3 refuses a write to such a bucket
    /// unless it carries `Content-MD5` or `x-amz-sdk-checksum-algorithm`,
    /// which only the locked write path sends, and each object then states
    /// the very lock the bucket would give it. Returns the bucket's default.
    pub async fn checked_for_lock(self, allow_unlocked: bool) -> Result<(Self, Option<Retention>)> {
        let default = self.check_object_lock(allow_unlocked).await?;
        match default {
            Some(d) if self.retention.is_none() => {
                tracing::info!(
                    mode = ?d.mode,
                    secs = d.period.as_secs(),
                    "no retention configured: each object is written with the bucket's default retention"
                );
                Ok((self.with_retention(d)?, default))
            }
            _ => Ok((self, default)),
        }
    }

    /// Every version and delete marker under the archive root, for an `s3://`
    /// archive (`None` for other stores), newest first per key as S3 lists them.
    pub async fn list_versions(&self) -> Result<Option<Vec<ObjectVersion>>> {
        self.list_versions_in("").await
    }

    /// [`Archive::list_versions`] of the keys under `dir` (relative to the
    /// archive root, e.g. `v1/writers/w/seals/`).
    pub async fn list_versions_in(&self, dir: &str) -> Result<Option<Vec<ObjectVersion>>> {
        if self.s3.is_none() {
            return Ok(None);
        }
        let what = format!("{}?versions", self.url);
        let root = if self.prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let prefix = format!("{root}{dir}");
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", prefix.as_str())];
            if let Some((k, v)) = &markers {
                query.push(("key-marker", k));
                query.push(("version-id-marker", v));
            }
            let resp = self
                .s3_send(Method::GET, &Path::from(""), &query, &[], None, &what)
                .await?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| s3_err(&what, e))?;
            if status != 200 {
                return Err(s3_err(
                    &what,
                    format!("ListObjectVersions answered {status}: {body}"),
                ));
            }
            let page: ListVersionsResult =
                quick_xml::de::from_str(&body).map_err(|e| s3_err(&what, e))?;
            for e in page.entries {
                let (f, delete_marker) = match e {
                    VersionEntry::Version(f) => (f, false),
                    VersionEntry::DeleteMarker(f) => (f, true),
                    VersionEntry::Other => continue,
                };
                out.push(ObjectVersion {
                    key: f.key.strip_prefix(&root).unwrap_or(&f.key).to_owned(),
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
                (false, _, _) => break,
                (true, Some(k), Some(v)) if markers.as_ref() != Some(&(k.clone(), v.clone())) => {
                    markers = Some((k, v))
                }
                // A listing that says it goes on but not from where (or from
                // where it was) would end early and silently: an error.
                _ => {
                    return Err(s3_err(
                        &what,
                        "ListObjectVersions is truncated without a new next marker",
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    /// Reads one version of an object of an `s3://` archive.
    pub async fn get_version(&self, key: &str, version_id: &str) -> Result<Bytes> {
        self.find_version(key, version_id).await?.ok_or_else(|| {
            s3_err(
                &format!("{key}?versionId={version_id}"),
                "no such version (404)",
            )
        })
    }

    /// Reads one version of an object of an `s3://` archive: `None` when
    /// the server has no such version (404); any other failure is an error.
    pub async fn find_version(&self, key: &str, version_id: &str) -> Result<Option<Bytes>> {
        let what = format!("{key}?versionId={version_id}");
        let resp = self
            .s3_send(
                Method::GET,
                &self.path(key),
                &[("versionId", version_id)],
                &[],
                None,
                &what,
            )
            .await?;
        match resp.status().as_u16() {
            200 => resp.bytes().await.map(Some).map_err(|e| s3_err(&what, e)),
            404 => Ok(None),
            400 => {
                // A version id that cannot exist (S3: InvalidArgument about
                // the version id). Any other 400 (an expired token, a bad
                // signature) is an error, never "no such version".
                let body = resp.text().await.map_err(|e| s3_err(&what, e))?;
                if no_such_version(&body) {
                    Ok(None)
                } else {
                    Err(s3_err(&what, format!("GET answered 400: {body}")))
                }
            }
            code => {
                let body = resp.text().await.unwrap_or_default();
                Err(s3_err(&what, format!("GET answered {code}: {body}")))
            }
        }
    }

    /// The Object Lock of one object version of an `s3://` archive, as the
    /// server reports it (HEAD): mode and retain-until if locked, and when the
    /// version was written.
    pub async fn object_lock(&self, key: &str, version_id: Option<&str>) -> Result<ObjectLock> {
        let query: Vec<(&str, &str)> = version_id.map(|v| ("versionId", v)).into_iter().collect();
        let resp = self
            .s3_send(Method::HEAD, &self.path(key), &query, &[], None, key)
            .await?;
        if resp.status().as_u16() != 200 {
            return Err(s3_err(
                key,
                format!("HEAD answered {}", resp.status().as_u16()),
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn only_a_missing_version_reads_as_none() {
        let answer = |code: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
        };
        let invalid = |argument: &str| {
            format!(
                "<Error><Code>InvalidArgument</Code><Message>m</Message>\
                 <ArgumentName>{argument}</ArgumentName></Error>"
            )
        };
        assert!(no_such_version(&invalid("versionId")));
        assert!(!no_such_version(&invalid("x-amz-server-side-encryption")));
        assert!(!no_such_version(&answer("InvalidArgument")));
        assert!(no_such_version(&answer("NoSuchVersion")));
        for code in ["ExpiredToken", "AuthorizationHeaderMalformed", "BadDigest"] {
            assert!(!no_such_version(&answer(code)), "{code}");
        }
        assert!(!no_such_version("not xml"));
    }

    #[test]
    fn retain_until_dates_are_rfc3339_utc_seconds() {
        let t = |s: u64| rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s));
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
                period: Duration::from_secs(60),
            })
            .unwrap_err();
        assert!(err.to_string().contains("needs an s3:// store"), "{err}");
    }

    #[test]
    fn xml_text_reads_the_first_element() {
        let xml = "<A><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></A>";
        assert_eq!(xml_text(xml, "ObjectLockEnabled"), Some("Enabled"));
        assert_eq!(xml_text(xml, "Days"), Some("1"));
        assert_eq!(xml_text(xml, "Years"), None);
    }
}
