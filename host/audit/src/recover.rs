//! Crash recovery at start: re-hash the live segment from its stored frontier, cut at the first
//! torn, unparsable, zero-filled or mis-chained line, move what follows to `quarantine/`, and
//! hand the writer the state to continue from.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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
    let (cut, checkpointed) = recover_checkpoints(dir, &dir.join(segment::CHECKPOINTS))?;
    state.cuts.extend(cut);
    state.checkpointed = checkpointed;
    let mut segments = segment::list(dir).map_err(io(dir))?;
    while let Some((number, path)) = segments.pop() {
        let bytes = fs::read(&path).map_err(io(&path))?;
        let scan = scan(&bytes, origin);
        if let Some((offset, reason)) = &scan.bad {
            let cut = quarantine(
                dir,
                &path,
                &bytes[*offset as usize..],
                *offset,
                reason.clone(),
            )?;
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

/// Move `cut`, the bytes of `path` from `offset` to its end, to the quarantine and truncate
/// the file at `offset`, durably.
fn quarantine(
    dir: &Path,
    path: &Path,
    cut: &[u8],
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
    out.write_all(cut).map_err(io(&target))?;
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
        bytes = cut.len() as u64,
        quarantine = %target.display(),
        %reason,
        "audit log recovered: cut a damaged tail"
    );
    Ok(Cut {
        file: file_name,
        offset,
        bytes: cut.len() as u64,
        quarantine: target,
        reason,
    })
}

/// How much of the end of `checkpoints.jsonl` recovery reads. Each checkpoint line is
/// fdatasync'ed before the next one is written, so a crash can only have torn the last line,
/// and recovery needs only the last whole one. The file gains a line per checkpoint for the
/// life of the log (several a second under load): reading all of it at every start would
/// not stay cheap. Damage further back is not a crash's to cut: `audit verify` reports it.
const CHECKPOINTS_TAIL: u64 = 64 * 1024;

/// Cut a torn or unparsable tail off `checkpoints.jsonl`, and give the size the last good
/// line claims (unverified: a hint for the recovery log). Reads the last `CHECKPOINTS_TAIL`
/// bytes, or the whole file when they hold no good line.
fn recover_checkpoints(dir: &Path, path: &Path) -> Result<(Option<Cut>, Option<u64>), AuditError> {
    let io = |error| AuditError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
        Err(error) => return Err(io(error)),
    };
    let mut start = file
        .metadata()
        .map_err(io)?
        .len()
        .saturating_sub(CHECKPOINTS_TAIL);
    loop {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_to_end(&mut bytes).map_err(io)?;
        // From the first line that starts in what was read.
        let first = match start {
            0 => Some(0),
            _ => bytes.iter().position(|&b| b == b'\n').map(|n| n + 1),
        };
        let scanned = first.map(|first| scan_checkpoints(&bytes, first));
        let Some((last, bad)) = scanned.filter(|(last, _)| start == 0 || last.is_some()) else {
            start = 0;
            continue;
        };
        let cut = match bad {
            None => None,
            Some((offset, reason)) => Some(quarantine(
                dir,
                path,
                &bytes[offset..],
                start + offset as u64,
                reason,
            )?),
        };
        return Ok((cut, last));
    }
}

/// The checkpoint lines of `bytes` from `offset` on: the size the last good one claims, and
/// where the first bad one starts and why.
fn scan_checkpoints(bytes: &[u8], mut offset: usize) -> (Option<u64>, Option<(usize, String)>) {
    let mut last = None;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            return (
                last,
                Some((offset, "a torn line (no newline at the end)".into())),
            );
        };
        match serde_json::from_slice::<CheckpointLine>(&rest[..newline]) {
            Ok(line) => {
                if let Some(size) = line.note.lines().nth(1).and_then(|s| s.parse().ok()) {
                    last = Some(size);
                }
            }
            Err(e) => return (last, Some((offset, format!("not a checkpoint line: {e}")))),
        }
        offset += newline + 1;
    }
    (last, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "test.portcullis/recover";

    fn line(size: u64) -> Vec<u8> {
        let line = CheckpointLine {
            ts: "2026-11-30T00:00:00.000000Z".into(),
            segment: 1,
            note: format!("{ORIGIN}\n{size}\nAAAA\n\n— {ORIGIN} c2lnbmF0dXJl\n"),
        };
        let mut bytes = serde_json::to_vec(&line).expect("a line");
        bytes.push(b'\n');
        bytes
    }

    /// Recover a log with no segments and `checkpoints` as its checkpoint file; returns the
    /// state and the file after.
    fn recover_with(checkpoints: &[u8]) -> (State, Vec<u8>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(segment::CHECKPOINTS);
        fs::write(&path, checkpoints).expect("write");
        let state = recover(dir.path(), ORIGIN).expect("recover");
        let after = fs::read(&path).expect("read");
        (state, after, dir)
    }

    #[test]
    fn a_torn_last_checkpoint_is_cut_from_the_tail_alone() {
        // Damage far from the end (not a crash's) stays for the verifier to report; the file
        // is several times what recovery reads.
        let mut file: Vec<u8> = (1..=3).flat_map(line).collect();
        file.extend_from_slice(b"not a checkpoint line\n");
        let mut size = 3;
        while (file.len() as u64) < 3 * CHECKPOINTS_TAIL {
            size += 1;
            file.extend(line(size));
        }
        let whole = file.len() as u64;
        let torn = b"{\"ts\":\"2026-11-30T00:00:01";
        file.extend_from_slice(torn);
        let (state, after, _dir) = recover_with(&file);
        assert_eq!(state.checkpointed, Some(size));
        assert_eq!(state.cuts.len(), 1, "{:?}", state.cuts);
        let cut = &state.cuts[0];
        assert_eq!((cut.offset, cut.bytes), (whole, torn.len() as u64));
        assert_eq!(after, file[..whole as usize], "only the torn line is cut");
        let quarantined = fs::read(&cut.quarantine).expect("the quarantined bytes");
        assert_eq!(quarantined, torn);
    }

    #[test]
    fn a_tail_with_no_good_line_is_cut_where_the_whole_file_goes_bad() {
        let good: Vec<u8> = (1..=3).flat_map(line).collect();
        let mut file = good.clone();
        while (file.len() as u64) < good.len() as u64 + 2 * CHECKPOINTS_TAIL {
            file.extend_from_slice(&[b'x'; 99]);
            file.push(b'\n');
        }
        let (state, after, _dir) = recover_with(&file);
        assert_eq!(state.checkpointed, Some(3));
        assert_eq!(state.cuts.len(), 1, "{:?}", state.cuts);
        let cut = &state.cuts[0];
        assert_eq!(
            (cut.offset, cut.bytes),
            (good.len() as u64, (file.len() - good.len()) as u64)
        );
        assert!(
            cut.reason.starts_with("not a checkpoint line"),
            "{}",
            cut.reason
        );
        assert_eq!(after, good);
    }
}
