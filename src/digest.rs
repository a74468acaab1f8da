//! SHA-256 digests and the domain-separated hashes of the archive format.
//!
//! Every hash in the format is `SHA-256(tag ‖ input)` with a tag of its own,
//! so that no hash of one kind can be passed off as another (docs/FORMAT.md §3).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Domain tag of a record hash.
pub const RECORD_TAG: &[u8] = b"sealtrail/v1/record\0";
/// Domain tag of the `prev` of a session's first record.
pub const GENESIS_TAG: &[u8] = b"sealtrail/v1/genesis\0";
/// Domain tag of a seal hash.
pub const SEAL_TAG: &[u8] = b"sealtrail/v1/seal\0";
/// Domain tag of the `prev_seal` of a writer's first seal.
pub const SEAL_GENESIS_TAG: &[u8] = b"sealtrail/v1/seal-genesis\0";
/// Domain tag of a Merkle leaf (RFC 6962 uses 0x00).
pub const LEAF_TAG: &[u8] = b"sealtrail/v1/leaf\0";
/// Domain tag of a Merkle interior node (RFC 6962 uses 0x01).
pub const NODE_TAG: &[u8] = b"sealtrail/v1/node\0";
/// Domain tag of the message that a seal's Ed25519 signature signs.
pub const SIGNATURE_TAG: &[u8] = b"sealtrail/v1/signature\0";
/// Domain tag of a signing key id.
pub const KEY_ID_TAG: &[u8] = b"sealtrail/v1/key-id\0";

/// A SHA-256 digest. Serialized as 64 lowercase hex digits; compared in constant time.
#[derive(Clone, Copy, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `tag ‖ parts[0] ‖ parts[1] ‖ …`.
    pub fn tagged(tag: &[u8], parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        h.update(tag);
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    /// Plain SHA-256 of `bytes` (used for batch object digests).
    pub fn sha256(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Writes the 64 lowercase hex digits into `out`.
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &[u8]) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0x0f);
        }
        (bad & 0xf0 == 0).then_some(Digest(out))
    }
}

/// Value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl PartialEq for Digest {
    /// Constant time: the running time does not depend on where the digests differ.
    fn eq(&self, other: &Self) -> bool {
        let word = |d: &[u8; 32], i: usize| {
            u64::from_ne_bytes(d[8 * i..8 * i + 8].try_into().unwrap_or_default())
        };
        let diff = (0..4).fold(0u64, |acc, i| acc | (word(&self.0, i) ^ word(&other.0, i)));
        diff.ct_eq(&0).into()
    }
}
impl Eq for Digest {}

impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        self.write_hex(&mut buf);
        // The buffer holds ASCII hex digits only.
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Digest::from_hex(s.as_bytes())
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// The hash of a record: `SHA-256(RECORD_TAG ‖ canonical record bytes)`.
pub fn record_hash(canonical_record: &[u8]) -> Digest {
    Digest::tagged(RECORD_TAG, &[canonical_record])
}

/// The record hashes of many records at once, into `out` (one per record):
/// the same digests as [`record_hash`], several computed side by side (a
/// single SHA-256 leaves most of the CPU's SHA unit idle, each round waiting
/// for the last).
///
/// # Panics
/// If `records` and `out` differ in length.
pub fn record_hashes(records: &[&[u8]], out: &mut [[u8; 32]]) {
    // Asserted here: not every backend of tape-sha256 checks it.
    assert_eq!(records.len(), out.len(), "one digest per record");
    if let ([record], [digest]) = (records, &mut *out) {
        // One alone: sha2 is 8 % faster at that (a run of one session).
        *digest = record_hash(record).0;
        return;
    }
    tape_sha256::hash_many_prefixed(RECORD_TAG, records, out);
}

/// Length-prefixed field: u32 big-endian length, then the bytes.
fn len_prefix(s: &str) -> [u8; 4] {
    (s.len() as u32).to_be_bytes()
}

/// The `prev` of the first record (seq 0) of `session` written by `writer`:
/// `SHA-256(GENESIS_TAG ‖ u32be(len w) ‖ w ‖ u32be(len s) ‖ s)`.
pub fn genesis(writer: &str, session: &str) -> Digest {
    Digest::tagged(
        GENESIS_TAG,
        &[
            &len_prefix(writer),
            writer.as_bytes(),
            &len_prefix(session),
            session.as_bytes(),
        ],
    )
}

/// The `prev_seal` of a writer's first seal (batch 0):
/// `SHA-256(SEAL_GENESIS_TAG ‖ u32be(len w) ‖ w)`.
pub fn seal_genesis(writer: &str) -> Digest {
    Digest::tagged(SEAL_GENESIS_TAG, &[&len_prefix(writer), writer.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many records hashed side by side give exactly the one-at-a-time
    /// digests: every length across the padding edges of the tagged input,
    /// lanes of very different lengths, and every batch size up to 17.
    #[test]
    fn record_hashes_match_record_hash() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        let mut lens: Vec<usize> = (0..300).collect();
        lens.extend([1000, 1023, 1024, 1025, 1500, 4096, 70_000]);
        let bodies: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| (0..n).map(|_| byte()).collect())
            .collect();
        let one_by_one: Vec<[u8; 32]> = bodies.iter().map(|b| record_hash(b).0).collect();
        let all: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        for size in 0..=17 {
            for (chunk, want) in all.chunks(size.max(1)).zip(one_by_one.chunks(size.max(1))) {
                let chunk = &chunk[..size.min(chunk.len())];
                let mut out = vec![[0u8; 32]; chunk.len()];
                record_hashes(chunk, &mut out);
                assert_eq!(out, want[..chunk.len()], "batch of {size}");
            }
        }
        // Lanes of mixed lengths (short next to long), in reverse order too.
        let mixed: Vec<&[u8]> = all.iter().rev().step_by(7).copied().collect();
        let mut out = vec![[0u8; 32]; mixed.len()];
        record_hashes(&mixed, &mut out);
        for (b, d) in mixed.iter().zip(&out) {
            assert_eq!(record_hash(b).0, *d, "length {}", b.len());
        }
    }

    #[test]
    fn hex_round_trip_and_rejects_uppercase() {
        let d = Digest::sha256(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(d.to_hex().as_bytes()), Some(d));
        assert_eq!(Digest::from_hex(d.to_hex().to_uppercase().as_bytes()), None);
        assert_eq!(Digest::from_hex(b"ab"), None);
    }

    #[test]
    fn genesis_is_length_prefixed() {
        assert_ne!(genesis("ab", "c"), genesis("a", "bc"));
        assert_ne!(genesis("w", "s"), genesis("s", "w"));
    }

    #[test]
    fn tags_are_distinct() {
        let tags = [
            RECORD_TAG,
            GENESIS_TAG,
            SEAL_TAG,
            SEAL_GENESIS_TAG,
            LEAF_TAG,
            NODE_TAG,
            SIGNATURE_TAG,
            KEY_ID_TAG,
        ];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
    }
}
