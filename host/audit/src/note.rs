//! Ed25519 signing keys (`portcullis keygen`), verifier keys and trust files, and signed
//! checkpoints in the C2SP signed-note format.
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use sha2::{Digest as _, Sha256};

use crate::merkle::Hash;

/// The signature algorithm byte of Ed25519 in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;

/// The start of a signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// A private key file larger than this is not a PEM Ed25519 key.
const MAX_KEY_FILE: u64 = 64 * 1024;

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

/// Why `name` cannot be a key name (C2SP signed-note: non-empty, no spaces, no `+`), if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the key name is empty")
    } else if name.chars().any(char::is_whitespace) {
        Some("the key name contains whitespace")
    } else if name.contains('+') {
        Some("the key name contains '+'")
    } else if name.chars().any(char::is_control) {
        Some("the key name contains a control character")
    } else {
        None
    }
}

/// Refuse a key name that cannot be written in a verifier key or a signature line.
fn check_name(name: &str) -> Result<(), NoteError> {
    match name_problem(name) {
        Some(problem) => Err(NoteError::BadVerifierKey(format!("{name:?}: {problem}"))),
        None => Ok(()),
    }
}

/// `SHA-256(name || "\n" || 0x01 || public key)[..4]`.
fn key_id(name: &str, key: &ed25519_dalek::VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// An I/O error about `path`.
fn io_error(path: &Path, error: std::io::Error) -> NoteError {
    NoteError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Refuse to write over an existing file (or a dangling symlink).
fn refuse_existing(path: &Path) -> Result<(), NoteError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(io_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists; refusing to overwrite it",
            ),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(path, error)),
    }
}

/// Create `path` (which must not exist) with `mode` and write `contents` to it, durably.
fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), NoteError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| io_error(path, error))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(path, error))
}

impl SigningKey {
    /// A new random key (OS randomness).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut *seed).map_err(|error| NoteError::Io {
            path: "the OS random number generator".to_owned(),
            error: std::io::Error::other(error.to_string()),
        })?;
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Write the private key as PKCS#8 PEM with mode 0600 (refusing to overwrite an existing
    /// file), and the verifier key, one line, to `public`.
    ///
    /// Neither file may exist. If the public file cannot be written, the private file just
    /// created is removed again.
    pub fn write(&self, private: &Path, public: &Path) -> Result<(), NoteError> {
        check_name(&self.name)?;
        refuse_existing(private)?;
        refuse_existing(public)?;
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| NoteError::BadKey {
                path: private.display().to_string(),
                reason: "cannot encode the key as PKCS#8 PEM".to_owned(),
            })?;
        create_new(private, 0o600, pem.as_bytes())?;
        let line = format!("{}\n", self.verifier());
        if let Err(error) = create_new(public, 0o644, line.as_bytes()) {
            // Best effort: a private key whose verifier key was never handed out is useless.
            let _ = std::fs::remove_file(private);
            return Err(error);
        }
        Ok(())
    }

    /// Read a PKCS#8 PEM Ed25519 key. Refused if the file is readable by group or others.
    ///
    /// Any permission bit for group or others refuses the key; the error tells the operator to
    /// `chmod 600` it.
    pub fn read(path: &Path, name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let bad_key = |reason: String| NoteError::BadKey {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|error| io_error(path, error))?;
        let metadata = file.metadata().map_err(|error| io_error(path, error))?;
        if !metadata.is_file() {
            return Err(bad_key("not a regular file".to_owned()));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad_key(format!(
                "private key is accessible by group or others (mode {mode:04o}); \
                 run `chmod 600 {}`",
                path.display()
            )));
        }
        if metadata.len() > MAX_KEY_FILE {
            return Err(bad_key(
                "too large to be an Ed25519 PKCS#8 PEM private key".to_owned(),
            ));
        }
        // Sized up front so that reading does not leave reallocated copies behind.
        let mut pem = Zeroizing::new(String::with_capacity(MAX_KEY_FILE as usize + 1));
        file.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut pem)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::InvalidData => {
                    bad_key("not an Ed25519 PKCS#8 PEM private key (not text)".to_owned())
                }
                _ => io_error(path, error),
            })?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
            bad_key(
                "not an Ed25519 PKCS#8 PEM private key (`portcullis keygen` writes one)".to_owned(),
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey::new(&self.name, self.key.verifying_key())
    }

    /// Sign a note's text; returns the signature line (with its trailing `\n`).
    pub fn sign_line(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut bytes = Vec::with_capacity(4 + ed25519_dalek::SIGNATURE_LENGTH);
        bytes.extend_from_slice(&self.verifier().id);
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }
}

impl VerifierKey {
    /// From an Ed25519 public key.
    pub fn new(name: &str, key: ed25519_dalek::VerifyingKey) -> Self {
        Self {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        }
    }

    /// Parse `<name>+<hex id>+<base64(0x01 || key)>`; the id must match.
    ///
    /// Strict: the id is 8 lowercase hex digits, the base64 is standard and padded, no
    /// surrounding whitespace, and a small-order (weak) public key is refused.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        Self::parse_inner(text).map_err(NoteError::BadVerifierKey)
    }

    fn parse_inner(text: &str) -> Result<Self, String> {
        // The name has no '+' and the id is hex, but the base64 key may contain '+'.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected <name>+<hex key id>+<base64 key>".to_owned());
        };
        if let Some(problem) = name_problem(name) {
            return Err(format!("{name:?}: {problem}"));
        }
        if id_hex.len() != 8
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!(
                "{name}: the key id {id_hex:?} is not 8 lowercase hex digits"
            ));
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id)
            .map_err(|_| format!("{name}: the key id {id_hex:?} is not hex"))?;
        let bytes = BASE64
            .decode(key_b64)
            .map_err(|_| format!("{name}: the key is not standard padded base64"))?;
        let Some((&alg, public)) = bytes.split_first() else {
            return Err(format!("{name}: the key is empty"));
        };
        if alg != ALG_ED25519 {
            return Err(format!(
                "{name}: unknown signature algorithm 0x{alg:02x} (only Ed25519, 0x01)"
            ));
        }
        let public: [u8; 32] = public.try_into().map_err(|_| {
            format!(
                "{name}: an Ed25519 public key is 32 bytes, not {}",
                public.len()
            )
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| format!("{name}: not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(format!(
                "{name}: a small-order (weak) Ed25519 public key is refused"
            ));
        }
        let verifier = Self::new(name, key);
        if verifier.id != id {
            return Err(format!(
                "{name}: the key id {id_hex} does not match the key (expected {})",
                hex::encode(verifier.id)
            ));
        }
        Ok(verifier)
    }

    /// Whether `signature` (64 bytes) is a valid signature of `text` (`verify_strict`:
    /// malleable and small-order signatures are refused).
    pub fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(text, &signature).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ALG_ED25519);
        bytes.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(bytes)
        )
    }
}

/// Parse a trust file's text: verifier keys, one per line; `#` comments and blank lines.
///
/// Lines are trimmed; an error names the first bad line by its number (from 1).
pub fn parse_trust(text: &str) -> Result<Vec<VerifierKey>, NoteError> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = VerifierKey::parse_inner(line).map_err(|reason| {
            NoteError::BadVerifierKey(format!("line {}: {reason}", number + 1))
        })?;
        keys.push(key);
    }
    Ok(keys)
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
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// The whole signed note: text, a blank line, one signature line per key, in order.
    pub fn sign(&self, keys: &[&SigningKey]) -> String {
        let text = self.text();
        let mut note = format!("{text}\n");
        for key in keys {
            note.push_str(&key.sign_line(&text));
        }
        note
    }
}

/// Parse the size line: decimal, no sign, no leading zeros (except `0` itself).
fn parse_size(line: &str) -> Result<u64, String> {
    if line.is_empty()
        || !line.bytes().all(|b| b.is_ascii_digit())
        || (line.len() > 1 && line.starts_with('0'))
    {
        return Err(format!(
            "the size line {line:?} is not a decimal number without leading zeros"
        ));
    }
    line.parse()
        .map_err(|_| format!("the size {line} is too large"))
}

/// Parse one signature line (without its `\n`): `— <name> <base64(id || signature)>`.
fn parse_signature(number: usize, line: &str) -> Result<NoteSignature, String> {
    let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
        return Err(format!(
            "line {number}: a signature line starts with an em dash (U+2014) and a space"
        ));
    };
    let Some((name, b64)) = rest.split_once(' ') else {
        return Err(format!(
            "line {number}: expected \u{2014} <key name> <base64 signature>"
        ));
    };
    if let Some(problem) = name_problem(name) {
        return Err(format!("line {number}: {name:?}: {problem}"));
    }
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| format!("line {number}: the signature is not standard padded base64"))?;
    if bytes.len() <= 4 {
        return Err(format!(
            "line {number}: the signature is too short ({} bytes)",
            bytes.len()
        ));
    }
    let (id, signature) = bytes.split_at(4);
    Ok(NoteSignature {
        name: name.to_owned(),
        id: [id[0], id[1], id[2], id[3]],
        signature: signature.to_vec(),
    })
}

impl SignedCheckpoint {
    /// Parse a signed note (strict: exact line structure, no CR, no extension lines).
    ///
    /// The text is exactly three lines (a non-empty origin, the size in decimal without leading
    /// zeros, the standard base64 of a 32-byte root), then one blank line, then one or more
    /// signature lines; the note ends with `\n`.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        Self::parse_inner(note).map_err(NoteError::BadNote)
    }

    fn parse_inner(note: &str) -> Result<Self, String> {
        if note.contains('\r') {
            return Err("contains a carriage return (CR); lines end with LF only".to_owned());
        }
        let Some(body) = note.strip_suffix('\n') else {
            return Err("does not end with a newline".to_owned());
        };
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size_line, root_line, blank, signatures @ ..] = lines.as_slice() else {
            return Err(format!(
                "{} lines; expected origin, size, root, a blank line and signatures",
                lines.len()
            ));
        };
        if origin.is_empty() {
            return Err("the origin line is empty".to_owned());
        }
        let size = parse_size(size_line)?;
        let root_bytes = BASE64
            .decode(root_line)
            .map_err(|_| format!("the root line {root_line:?} is not standard padded base64"))?;
        let root: Hash = root_bytes.as_slice().try_into().map_err(|_| {
            format!(
                "the root is {} bytes, not a 32-byte SHA-256 hash",
                root_bytes.len()
            )
        })?;
        if !blank.is_empty() {
            return Err(
                "line 4 is not blank: the checkpoint text is exactly origin, size and root \
                 (no extension lines)"
                    .to_owned(),
            );
        }
        if signatures.is_empty() {
            return Err("no signature lines".to_owned());
        }
        let signatures = signatures
            .iter()
            .enumerate()
            .map(|(i, line)| parse_signature(i + 5, line))
            .collect::<Result<Vec<_>, _>>()?;
        // The signed text: the three lines, each with its "\n".
        let text_len = origin.len() + size_line.len() + root_line.len() + 3;
        let text = note[..text_len].to_owned();
        Ok(Self {
            checkpoint: Checkpoint {
                origin: (*origin).to_owned(),
                size,
                root,
            },
            text,
            signatures,
        })
    }

    /// The trusted keys that produced a valid signature on this note (by id and name, then
    /// signature verification).
    ///
    /// In the order of `trusted`, each key at most once. The key names are not compared with
    /// the checkpoint's origin: that is the caller's check.
    pub fn signed_by<'k>(&self, trusted: &'k [VerifierKey]) -> Vec<&'k VerifierKey> {
        let mut signers: Vec<&'k VerifierKey> = Vec::new();
        for key in trusted {
            if signers.contains(&key) {
                continue;
            }
            let signed = self.signatures.iter().any(|signature| {
                signature.name == key.name
                    && signature.id == key.id
                    && key.verify(self.text.as_bytes(), &signature.signature)
            });
            if signed {
                signers.push(key);
            }
        }
        signers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 TEST 1, TEST 2 and TEST 3: secret key, public key, message, signature.
    const RFC8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac\
             c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e\
             458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290\
             ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    fn unhex<const N: usize>(text: &str) -> [u8; N] {
        let bytes = hex::decode(text).expect("test hex");
        bytes.try_into().expect("test length")
    }

    fn key_from_seed(name: &str, seed: [u8; 32]) -> SigningKey {
        SigningKey {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    fn test_key(name: &str, byte: u8) -> SigningKey {
        key_from_seed(name, [byte; 32])
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "audit.example.com/gw1".to_owned(),
            size: 1234,
            root: crate::merkle::leaf_hash(b"root"),
        }
    }

    /// Whether the note is refused: a parse error, or no trusted signer.
    fn refused(note: &str, trusted: &[VerifierKey]) -> bool {
        match SignedCheckpoint::parse(note) {
            Err(_) => true,
            Ok(parsed) => parsed.signed_by(trusted).is_empty(),
        }
    }

    /// A signature line with the given name, id and signature bytes.
    fn signature_line(name: &str, id: [u8; 4], signature: &[u8]) -> String {
        let mut bytes = id.to_vec();
        bytes.extend_from_slice(signature);
        format!("\u{2014} {name} {}\n", BASE64.encode(bytes))
    }

    #[test]
    fn rfc8032_vectors_verify() {
        for (secret, public, message, signature) in RFC8032 {
            let public = ed25519_dalek::VerifyingKey::from_bytes(&unhex(public)).expect("key");
            let verifier = VerifierKey::new("rfc8032", public);
            let message = hex::decode(message).expect("test hex");
            let signature: [u8; 64] = unhex(signature);
            assert!(verifier.verify(&message, &signature), "{secret}");
            // Another message, a flipped bit, or a truncated signature fail.
            let mut other = message.clone();
            other.push(0);
            assert!(!verifier.verify(&other, &signature));
            for i in [0, 31, 32, 63] {
                let mut bad = signature;
                bad[i] ^= 0x01;
                assert!(!verifier.verify(&message, &bad));
            }
            assert!(!verifier.verify(&message, &signature[..63]));
            assert!(!verifier.verify(&message, &[]));
        }
    }

    #[test]
    fn rfc8032_vectors_sign() {
        for (secret, public, message, signature) in RFC8032 {
            let key = key_from_seed("rfc8032", unhex(secret));
            let verifier = key.verifier();
            assert_eq!(verifier.key.to_bytes(), unhex::<32>(public));
            // RFC 8032 messages are bytes; sign_line signs text, so check the raw signature
            // and, for the UTF-8 messages, the signature line too.
            let message = hex::decode(message).expect("test hex");
            let expected: [u8; 64] = unhex(signature);
            assert_eq!(key.key.sign(&message).to_bytes(), expected);
            if let Ok(text) = std::str::from_utf8(&message) {
                assert_eq!(
                    key.sign_line(text),
                    signature_line("rfc8032", verifier.id, &expected)
                );
            }
        }
    }

    #[test]
    fn malleable_signature_is_refused() {
        // L, the order of the base point, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x10,
        ];
        let (_, public, message, signature) = RFC8032[1];
        let verifier = VerifierKey::new(
            "rfc8032",
            ed25519_dalek::VerifyingKey::from_bytes(&unhex(public)).expect("key"),
        );
        let message = hex::decode(message).expect("test hex");
        let mut signature: [u8; 64] = unhex(signature);
        assert!(verifier.verify(&message, &signature));
        // S + L: the same point equation, a non-canonical scalar.
        let mut carry = 0u16;
        for (s, l) in signature[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!verifier.verify(&message, &signature));
    }

    #[test]
    fn small_order_public_key_is_refused() {
        // The identity point as public key, and R = identity, S = 0: the cofactorless equation
        // [S]B = R + [k]A holds for every message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).expect("decodes");
        assert!(weak.is_weak());
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&identity);
        let message = b"anything at all";
        let lax = ed25519_dalek::Signature::from_bytes(&signature);
        assert!(
            weak.verify_strict(message, &lax).is_err() && {
                use ed25519_dalek::Verifier as _;
                weak.verify(message, &lax).is_ok()
            },
            "the forgery passes lax verification only"
        );
        let verifier = VerifierKey::new("weak", weak);
        assert!(!verifier.verify(message, &signature));
        // And a trust file cannot name such a key.
        let text = verifier.to_string();
        assert!(VerifierKey::parse(&text).is_err());
        // A note "signed" by it is refused.
        let note = format!(
            "{}\n{}",
            checkpoint().text(),
            signature_line("weak", verifier.id, &signature)
        );
        let parsed = SignedCheckpoint::parse(&note).expect("well-formed");
        assert!(parsed.signed_by(std::slice::from_ref(&verifier)).is_empty());
    }

    #[test]
    fn key_id_and_verifier_key_text() {
        let (secret, public, _, _) = RFC8032[0];
        let key = key_from_seed("log.example", unhex(secret));
        let verifier = key.verifier();
        let mut input = b"log.example\n\x01".to_vec();
        input.extend_from_slice(&unhex::<32>(public));
        let digest = Sha256::digest(&input);
        assert_eq!(verifier.id, digest[..4]);
        let mut key_bytes = vec![0x01];
        key_bytes.extend_from_slice(&unhex::<32>(public));
        let text = verifier.to_string();
        assert_eq!(
            text,
            format!(
                "log.example+{}+{}",
                hex::encode(&digest[..4]),
                BASE64.encode(&key_bytes)
            )
        );
        assert_eq!(VerifierKey::parse(&text).expect("round trip"), verifier);
    }

    #[test]
    fn verifier_key_parse_is_strict() {
        let verifier = test_key("log.example", 7).verifier();
        let text = verifier.to_string();
        let (name, rest) = text.split_once('+').expect("name");
        let (id, key) = rest.split_once('+').expect("id");
        let mut wrong_id = verifier.id;
        wrong_id[3] ^= 1;
        let other_key = test_key("log.example", 8).verifier().to_string();
        let other_key_b64 = other_key.splitn(3, '+').nth(2).expect("key");
        let mut alg2 = vec![0x02];
        alg2.extend_from_slice(verifier.key.as_bytes());
        let bad = [
            String::new(),
            format!("{name}+{id}"),
            format!("+{id}+{key}"),
            format!("other+{id}+{key}"),
            format!("{name}+{}+{key}", hex::encode(wrong_id)),
            format!("{name}+{}+{key}", id.to_uppercase()),
            format!("{name}+{}+{key}", &id[..6]),
            format!("{name}+{id}+{}", BASE64.encode(&alg2)),
            format!("{name}+{id}+{}", BASE64.encode(verifier.key.as_bytes())),
            format!("{name}+{id}+{other_key_b64}"),
            format!("{name}+{id}+{key}="),
            format!("{name}+{id}+{}", &key[..40]),
            format!("{name}+{id}+!{key}"),
            format!("{text}\n"),
            format!(" {text}"),
            format!("log example+{id}+{key}"),
        ];
        for text in &bad {
            let error = VerifierKey::parse(text).expect_err(text);
            assert!(matches!(error, NoteError::BadVerifierKey(_)), "{text}");
        }
    }

    #[test]
    fn parse_trust_skips_comments_and_blank_lines() {
        let a = test_key("log.example", 1).verifier();
        let b = test_key("log.example", 2).verifier();
        let text = format!("# Portcullis audit keys\n\n{a}\n   \n  # rotated 2026-11\n  {b}  \n");
        assert_eq!(parse_trust(&text).expect("valid"), vec![a.clone(), b]);
        assert_eq!(parse_trust("").expect("empty"), vec![]);
        assert_eq!(parse_trust(&format!("{a}")).expect("no newline"), vec![a]);
    }

    #[test]
    fn parse_trust_names_the_bad_line() {
        let a = test_key("log.example", 1).verifier();
        let text = format!("# keys\n{a}\n\nlog.example+00000000+AQ==\n");
        let error = parse_trust(&text).expect_err("bad line");
        let message = error.to_string();
        assert!(matches!(error, NoteError::BadVerifierKey(_)));
        assert!(message.contains("line 4"), "{message}");
    }

    #[test]
    fn checkpoint_text_and_note_format() {
        let checkpoint = checkpoint();
        let text = checkpoint.text();
        assert_eq!(
            text,
            format!(
                "audit.example.com/gw1\n1234\n{}\n",
                BASE64.encode(checkpoint.root)
            )
        );
        let key = test_key("audit.example.com/gw1", 3);
        let note = checkpoint.sign(&[&key]);
        let line = key.sign_line(&text);
        assert_eq!(note, format!("{text}\n{line}"));
        assert!(line.starts_with("\u{2014} audit.example.com/gw1 "));
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn sign_parse_signed_by_round_trip() {
        let checkpoint = checkpoint();
        let key = test_key(&checkpoint.origin, 3);
        let trusted = vec![key.verifier()];
        let note = checkpoint.sign(&[&key]);
        let parsed = SignedCheckpoint::parse(&note).expect("parses");
        assert_eq!(parsed.checkpoint, checkpoint);
        assert_eq!(parsed.text, checkpoint.text());
        assert_eq!(parsed.signatures.len(), 1);
        assert_eq!(parsed.signatures[0].name, checkpoint.origin);
        assert_eq!(parsed.signatures[0].id, trusted[0].id);
        assert_eq!(parsed.signatures[0].signature.len(), 64);
        assert_eq!(parsed.signed_by(&trusted), vec![&trusted[0]]);
        // Size 0 and a tree's empty root are fine.
        let empty = Checkpoint {
            origin: "o".to_owned(),
            size: 0,
            root: crate::merkle::root(&[]),
        };
        let parsed = SignedCheckpoint::parse(&empty.sign(&[&key])).expect("parses");
        assert_eq!(parsed.checkpoint, empty);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let checkpoint = checkpoint();
        let key = test_key(&checkpoint.origin, 3);
        let trusted = vec![key.verifier()];
        let note = checkpoint.sign(&[&key]);
        assert!(!refused(&note, &trusted));
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [bytes[i] ^ 0x01, b'\n'] {
                if replacement == bytes[i] {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                // Invalid UTF-8 never reaches the parser as a note.
                if let Ok(changed) = std::str::from_utf8(&changed) {
                    assert!(refused(changed, &trusted), "byte {i} -> {replacement:#04x}");
                }
            }
        }
    }

    #[test]
    fn malformed_notes_are_parse_errors() {
        let checkpoint = checkpoint();
        let key = test_key(&checkpoint.origin, 3);
        let text = checkpoint.text();
        let line = key.sign_line(&text);
        let root = BASE64.encode(checkpoint.root);
        let note = checkpoint.sign(&[&key]);
        let bad = [
            ("CRLF", note.replace('\n', "\r\n")),
            ("CR at the end", format!("{note}\r")),
            ("CR in a line", note.replacen("1234", "1234\r", 1)),
            ("extension line", format!("{text}extra\n\n{line}")),
            ("two blank lines", format!("{text}\n\n{line}")),
            ("trailing blank line", format!("{note}\n")),
            ("no final newline", note.trim_end_matches('\n').to_owned()),
            ("no signatures", format!("{text}\n")),
            ("no blank line", format!("{text}{line}")),
            ("text only", text.clone()),
            ("empty", String::new()),
            ("empty origin", format!("\n1234\n{root}\n\n{line}")),
            ("leading zero", format!("o\n01234\n{root}\n\n{line}")),
            ("plus sign", format!("o\n+1234\n{root}\n\n{line}")),
            ("negative", format!("o\n-1\n{root}\n\n{line}")),
            ("empty size", format!("o\n\n{root}\n\n{line}")),
            (
                "overflow",
                format!("o\n18446744073709551616\n{root}\n\n{line}"),
            ),
            (
                "short root",
                format!("o\n1\n{}\n\n{line}", BASE64.encode([0u8; 31])),
            ),
            (
                "unpadded root",
                format!("o\n1\n{}\n\n{line}", root.trim_end_matches('=')),
            ),
            (
                "hyphen dash",
                format!("{text}\n{}", line.replacen('\u{2014}', "-", 1)),
            ),
            ("no name", format!("{text}\n\u{2014}  AAAAAAAA\n")),
            ("no space", format!("{text}\n\u{2014}{}", &line[4..])),
            ("short signature", format!("{text}\n\u{2014} o AAAA\n")),
            ("extra field", format!("{text}\n{} x\n", line.trim_end())),
        ];
        for (what, note) in &bad {
            let error = SignedCheckpoint::parse(note).expect_err(what);
            assert!(matches!(error, NoteError::BadNote(_)), "{what}");
        }
        assert!(SignedCheckpoint::parse(&format!("o\n0\n{root}\n\n{line}")).is_ok());
        assert!(
            SignedCheckpoint::parse(&format!("o\n18446744073709551615\n{root}\n\n{line}")).is_ok()
        );
    }

    #[test]
    fn wrong_key_id_or_name_is_not_trusted() {
        let checkpoint = checkpoint();
        let key = test_key(&checkpoint.origin, 3);
        let trusted = vec![key.verifier()];
        let text = checkpoint.text();
        let signature = key.key.sign(text.as_bytes()).to_bytes();
        let mut wrong_id = trusted[0].id;
        wrong_id[0] ^= 0x80;
        let note = format!(
            "{text}\n{}",
            signature_line(&checkpoint.origin, wrong_id, &signature)
        );
        assert!(refused(&note, &trusted));
        let note = format!(
            "{text}\n{}",
            signature_line("other", trusted[0].id, &signature)
        );
        assert!(refused(&note, &trusted));
        // A trusted key under another name is another key.
        let renamed = VerifierKey::new("other", trusted[0].key);
        let note = checkpoint.sign(&[&key]);
        assert!(refused(&note, std::slice::from_ref(&renamed)));
        // The right line verifies.
        let note = format!(
            "{text}\n{}",
            signature_line(&checkpoint.origin, trusted[0].id, &signature)
        );
        assert!(!refused(&note, &trusted));
    }

    #[test]
    fn untrusted_key_is_not_a_signer() {
        let checkpoint = checkpoint();
        let trusted_key = test_key(&checkpoint.origin, 3);
        let intruder = test_key(&checkpoint.origin, 4);
        let note = checkpoint.sign(&[&intruder]);
        let parsed = SignedCheckpoint::parse(&note).expect("parses");
        assert!(parsed.signed_by(&[trusted_key.verifier()]).is_empty());
        assert!(parsed.signed_by(&[]).is_empty());
        // The intruder's signature on another checkpoint does not carry over either.
        let mut other = checkpoint.clone();
        other.size += 1;
        let genuine = SignedCheckpoint::parse(&checkpoint.sign(&[&trusted_key])).expect("ok");
        let forged = format!(
            "{}\n{}",
            other.text(),
            genuine.signatures.iter().fold(String::new(), |mut out, s| {
                out.push_str(&signature_line(&s.name, s.id, &s.signature));
                out
            })
        );
        assert!(refused(&forged, &[trusted_key.verifier()]));
    }

    #[test]
    fn rotation_note_lists_both_signers() {
        let checkpoint = checkpoint();
        let old = test_key(&checkpoint.origin, 5);
        let new = test_key(&checkpoint.origin, 6);
        let both = vec![old.verifier(), new.verifier()];
        let note = checkpoint.sign(&[&old, &new]);
        let parsed = SignedCheckpoint::parse(&note).expect("parses");
        assert_eq!(parsed.signatures.len(), 2);
        assert_eq!(parsed.signed_by(&both), vec![&both[0], &both[1]]);
        assert_eq!(parsed.signed_by(&both[1..]), vec![&both[1]]);
        // A key listed twice in the trust file is one signer.
        let twice = vec![both[0].clone(), both[0].clone()];
        assert_eq!(parsed.signed_by(&twice).len(), 1);
        // Only the new key after rotation.
        let later = SignedCheckpoint::parse(&checkpoint.sign(&[&new])).expect("parses");
        assert_eq!(later.signed_by(&both), vec![&both[1]]);
    }

    #[test]
    fn keygen_write_read_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("audit.key");
        let public = dir.path().join("audit.pub");
        let key = SigningKey::generate("log.example").expect("generate");
        key.write(&private, &public).expect("write");
        let mode = std::fs::metadata(&private)
            .expect("private")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read_to_string(&private).expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let line = std::fs::read_to_string(&public).expect("public");
        assert_eq!(line, format!("{}\n", key.verifier()));
        assert_eq!(parse_trust(&line).expect("trust"), vec![key.verifier()]);
        let back = SigningKey::read(&private, "log.example").expect("read");
        assert_eq!(back.verifier(), key.verifier());
        assert_eq!(back.sign_line("x\n"), key.sign_line("x\n"));
        // Two generated keys differ.
        let other = SigningKey::generate("log.example").expect("generate");
        assert_ne!(other.verifier(), key.verifier());
    }

    #[test]
    fn read_refuses_a_group_readable_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("audit.key");
        let key = SigningKey::generate("log.example").expect("generate");
        key.write(&private, &dir.path().join("audit.pub"))
            .expect("write");
        let pem = std::fs::read_to_string(&private).expect("pem");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let error = SigningKey::read(&private, "log.example").expect_err("refused");
            let message = error.to_string();
            assert!(matches!(error, NoteError::BadKey { .. }), "{message}");
            assert!(message.contains("chmod 600"), "{message}");
            assert!(
                message.contains(&private.display().to_string()),
                "{message}"
            );
            assert!(!message.contains(pem.lines().nth(1).unwrap_or("-")));
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(SigningKey::read(&private, "log.example").is_ok());
    }

    #[test]
    fn write_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("audit.key");
        let public = dir.path().join("audit.pub");
        let key = SigningKey::generate("log.example").expect("generate");
        key.write(&private, &public).expect("write");
        let before = std::fs::read(&private).expect("private");
        let other = SigningKey::generate("log.example").expect("generate");
        let error = other.write(&private, &public).expect_err("exists");
        assert!(error.to_string().contains("audit.key"), "{error}");
        assert_eq!(std::fs::read(&private).expect("private"), before);
        // Only the public file exists: refused, and no private key left behind.
        let fresh = dir.path().join("fresh.key");
        let error = other.write(&fresh, &public).expect_err("exists");
        assert!(error.to_string().contains("audit.pub"), "{error}");
        assert!(!fresh.exists());
        // Only the private file exists.
        let error = other
            .write(&private, &dir.path().join("fresh.pub"))
            .expect_err("exists");
        assert!(error.to_string().contains("audit.key"), "{error}");
        assert!(!dir.path().join("fresh.pub").exists());
    }

    #[test]
    fn no_key_material_in_errors_or_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, _, _, _) = RFC8032[0];
        let key = key_from_seed("log.example", unhex(secret));
        let debug = format!("{key:?}");
        assert!(debug.contains("log.example"));
        assert!(!debug.contains(secret), "{debug}");
        assert!(
            !debug.contains(&BASE64.encode(unhex::<32>(secret))),
            "{debug}"
        );
        // A file that is not a key: the error does not echo its contents.
        let garbage = dir.path().join("garbage.key");
        create_new(
            &garbage,
            0o600,
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n",
        )
        .expect("write");
        let error = SigningKey::read(&garbage, "log.example").expect_err("not a key");
        let message = format!("{error} {error:?}");
        assert!(matches!(error, NoteError::BadKey { .. }));
        assert!(!message.contains("c2VjcmV0"), "{message}");
        // Missing file and bad names.
        assert!(matches!(
            SigningKey::read(&dir.path().join("missing"), "log.example"),
            Err(NoteError::Io { .. })
        ));
        assert!(SigningKey::generate("").is_err());
        assert!(SigningKey::generate("a b").is_err());
        assert!(SigningKey::generate("a+b").is_err());
    }
}
