//! RFC 6962 Merkle tree hashing over the log's leaves: the compact frontier the writer keeps,
//! roots, and inclusion and consistency proofs.

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of one leaf (one stored record line without its `\n`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    todo!("{data:?}")
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    todo!("{left:?}{right:?}")
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
        todo!("{size}{hashes:?}")
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
        todo!("{leaf:?}")
    }

    /// The RFC 6962 root (`SHA-256("")` for the empty tree).
    pub fn root(&self) -> Hash {
        todo!()
    }
}

/// The root of a list of leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    todo!("{leaves:?}")
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1 PATH).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    todo!("{leaves:?}{index}")
}

/// Whether `proof` proves `leaf` at `index` in a tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    todo!("{leaf:?}{index}{size}{proof:?}{root:?}")
}

/// The consistency proof between the first `old_size` leaves and all of `leaves`
/// (RFC 6962 §2.1.2 PROOF).
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Vec<Hash> {
    todo!("{leaves:?}{old_size}")
}

/// Whether `proof` shows the tree of `old_size` leaves with `old_root` is a prefix of the tree of
/// `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    todo!("{old_size}{new_size}{old_root:?}{new_root:?}{proof:?}")
}
