//! Portcullis's audit log: signed, tamper-evident JSON Lines that an auditor verifies offline
//! with nothing but the `portcullis` binary and a public key handed over out of band.
//!
//! A crate of its own so that the verifier builds and tests without the gateway's WebAssembly
//! runtime, and so that an auditor's tooling can link it alone.
//!
//! Module map:
//! - [`record`]: one record line, its chaining (`prev`) and its leaf hash
//! - [`merkle`]: RFC 6962 Merkle tree hashing, compact frontier, inclusion and consistency proofs
//! - [`note`]: Ed25519 keys (`keygen`), verifier keys and trust files, signed checkpoints
//!   (C2SP signed-note)
//! - [`segment`]: the files of a log directory and how they are named
//! - [`writer`]: the one writer thread: group commit, segments, checkpoints, heartbeats, lock
//! - [`recover`]: crash recovery at start: cut at the first bad line, quarantine the rest
//! - [`verify`]: `portcullis audit verify`: every check, with stable finding codes
//! - [`export`]: `portcullis audit export --format ocsf`
//! - [`har`]: session recordings: chained HAR entries, blobs, export as HAR 1.2
//!
//! # On-disk format (version 1)
//!
//! A log directory holds:
//! - `audit.lock`: held with an exclusive file lock by the one writer; a second process fails.
//! - `segment-000001.jsonl`, `segment-000002.jsonl`, …: the records, numbered from 1 without
//!   gaps (6 or more digits). Rotated by size and age.
//! - `checkpoints.jsonl`: one JSON object per line, `{"ts":…,"segment":N,"note":"…"}`, where
//!   `note` is a signed checkpoint (below). Only the note is trusted; `ts` and `segment` are
//!   hints.
//! - `quarantine/`: bytes that recovery cut off a segment, kept for forensics, never deleted.
//!
//! ## Records
//! One JSON object per line, ending in a single `\n`. The keys come in this order: `v` (1),
//! `log` (the origin: a unique name of this log), `seq` (0, 1, 2, … across the whole log, never
//! reset), `epoch` (1 at the first start, +1 at every start), `ts` (RFC 3339 UTC with
//! microseconds, `2026-11-29T02:33:01.123456Z`), `prev`, `id` (a UUID), `type`, then the type's
//! own fields.
//!
//! Hashes are over the stored bytes, never a re-serialisation:
//! `leaf = SHA-256(0x00 || line without its "\n")`. `prev` is the standard, padded base64 of
//! the previous line's leaf; for `seq` 0 it is the genesis hash
//! `SHA-256("portcullis-audit-v1 genesis\n" || origin)`, which binds the first record to its
//! origin (a fixed genesis value would let a log's head be swapped for another's).
//!
//! Every segment starts with a `segment.open` record carrying `segment` (its number) and
//! `frontier` (`{"size": n, "hashes": [base64, …]}`: the Merkle frontier of the `n` leaves before
//! it, where `n` is its own `seq`), so a segment verifies on its own once older ones are
//! archived. A segment that was rotated ends with a `segment.close` record (`segment`, `next`).
//! Only the last segment may lack one.
//!
//! ## Checkpoints
//! The Merkle tree is RFC 6962's over the leaves in `seq` order. A checkpoint is a C2SP
//! signed note whose text is `<origin>\n<size>\n<base64 root>\n`, followed by a blank line and
//! one signature line per key: `— <key name> <base64(key id (4 bytes) || Ed25519 signature)>\n`.
//! The key id is the first 4 bytes of `SHA-256(key name || "\n" || 0x01 || public key)`.
//! Checkpoints are signed at least every second while records arrive, at the first fdatasync
//! after every 1000 records (a checkpoint only ever covers records that were fdatasync'ed), at
//! rotation and at shutdown.
//!
//! A verifier key is written `<key name>+<8 hex digits key id>+<base64(0x01 || public key)>`.
//! A trust file holds verifier keys, one per line (`#` comments and blank lines allowed). The
//! key name is the log's origin.
//!
//! Key rotation: a `key.rotated` record (`old`, `new`: verifier keys), then a checkpoint that
//! covers it signed by both keys; every later checkpoint is signed by the new key only.
pub mod export;
pub mod har;
pub mod merkle;
pub mod note;
pub mod record;
pub mod recover;
pub mod segment;
pub mod verify;
pub mod writer;
