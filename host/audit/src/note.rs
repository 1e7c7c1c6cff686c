//! Ed25519 signing keys (`portcullis keygen`), verifier keys and trust files, and signed
//! checkpoints in the C2SP signed-note format.
use std::path::Path;

use crate::merkle::Hash;

/// Why a key, a trust file or a note was refused. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A private key file is not an Ed25519 PKCS#8 key, or is readable by others.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A verifier key or a trust file line is malformed.
    #[error("bad verifier key: {0}")]
    BadVerifierKey(String),
    /// A note is malformed.
    #[error("bad signed note: {0}")]
    BadNote(String),
}

/// A private signing key, with the name it signs as (the log's origin).
pub struct SigningKey {
    /// The key name (the log's origin).
    pub name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.verifier().id))
            .finish_non_exhaustive()
    }
}

/// A public key an auditor trusts: name, 4-byte key id and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name (the log's origin).
    pub name: String,
    /// `SHA-256(name || "\n" || 0x01 || public key)[..4]`.
    pub id: [u8; 4],
    /// The Ed25519 public key.
    pub key: ed25519_dalek::VerifyingKey,
}

impl SigningKey {
    /// A new random key (OS randomness).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        todo!("{name}")
    }

    /// Write the private key as PKCS#8 PEM with mode 0600 (refusing to overwrite an existing
    /// file), and the verifier key, one line, to `public`.
    pub fn write(&self, private: &Path, public: &Path) -> Result<(), NoteError> {
        todo!("{private:?}{public:?}")
    }

    /// Read a PKCS#8 PEM Ed25519 key. Refused if the file is readable by group or others.
    pub fn read(path: &Path, name: &str) -> Result<Self, NoteError> {
        todo!("{path:?}{name}")
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        todo!()
    }

    /// Sign a note's text; returns the signature line (with its trailing `\n`).
    pub fn sign_line(&self, text: &str) -> String {
        todo!("{text}")
    }
}

impl VerifierKey {
    /// From an Ed25519 public key.
    pub fn new(name: &str, key: ed25519_dalek::VerifyingKey) -> Self {
        todo!("{name}{key:?}")
    }

    /// Parse `<name>+<hex id>+<base64(0x01 || key)>`; the id must match.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        todo!("{text}")
    }

    /// Whether `signature` (64 bytes) is a valid signature of `text` (`verify_strict`:
    /// malleable and small-order signatures are refused).
    pub fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        todo!("{text:?}{signature:?}")
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// Parse a trust file's text: verifier keys, one per line; `#` comments and blank lines.
pub fn parse_trust(text: &str) -> Result<Vec<VerifierKey>, NoteError> {
    todo!("{text}")
}

/// A checkpoint: the log's origin, its size and the Merkle root at that size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin.
    pub origin: String,
    /// The number of records covered.
    pub size: u64,
    /// The RFC 6962 root over them.
    pub root: Hash,
}

/// A signature line of a note: key name, key id, signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The 4-byte key id.
    pub id: [u8; 4],
    /// The signature (64 bytes for Ed25519; kept as given so that bad lengths are reported).
    pub signature: Vec<u8>,
}

/// A parsed signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it claims.
    pub checkpoint: Checkpoint,
    /// The text that was signed (`origin\nsize\nroot\n`).
    pub text: String,
    /// Every signature line, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn text(&self) -> String {
        todo!()
    }

    /// The whole signed note: text, a blank line, one signature line per key, in order.
    pub fn sign(&self, keys: &[&SigningKey]) -> String {
        todo!("{}", keys.len())
    }
}

impl SignedCheckpoint {
    /// Parse a signed note (strict: exact line structure, no CR, no extension lines).
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        todo!("{note}")
    }

    /// The trusted keys that produced a valid signature on this note (by id and name, then
    /// signature verification).
    pub fn signed_by<'k>(&self, trusted: &'k [VerifierKey]) -> Vec<&'k VerifierKey> {
        todo!("{trusted:?}")
    }
}
