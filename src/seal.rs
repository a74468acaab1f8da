//! Seals: the signed statement that closes a batch.
//!
//! A seal commits to its writer, batch number, the previous seal's hash, its
//! creation time, the heartbeat interval the writer promises, every session's
//! first/last seq, count and head hash in the batch, the batch object's key,
//! length, SHA-256 and the Merkle root of its record hashes, and the signing
//! key id. `seal` and [`verify_seal`] are the pair (docs/FORMAT.md §5).

use ed25519_dalek::{Signature, Signer as _};
use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::digest::{Digest, SEAL_TAG, SIGNATURE_TAG};
use crate::error::Result;
use crate::keys::{key_id, SigningKey, VerifyingKey};
use crate::record::u64_string;

/// The seal format version.
pub const SEAL_FORMAT: u32 = 1;

/// The batch object a seal covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRef {
    /// Object key, relative to the archive root.
    pub key: String,
    /// Object length in bytes.
    pub len: u64,
    /// Merkle root of the record hashes, in batch order.
    pub merkle_root: Digest,
    /// Number of records.
    pub records: u64,
    /// SHA-256 of the object's bytes.
    pub sha256: Digest,
    /// The object's version id, where the store has versions (S3); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// One session's part of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSummary {
    /// Number of records of the session in the batch.
    pub count: u64,
    /// Seq of its first record in the batch.
    pub first_seq: u64,
    /// Hash of its last record in the batch.
    pub head: Digest,
    /// The session id.
    pub id: String,
    /// Seq of its last record in the batch.
    pub last_seq: u64,
}

/// What a seal states. Its canonical bytes are what is hashed and signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealBody {
    /// The batch object, or `None` for an empty (heartbeat) batch.
    pub batch: Option<BatchRef>,
    /// Batch number: 0, 1, 2, … per writer.
    pub batch_no: u64,
    /// Whether the writer shut down cleanly after this seal (no heartbeat follows).
    pub closed: bool,
    /// When the seal was made, unix nanoseconds.
    #[serde(with = "u64_string")]
    pub created_ns: u64,
    /// [`SEAL_FORMAT`].
    pub format: u32,
    /// The longest the writer promises to go without a seal while open, nanoseconds.
    #[serde(with = "u64_string")]
    pub heartbeat_ns: u64,
    /// Id of the signing key ([`key_id`]).
    pub key_id: String,
    /// Hash of the previous seal of this writer, or [`crate::digest::seal_genesis`] for batch 0.
    pub prev_seal: Digest,
    /// The previous seal object's version id, where the store has versions (S3); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_seal_version: Option<String>,
    /// Sessions in the batch, sorted by id.
    pub sessions: Vec<SessionSummary>,
    /// The writer id.
    pub writer: String,
}

/// A seal as stored: the body, its hash and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// What is sealed.
    pub body: SealBody,
    /// `SHA-256(SEAL_TAG ‖ canonical bytes of body)`.
    pub hash: Digest,
    /// Ed25519 signature of `SIGNATURE_TAG ‖ hash`, 128 hex digits.
    pub signature: String,
}

/// Why a seal does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The stored hash is not the hash of the body.
    #[error("seal hash is {found} but its body hashes to {expected}")]
    HashMismatch {
        /// Hash of the body as stored.
        expected: Digest,
        /// The `hash` field as stored.
        found: Digest,
    },
    /// No given public key has the seal's key id.
    #[error("signed by unknown key id {found} (trusted: {trusted})")]
    UnknownKey {
        /// The seal's key id.
        found: String,
        /// The key ids trusted.
        trusted: String,
    },
    /// The signature is malformed or does not verify.
    #[error("signature does not verify with key {key_id}")]
    BadSignature {
        /// The key id tried.
        key_id: String,
    },
}

/// Hash of a seal body.
pub fn seal_hash(body: &SealBody) -> Result<Digest> {
    let bytes = canonical::to_vec(body)?;
    Ok(Digest::tagged(SEAL_TAG, &[&bytes]))
}

fn signed_message(hash: &Digest) -> Vec<u8> {
    [SIGNATURE_TAG, &hash.0].concat()
}

/// Hashes and signs `body`. `body.key_id` is set from `key`.
pub fn seal(mut body: SealBody, key: &SigningKey) -> Result<Seal> {
    body.key_id = key_id(&key.verifying_key());
    let hash = seal_hash(&body)?;
    let signature = key.sign(&signed_message(&hash));
    Ok(Seal {
        body,
        hash,
        signature: hex::encode(signature.to_bytes()),
    })
}

/// Checks the seal's hash and its signature by one of `trusted`.
pub fn verify_seal(seal: &Seal, trusted: &[VerifyingKey]) -> Result<(), SealError> {
    let expected = seal_hash(&seal.body).map_err(|_| SealError::BadSignature {
        key_id: seal.body.key_id.clone(),
    })?;
    if expected != seal.hash {
        return Err(SealError::HashMismatch {
            expected,
            found: seal.hash,
        });
    }
    let Some(key) = trusted.iter().find(|k| key_id(k) == seal.body.key_id) else {
        return Err(SealError::UnknownKey {
            found: seal.body.key_id.clone(),
            trusted: trusted.iter().map(key_id).collect::<Vec<_>>().join(", "),
        });
    };
    let bad = || SealError::BadSignature {
        key_id: seal.body.key_id.clone(),
    };
    let mut sig = [0u8; 64];
    if seal.signature.len() != 128
        || seal.signature.bytes().any(|b| b.is_ascii_uppercase())
        || hex::decode_to_slice(&seal.signature, &mut sig).is_err()
    {
        return Err(bad());
    }
    key.verify_strict(&signed_message(&seal.hash), &Signature::from_bytes(&sig))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::seal_genesis;

    fn body() -> SealBody {
        SealBody {
            batch: None,
            batch_no: 0,
            closed: false,
            created_ns: 1,
            format: SEAL_FORMAT,
            heartbeat_ns: 60_000_000_000,
            key_id: String::new(),
            prev_seal: seal_genesis("w"),
            prev_seal_version: None,
            sessions: vec![],
            writer: "w".into(),
        }
    }

    #[test]
    fn seal_then_verify_and_detect_changes() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let s = seal(body(), &key).unwrap();
        verify_seal(&s, &[other.verifying_key(), key.verifying_key()]).unwrap();

        let mut changed = s.clone();
        changed.body.created_ns = 2;
        assert!(matches!(
            verify_seal(&changed, &[key.verifying_key()]),
            Err(SealError::HashMismatch { .. })
        ));

        let forged = seal(body(), &other).unwrap();
        assert!(matches!(
            verify_seal(&forged, &[key.verifying_key()]),
            Err(SealError::UnknownKey { .. })
        ));

        let mut bad_sig = s.clone();
        bad_sig.signature.replace_range(
            0..2,
            if &s.signature[0..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert!(matches!(
            verify_seal(&bad_sig, &[key.verifying_key()]),
            Err(SealError::BadSignature { .. })
        ));
    }
}
