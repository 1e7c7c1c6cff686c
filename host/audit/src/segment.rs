//! The files of a log directory: segment names and listing, the checkpoint file's lines, the
//! lock and the quarantine.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file the one writer holds.
pub const LOCK: &str = "audit.lock";
/// The signed checkpoints, one JSON object per line.
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// Where recovery moves the bytes it cuts.
pub const QUARANTINE: &str = "quarantine";

/// The file name of segment `n` (from 1).
pub fn name(n: u64) -> String {
    format!("segment-{n:06}.jsonl")
}

/// The segment number a file name stands for, if it is a segment's name.
pub fn number(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix("segment-")?.strip_suffix(".jsonl")?;
    let valid = digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| digits.parse().ok()).flatten()
}

/// Every segment in `dir`, in number order.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(number) {
            segments.push((n, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// One line of `checkpoints.jsonl`. Only `note` is evidence; `ts` and `segment` are hints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointLine {
    /// When it was signed (RFC 3339).
    pub ts: String,
    /// The segment that was live when it was signed.
    pub segment: u64,
    /// The signed note.
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        assert_eq!(name(3), "segment-000003.jsonl");
        assert_eq!(number(&name(1_234_567)), Some(1_234_567));
        assert_eq!(number("segment-3.jsonl"), None);
        assert_eq!(number("segment-000003.jsonl.cut"), None);
    }
}
