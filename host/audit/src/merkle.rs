//! RFC 6962 Merkle tree hashing over the log's leaves: the compact frontier the writer keeps,
//! roots, and inclusion and consistency proofs.
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of one leaf (one stored record line without its `\n`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree.
fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): where RFC 6962 splits a tree.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    debug_assert!(k < n && 2 * k >= n);
    k
}

/// The Merkle frontier of a tree of `size` leaves: the roots of its perfect subtrees, largest
/// (leftmost) first. O(log n) state; enough to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from its parts; `None` if the number of hashes does not match `size`
    /// (one per set bit).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        if hashes.len() != size.count_ones() as usize {
            return None;
        }
        Some(Self { size, hashes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        // Every trailing set bit of `size` is a perfect subtree of the same height as the one
        // being carried: merge them, smallest (rightmost) first.
        let mut carry = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            match self.hashes.pop() {
                Some(left) => carry = node_hash(&left, &carry),
                // Unreachable: the constructors keep one hash per set bit.
                None => break,
            }
            size >>= 1;
        }
        self.hashes.push(carry);
        self.size += 1;
    }

    /// The RFC 6962 root (`SHA-256("")` for the empty tree).
    pub fn root(&self) -> Hash {
        let mut rest = self.hashes.iter().rev();
        match rest.next() {
            None => empty_root(),
            Some(last) => rest.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// The root of a list of leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = split(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1 PATH).
///
/// Empty if `index` is not a leaf of the tree (there is nothing to prove).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    let mut proof = Vec::new();
    if let Ok(index) = usize::try_from(index)
        && index < leaves.len()
    {
        path(index, leaves, &mut proof);
    }
    proof
}

/// RFC 6962 PATH(m, D[n]), appended to `out` (`m < n`).
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `proof` proves `leaf` at `index` in a tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof between the first `old_size` leaves and all of `leaves`
/// (RFC 6962 §2.1.2 PROOF).
///
/// Empty when there is nothing to prove: `old_size` is 0, equal to the number of leaves, or
/// larger.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Vec<Hash> {
    let mut proof = Vec::new();
    if let Ok(m) = usize::try_from(old_size)
        && 0 < m
        && m < leaves.len()
    {
        subproof(m, leaves, true, &mut proof);
    }
    proof
}

/// RFC 6962 SUBPROOF(m, D[n], b), appended to `out` (`0 < m <= n`).
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `proof` shows the tree of `old_size` leaves with `old_root` is a prefix of the tree of
/// `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots. Otherwise RFC 9162 requires
/// `0 < old_size < new_size`: an empty old tree has no proof (check its root is `SHA-256("")`
/// instead), so it is refused here.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return false;
    }
    // Step 1: a proof between different sizes is never empty.
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // Step 2: if the old tree is perfect, its root is the first node of the path.
    let (mut fr, mut sr, path) = if old_size.is_power_of_two() {
        (*old_root, *old_root, proof)
    } else {
        (*first, *first, rest)
    };
    // Step 3.
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    // Step 4.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 6.
    for c in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    fr == *old_root && sr == *new_root && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex_text: &str) -> Hash {
        let bytes = hex::decode(hex_text).expect("test hex");
        bytes.try_into().expect("32 bytes")
    }

    /// The leaves of the RFC 6962 test vectors used by certificate-transparency.
    fn rfc6962_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|data| leaf_hash(&hex::decode(data).expect("test hex")))
        .collect()
    }

    /// The published roots of the first 1..=8 of those leaves.
    const RFC6962_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn tweak(hash: &Hash) -> Hash {
        let mut out = *hash;
        out[0] ^= 1;
        out
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let expected = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(root(&[]), expected);
        assert_eq!(Frontier::new().root(), expected);
    }

    #[test]
    fn rfc6962_leaf_hash_of_empty_input() {
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
    }

    #[test]
    fn rfc6962_roots() {
        let leaves = rfc6962_leaves();
        for (n, expected) in RFC6962_ROOTS.iter().enumerate() {
            let size = n + 1;
            assert_eq!(root(&leaves[..size]), h(expected), "root of {size} leaves");
            let mut frontier = Frontier::new();
            for leaf in &leaves[..size] {
                frontier.push(*leaf);
            }
            assert_eq!(
                frontier.root(),
                h(expected),
                "frontier root of {size} leaves"
            );
        }
    }

    #[test]
    fn rfc6962_inclusion_proofs() {
        let leaves = rfc6962_leaves();
        let root8 = h(RFC6962_ROOTS[7]);
        let cases: [(u64, u64, &[&str]); 4] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (index, size, expected) in cases {
            let tree = &leaves[..size as usize];
            let proof = inclusion_proof(tree, index);
            let expected: Vec<Hash> = expected.iter().map(|x| h(x)).collect();
            assert_eq!(proof, expected, "PATH({index}, D[{size}])");
            let root = if size == 8 { root8 } else { root(tree) };
            assert!(verify_inclusion(
                &leaves[index as usize],
                index,
                size,
                &proof,
                &root
            ));
        }
    }

    #[test]
    fn rfc6962_consistency_proofs() {
        let leaves = rfc6962_leaves();
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old_size, new_size, expected) in cases {
            let tree = &leaves[..new_size as usize];
            let proof = consistency_proof(tree, old_size);
            let expected: Vec<Hash> = expected.iter().map(|x| h(x)).collect();
            assert_eq!(proof, expected, "PROOF({old_size}, D[{new_size}])");
            assert!(verify_consistency(
                old_size,
                new_size,
                &h(RFC6962_ROOTS[old_size as usize - 1]),
                &h(RFC6962_ROOTS[new_size as usize - 1]),
                &proof
            ));
        }
    }

    #[test]
    fn frontier_matches_root_for_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), root(&[]));
        for (n, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            let size = n as u64 + 1;
            assert_eq!(frontier.size(), size);
            assert_eq!(frontier.hashes().len(), size.count_ones() as usize);
            assert_eq!(frontier.root(), root(&all[..=n]), "size {size}");
            let rebuilt = Frontier::from_parts(size, frontier.hashes().to_vec());
            assert_eq!(rebuilt.as_ref(), Some(&frontier));
        }
    }

    #[test]
    fn frontier_hashes_are_perfect_subtree_roots() {
        let all = leaves(13);
        let mut frontier = Frontier::new();
        for leaf in &all {
            frontier.push(*leaf);
        }
        // 13 = 8 + 4 + 1.
        assert_eq!(
            frontier.hashes(),
            &[root(&all[..8]), root(&all[8..12]), all[12]]
        );
    }

    #[test]
    fn frontier_from_parts_checks_the_count() {
        let hash = leaf_hash(b"x");
        assert_eq!(Frontier::from_parts(0, vec![]), Some(Frontier::new()));
        assert!(Frontier::from_parts(0, vec![hash]).is_none());
        assert!(Frontier::from_parts(3, vec![hash]).is_none());
        assert!(Frontier::from_parts(3, vec![hash, hash]).is_some());
        assert!(Frontier::from_parts(4, vec![hash, hash]).is_none());
        // A restored frontier keeps growing correctly.
        let all = leaves(11);
        let mut frontier =
            Frontier::from_parts(6, vec![root(&all[..4]), root(&all[4..6])]).expect("valid parts");
        for leaf in &all[6..] {
            frontier.push(*leaf);
        }
        assert_eq!(frontier.root(), root(&all));
    }

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails() {
        for size in 1..=40u64 {
            let all = leaves(size);
            let tree_root = root(&all);
            for index in 0..size {
                let leaf = all[index as usize];
                let proof = inclusion_proof(&all, index);
                assert!(
                    verify_inclusion(&leaf, index, size, &proof, &tree_root),
                    "index {index} size {size}"
                );
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = tweak(&bad[i]);
                    assert!(!verify_inclusion(&leaf, index, size, &bad, &tree_root));
                }
                for other in 0..=size {
                    if other != index {
                        assert!(
                            !verify_inclusion(&leaf, other, size, &proof, &tree_root),
                            "index {index} as {other}, size {size}"
                        );
                    }
                }
                assert!(!verify_inclusion(
                    &leaf,
                    index,
                    size,
                    &proof,
                    &tweak(&tree_root)
                ));
                assert!(!verify_inclusion(
                    &tweak(&leaf),
                    index,
                    size,
                    &proof,
                    &tree_root
                ));
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(!verify_inclusion(&leaf, index, size, shorter, &tree_root));
                }
                let mut longer = proof.clone();
                longer.push(leaf);
                assert!(!verify_inclusion(&leaf, index, size, &longer, &tree_root));
            }
            assert!(inclusion_proof(&all, size).is_empty());
            assert!(!verify_inclusion(&all[0], size, size, &[], &tree_root));
        }
        assert!(!verify_inclusion(&leaf_hash(b""), 0, 0, &[], &root(&[])));
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_fails() {
        for new_size in 1..=40u64 {
            let all = leaves(new_size);
            let new_root = root(&all);
            for old_size in 1..=new_size {
                let old_root = root(&all[..old_size as usize]);
                let proof = consistency_proof(&all, old_size);
                assert!(
                    verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
                    "{old_size} -> {new_size}"
                );
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = tweak(&bad[i]);
                    assert!(!verify_consistency(
                        old_size, new_size, &old_root, &new_root, &bad
                    ));
                }
                assert!(!verify_consistency(
                    old_size,
                    new_size,
                    &tweak(&old_root),
                    &new_root,
                    &proof
                ));
                assert!(!verify_consistency(
                    old_size,
                    new_size,
                    &old_root,
                    &tweak(&new_root),
                    &proof
                ));
                for other in 0..=new_size + 1 {
                    if other != old_size {
                        assert!(
                            !verify_consistency(other, new_size, &old_root, &new_root, &proof),
                            "{old_size} as {other} -> {new_size}"
                        );
                    }
                }
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(!verify_consistency(
                        old_size, new_size, &old_root, &new_root, shorter
                    ));
                }
                let mut longer = proof.clone();
                longer.push(new_root);
                assert!(!verify_consistency(
                    old_size, new_size, &old_root, &new_root, &longer
                ));
            }
            // Nothing proves that a larger tree is a prefix of a smaller one.
            assert!(!verify_consistency(
                new_size + 1,
                new_size,
                &new_root,
                &new_root,
                &[]
            ));
            // The empty tree: no proof (RFC 9162 requires 0 < old_size).
            assert!(consistency_proof(&all, 0).is_empty());
            assert!(!verify_consistency(0, new_size, &root(&[]), &new_root, &[]));
        }
        // Equal sizes: an empty proof and equal roots.
        let r = root(&leaves(5));
        assert!(verify_consistency(5, 5, &r, &r, &[]));
        assert!(!verify_consistency(5, 5, &r, &tweak(&r), &[]));
        assert!(!verify_consistency(5, 5, &r, &r, &[r]));
        assert!(verify_consistency(0, 0, &root(&[]), &root(&[]), &[]));
    }
}
