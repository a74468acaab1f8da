//! RFC 6962 Merkle tree hash over a batch's record hashes, with sealtrail's
//! domain tags in place of RFC 6962's 0x00 / 0x01 prefixes.
//!
//! `MTH({d0}) = SHA-256(LEAF_TAG ‖ d0)`; for n > 1, with k the largest power
//! of two below n, `MTH(D[0..n]) = SHA-256(NODE_TAG ‖ MTH(D[0..k]) ‖ MTH(D[k..n]))`.

use crate::digest::{Digest, LEAF_TAG, NODE_TAG};

/// The leaf hash of one record hash.
pub fn leaf_hash(record_hash: &Digest) -> Digest {
    Digest::tagged(LEAF_TAG, &[&record_hash.0])
}

/// The hash of an interior node.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::tagged(NODE_TAG, &[&left.0, &right.0])
}

/// The Merkle tree hash of `record_hashes` in order; `None` for an empty list.
///
/// Computed level by level, carrying an odd last node up unchanged, which
/// yields the same root as RFC 6962's recursive definition. The hashes of a
/// level are independent, so they are computed several at a time.
pub fn root(record_hashes: &[Digest]) -> Option<Digest> {
    if record_hashes.is_empty() {
        return None;
    }
    let leaves: Vec<&[u8]> = record_hashes.iter().map(|d| &d.0[..]).collect();
    let mut level = vec![[0u8; 32]; leaves.len()];
    tape_sha256::hash_many_prefixed(LEAF_TAG, &leaves, &mut level);
    while level.len() > 1 {
        let pairs = level.len() / 2;
        let left: Vec<&[u8]> = level
            .iter()
            .step_by(2)
            .take(pairs)
            .map(|d| &d[..])
            .collect();
        let right: Vec<&[u8]> = level.iter().skip(1).step_by(2).map(|d| &d[..]).collect();
        let mut next = vec![[0u8; 32]; level.len().div_ceil(2)];
        assert!(left.len() == pairs && right.len() == pairs);
        tape_sha256::hash_pairs(NODE_TAG, &left, &right, &mut next[..pairs]);
        if level.len() % 2 == 1 {
            next[pairs] = level[level.len() - 1];
        }
        level = next;
    }
    level.pop().map(Digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's recursive definition, as the reference.
    fn reference(d: &[Digest]) -> Digest {
        if d.len() == 1 {
            return leaf_hash(&d[0]);
        }
        let k = d.len().next_power_of_two() / 2;
        node_hash(&reference(&d[..k]), &reference(&d[k..]))
    }

    #[test]
    fn matches_rfc6962_recursion_for_all_small_sizes() {
        let leaves: Vec<Digest> = (0u32..70)
            .map(|i| Digest::sha256(&i.to_be_bytes()))
            .collect();
        assert_eq!(root(&[]), None);
        for n in 1..=leaves.len() {
            assert_eq!(root(&leaves[..n]), Some(reference(&leaves[..n])), "n = {n}");
        }
    }

    #[test]
    fn order_matters() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        assert_ne!(root(&[a, b]), root(&[b, a]));
        // A single leaf is not its own record hash (second-preimage resistance).
        assert_ne!(root(&[a]), Some(a));
    }
}
