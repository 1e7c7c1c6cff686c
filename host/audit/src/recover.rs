//! Crash recovery at start: re-hash the live segment from its stored frontier, cut at the first
//! torn, unparsable, zero-filled or mis-chained line, move what follows to `quarantine/`, and
//! hand the writer the state to continue from.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::merkle::{Frontier, Hash};
use crate::record::{self, Record};
use crate::segment::{self, CheckpointLine};
use crate::writer::AuditError;

/// Where the log stands after recovery: what the writer continues from.
#[derive(Debug, Clone)]
pub struct State {
    /// The next record's `seq`.
    pub seq: u64,
    /// The last record's leaf (or the genesis hash).
    pub prev: Hash,
    /// The Merkle frontier over every record so far.
    pub frontier: Frontier,
    /// The highest epoch written so far (0 for a new log).
    pub epoch: u64,
    /// The live segment's number (0 if there is none yet).
    pub segment: u64,
    /// Its length in bytes.
    pub segment_len: u64,
    /// When it was opened (its `segment.open` record's time).
    pub segment_opened: Option<SystemTime>,
    /// Whether it ends with `segment.close` (the next record starts a new segment).
    pub segment_closed: bool,
    /// The verifier key in force (from the last `segment.open` or `key.rotated`), as text.
    pub key: Option<String>,
    /// The last `key.rotated` record of the live segment: its seq and the retired key.
    pub rotation: Option<(u64, String)>,
    /// The size of the last checkpoint in `checkpoints.jsonl`, if any parses.
    pub checkpointed: Option<u64>,
    /// What was cut, if anything.
    pub cuts: Vec<Cut>,
}

/// Bytes recovery cut off a file.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The file they were cut from.
    pub file: String,
    /// The offset of the first byte cut.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Where they are kept.
    pub quarantine: PathBuf,
    /// Why the line at `offset` was not accepted.
    pub reason: String,
}

/// Recover the log in `dir` (the caller holds the lock).
pub fn recover(dir: &Path, origin: &str) -> Result<State, AuditError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| AuditError::Io { path, error }
    };
    let mut state = State {
        seq: 0,
        prev: record::genesis(origin),
        frontier: Frontier::new(),
        epoch: 0,
        segment: 0,
        segment_len: 0,
        segment_opened: None,
        segment_closed: false,
        key: None,
        rotation: None,
        checkpointed: None,
        cuts: Vec::new(),
    };
    let checkpoints = dir.join(segment::CHECKPOINTS);
    if let Some(cut) = cut_torn_checkpoints(dir, &checkpoints)? {
        state.cuts.push(cut);
    }
    state.checkpointed = last_checkpoint_size(&checkpoints)?;
    let mut segments = segment::list(dir).map_err(io(dir))?;
    while let Some((number, path)) = segments.pop() {
        let bytes = fs::read(&path).map_err(io(&path))?;
        let scan = scan(&bytes, origin);
        if let Some((offset, reason)) = &scan.bad {
            let cut = quarantine(dir, &path, &bytes, *offset, reason.clone())?;
            state.cuts.push(cut);
        }
        let Some(end) = scan.end else {
            // Not even a valid `segment.open`: the segment was created and the crash came
            // before its first line was whole. Drop it and continue from the one before.
            fs::remove_file(&path).map_err(io(&path))?;
            continue;
        };
        state.seq = end.seq + 1;
        state.prev = end.leaf;
        state.frontier = end.frontier;
        state.epoch = end.epoch;
        state.segment = number;
        state.segment_len = scan.good_len;
        state.segment_opened = end.opened;
        state.segment_closed = end.closed;
        state.key = end.key;
        state.rotation = end.rotation;
        break;
    }
    if let Some(size) = state.checkpointed
        && size > state.seq
    {
        tracing::error!(
            checkpointed = size,
            recovered = state.seq,
            "audit log: a signed checkpoint covers records that are no longer in the log"
        );
    }
    Ok(state)
}

/// The end of the good prefix of a segment.
struct End {
    seq: u64,
    epoch: u64,
    leaf: Hash,
    frontier: Frontier,
    opened: Option<SystemTime>,
    closed: bool,
    key: Option<String>,
    rotation: Option<(u64, String)>,
}

struct Scan {
    /// The state after the last good line (None if no line is good).
    end: Option<End>,
    /// Bytes of good lines.
    good_len: u64,
    /// The first bad line: offset and why.
    bad: Option<(u64, String)>,
}

/// Walk a segment's lines, checking each against the chain, from its `segment.open` frontier.
fn scan(bytes: &[u8], origin: &str) -> Scan {
    let mut end: Option<End> = None;
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            return bad(end, offset, "a torn line (no newline at the end)".into());
        };
        let line = &rest[..newline];
        let record = match Record::parse(line) {
            Ok(record) => record,
            Err(e) => return bad(end, offset, format!("not a record: {e}")),
        };
        if record.log != origin {
            return bad(end, offset, format!("from another log ({:?})", record.log));
        }
        let next = match &mut end {
            None => {
                let Some(frontier) = open_frontier(&record) else {
                    return bad(
                        end,
                        offset,
                        "the segment does not start with segment.open".into(),
                    );
                };
                let mut frontier = frontier;
                frontier.push(record.leaf);
                End {
                    seq: record.seq,
                    epoch: record.epoch,
                    leaf: record.leaf,
                    frontier,
                    opened: record.time(),
                    closed: false,
                    key: record
                        .fields
                        .get("key")
                        .and_then(|k| k.as_str())
                        .map(String::from),
                    rotation: None,
                }
            }
            Some(previous) => {
                if record.seq != previous.seq + 1
                    || record.prev != previous.leaf
                    || record.epoch < previous.epoch
                    || previous.closed
                {
                    return bad(end, offset, format!("out of chain at seq {}", record.seq));
                }
                let mut frontier = std::mem::take(&mut previous.frontier);
                frontier.push(record.leaf);
                let rotation = match record.kind.as_str() {
                    "key.rotated" => record
                        .fields
                        .get("old")
                        .and_then(|k| k.as_str())
                        .map(|old| (record.seq, old.to_string())),
                    _ => None,
                };
                let key = match record.kind.as_str() {
                    "key.rotated" => record
                        .fields
                        .get("new")
                        .and_then(|k| k.as_str())
                        .map(String::from),
                    _ => None,
                };
                End {
                    seq: record.seq,
                    epoch: record.epoch,
                    leaf: record.leaf,
                    frontier,
                    opened: previous.opened,
                    closed: record.kind == "segment.close",
                    key: key.or_else(|| previous.key.take()),
                    rotation: rotation.or_else(|| previous.rotation.take()),
                }
            }
        };
        end = Some(next);
        offset += newline + 1;
    }
    Scan {
        end,
        good_len: offset as u64,
        bad: None,
    }
}

fn bad(end: Option<End>, offset: usize, reason: String) -> Scan {
    Scan {
        end,
        good_len: offset as u64,
        bad: Some((offset as u64, reason)),
    }
}

/// The frontier a `segment.open` record stores, checked against its own `seq`.
fn open_frontier(record: &Record) -> Option<Frontier> {
    if record.kind != "segment.open" {
        return None;
    }
    let frontier = record.fields.get("frontier")?;
    let size = frontier.get("size")?.as_u64()?;
    let hashes = frontier
        .get("hashes")?
        .as_array()?
        .iter()
        .map(|h| h.as_str().and_then(record::decode_hash))
        .collect::<Option<Vec<_>>>()?;
    (size == record.seq)
        .then(|| Frontier::from_parts(size, hashes))
        .flatten()
}

/// Move `bytes[offset..]` of `path` to the quarantine and truncate the file there, durably.
fn quarantine(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    offset: u64,
    reason: String,
) -> Result<Cut, AuditError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |error| AuditError::Io { path, error }
    };
    let qdir = dir.join(segment::QUARANTINE);
    fs::create_dir_all(&qdir).map_err(io(&qdir))?;
    let file_name = path
        .file_name()
        .map_or_else(|| "log".into(), |n| n.to_string_lossy().into_owned());
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let target = qdir.join(format!("{file_name}.{stamp}.cut"));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(io(&target))?;
    out.write_all(&bytes[offset as usize..])
        .map_err(io(&target))?;
    out.sync_all().map_err(io(&target))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    file.set_len(offset).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    File::open(&qdir)
        .and_then(|d| d.sync_all())
        .map_err(io(&qdir))?;
    tracing::warn!(
        file = %file_name,
        offset,
        bytes = bytes.len() as u64 - offset,
        quarantine = %target.display(),
        %reason,
        "audit log recovered: cut a damaged tail"
    );
    Ok(Cut {
        file: file_name,
        offset,
        bytes: bytes.len() as u64 - offset,
        quarantine: target,
        reason,
    })
}

/// Cut a torn or unparsable tail off `checkpoints.jsonl`.
fn cut_torn_checkpoints(dir: &Path, path: &Path) -> Result<Option<Cut>, AuditError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(|error| AuditError::Io {
            path: path.display().to_string(),
            error,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(AuditError::Io {
                path: path.display().to_string(),
                error,
            });
        }
    };
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let bad = match rest.iter().position(|&b| b == b'\n') {
            None => Some("a torn line (no newline at the end)".to_string()),
            Some(n) => serde_json::from_slice::<CheckpointLine>(&rest[..n])
                .err()
                .map(|e| format!("not a checkpoint line: {e}")),
        };
        if let Some(reason) = bad {
            return quarantine(dir, path, &bytes, offset as u64, reason).map(Some);
        }
        offset += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()) + 1;
    }
    Ok(None)
}

/// The size the last checkpoint line claims (unverified: a hint for the recovery log).
fn last_checkpoint_size(path: &Path) -> Result<Option<u64>, AuditError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(AuditError::Io {
                path: path.display().to_string(),
                error,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<CheckpointLine>(l).ok())
        .filter_map(|c| c.note.lines().nth(1).and_then(|s| s.parse().ok()))
        .next_back())
}
