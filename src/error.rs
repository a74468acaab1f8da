//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by sealtrail's library API.
///
/// Verification findings are not errors: [`crate::verify()`] returns them in a
/// [`crate::verify::Report`]. An `Error` means the operation itself could not
/// be carried out (bad input, unreachable storage, a refused overwrite).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store URL could not be understood.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidStoreUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store failed an operation.
    #[error("storage error on {key:?}: {source}{}", store_hint(source))]
    Store {
        /// The object key (or prefix) concerned.
        key: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A write would have replaced an existing object; sealtrail never overwrites.
    #[error("object {key:?} already exists; sealtrail never overwrites an archived object")]
    AlreadyExists {
        /// The object key.
        key: String,
    },
    /// The S3 bucket does not have Object Lock enabled.
    #[error(
        "bucket {bucket:?} does not have Object Lock enabled, so archived objects could be deleted or overwritten. \
         Create the bucket with Object Lock (aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket), \
         or enable it on a versioned bucket (aws s3api put-object-lock-configuration --bucket {bucket} \
         --object-lock-configuration ObjectLockEnabled=Enabled), or accept an unlocked archive explicitly \
         (allow_unlocked / --allow-unlocked)"
    )]
    ObjectLockDisabled {
        /// The bucket.
        bucket: String,
    },
    /// The bucket has Object Lock but no default retention, and none is configured.
    #[error(
        "bucket {bucket:?} has Object Lock enabled but no default retention, and no retention is configured, \
         so archived objects would be written without a lock. Configure one (--retention and --lock-mode, or \
         with_retention), or give the bucket a default (aws s3api put-object-lock-configuration --bucket {bucket} \
         --object-lock-configuration '{{\"ObjectLockEnabled\":\"Enabled\",\"Rule\":{{\"DefaultRetention\":{{\"Mode\":\"COMPLIANCE\",\"Years\":7}}}}}}'), \
         or accept unlocked objects explicitly (allow_unlocked / --allow-unlocked)"
    )]
    ObjectLockNoRetention {
        /// The bucket.
        bucket: String,
    },
    /// A key file is missing, malformed, or would be overwritten.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting is not acceptable.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A writer id is not acceptable.
    #[error("invalid writer id {id:?}: use 1 to 64 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidWriterId {
        /// The id as given.
        id: String,
    },
    /// A record cannot be archived as it is.
    #[error("invalid record: {reason}")]
    InvalidRecord {
        /// What is wrong.
        reason: String,
    },
    /// The archive already written by this writer is not in a state it can continue from.
    #[error("cannot continue writer {writer:?}: {reason}")]
    Recovery {
        /// The writer id.
        writer: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process writes seals under the same writer id: a seal key
    /// this writer was about to write holds another seal, or the spool holds
    /// records that the archive's seals do not cover although they name a
    /// batch the archive has. Permanent: the writer stops sealing, and the
    /// records it spooled stay in its spool.
    #[error(
        "writer {writer:?} conflicts with another process using the same writer id: {reason}. \
         Give every process its own writer id (the default is made once per spool directory); \
         this writer's spooled records are kept (`sealtrail recover` archives them under a new writer id)"
    )]
    WriterConflict {
        /// The writer id.
        writer: String,
        /// What was found.
        reason: String,
    },
    /// A writer was used after it was closed, or after a failed write left it unusable.
    #[error("writer {writer:?} is closed")]
    WriterClosed {
        /// The writer id.
        writer: String,
    },
    /// The audit layer's worker has stopped (after its final seal, or after
    /// a failure that ended it): nothing more can be sealed through it.
    #[error("the audit layer has stopped: nothing more can be sealed through it")]
    LayerStopped,
    /// An operation did not finish within its time limit (the layer's
    /// shutdown timeout); what it was doing goes on in the background.
    #[error("{what} did not finish within {timeout:?}")]
    TimedOut {
        /// What did not finish.
        what: &'static str,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// JSON encoding or decoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Local I/O failed.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with sealtrail's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do about a storage error whose cause is plain from its text.
fn store_hint(e: &object_store::Error) -> &'static str {
    let text = e.to_string();
    // Without credentials in the environment, the AWS client falls back to
    // the instance metadata service, which is not there off EC2.
    if text.contains("169.254.169.254") || text.contains("169.254.170.2") {
        " (no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         or run where an IAM role provides them)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_for_missing_credentials_says_so() {
        let e = Error::Store {
            key: "v1/".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "error sending request for url (http://169.254.169.254/latest/api/token)"
                    .into(),
            },
        };
        assert!(
            e.to_string().contains("no AWS credentials were found"),
            "{e}"
        );
        let e = Error::Store {
            key: "v1/".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "connection refused".into(),
            },
        };
        assert!(!e.to_string().contains("credentials"), "{e}");
    }

    #[test]
    fn long_messages_read_as_one_line() {
        let bucket = "b".to_owned();
        for e in [
            Error::ObjectLockDisabled {
                bucket: bucket.clone(),
            },
            Error::ObjectLockNoRetention { bucket },
        ] {
            let m = e.to_string();
            assert!(!m.contains("  ") && !m.contains('\n'), "{m}");
        }
    }
}
